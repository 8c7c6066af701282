"""Hostile answers and question files, generated here, fed to every scorer's command: each ends in exit code 1
and one line that names the file, the line and the field or id, never a traceback, and nothing is written.

The same reader serves the Python API and `mfpo-eval run`'s resume (tests/eval/test_hostile_run.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mfpo_data.errors import MfpoError
from mfpo_data.scorers import chair, io, pope
from mfpo_train.eval import amber
from mfpo_train.eval.cli import app
from tests.fixtures.hostile import one_error_line


# (case, line to write instead of a good one, fragment of the message); {key} is the scorer's id field
ROW_CASES = [
    ("not UTF-8", b'{"{key}": 2, "answer": "caf\xe9"}', "not UTF-8 text (byte 0xe9 at column"),
    ("nested 100,000 deep", b'{"{key}": 2, "answer": "x", "extra": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "JSON nested too deeply"),
    ("cut short", b'{"{key}": 2, "answer": ', "not valid JSON (Expecting value"),
    ("not an object", b'[2, "a dog"]', "expected a JSON object, got a list"),
    ("a number", b"2", "expected a JSON object, got an integer"),
    ("id is a list", b'{"{key}": [2], "answer": "x"}', "{key} must be"),
    ("id is an object", b'{"{key}": {"id": 2}, "answer": "x"}', "{key} must be"),
    ("id is a boolean", b'{"{key}": true, "answer": "x"}', "got a boolean true"),
    ("id is a fraction", b'{"{key}": 2.5, "answer": "x"}', "got a number 2.5"),
    ("id is null", b'{"{key}": null, "answer": "x"}', "got null"),
    ("id of 5000 digits", b'{"{key}": ' + b"9" * 5000 + b', "answer": "x"}', "not valid JSON (Exceeds the limit"),
    ("id missing", b'{"answer": "x"}', "missing field '{key}'"),
    ("answer is a number", b'{"{key}": 2, "{text}": 5}', "field '{text}' must be a string, got an integer"),
    ("answer is null", b'{"{key}": 2, "{text}": null}', "field '{text}' must be a string, got null"),
    ("answer is a list", b'{"{key}": 2, "{text}": ["a dog"]}', "field '{text}' must be a string, got a list"),
    ("answer missing", b'{"{key}": 2}', "missing field '"),
    ("answer of 20 MB", b'{"{key}": 2, "{text}": "' + b"a dog " * 3_500_000 + b'"}',
     "holds 21,000,000 characters, more than the 100,000"),
    ("id answered twice", b'{"{key}": 1, "{text}": "again"}', "{key} 1 is answered again (first on line 1)"),
    ("id outside the benchmark", b'{"{key}": 987654, "{text}": "x"}', "{key} 987654 is not in"),
]


def _write(path: Path, key: str, text: str, bad: bytes, n: int = 3) -> Path:
    """Answers to ids 1..n with line 2 replaced by `bad` (ids in the first and third lines)."""
    good = [json.dumps({key: i, text: "A dog on the grass."}).encode() for i in range(1, n + 1)]
    bad = bad.replace(b"{key}", key.encode()).replace(b"{text}", text.encode())
    path.write_bytes(b"\n".join([good[0], bad, *good[2:]]) + b"\n")
    return path


def _amber_root(tmp_path: Path) -> Path:
    root = tmp_path / "amber"
    root.mkdir(exist_ok=True)
    (root / "relation.json").write_text(json.dumps({"dog": ["puppy"], "grass": ["ground"], "cat": []}))
    (root / "annotations.json").write_text(json.dumps(
        [{"id": i, "type": "generative", "truth": ["dog", "grass"], "hallu": ["cat"]} for i in (1, 2, 3)]))
    (root / "safe_words.txt").write_text("light\n")
    return root


def _pope_questions(tmp_path: Path) -> Path:
    path = tmp_path / "coco_pope_random.json"
    path.write_text("".join(json.dumps({"question_id": i, "image": f"{i}.jpg", "text": "Is there a dog in the image?",
                                        "label": "yes" if i % 2 else "no"}) + "\n" for i in (1, 2, 3)))
    return path


SCORERS = {  # name -> (id field, answer field, command line after the answers file)
    "chair": ("image_id", "answer", lambda tmp: ["chair", "--answers"]),
    "objhal": ("image_id", "text", lambda tmp: ["objhal", "--allow-partial", "--answers"]),  # 3 of the sample's 15
    "pope": ("question_id", "answer", lambda tmp: ["pope", "--questions", str(_pope_questions(tmp)), "--answers"]),
    "amber": ("id", "response", lambda tmp: ["amber", "--amber-root", str(_amber_root(tmp)), "--answers"]),
}



@pytest.mark.parametrize("scorer", list(SCORERS))
@pytest.mark.parametrize(("case", "bad", "message"), ROW_CASES, ids=[c[0] for c in ROW_CASES])
def test_every_hostile_line_is_one_error_naming_file_line_and_field(tmp_path, scorer, case, bad, message):
    key, text, command = SCORERS[scorer]
    path = _write(tmp_path / "answers.jsonl", key, text, bad)
    out = tmp_path / "result.json"
    line = one_error_line(CliRunner().invoke(app, [*command(tmp_path), str(path), "--out", str(out)]))
    assert f"{path}:2: " in line, line
    assert message.format(key=key, text=text) in line, line
    assert case != "answer missing" or f"'{text}'" in line
    assert not out.exists()


@pytest.mark.parametrize("scorer", list(SCORERS))
def test_a_json_list_file_names_the_line_of_the_bad_item(tmp_path, scorer):
    """AMBER's inference files are one JSON list: the faulty item is found by its line there too."""
    key, text, command = SCORERS[scorer]
    path = tmp_path / "answers.json"
    path.write_text("[\n" + ",\n".join(json.dumps({key: i, text: "A dog."}) for i in (1, 2)) + f',\n  {{"{key}": 1, '
                    f'"{text}": "again"}}\n]\n')
    line = one_error_line(CliRunner().invoke(app, [*command(tmp_path), str(path)]))
    assert f"{path}:4: {key} 1 is answered again (first on line 2)" in line


@pytest.mark.parametrize("scorer", list(SCORERS))
def test_missing_file_and_folder_are_one_line(tmp_path, scorer):
    key, text, command = SCORERS[scorer]
    line = one_error_line(CliRunner().invoke(app, [*command(tmp_path), str(tmp_path / "none.jsonl")]))
    assert f"answers file not found: {tmp_path / 'none.jsonl'}" in line
    (tmp_path / "dir.jsonl").mkdir()
    line = one_error_line(CliRunner().invoke(app, [*command(tmp_path), str(tmp_path / "dir.jsonl")]))
    assert f"answers file {tmp_path / 'dir.jsonl'} is a folder, not a file" in line


@pytest.mark.parametrize("scorer", list(SCORERS))
def test_good_files_still_score_and_text_ids_match_the_items(tmp_path, scorer):
    """The control: the same generator without a bad line scores; an id written as text ("2") is item 2."""
    key, text, command = SCORERS[scorer]
    path = _write(tmp_path / "answers.jsonl", key, text, json.dumps({key: "2", text: "A dog."}).encode())
    out = tmp_path / "result.json"
    result = CliRunner().invoke(app, [*command(tmp_path), str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    body = json.loads(out.read_text())
    assert body["meta"]["n"] == 3


# -- the pure scorers refuse duplicates in the lists they are given ------------------------------------
def test_pure_scorers_refuse_a_repeated_id(tmp_path):
    vocab = chair.load_vocabulary()
    rows = [{"image_id": 1, "answer": "A dog."}, {"image_id": 2, "answer": "A cat."}, {"image_id": 1, "answer": "x"}]
    truth = {1: {"dog"}, 2: {"cat"}}
    for score, name in ((chair.score_chair, "chair"), (__import__("mfpo_train.eval.objhal").eval.objhal.score_objhal,
                                                        "objhal")):
        with pytest.raises(MfpoError, match=rf"{name}: image_id 1 is answered twice \(answers 1 and 3\)"):
            score(rows, truth, vocab)
    questions = pope.read_pope_questions(_pope_questions(tmp_path))
    answers = [{"question_id": q, "answer": "Yes"} for q in (1, 2, 3, 2)]
    with pytest.raises(MfpoError, match=r"pope: question_id 2 is answered twice \(answers 2 and 4\)"):
        pope.score_pope(questions, answers)
    with pytest.raises(MfpoError, match="pope: question_id 9 is answered but not asked"):
        pope.score_pope(questions, [*answers[:3], {"question_id": 9, "answer": "No"}])
    data = amber.load_amber(_amber_root(tmp_path))
    with pytest.raises(MfpoError, match=r"amber: id 3 is answered twice \(answers 1 and 2\)"):
        amber.score_amber([{"id": 3, "response": "A dog."}, {"id": 3, "response": "A cat."}], data)


# -- question and annotation files ---------------------------------------------------------------------
POPE_QUESTION_CASES = [
    (b'{"question_id": [2], "image": "2.jpg", "text": "Is there a dog?", "label": "yes"}', "question_id must be"),
    (b'{"question_id": 2, "image": 5, "text": "Is there a dog?", "label": "yes"}', "field 'image' must be a string"),
    (b'{"question_id": 2, "image": "2.jpg", "label": "yes"}', "missing field 'text'"),
    (b'{"question_id": 2, "image": "2.jpg", "text": "Is there a dog?", "label": 5}', "field 'label' must be a string"),
    (b'{"question_id": 2, "image": "2.jpg", "text": "Is there a dog?", "label": "maybe"}', "label must be yes or no"),
    (b'{"question_id": 1, "image": "2.jpg", "text": "Is there a dog?", "label": "no"}',
     "question_id 1 appears again (first on line 1)"),
    (b'{"question_id": 2, "image": "\xff.jpg", "text": "?", "label": "no"}', "not UTF-8 text"),
    (b"[" * 100_000, "JSON nested too deeply"),
]


@pytest.mark.parametrize(("bad", "message"), POPE_QUESTION_CASES)
def test_hostile_pope_question_files(tmp_path, bad, message):
    path = _pope_questions(tmp_path)
    lines = path.read_bytes().splitlines()
    path.write_bytes(b"\n".join([lines[0], bad, lines[2]]) + b"\n")
    answers = _write(tmp_path / "a.jsonl", "question_id", "answer", b'{"question_id": 2, "answer": "No"}')
    line = one_error_line(CliRunner().invoke(app, ["pope", "--questions", str(path), "--answers", str(answers)]))
    assert f"{path}:2: {message}" in line, line


AMBER_FILE_CASES = [
    ("annotations.json", {"id": 2, "type": "generative", "truth": 5}, ":3: field 'truth' must be a list of words"),
    ("annotations.json", {"id": 2, "type": "generative", "truth": ["dog"], "hallu": [7]},
     ":3: field 'hallu' must be a list of words"),
    ("annotations.json", {"id": [2], "type": "generative", "truth": ["dog"]}, ":3: id must be an integer"),
    ("annotations.json", {"id": 2, "type": 4, "truth": ["dog"]}, ":3: field 'type' must be a string"),
    ("annotations.json", {"id": 2, "type": "discriminative-hallucination", "truth": ["no"]},
     ":3: field 'truth' must be a string"),
    ("annotations.json", {"id": 1, "type": "generative", "truth": ["dog"]}, ":3: id 1 appears again (first on line 2)"),
    ("relation.json", {"dog": "puppy"}, ": the entry 'dog' must be a list of words"),
    ("relation.json", ["dog"], ": expected a JSON object"),
]


@pytest.mark.parametrize(("name", "bad", "message"), AMBER_FILE_CASES)
def test_hostile_amber_files(tmp_path, name, bad, message):
    root = _amber_root(tmp_path)
    if name == "annotations.json":  # one item per line, the second one replaced
        items = json.loads((root / name).read_text())
        items[1] = bad
        (root / name).write_text("[\n" + ",\n".join(json.dumps(i) for i in items) + "\n]\n")
    else:
        (root / name).write_text(json.dumps(bad))
    answers = _write(tmp_path / "a.jsonl", "id", "response", b'{"id": 2, "response": "A dog."}')
    line = one_error_line(CliRunner().invoke(app, ["amber", "--amber-root", str(root), "--answers", str(answers)]))
    assert f"{root / name}{message}" in line, line


def test_non_utf8_safe_words_are_one_line(tmp_path):
    root = _amber_root(tmp_path)
    (root / "safe_words.txt").write_bytes(b"light\nfa\xe7ade\n")
    with pytest.raises(io.RecordError, match=r"safe_words.txt:2: not UTF-8 text \(byte 0xe7 at column 3\)"):
        amber.load_amber(root)


def test_objhal_question_file_with_wrong_id_type(tmp_path):
    from mfpo_train.eval import objhal

    path = tmp_path / "q.jsonl"
    path.write_text('{"image_id": 1, "question": "Describe."}\n{"image_id": {"id": 2}, "question": "Describe."}\n')
    with pytest.raises(io.RecordError, match=r"q.jsonl:2: image_id must be an integer, got an object"):
        objhal.read_objhal_questions(path)


COCO_CASES = [  # (section, index, replacement record, message)
    ("images", 0, {"id": [1], "file_name": "img1.jpg"}, "images[0]: 'id' must be an integer, got [1]"),
    ("images", 1, {"id": "2", "file_name": "img2.jpg"}, "images[1]: 'id' must be an integer, got \"2\""),
    ("images", 1, {"id": 2, "file_name": 7}, "images[1]: 'file_name' must be a string, got 7"),
    ("images", 1, {"id": 1, "file_name": "img1.jpg"}, "images[1]: image id 1 appears twice"),
    ("images", 1, 17, "images[1]: 'id' must be an integer, got no object"),
    ("annotations", 0, {"id": 1, "image_id": True, "category_id": 1}, "annotations[0]: 'image_id' must be an integer, got true"),
    ("annotations", 0, {"id": 1, "image_id": 1, "category_id": {"id": 1}},
     "annotations[0]: 'category_id' must be an integer, got {\"id\": 1}"),
    ("categories", 0, {"id": 1, "name": None}, "categories[0]: 'name' must be a string, got null"),
]


@pytest.mark.parametrize(("section", "index", "bad", "message"), COCO_CASES)
def test_hostile_coco_annotation_files(tmp_path, section, index, bad, message):
    from tests.fixtures.eval_coco import make_pope_coco

    root = make_pope_coco(tmp_path / "coco")
    path = root / "annotations" / "instances_val2014.json"
    data = json.loads(path.read_text())
    data[section][index] = bad
    path.write_text(json.dumps(data))
    answers = _write(tmp_path / "a.jsonl", "image_id", "answer", b'{"image_id": 2, "answer": "A dog."}')
    line = one_error_line(CliRunner().invoke(app, ["chair", "--coco-root", str(root), "--split", "val2014",
                                                    "--answers", str(answers)]))
    assert line == f"error: {path}: {message}", line


def test_a_question_whose_image_leaves_the_image_folder_is_one_line(tmp_path):
    """POPE files from --pope-questions name images; one that points outside COCO's folder is refused."""
    questions = tmp_path / "pope"
    questions.mkdir()
    sample = json.loads((Path(io.__file__).parents[2] / "mfpo_data/assets/coco_sample/annotations/"
                         "instances_sample.json").read_text())["images"][0]["file_name"]
    for sampling in pope.SAMPLINGS:
        names = [sample, "../../../../etc/passwd"] if sampling == "popular" else [sample, sample]
        (questions / f"coco_pope_{sampling}.json").write_text("".join(
            json.dumps({"question_id": i, "image": name, "text": "Is there a dog in the image?", "label": "yes"}) + "\n"
            for i, name in enumerate(names, 1)))
    result = CliRunner().invoke(app, ["run", "--model", str(tmp_path / "no-model"), "--benchmarks", "pope",
                                      "--pope-questions", str(questions), "--out", str(tmp_path / "eval")])
    line = one_error_line(result)
    assert line == ("error: POPE popular question 2: image '../../../../etc/passwd' leaves the image folder "
                    f"{Path(io.__file__).parents[2] / 'mfpo_data/assets/coco_sample/sample'}; image paths must stay "
                    "inside it")
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("scorer", list(SCORERS))
def test_out_that_is_a_folder_is_one_line(tmp_path, scorer):
    key, text, command = SCORERS[scorer]
    path = _write(tmp_path / "answers.jsonl", key, text, json.dumps({key: 2, text: "A dog."}).encode())
    (tmp_path / "results").mkdir()
    line = one_error_line(CliRunner().invoke(app, [*command(tmp_path), str(path), "--out", str(tmp_path / "results")]))
    assert line == (f"error: --out {tmp_path / 'results'} is a folder; give the path of a file to write (e.g. "
                    f"{tmp_path / 'results' / 'result.json'})")
    assert list((tmp_path / "results").iterdir()) == []


def test_the_readme_states_the_answer_limit_the_reader_keeps():
    from tests.paths import REPO

    assert f"an answer over {io.MAX_ANSWER_CHARS:,} characters" in " ".join((REPO / "README.md").read_text().split())


MMHAL_CASES = [  # line 2 of a 3-line MMHal answers file (answers by position, no ids) -> the message
    (b'{"model_answer": 5}', ":2: field 'model_answer' must be a string, got an integer"),
    (b'{"answer": "caf\xe9"}', ":2: not UTF-8 text"),
    (b'{"text": "' + b"a " * 60_000 + b'"}', ":2: field 'text' holds 120,000 characters, more than the 100,000"),
    (b'{"other": "x"}', ":2: missing field 'answer' or 'text' or 'model_answer'"),
    (b"", ": 2 answers for 3 questions (one per question, in the questions' order)"),
]


@pytest.mark.parametrize(("bad", "message"), MMHAL_CASES)
def test_hostile_mmhal_answer_files(tmp_path, bad, message):
    from mfpo_train.eval import mmhal

    path = tmp_path / "mmhal.jsonl"
    path.write_bytes(b'{"answer": "A dog."}\n' + bad + b'\n{"answer": "A cat."}\n')
    with pytest.raises(MfpoError) as err:
        mmhal.read_mmhal_answers(path, 3)
    assert str(err.value) == f"{path}{message}" or str(err.value).startswith(f"{path}{message}"), str(err.value)
