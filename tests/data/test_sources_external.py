"""The `jsonl` and `hf` sources: column mapping, ids, the RLAIF-V preset, and the same rows whether the
HF dataset is a saved folder, a parquet folder or a stream."""

import io
import json

import datasets
import numpy as np
import pytest
from PIL import Image

from mfpo_data.config import recipe_from_dict
from mfpo_data.errors import ConfigError
from mfpo_data.pipeline.build import build_dataset
from mfpo_data.sources.hf import HfSource
from mfpo_data.sources.jsonl import JsonlSource
from tests.fixtures.builds import rows_by_id


def _build(source: dict, out):
    recipe = recipe_from_dict({"source": source, "output": {"dir": str(out), "progress": False}, "executor": {"tasks": 2}})
    return build_dataset(recipe)


def test_jsonl_column_mapping_metadata_and_content_ids(tmp_path):
    Image.new("RGB", (16, 12), (10, 200, 30)).save(tmp_path / "a.png")
    record = {"prompt": "What colour is it?", "good": "Green.", "bad": "Purple.", "file": "a.png", "extra": 7}
    (tmp_path / "p.jsonl").write_text(json.dumps(record) + "\n" + json.dumps({**record, "uid": "u1"}) + "\n")
    columns = {"id": "uid", "question": "prompt", "chosen": "good", "rejected": "bad", "image": "file"}
    source = JsonlSource(str(tmp_path / "p.jsonl"), columns=columns, metadata_columns=["extra"])
    assert source.prepare(tmp_path / "index.jsonl") == 2
    samples = list(source.run(None, 0, 1))
    assert [s.dropped for s in samples] == [None, None]
    hashed, given = samples
    assert given.id == "u1" and len(hashed.id) == 16 and hashed.id != given.id
    assert hashed.id == JsonlSource(str(tmp_path / "p.jsonl"), columns=columns).entry(1, record)["id"]  # stable
    assert (hashed.question, hashed.chosen, hashed.rejected, hashed.pair_type) == ("What colour is it?", "Green.", "Purple.", "external")
    assert hashed.metadata == {"line": 1, "extra": 7} and hashed.image.shape == (12, 16, 3)
    with pytest.raises(ConfigError, match="source.columns.answer"):
        JsonlSource(str(tmp_path / "p.jsonl"), columns={"answer": "x"})


@pytest.fixture(scope="module")
def rlaif_like(tmp_path_factory):
    """A tiny dataset in the RLAIF-V schema: embedded images, ids from ds_name + idx, one duplicate, one without image."""
    root = tmp_path_factory.mktemp("hf")
    rng = np.random.default_rng(1)
    photos = [Image.fromarray(rng.integers(0, 255, (20 + i, 24, 3), dtype=np.uint8)) for i in range(5)]
    ds = datasets.Dataset.from_dict(
        {
            "ds_name": ["vqa", "vqa", "cap", "vqa", "cap"],
            "image": photos[:4] + [None],
            "question": ["Is there a dog?", "What is red?", "Describe it.", "Is there a dog?", "Anything?"],
            "chosen": ["Yes, a dog on a sofa.", "A cup.", "A person with an umbrella.", "Yes.", "A cat."],
            "rejected": ["No.", "A car.", "A person on a horse.", "No.", "A dog."],
            "origin_dataset": ["x"] * 5,
            "idx": ["0", "1", "0", "0", "1"],
        },
        features=datasets.Features({"ds_name": datasets.Value("string"), "image": datasets.Image(),
                                    "question": datasets.Value("string"), "chosen": datasets.Value("string"),
                                    "rejected": datasets.Value("string"), "origin_dataset": datasets.Value("string"),
                                    "idx": datasets.Value("string")}),  # fmt: skip
    )
    ds.save_to_disk(str(root / "saved"))
    (root / "parquet").mkdir()
    ds.to_parquet(str(root / "parquet" / "train-00000.parquet"))
    return root


def test_hf_rlaif_v_preset_builds_from_a_saved_dataset(rlaif_like):
    layout = _build({"kind": "hf", "path": str(rlaif_like / "saved"), "preset": "rlaif_v",
                     "metadata_columns": ["origin_dataset"]}, rlaif_like / "out_saved")  # fmt: skip
    rows = rows_by_id(layout)
    assert sorted(rows) == ["cap:0", "vqa:0", "vqa:1"]
    rejects = {r["id"]: r["reason"] for r in map(json.loads, layout.rejects_file.read_text().splitlines())}
    assert rejects == {"vqa:0": "duplicate_id: row 3 repeats the id of row 0", "cap:1": "missing_image: no image in the record (NoneType)"}
    row = rows["vqa:1"]
    assert row["source"] == "hf" and row["question"] == "What is red?" and row["chosen_text"] == "A cup."
    assert json.loads(row["metadata"]) == {"row": 1, "origin_dataset": "x"}
    image = np.asarray(Image.open(io.BytesIO(row["images"][0]["bytes"])))
    assert image.shape == (21, 24, 3)


def test_hf_parquet_folder_and_stream_give_the_same_rows(rlaif_like):
    saved = rows_by_id(_build({"kind": "hf", "path": str(rlaif_like / "saved"), "preset": "rlaif_v"}, rlaif_like / "a"))
    parquet = rows_by_id(_build({"kind": "hf", "path": str(rlaif_like / "parquet"), "preset": "rlaif_v"}, rlaif_like / "b"))
    stream = rows_by_id(_build({"kind": "hf", "path": str(rlaif_like / "parquet"), "preset": "rlaif_v", "streaming": True}, rlaif_like / "c"))
    assert saved == parquet == stream and len(saved) == 3


def test_hf_missing_column_is_a_one_line_error(rlaif_like, tmp_path):
    source = HfSource(str(rlaif_like / "saved"), columns={"question": "prompt"})
    with pytest.raises(Exception, match="has no column 'prompt'"):
        source.prepare(tmp_path / "index.jsonl")
