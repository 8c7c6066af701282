"""`mfpo-data export --format swift`: ms-swift's DPO rows (a text pair and an image pair per row) with the dataset's
own image bytes, from a build or a published folder; checked against ms-swift's documented schema, and with
ms-swift's own dataset loader where ms-swift is installed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mfpo_data.cli import app
from tests.fixtures.hostile import one_error_line, tree


def _published(root: Path) -> tuple[Path, dict]:
    """A published-style folder (train 6 rows, test 2): row 2's image pair is not valid, row 4's perturbed image
    does not decode. Returns the folder and the rows of the train split by id."""
    import datasets

    from mfpo_data.schema import features
    from mfpo_train.synthetic import synthetic_rows

    rows = synthetic_rows(6)
    rows[2]["image_pair_valid"] = False
    rows[4]["rejected_images"] = [{"bytes": b"not an image", "path": None}]
    (root / "data").mkdir(parents=True)
    datasets.Dataset.from_list(rows, features=features()).to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    datasets.Dataset.from_list(synthetic_rows(2, seed=1), features=features()).to_parquet(
        str(root / "data" / "test-00000-of-00001.parquet"))
    return root, {r["id"]: r for r in rows}


def _bytes(image) -> bytes:
    import io

    if isinstance(image, dict):
        return image["bytes"]
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_export_writes_a_text_and_an_image_pair_per_row_with_our_images(tmp_path):
    import datasets

    source, _ = _published(tmp_path / "published")
    out = tmp_path / "swift"
    result = CliRunner().invoke(app, ["export", "--format", "swift", "--from", str(source), "--output", str(out)])
    assert result.exit_code == 0, result.output[-3000:]
    assert result.output.strip().endswith(f"wrote 13 pairs (image 6, text 7) from 8 rows (1 skipped, see export.json) "
                                          f"and 13 images to {out}: train.jsonl, test.jsonl")
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["files"] == {"train.jsonl": 9, "test.jsonl": 4}
    assert manifest["skipped"] == {"image cannot be decoded (UnidentifiedImageError)": 1}

    train = datasets.load_dataset("parquet", data_files=str(source / "data" / "train-*.parquet"), split="train")
    train = train.cast_column("rejected_images", datasets.List(datasets.Image(decode=False)))
    train = train.cast_column("images", datasets.List(datasets.Image(decode=False)))
    by_id = {r["id"]: r for r in train}
    records = _records(out / "train.jsonl")
    assert [(r["id"], r["pair"]) for r in records] == [
        ("syn-0000", "text"), ("syn-0000", "image"), ("syn-0001", "text"), ("syn-0001", "image"),
        ("syn-0002", "text"), ("syn-0003", "text"), ("syn-0003", "image"), ("syn-0005", "text"), ("syn-0005", "image")]
    assert [r["difficulty_bucket"] for r in records] == sorted(
        (r["difficulty_bucket"] for r in records), key=["easy", "medium", "hard"].index)
    for r in records:
        row = by_id[r["id"]]
        question = row["prompt"][0]["content"][1]["text"]
        assert r["messages"] == [{"role": "user", "content": "<image>" + question},
                                 {"role": "assistant", "content": row["chosen"][0]["content"][0]["text"]}]
        assert [Path(p).read_bytes() for p in r["images"]] == [im["bytes"] for im in row["images"]]  # ours, as stored
        assert all(Path(p).is_absolute() and Path(p).is_relative_to(out) for p in r["images"])
        if r["pair"] == "text":  # the rejected answer on the same image
            assert r["rejected_messages"] == [r["messages"][0], {"role": "assistant",
                                                                 "content": row["rejected"][0]["content"][0]["text"]}]
            assert r["rejected_messages"] != r["messages"] and r["rejected_images"] == r["images"]
        else:  # the chosen answer on the perturbed image
            assert r["rejected_messages"] == r["messages"] and r["rejected_images"] != r["images"]
            assert [Path(p).read_bytes() for p in r["rejected_images"]] == [im["bytes"] for im in row["rejected_images"]]
    names = sorted(p.name for p in (out / "images").rglob("*.png"))
    assert names == sorted({hashlib.sha256(Path(p).read_bytes()).hexdigest() + ".png"
                            for f in ("train.jsonl", "test.jsonl") for r in _records(out / f)
                            for p in [*r["images"], *r["rejected_images"]]})

    # again into its own folder: the same bytes; a folder of other files is refused and left alone
    before = tree(out)
    again = CliRunner().invoke(app, ["export", "--from", str(source), "--output", str(out)])
    assert again.exit_code == 0 and tree(out) == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me\n")
    refused = CliRunner().invoke(app, ["export", "--from", str(source), "--output", str(mine)])
    assert one_error_line(refused) == (f"error: output folder {mine} is not empty and holds no export of mfpo-data "
                                       "(export.json) (e.g. 'notes.txt'); choose a new or empty folder")
    assert tree(mine) == {"notes.txt": b"keep me\n"}
    unknown = CliRunner().invoke(app, ["export", "--format", "llamafactory", "--from", str(source), "--output",
                                       str(tmp_path / "x")])
    assert one_error_line(unknown) == "error: --format must be one of swift, got 'llamafactory'"


def test_export_of_a_build_by_bucket_with_relative_paths(tmp_path):
    from tests.fixtures.fake_build import make_fake_build

    build = make_fake_build(tmp_path / "build", rows=12)
    out = tmp_path / "swift"
    result = CliRunner().invoke(app, ["export", "--from", str(build.root), "--output", str(out), "--by-bucket",
                                      "--relative-paths"])
    assert result.exit_code == 0, result.output[-3000:]
    files = json.loads((out / "export.json").read_text())["files"]
    assert list(files) == [f"train-{b}.jsonl" for b in ("easy", "medium", "hard") if f"train-{b}.jsonl" in files]
    assert len(files) >= 2
    for name in files:
        bucket = name.removeprefix("train-").removesuffix(".jsonl")
        for r in _records(out / name):
            assert r["difficulty_bucket"] == bucket
            for p in [*r["images"], *r["rejected_images"]]:
                assert not Path(p).is_absolute() and (out / p).is_file()


def test_ms_swift_loads_the_export_with_its_own_dataset_code(tmp_path, monkeypatch):
    """ms-swift's `load_dataset` and its DPO preprocessing (AutoPreprocessor) read every pair as written. ms-swift
    is not an mfpo dependency (4.6 pins transformers < 5.20): this runs where it is installed."""
    pytest.importorskip("swift.dataset", reason="ms-swift is not installed (pip install ms-swift)")
    from swift.dataset import load_dataset

    source, _ = _published(tmp_path / "published")
    out = tmp_path / "swift"
    assert CliRunner().invoke(app, ["export", "--from", str(source), "--output", str(out)]).exit_code == 0
    written = _records(out / "train.jsonl")
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "cache"))
    train, _ = load_dataset(str(out / "train.jsonl"), load_from_cache_file=False)
    assert len(train) == len(written)
    for got, want in zip(train, written, strict=True):
        assert got["messages"] == want["messages"]
        assert [im["path"] for im in got["images"]] == want["images"]
        assert got["rejected_messages"] == want["rejected_messages"]
        assert [im["path"] for im in got["rejected_images"]] == want["rejected_images"]
