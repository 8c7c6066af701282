"""Hostile records, generated here, built end to end for each source (COCO, JSONL, HF): the build exits
normally, every bad record is a reject with its reason and id, every good one gives rows, and every input
is accounted for (inputs = records with rows + rejects)."""

import json
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mfpo_data.config import recipe_from_dict
from mfpo_data.errors import MfpoError
from mfpo_data.imaging import rle_encode
from mfpo_data.pipeline.build import build_dataset
from mfpo_data.sources.validate import check_segmentation, rle_string_counts
from tests.fixtures.builds import rows_by_id
from tests.fixtures.coco_folder import make_coco_folder


def _rejects(layout) -> list[dict]:
    return [json.loads(line) for line in layout.rejects_file.read_text().splitlines()]


def _code(reason: str) -> str:
    return reason.split(":", 1)[0]


def _recipe(source: dict, out: Path, **sections):
    return recipe_from_dict({"source": source, "output": {"dir": str(out), "progress": False},
                             "executor": {"tasks": 2}, **sections})  # fmt: skip


def _nested(levels: int):
    value: object = "x"
    for _ in range(levels):
        value = [value]
    return value


# ----------------------------------------------------------------------------------------------- COCO

# image records: (record, expected reject id, reason code); None as id: rejected by position
BAD_IMAGES = [
    ({"id": 101, "file_name": 7}, "val2017:image:101", "bad_field"),
    ({"id": 102}, "val2017:image:102", "missing_field"),
    ({"id": 103, "file_name": "a\x00.jpg"}, "val2017:image:103", "bad_text"),
    ({"id": 104, "file_name": "000000000001.jpg"}, "val2017:image:104", "duplicate_image_id"),
    ({"id": 104, "file_name": "000000000002.jpg"}, "val2017:image:104", "duplicate_image_id"),
    ({"id": "105", "file_name": "000000000003.jpg"}, "val2017:image:105", "bad_id"),  # mixed id types
    ({"id": True, "file_name": "000000000003.jpg"}, None, "bad_id"),
    ({"id": 108, "file_name": "000000000001.jpg", "extra": _nested(40)}, None, "too_deep"),
    ({"id": 109, "file_name": "x/" * 2100 + "a.jpg"}, "val2017:image:109", "path_too_long"),
    ({"id": 110, "file_name": "QUJD" * 40 + "/" + "QUJD" * 40}, "val2017:image:110", "bad_path"),
    ({"id": 111, "file_name": "data:image/png;base64,iVBORw0KGgo="}, "val2017:image:111", "bad_path"),
    ({"id": 112, "file_name": "\udcff.jpg"}, "val2017:image:112", "bad_text"),
]


def _bad_annotations() -> list[tuple[dict, str, str]]:
    """(annotation on image 1, expected reject id, reason code)."""
    poly = [10.0, 10.0, 40.0, 10.0, 40.0, 40.0, 10.0, 40.0]
    ok = {"image_id": 1, "category_id": 17, "iscrowd": 0, "bbox": [10.0, 10.0, 30.0, 30.0], "segmentation": [poly]}
    mask = np.zeros((96, 128), bool)
    mask[5:20, 5:30] = True
    rle = rle_encode(mask)
    cases = [
        ({"bbox": ["10", 10, 30, 30]}, "bad_bbox"),
        ({"bbox": [10.0, math.nan, 30.0, 30.0]}, "bad_bbox"),
        ({"bbox": [10.0, 10.0, 30.0]}, "bad_bbox"),
        ({"bbox": [10.0, 10.0, 0.0, 30.0]}, "bad_bbox"),
        ({"bbox": "10 10 30 30"}, "bad_bbox"),
        ({"segmentation": [[10.0, 10.0, 40.0, 10.0]]}, "bad_segmentation"),  # 2 points
        ({"segmentation": [[10.0, 10.0, 20.0, 20.0, 30.0, 30.0]]}, "bad_segmentation"),  # collinear: no area
        ({"segmentation": [[10.0, math.nan, 40.0, 10.0, 40.0, 40.0]]}, "bad_segmentation"),
        ({"segmentation": {"size": [96, 128], "counts": [0, 100]}}, "bad_segmentation"),  # RLE of the wrong size
        ({"segmentation": {"size": [97, 128], "counts": rle["counts"]}}, "bad_segmentation"),  # compressed, wrong size
        ({"segmentation": {"size": [96, 128], "counts": [96 * 128]}}, "bad_segmentation"),  # an empty mask
        ({"segmentation": {"size": [96, 128], "counts": "\x01\x02"}}, "bad_segmentation"),  # not RLE
        ({"segmentation": 5}, "bad_segmentation"),
        ({"category_id": 99}, "unknown_category"),  # the category without a name
        ({"category_id": 4242}, "unknown_category"),
    ]
    out = []
    for k, (fields, code) in enumerate(cases):
        ann_id = 900 + k
        out.append(({**ok, "id": ann_id, **fields}, f"val2017:annotation:{ann_id}", code))
    out.append(({**ok, "id": "x1"}, "val2017:annotation:x1", "bad_id"))  # mixed id types
    return out


BAD_CAPTIONS = [
    ({"id": 9001, "image_id": 2, "caption": 17}, "val2017:caption:9001", "bad_field"),
    ({"id": 9002, "image_id": 2, "caption": "A cat \udcff on a mat."}, "val2017:caption:9002", "bad_text"),
    ({"id": 9003, "image_id": 2, "caption": "A cat\x00 on a mat."}, "val2017:caption:9003", "bad_text"),
    ({"id": 9004, "image_id": 2}, "val2017:caption:9004", "missing_field"),
    ({"id": 9005, "image_id": 2, "caption": "   "}, "val2017:caption:9005", "empty_text"),
]


def _coco_corpus(root: Path) -> dict:
    """The generated COCO folder (6 good images) plus every hostile record; returns what to expect."""
    make_coco_folder(root, n_images=6)
    inst_path, cap_path = root / "annotations/instances_val2017.json", root / "annotations/captions_val2017.json"
    instances, captions = json.loads(inst_path.read_text()), json.loads(cap_path.read_text())
    expected: list[tuple[str | None, str]] = []
    for record, rid, code in BAD_IMAGES:
        instances["images"].append(record)
        expected.append((rid, code))
    instances["images"].append(17)  # not an object
    expected.append((None, "bad_field"))
    # an image that is a named pipe: its pairs are dropped at read time, the build does not hang
    os.mkfifo(root / "val2017" / "pipe.jpg")
    instances["images"].append({"id": 120, "file_name": "pipe.jpg"})
    instances["annotations"].append({"id": 1200, "image_id": 120, "category_id": 17, "iscrowd": 0,
                                     "bbox": [1.0, 1.0, 9.0, 9.0], "segmentation": None})  # fmt: skip
    # an image with nothing usable: no annotation, no caption
    (root / "val2017" / "bare.jpg").write_bytes((root / "val2017" / "000000000001.jpg").read_bytes())
    instances["images"].append({"id": 121, "file_name": "bare.jpg"})
    expected.append(("val2017:image:121", "no_pairs"))
    instances["categories"].append({"id": 99, "supercategory": "animal"})  # no name
    expected.append(("val2017:category:99", "missing_field"))
    for record, rid, code in _bad_annotations():
        instances["annotations"].append(record)
        expected.append((rid, code))
    # crowd-only: image 1 shows a crowd of dogs (RLE), so "is there a dog?" must be answered yes
    crowd = np.zeros((96, 128), bool)
    crowd[60:90, 90:120] = True
    instances["annotations"].append({"id": 1300, "image_id": 1, "category_id": 18, "iscrowd": 1,
                                     "bbox": [90.0, 60.0, 30.0, 30.0], "segmentation": rle_encode(crowd)})  # fmt: skip
    for record, rid, code in BAD_CAPTIONS:
        captions["annotations"].append(record)
        expected.append((rid, code))
    inst_path.write_text(json.dumps(instances))  # NaN is written as the literal NaN, which json reads back
    cap_path.write_text(json.dumps(captions))
    return {"expected": expected, "good_images": {"1", "2", "3", "4", "5", "6"}, "pipe": "120",
            "image_records": len(instances["images"])}  # fmt: skip


@pytest.fixture(scope="module")
def coco_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-coco")
    facts = _coco_corpus(root / "coco")
    recipe = _recipe({"kind": "coco", "root": str(root / "coco"), "split": "val2017", "presence_per_image": 40},
                     root / "out")  # fmt: skip
    return build_dataset(recipe), facts


def test_every_bad_coco_record_is_a_reject_with_its_reason(coco_build):
    layout, facts = coco_build
    rejects = _rejects(layout)
    source_rejects = [r for r in rejects if r["stage"] == "source"]
    got_named = Counter((r["id"], _code(r["reason"])) for r in source_rejects if not r["id"].startswith("val2017:120:"))
    want_named = Counter((rid, code) for rid, code in facts["expected"] if rid is not None)
    positional = Counter(code for rid, code in facts["expected"] if rid is None)
    for key, n in want_named.items():
        assert got_named[key] == n, (key, got_named)
    unnamed = Counter(_code(r["reason"]) for r in source_rejects if "#" in r["id"])
    assert unnamed == positional
    assert sum(got_named.values()) == len(facts["expected"])  # nothing else rejected at the source
    # the named pipe: every pair of its image dropped with not_a_file
    pipe = [r for r in source_rejects if r["id"].startswith("val2017:120:")]
    assert pipe and {_code(r["reason"]) for r in pipe} == {"not_a_file"}
    stats = layout.read_stats()
    assert sum(stats["dropped"].values()) == len(rejects)


def test_every_coco_image_is_rows_or_rejects(coco_build):
    layout, facts = coco_build
    rows = rows_by_id(layout)
    with_rows = {r["image_id"] for r in rows.values()}
    assert with_rows == facts["good_images"]
    image_rejects = [r for r in _rejects(layout) if ":image:" in r["id"]]  # one per bad image record
    pipe_rejected = any(r["id"].startswith(f"val2017:{facts['pipe']}:") for r in _rejects(layout))  # all its pairs
    assert pipe_rejected and len(with_rows) + len(image_rejects) + 1 == facts["image_records"]


def test_crowd_annotations_count_as_present(coco_build):
    layout, _ = coco_build
    ids = set(rows_by_id(layout))
    assert "val2017:1:presence:yes:dog" in ids
    assert not any(i.startswith("val2017:1:") and i.endswith("presence:no:dog") for i in ids)


def test_a_coco_file_nested_too_deep_is_one_line(tmp_path):
    root = make_coco_folder(tmp_path / "coco", n_images=2)
    (root / "annotations/instances_val2017.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(MfpoError, match="nests lists or objects too deeply") as info:
        build_dataset(_recipe({"kind": "coco", "root": str(root), "split": "val2017"}, tmp_path / "out"))
    assert "\n" not in str(info.value)


def test_rle_checks_agree_with_pycocotools():
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(1)
    for _ in range(30):
        h, w = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        mask = rng.random((h, w)) < rng.random()
        rle = rle_encode(mask)
        runs = rle_string_counts(rle["counts"])
        assert sum(runs) == h * w
        assert sum(runs[1::2]) == int(mask_utils.area({"size": [h, w], "counts": rle["counts"].encode()}))
        assert (check_segmentation(rle) is None) == bool(mask.any())


# ----------------------------------------------------------------------------------------------- JSONL


def _pair(sample_id, image="img/good.jpg", **fields):
    record = {"id": sample_id, "question": "What is on the table?", "chosen": "A red mug.", "rejected": "A cat.",
              "image": image, **fields}  # fmt: skip
    return {k: v for k, v in record.items() if v is not ...}


JSONL_CASES = {  # id -> (record fields, reason code)
    "surrogate_q": ({"question": "What is \udcff here?"}, "bad_text"),
    "nul_chosen": ({"chosen": "A red\x00 mug."}, "bad_text"),
    "nan_chosen": ({"chosen": math.nan}, "bad_field"),
    "list_rejected": ({"rejected": ["A cat."]}, "bad_field"),
    "int_image": ({"image": 5}, "bad_field"),
    "no_image": ({"image": ...}, "missing_field"),
    "b64_image": ({"image": "iVBORw0KGgo" * 15 + "/+" + "iVBORw0KGgo" * 15}, "bad_path"),
    "data_uri": ({"image": "data:image/jpeg;base64,/9j/4AAQ"}, "bad_path"),
    "long_image": ({"image": "d/" * 2100 + "a.jpg"}, "path_too_long"),
    "long_name": ({"image": "a" * 300 + ".jpg"}, "path_too_long"),
    "nul_image": ({"image": "img/good\x00.jpg"}, "bad_text"),
    "pipe_image": ({"image": "img/pipe.jpg"}, "not_a_file"),
    "deep_meta": ({"extra": _nested(40)}, "too_deep"),
}


def _jsonl_corpus(root: Path) -> tuple[Path, dict, int]:
    img = root / "img"
    img.mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(img / "good.jpg")
    os.mkfifo(img / "pipe.jpg")
    lines = [json.dumps(_pair(f"good{i}")) for i in range(3)]
    expected: dict[str, str | None] = {f"good{i}": None for i in range(3)}
    for sample_id, (fields, code) in JSONL_CASES.items():
        lines.append(json.dumps(_pair(sample_id, **fields)))
        expected[sample_id] = code
    lines.append(json.dumps(_pair({"a": 1})))  # an id that is an object
    expected[f"jsonl:line:{len(lines)}"] = "bad_id"
    lines.append(json.dumps(_pair("\udcffid")))  # an id no encoder can write
    expected[f"jsonl:line:{len(lines)}"] = "bad_text"
    lines.append('{"id": "deep", "x": ' + "[" * 50_000 + "]" * 50_000 + "}")  # too deep for the parser
    expected[f"jsonl:line:{len(lines)}"] = "too_deep"
    path = root / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, expected, len(lines)


def test_every_bad_jsonl_record_is_a_reject_with_its_reason(tmp_path):
    path, expected, n_lines = _jsonl_corpus(tmp_path / "data")
    recipe = _recipe({"kind": "jsonl", "path": str(path), "metadata_columns": ["extra"]}, tmp_path / "out")
    layout = build_dataset(recipe)
    rows, rejects = rows_by_id(layout), _rejects(layout)
    assert set(rows) == {i for i, code in expected.items() if code is None}
    got = {r["id"]: _code(r["reason"]) for r in rejects}
    assert got == {i: code for i, code in expected.items() if code is not None}
    assert all(r["stage"] == "source" for r in rejects)
    assert len(rows) + len(rejects) == n_lines
    assert layout.read_stats()["dropped"] == dict(Counter(got.values()))


# ----------------------------------------------------------------------------------------------- HF


def test_every_bad_hf_record_is_a_reject_with_its_reason(tmp_path):
    import datasets

    img = tmp_path / "ds" / "img"
    img.mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(img / "good.png")
    os.mkfifo(img / "pipe.png")
    base = {"question": "What is here?", "chosen": "A mug.", "rejected": "A cat.", "image": "img/good.png"}
    cases = {  # id -> (changes, reason code)
        "good0": ({}, None),
        "good1": ({}, None),
        "no_question": ({"question": None}, "missing_field"),
        "empty_chosen": ({"chosen": " "}, "empty_text"),
        "nul_rejected": ({"rejected": "A\x00 cat."}, "bad_text"),
        "same": ({"rejected": "A mug."}, "same_answers"),
        "b64_image": ({"image": "iVBORw0KGgo" * 15 + "/+" + "iVBORw0KGgo" * 15}, "bad_path"),
        "escape": ({"image": "../../etc/hostname"}, "path_escapes_root"),
        "missing": ({"image": "img/none.png"}, "missing_file"),
        "pipe": ({"image": "img/pipe.png"}, "not_a_file"),
        "no_image": ({"image": None}, "missing_image"),
    }
    records = [{"id": i, **base, **changes} for i, (changes, _) in cases.items()]
    datasets.Dataset.from_list(records).save_to_disk(str(tmp_path / "ds"))
    layout = build_dataset(_recipe({"kind": "hf", "path": str(tmp_path / "ds")}, tmp_path / "out"))
    rows, rejects = rows_by_id(layout), _rejects(layout)
    assert set(rows) == {i for i, (_, code) in cases.items() if code is None}
    assert {r["id"]: _code(r["reason"]) for r in rejects} == {i: code for i, (_, code) in cases.items() if code}
    assert len(rows) + len(rejects) == len(cases)
