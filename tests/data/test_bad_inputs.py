"""A corpus of bad input, generated here, built end to end: every input is either a row or a reject with
the right reason (counted in stats), images that can be repaired are kept and correct, and the rest of
the build succeeds."""

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mfpo_data.config import load_recipe, recipe_from_dict
from mfpo_data.pipeline.assemble import make_source
from mfpo_data.pipeline.build import build_dataset
from tests.fixtures.coco_folder import make_coco_folder


RED, BLUE = (220, 20, 20), (20, 20, 220)


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _marked(w: int = 60, h: int = 40) -> Image.Image:
    """Blue, with a red block in the top-left corner of the stored pixels."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:] = BLUE
    arr[: h // 3, : w // 3] = RED
    return Image.fromarray(arr)


def _exif_rotated(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(_marked(), "JPEG", quality=95, exif=exif.tobytes())


def _images(root: Path) -> None:
    """Write the image files of the corpus under root/img (and one outside root, beside it)."""
    img = root / "img"
    img.mkdir(parents=True)
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(40, 220, (48, 64, 3), dtype=np.uint8))
    jpg, png = _encode(photo, "JPEG", quality=90), _encode(photo, "PNG")
    (img / "good.jpg").write_bytes(jpg)
    (img / "zero.jpg").write_bytes(b"")
    (img / "trunc.jpg").write_bytes(jpg[: len(jpg) // 2])
    (img / "trunc.png").write_bytes(png[: len(png) // 2])
    (img / "corrupt.jpg").write_bytes(b"\xff\xd8\xff" + rng.integers(0, 255, 400, dtype=np.uint8).tobytes())
    broken = bytearray(png)
    at = broken.find(b"IDAT")
    broken[at + 8 : at + 40] = bytes(32)
    (img / "corrupt.png").write_bytes(bytes(broken))
    cmyk = Image.new("CMYK", (32, 24), (0, 255, 255, 0))  # no cyan, full magenta + yellow: red
    (img / "cmyk.jpg").write_bytes(_encode(cmyk, "JPEG", quality=95))
    deep = np.zeros((8, 3), np.uint16)
    deep[:, 1], deep[:, 2] = 32768, 65535
    Image.fromarray(deep).save(img / "deep16.png")  # mode I;16
    assert Image.open(img / "deep16.png").mode.startswith("I")
    pal = Image.new("P", (10, 10), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.paste(1, (5, 0, 10, 10))  # right half red, left half transparent index 0
    pal.save(img / "palette.png", transparency=0)
    for orientation in (3, 6, 8):
        (img / f"exif{orientation}.jpg").write_bytes(_exif_rotated(orientation))
    Image.new("RGB", (200, 200), RED).save(img / "big.png")  # 40,000 pixels > the limit set below
    (root.parent / "outside.jpg").write_bytes(jpg)  # a real file next to the image root
    (img / "link.jpg").symlink_to(root.parent / "outside.jpg")
    (img / "loop_a.jpg").symlink_to("loop_b.jpg")  # a symlink loop: a reject, the build goes on
    (img / "loop_b.jpg").symlink_to("loop_a.jpg")
    (img / "dangling.jpg").symlink_to("gone.jpg")


# (image, expected reason code or None for kept); the id is the file's stem
IMAGE_CASES = {
    "good": ("img/good.jpg", None),
    "zero": ("img/zero.jpg", "empty_file"),
    "trunc_jpg": ("img/trunc.jpg", "undecodable_image"),
    "trunc_png": ("img/trunc.png", "undecodable_image"),
    "corrupt_jpg": ("img/corrupt.jpg", "undecodable_image"),
    "corrupt_png": ("img/corrupt.png", "undecodable_image"),
    "cmyk": ("img/cmyk.jpg", None),
    "deep16": ("img/deep16.png", None),
    "palette": ("img/palette.png", None),
    "exif3": ("img/exif3.jpg", None),
    "exif6": ("img/exif6.jpg", None),
    "exif8": ("img/exif8.jpg", None),
    "big": ("img/big.png", "too_many_pixels"),
    "escape_dotdot": ("../outside.jpg", "path_escapes_root"),
    "escape_abs": ("/etc/hostname", "path_escapes_root"),
    "escape_link": ("img/link.jpg", "path_escapes_root"),
    "missing": ("img/nope.jpg", "missing_file"),
    "directory": ("img", "missing_file"),
    "symlink_loop": ("img/loop_a.jpg", "unreadable_file"),
    "dangling_link": ("img/dangling.jpg", "missing_file"),
}


def _pair(sample_id, path, **fields):
    record = {"id": sample_id, "question": "What is on the table?", "chosen": "A red mug stands on the table.",
              "rejected": "A cat sleeps on the table.", "image": path}  # fmt: skip
    record.update(fields)
    return {k: v for k, v in record.items() if v is not ...}


def _corpus(root: Path) -> tuple[Path, dict[str, str | None], dict]:
    """Write pairs.jsonl; return it, the expected outcome per id (None = a row) and line facts."""
    _images(root / "data")
    lines: list[bytes] = []
    expected: dict[str, str | None] = {}
    for sample_id, (image, reason) in IMAGE_CASES.items():
        lines.append(json.dumps(_pair(sample_id, image)).encode())
        expected[sample_id] = reason
    text_cases = {
        "empty_question": ({"question": ""}, "empty_text"),
        "blank_chosen": ({"chosen": "  \n\t "}, "empty_text"),
        "no_rejected": ({"rejected": ...}, "missing_field"),
        "number_chosen": ({"chosen": 42}, "bad_field"),
        "same": ({"chosen": "A mug.", "rejected": " A mug. "}, "same_answers"),
        "no_image": ({"image": ...}, "missing_field"),
    }
    for sample_id, (fields, reason) in text_cases.items():
        lines.append(json.dumps(_pair(sample_id, "img/good.jpg", **fields)).encode())
        expected[sample_id] = reason
    lines.append(json.dumps(_pair("dup", "img/good.jpg")).encode())
    expected["dup"] = None
    facts = {"dup_lines": (len(lines),)}
    lines.append(b"")  # a blank line is not a record
    lines.append(json.dumps(_pair("dup", "img/cmyk.jpg", chosen="Another answer.")).encode())  # -> duplicate_id
    facts["dup_lines"] += (len(lines),)
    no_id = json.dumps(_pair(..., "img/good.jpg", question="Which objects are there?")).encode()
    lines += [no_id, no_id]  # no id: a content hash; the second copy is a duplicate
    bad_encoding_line = len(lines) + 1
    lines.append(b'{"id": "latin1", "question": "Caf\xe9?", "chosen": "Yes.", "rejected": "No.", "image": "img/good.jpg"}')
    expected[f"jsonl:line:{bad_encoding_line}"] = "bad_encoding"
    lines.append(b'{"id": "broken", "question": ')
    expected[f"jsonl:line:{len(lines)}"] = "bad_json"
    lines.append(b'["a", "list"]')
    expected[f"jsonl:line:{len(lines)}"] = "bad_json"
    lines.append(b'{"id": ' + b"7" * 5000 + b', "question": "Q?", "chosen": "A.", "rejected": "B.", "image": "x"}')
    expected[f"jsonl:line:{len(lines)}"] = "bad_json"  # more digits than Python turns into an int
    path = root / "data" / "pairs.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    facts.update(bad_encoding_line=bad_encoding_line, records=len(lines) - 1)
    return path, expected, facts


def _recipe(source: dict, out: Path, **sections):
    return recipe_from_dict({"source": source, "output": {"dir": str(out), "progress": False},
                             "executor": {"tasks": 2}, **sections})  # fmt: skip


def _outcome(layout):
    rows = [r for shard in layout.final_shards() for r in pq.read_table(shard).to_pylist()]
    rejects = [json.loads(line) for line in layout.rejects_file.read_text().splitlines()]
    return {r["id"]: r for r in rows}, rejects, len(rows)


def _pixels(image: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image["bytes"])).convert("RGB")).astype(int)


def _source_ids(recipe) -> list[str]:
    """Every sample id the source itself emits (kept or dropped), read straight from the source."""
    source = make_source(recipe)
    source.prepare(Path(recipe.output.dir) / "probe_index.jsonl")
    return [s.id for s in source.run(None, 0, 1)]


@pytest.fixture(scope="module")
def jsonl_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    path, expected, facts = _corpus(root)
    recipe = _recipe({"kind": "jsonl", "path": str(path), "max_image_pixels": 20_000}, root / "out")
    return build_dataset(recipe), expected, recipe, facts


def test_every_jsonl_record_is_a_row_or_a_reject_with_its_reason(jsonl_build):
    layout, expected, recipe, facts = jsonl_build
    rows, rejects, n_rows = _outcome(layout)
    dup_id = next(i for i in rows if len(i) == 16 and i not in expected)  # the content-hash id
    kept = {i for i, reason in expected.items() if reason is None} | {dup_id}
    assert set(rows) == kept and n_rows == len(kept)
    got = Counter()
    for reject in rejects:
        code = reject["reason"].split(":")[0]
        got[code] += 1
        assert reject["stage"] == "source"
        if reject["id"] in expected and reject["id"] != "dup":
            assert expected[reject["id"]] == code, reject
    want = Counter(r for r in expected.values() if r) + Counter({"duplicate_id": 2})
    assert got == want
    assert layout.read_stats()["dropped"] == dict(want)
    # nothing silently missing: one outcome per record, and the same ids as the source emits
    assert n_rows + len(rejects) == facts["records"] == len(_source_ids(recipe))
    by_id = {r["id"]: r["reason"] for r in rejects}
    line = facts["bad_encoding_line"]
    assert by_id[f"jsonl:line:{line}"].startswith(f"bad_encoding: line {line} is not UTF-8")
    first, second = facts["dup_lines"]
    assert [r["reason"] for r in rejects if r["id"] == "dup"] == [f"duplicate_id: line {second} repeats the id of line {first}"]
    assert any(r["id"] == dup_id and r["reason"].startswith("duplicate_id") for r in rejects)


def test_repairable_images_are_kept_and_correct(jsonl_build):
    layout = jsonl_build[0]
    rows, _, _ = _outcome(layout)
    assert rows["good"]["images"][0]["bytes"] == (Path(layout.root).parent / "data/img/good.jpg").read_bytes()
    cmyk = _pixels(rows["cmyk"]["images"][0])
    assert cmyk.shape == (24, 32, 3) and np.abs(cmyk - (255, 0, 0)).max() < 12
    deep = _pixels(rows["deep16"]["images"][0])
    assert deep.shape == (8, 3, 3) and list(deep[0, :, 0]) == [0, 128, 255]
    pal = _pixels(rows["palette"]["images"][0])
    assert (pal[:, :5] == 255).all() and (pal[:, 5:] == (255, 0, 0)).all()  # transparent -> white
    # EXIF orientation applied: the stored top-left red block moves where the viewer shows it
    corners = {3: "bottom_right", 6: "top_right", 8: "bottom_left"}
    for orientation, corner in corners.items():
        px = _pixels(rows[f"exif{orientation}"]["images"][0])
        h, w = px.shape[:2]
        assert (h, w) == ((40, 60) if orientation == 3 else (60, 40))
        spots = {"top_left": px[2, 2], "top_right": px[2, w - 3], "bottom_left": px[h - 3, 2], "bottom_right": px[h - 3, w - 3]}
        for name, value in spots.items():
            target = RED if name == corner else BLUE
            assert np.abs(value - target).max() < 40, (orientation, name, value)


def test_external_pairs_get_whole_image_noise_with_fallback(jsonl_build):
    layout = jsonl_build[0]
    rows, _, _ = _outcome(layout)
    for row in rows.values():
        assert row["pair_type"] == "external" and row["source"] == "jsonl"
        assert row["mask"] is None and row["key_objects"] == []  # coco_gt grounds nothing without annotations
        params = json.loads(row["perturbation_params"])
        assert params["region"] == "whole_image" and params["t"] == 500
        a, b = _pixels(row["images"][0]), _pixels(row["rejected_images"][0])
        assert a.shape == b.shape and (a != b).any(axis=-1).mean() > 0.9
        assert row["difficulty_bucket"] in {"easy", "medium", "hard"}


def test_mask_not_fitting_and_box_outside_the_image_are_dropped(tmp_path):
    root = make_coco_folder(tmp_path / "coco", n_images=4)
    path = root / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    anns = {a["id"]: a for a in data["annotations"]}
    anns[10]["segmentation"] = {"size": [7, 9], "counts": [0, 63]}  # image 1, a mask for a 7x9 image
    anns[20]["bbox"] = [500.0, 400.0, 30.0, 30.0]  # image 2, a box right of and below the 128x96 image
    anns[20]["segmentation"] = [[500, 400, 530, 400, 530, 430]]
    path.write_text(json.dumps(data))
    recipe = load_recipe("coco", [f"source.root={root}", "source.split=val2017", "output.progress=false",
                                  f"output.dir={tmp_path / 'out'}", "executor.tasks=2"])  # fmt: skip
    layout = build_dataset(recipe)
    rows, rejects, _ = _outcome(layout)
    by_code = {}
    for r in rejects:
        by_code.setdefault(r["reason"].split(":")[0], []).append(r)
    assert set(by_code) == {"mask_size_mismatch", "box_outside_image"}
    assert all(r["stage"] == "segmentation" and r["id"].startswith("val2017:1:") for r in by_code["mask_size_mismatch"])
    assert all(r["stage"] == "grounding" and r["id"].startswith("val2017:2:") for r in by_code["box_outside_image"])
    assert layout.read_stats()["dropped"] == {k: len(v) for k, v in by_code.items()}
    source_ids = _source_ids(recipe)
    assert sorted(source_ids) == sorted(list(rows) + [r["id"] for r in rejects])  # none missing, none twice
    assert {r["image_id"] for r in rows.values()} == {"1", "2", "3", "4"}  # the other pairs of 1 and 2 are kept
