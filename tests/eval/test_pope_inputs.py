"""`mfpo-eval pope` given inputs that belong together only in name: answers written for another split, POPE's
official files saved under another split's name, an answers file that leaves a question out. Each is one line
naming the file (and line) and the split, exit code 1, nothing written; an official file under any other
name is scored and labelled as the split it is."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mfpo_data.scorers import pope
from mfpo_train.eval.cli import app
from tests.fixtures.hostile import one_error_line


def _official(folder: Path, split: str, name: str | None = None) -> Path:
    """POPE's official file of `split`, byte for byte, saved as `name` (default: its own name)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"coco_pope_{split}.json")
    path.write_bytes(gzip.decompress(pope.official_file(split).read_bytes()))
    return path


def _answers(path: Path, questions: list[dict], field: str = "prompt", suffix: str = "") -> Path:
    """Answers as `mfpo-eval run` (field "prompt") or LLaVA write them: the question asked beside the answer."""
    path.write_text("".join(json.dumps({"question_id": q["question_id"], field: q["text"] + suffix,
                                        "answer": "Yes" if q["question_id"] % 3 else "No"}) + "\n"
                            for q in questions))
    return path


def _pope(*args) -> object:
    return CliRunner().invoke(app, ["pope", *map(str, args)])


@pytest.mark.parametrize("field", ["prompt", "question", "text"])
def test_answers_written_for_another_split_are_refused(tmp_path, field):
    random = _official(tmp_path / "q", "random")
    adversarial = pope.official_questions("adversarial")
    answers = _answers(tmp_path / "adv.jsonl", adversarial, field)
    out = tmp_path / "pope.json"
    line = one_error_line(_pope("-q", random, "-a", answers, "--out", out))
    differ = sum(a["text"] != r["text"] for a, r in zip(adversarial, pope.official_questions("random"), strict=True))
    assert differ == 1479
    assert line == (f"error: {answers}:2: question_id 2 asks 'Is there a backpack in the image?' but "
                    "coco_pope_random.json asks 'Is there a car in the image?': answers to another question set "
                    f"({differ} of 3000 lines ask another question than the random file's)")
    assert not out.exists()


def test_the_conventions_suffix_case_and_spacing_are_the_same_question(tmp_path):
    random = _official(tmp_path / "q", "random")
    questions = pope.official_questions("random")
    answers = _answers(tmp_path / "llava.jsonl", questions, suffix=pope.ANSWER_SUFFIX)
    lines = answers.read_text().splitlines()
    lines[0] = lines[0].replace("Is there a snowboard", "  is THERE a   snowboard")
    answers.write_text("\n".join(lines) + "\n")
    result = _pope("-q", random, "-a", answers, "--out", tmp_path / "pope.json")
    assert result.exit_code == 0, result.output
    given = [{"question_id": q["question_id"], "answer": "Yes" if q["question_id"] % 3 else "No"} for q in questions]
    expected = pope.score_pope(questions, given, split="random")
    saved = json.loads((tmp_path / "pope.json").read_text())
    assert {k: saved[k] for k in ("f1", "accuracy", "n")} == {k: expected[k] for k in ("f1", "accuracy", "n")}
    # LLaVA's own answers file: `text` is the answer and `prompt` the question, so `text` is not taken for one
    llava = tmp_path / "llava_own.jsonl"
    llava.write_text("".join(json.dumps({"question_id": q["question_id"], "prompt": q["text"], "text": "No"}) + "\n"
                             for q in questions))
    assert _pope("-q", random, "-a", llava).exit_code == 0


@pytest.mark.parametrize(("named", "real"), [("popular", "adversarial"), ("random", "adversarial"),
                                             ("adversarial", "popular")])
def test_an_official_file_under_another_splits_name_is_refused(tmp_path, named, real):
    path = _official(tmp_path / "q", real, f"coco_pope_{named}.json")
    answers = _answers(tmp_path / "a.jsonl", pope.official_questions(real))
    line = one_error_line(_pope("-q", path, "-a", answers, "--out", tmp_path / "pope.json"))
    assert line == (f"error: {path} is POPE's official {real} file (sha256 {pope.OFFICIAL_SHA256[real][:4]}…), not "
                    f"{named}: give the {named} file under this name, or this file as coco_pope_{real}.json")
    assert not (tmp_path / "pope.json").exists()


def test_an_official_file_under_a_name_of_no_split_is_labelled_by_its_own(tmp_path):
    path = _official(tmp_path / "q", "adversarial", "myfile.json")
    answers = _answers(tmp_path / "a.jsonl", pope.official_questions("adversarial"))
    result = _pope("-q", path, "-a", answers, "--out", tmp_path / "pope.json")
    assert result.exit_code == 0, result.output
    assert "POPE adversarial (convention pope, official file)" in result.output
    settings = json.loads((tmp_path / "pope.json").read_text())["meta"]["settings"]
    assert settings == {"parser": "pope", "split": "adversarial", "convention": "pope",
                        "questions_sha256": pope.OFFICIAL_SHA256["adversarial"], "official": True,
                        "answers_checked": True}


def test_a_missing_answer_names_the_answers_file_and_the_split(tmp_path):
    q = tmp_path / "q"
    random, adversarial = _official(q, "random"), _official(q, "adversarial")
    good = _answers(tmp_path / "ans_random.jsonl", pope.official_questions("random"))
    kept = [x for x in pope.official_questions("adversarial") if x["question_id"] not in (30, 31)]
    missing = _answers(tmp_path / "ans_adversarial_missing.jsonl", kept)
    line = one_error_line(_pope("-q", random, "-a", good, "-q", adversarial, "-a", missing))
    assert line == (f"error: {missing}: question_id 30 of coco_pope_adversarial.json (split adversarial) has no "
                    "answer (2 of 3000 questions unanswered)")


def test_answers_that_carry_no_question_are_scored_with_a_warning_and_recorded_unchecked(tmp_path):
    """Plain {"question_id", "answer"} lines cannot be told from another split's (the official splits share ids,
    images and labels): swapped files score as each other's split, so the run says so and results.json records it."""
    q = tmp_path / "q"
    random, popular = _official(q, "random"), _official(q, "popular")
    plain = {}
    for split in ("random", "popular"):
        plain[split] = tmp_path / f"ans_{split}.jsonl"
        plain[split].write_text("".join(json.dumps({"question_id": x["question_id"], "answer": "Yes"}) + "\n"
                                        for x in pope.official_questions(split)))
    carried = _answers(tmp_path / "ans_popular_prompt.jsonl", pope.official_questions("popular"))
    result = _pope("-q", random, "-a", plain["popular"], "-q", popular, "-a", carried, "--out", tmp_path / "p.json")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: pope")]
    assert warnings == [f"warning: pope random: {plain['popular']} carries no question text ('prompt' or "
                        f"'question'), so it cannot be checked against {random}; answers to another split would "
                        "score as random"]
    files = json.loads((tmp_path / "p.json").read_text())["meta"]["settings"]["files"]
    assert {s: f["answers_checked"] for s, f in files.items()} == {"random": False, "popular": True}
    mean_table = result.output[result.output.index("POPE mean over splits"):]
    assert "6000" in mean_table.split("POPE pooled")[0]  # the mean's table says over how many answers
