"""`mfpo-eval objhal`: answers that leave items of the set out are refused or labelled partial; the scorer
named is the scorer used (and recorded)."""

import json

import pytest
from typer.testing import CliRunner

from mfpo_data.scorers.coco import read_coco
from mfpo_train.eval import objhal
from mfpo_train.eval.cli import app
from tests.fixtures.hostile import one_error_line


runner = CliRunner()
OFFICIAL = [q["image_id"] for q in objhal.objhal_questions()]


@pytest.fixture(scope="module")
def val2014(tmp_path_factory):
    """A COCO val2014 annotation folder with the 300 Object HalBench images, each holding a dog."""
    root = tmp_path_factory.mktemp("coco")
    (root / "annotations").mkdir()
    images = [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg"} for i in OFFICIAL]
    anns = [{"id": k, "image_id": i, "category_id": 1, "bbox": [0, 0, 1, 1], "iscrowd": 0}
            for k, i in enumerate(OFFICIAL, 1)]
    cats = [{"id": 1, "name": "dog", "supercategory": "animal"}]
    (root / "annotations" / "instances_val2014.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}))
    (root / "annotations" / "captions_val2014.json").write_text(json.dumps({"annotations": []}))
    return root


def _answers(path, ids):
    path.write_text("".join(json.dumps({"image_id": i, "text": "A dog and a cat."}) + "\n" for i in ids))
    return path


def test_a_partial_answers_file_is_refused_naming_the_missing_items(val2014, tmp_path):
    answers = _answers(tmp_path / "a.jsonl", OFFICIAL[1:])
    line = one_error_line(runner.invoke(app, ["objhal", "--coco-root", str(val2014), "--answers", str(answers),
                                              "--out", str(tmp_path / "o.json")]))
    assert line == (f"error: objhal: {answers} answers 299 of the 300 Object HalBench items; 1 missing (image_id "
                    f"{OFFICIAL[0]}): answer every item, or --allow-partial to score them labelled partial")
    assert not (tmp_path / "o.json").exists()


def test_allow_partial_scores_and_labels_the_result(val2014, tmp_path):
    answers = _answers(tmp_path / "a.jsonl", OFFICIAL[1:])
    out = tmp_path / "o.json"
    res = runner.invoke(app, ["objhal", "--coco-root", str(val2014), "--answers", str(answers), "--out", str(out),
                              "--allow-partial"])
    assert res.exit_code == 0, res.output
    label = "partial: n=299 of the 300 Object HalBench items: not comparable with published tables"
    assert f"warning: objhal: {label}" in res.output
    settings = json.loads(out.read_text())["meta"]["settings"]
    assert settings["coverage"] == label and settings["items"] == "the 300 Object HalBench items"
    assert settings["scorer"] == "rlaifv" and json.loads(out.read_text())["n"] == 299


def test_a_complete_file_is_scored_as_complete(val2014, tmp_path):
    out = tmp_path / "o.json"
    res = runner.invoke(app, ["objhal", "--coco-root", str(val2014), "--answers",
                              str(_answers(tmp_path / "a.jsonl", OFFICIAL)), "--out", str(out)])
    assert res.exit_code == 0, res.output
    body = json.loads(out.read_text())
    assert body["meta"]["settings"]["coverage"] == "complete" and (body["n"], body["CHAIRi"]) == (300, 50.0)


def test_the_bundled_sample_missing_one_image_is_refused(tmp_path):
    sample = sorted(i for i, objs in read_coco(None, "sample").objects.items() if objs)
    answers = _answers(tmp_path / "a.jsonl", sample[:-1])
    line = one_error_line(runner.invoke(app, ["objhal", "--answers", str(answers)]))
    assert line.startswith(f"error: objhal: {answers} answers 14 of the 15 images of the bundled COCO sample (not "
                           f"the 300 Object HalBench items); 1 missing (image_id {sample[-1]}): ")


def test_the_chair_scorer_with_the_fixed_vocabulary_is_refused(tmp_path):
    answers = _answers(tmp_path / "a.jsonl", [3])
    line = one_error_line(runner.invoke(app, ["objhal", "--answers", str(answers), "--scorer", "chair",
                                              "--fixed-vocabulary", "--allow-partial"]))
    assert line == ("error: objhal: scorer 'chair' with the fixed vocabulary would score exactly as scorer 'rlaifv' "
                    "with it (the fixed vocabulary brings its own singulars); drop one of the two")


def test_the_scorer_is_recorded(tmp_path):
    out = tmp_path / "o.json"
    res = runner.invoke(app, ["objhal", "--answers", str(_answers(tmp_path / "a.jsonl", [3])), "--scorer", "chair",
                              "--allow-partial", "--out", str(out)])
    assert res.exit_code == 0, res.output
    settings = json.loads(out.read_text())["meta"]["settings"]
    assert (settings["scorer"], settings["protocol"]) == ("chair", "reference")
