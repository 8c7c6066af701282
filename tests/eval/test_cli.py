"""`mfpo-eval`: instant help, tables and result files, one-line errors that name the file and line."""

import json
import subprocess
import sys

from typer.testing import CliRunner

from mfpo_train.eval.cli import app
from tests.fixtures.eval_coco import make_pope_coco


runner = CliRunner()


def test_help_imports_nothing_heavy():
    code = "import sys, mfpo_train.eval.cli; bad = [m for m in ('torch', 'transformers', 'nltk', 'inflect', 'datasets') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert runner.invoke(app, ["--help"]).exit_code == 0


def test_chair_on_the_bundled_sample_writes_result_and_details(tmp_path):
    answers = tmp_path / "answers.jsonl"
    answers.write_text('{"image_id": 3, "answer": "A kitten on a sofa."}\n{"image_id": 8, "answer": "An apple."}\n')
    out = tmp_path / "chair.json"
    res = runner.invoke(app, ["chair", "--answers", str(answers), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "CHAIRs" in res.output
    body = json.loads(out.read_text())
    assert (body["CHAIRs"], body["CHAIRi"], body["n"]) == (50.0, 33.3, 2)  # sofa (couch) is not in image 3
    assert "details" not in body and body["meta"]["scorer"] == "chair"
    details = [json.loads(line) for line in (tmp_path / "chair.details.jsonl").read_text().splitlines()]
    assert details[0]["hallucinated"] == [["sofa", "couch"]]


def test_missing_file_and_malformed_line_are_one_line_errors(tmp_path):
    res = runner.invoke(app, ["chair", "--answers", str(tmp_path / "nope.jsonl")])
    assert res.exit_code == 1 and res.output.strip().count("\n") == 0
    assert "answers file not found" in res.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image_id": 1, "answer": "ok"}\n{"image_id": 2, "answer": \n')
    res = runner.invoke(app, ["chair", "--answers", str(bad)])
    assert res.exit_code == 1 and f"{bad}:2: not valid JSON" in res.output
    bad.write_text('{"image_id": 1}\n')
    res = runner.invoke(app, ["chair", "--answers", str(bad)])
    assert res.exit_code == 1 and f"{bad}:1: missing field 'answer' or 'text'" in res.output


def test_pope_questions_then_score_two_splits(tmp_path):
    root = make_pope_coco(tmp_path / "coco")
    paths = {}
    for sampling in ("random", "adversarial"):
        q = tmp_path / f"coco_pope_{sampling}.json"
        res = runner.invoke(app, ["pope-questions", "--coco-root", str(root), "--split", "val2014", "--sampling", sampling,
                                  "--images", "4", "--seed", "1", "--out", str(q)])  # fmt: skip
        assert res.exit_code == 0, res.output
        qs = [json.loads(line) for line in q.read_text().splitlines()]
        a = tmp_path / f"answers_{sampling}.jsonl"
        a.write_text("".join(json.dumps({"question_id": x["question_id"], "answer": "Yes"}) + "\n" for x in qs))
        paths[sampling] = (q, a)
    out = tmp_path / "pope.json"
    args = ["pope", "--out", str(out)]
    for q, a in paths.values():
        args += ["--questions", str(q), "--answers", str(a)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    body = json.loads(out.read_text())
    # always "Yes": accuracy 50, precision 50, recall 100, F1 66.7, yes-ratio 100 on every split
    assert body["mean"] == {"accuracy": 50.0, "precision": 50.0, "recall": 100.0, "f1": 66.7, "yes_ratio": 100.0}
    assert set(body["splits"]) == {"random", "adversarial"} and body["meta"]["n"] == 48


def test_too_few_images_for_pope_is_one_line(tmp_path):
    root = make_pope_coco(tmp_path / "coco")
    res = runner.invoke(
        app, ["pope-questions", "--coco-root", str(root), "--sampling", "popular", "--out", str(tmp_path / "q.json")]
    )
    assert res.exit_code == 1 and "only 5 images" in res.output


def test_objhal_questions_are_the_shipped_300(tmp_path):
    out = tmp_path / "objhal.jsonl"
    res = runner.invoke(app, ["objhal-questions", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 300 and len({r["image_id"] for r in rows}) == 300
    assert rows[0] == {"image_id": 339761, "question": "Provide a thorough description of the given image."}
