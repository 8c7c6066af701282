"""Builds leave out the images mfpo-eval scores on (COCO val2014, which train2017 contains), and say so."""

import json

import datasets
import pytest

from mfpo_data.errors import MfpoError
from mfpo_data.eval_ids import eval_image_ids, exclusion_ids
from mfpo_data.pipeline.build import build_dataset
from mfpo_data.publishing.card import _exclusion_sentence
from tests.fixtures.coco_folder import make_coco_folder


EVAL_ID = 339761  # the first Object HalBench image


def _with_eval_image(root, split="val2017"):
    """Give image 1 of a generated COCO folder the id of an evaluation image."""
    for kind in ("instances", "captions"):
        path = root / "annotations" / f"{kind}_{split}.json"
        data = json.loads(path.read_text())
        for item in data["images"]:
            item["id"] = EVAL_ID if item["id"] == 1 else item["id"]
        for item in data["annotations"]:
            item["image_id"] = EVAL_ID if item["image_id"] == 1 else item["image_id"]
        path.write_text(json.dumps(data))
    return root


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return _with_eval_image(make_coco_folder(tmp_path_factory.mktemp("coco"), n_images=3))


def _build(coco, out, *extra):
    return build_dataset("coco", [f"source.root={coco}", "source.split=val2017", "output.progress=false", *extra], out)


def _image_ids(layout):
    ds = datasets.load_dataset("parquet", data_files=str(layout.data_dir / "*.parquet"), split="train")
    return set(ds["image_id"])


def test_default_build_excludes_and_counts_evaluation_images(coco, tmp_path):
    layout = _build(coco, tmp_path / "out")
    assert _image_ids(layout) == {"2", "3"}
    assert layout.read_stats()["excluded"] == {"exclude": "eval", "images": 1}


def test_exclusion_from_a_file_or_none(coco, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("# my held-out images\n2\n")
    layout = _build(coco, tmp_path / "file", f"source.exclude={ids}")
    assert _image_ids(layout) == {str(EVAL_ID), "3"}
    assert layout.read_stats()["excluded"] == {"exclude": str(ids), "images": 1}
    with pytest.raises(MfpoError, match="source.exclude must be 'eval', 'none' or a file"):
        _build(coco, tmp_path / "missing", f"source.exclude={tmp_path / 'nope.txt'}")


def test_ids_and_card_sentence():
    assert {EVAL_ID, 310196} <= eval_image_ids() and len(eval_image_ids()) == 799  # 500 POPE + 300 ObjHal, 1 shared
    assert exclusion_ids("none") == set()
    assert _exclusion_sentence({}) == ""
    assert "1 source images were left out" in _exclusion_sentence({"excluded": {"exclude": "eval", "images": 1}})
    assert "do not score" in _exclusion_sentence({"excluded": {"exclude": "none", "images": 0}})
