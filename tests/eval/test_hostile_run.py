"""`mfpo-eval run` keeps the build's promises: a folder of the user's files is refused and left byte-identical,
two runs into one folder never both write, a killed run resumes to the numbers of an uninterrupted one, and a
damaged answers file or run.json is one line that says what to fix."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from mfpo_data.backends import vlm
from mfpo_train.eval.cli import app
from tests.fixtures.eval_kill import fake_answers
from tests.fixtures.hostile import one_error_line, tree
from tests.paths import REPO


SPLITS = ("random", "popular", "adversarial")


def _args(model, out) -> list[str]:
    return ["--model", str(model), "--benchmarks", "pope", "--batch-size", "8", "--max-new-tokens", "4",
            "--out", str(out)]


def _invoke(args):
    return CliRunner().invoke(app, ["run", *args])




def _kill_run(model, out, mode: str, arg: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.fixtures.eval_kill", mode, arg, "--", *_args(model, out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture
def fake_model(monkeypatch):
    """The tests' answers, in this process too (the same as tests/fixtures/eval_kill.py gives)."""
    calls = []
    monkeypatch.setattr(vlm, "generate_batch", lambda m, p, items, n: calls.append(len(items)) or fake_answers(items))
    return calls


@pytest.fixture(scope="module")
def uninterrupted(tiny_models, tmp_path_factory):
    """A run that was never killed: its files are what every resumed run must end with."""
    out = tmp_path_factory.mktemp("uninterrupted") / "eval"
    done = _kill_run(tiny_models["llava"], out, "none", "-")
    assert done.returncode == 0, done.stderr[-3000:]
    return out


# -- user files ---------------------------------------------------------------------------------------
USER_FOLDERS = {  # what a user's folder holds -> the name the refusal shows
    "a results table": ({"results.md": b"| my table |\n"}, "results.md"),
    "results of their own": ({"results.json": b'{"mine": 1}\n'}, "results.json"),
    "their benchmark files": ({"benchmarks/coco_pope_random.json": b'{"question_id": 1}\n'}, "benchmarks"),
    "a run.json of another tool": ({"run.json": b'{"lr": 0.1}\n'}, "run.json"),
    "a run.json that is not JSON": ({"run.json": b"\xff\xfe"}, "run.json"),
    "notes": ({"notes.txt": b"do not delete\n"}, "notes.txt"),
}


@pytest.mark.parametrize("case", list(USER_FOLDERS))
def test_a_folder_of_the_users_files_is_refused_and_left_alone(tmp_path, case):
    files, first = USER_FOLDERS[case]
    out = tmp_path / "mine"
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    before = tree(out)
    line = one_error_line(_invoke(_args(tmp_path / "no-model", out)))
    assert line == (f"error: output folder {out} is not empty and holds no mfpo-eval run (run.json) (e.g. {first!r}); "
                    "choose a new or empty folder")
    assert tree(out) == before and not (out / ".mfpo.lock").exists()


def test_out_that_is_a_file_or_the_home_folder_is_one_line(tmp_path, monkeypatch):
    target = tmp_path / "results.md"
    target.write_bytes(b"mine\n")
    line = one_error_line(_invoke(_args(tmp_path / "no-model", target)))
    assert line == f"error: output folder {target} is a file, not a folder: choose another --out folder"
    assert target.read_bytes() == b"mine\n"
    monkeypatch.setenv("HOME", str(tmp_path))
    line = one_error_line(_invoke(_args(tmp_path / "no-model", "~")))
    assert line == f"error: output folder {tmp_path} is the home folder: choose another --out folder"


DAMAGED_RUN_JSON = {
    "not UTF-8": (b'{"format": "mfpo-eval/1", "x": "\xe9"}', "run.json:1: not UTF-8 text"),
    "nested 100,000 deep": (b"[" * 100_000, "run.json: JSON nested too deeply"),
    "cut short": (b'{"format": "mfpo-eval/1", "mod', "run.json:1: not valid JSON"),
    "a list": (b'["mfpo-eval/1"]', 'run.json is not a run.json of mfpo-eval (no "format": "mfpo-eval/1")'),
    "another format": (b'{"format": "mfpo-eval/9"}', "run.json is not a run.json of mfpo-eval"),
}


@pytest.mark.parametrize("case", list(DAMAGED_RUN_JSON))
def test_a_damaged_run_json_is_one_line_and_nothing_is_written(tiny_models, uninterrupted, tmp_path, fake_model, case):
    data, message = DAMAGED_RUN_JSON[case]
    out = tmp_path / "eval"
    shutil.copytree(uninterrupted, out)
    (out / "model" / "run.json").write_bytes(data)
    before = tree(out)
    line = one_error_line(_invoke(_args(tiny_models["llava"], out)))
    assert message in line and f"{out / 'model'}" in line, line
    assert tree(out) == before


# -- two runs into one folder --------------------------------------------------------------------------
def test_a_second_run_into_a_busy_folder_names_the_first_ones_pid(tiny_models, uninterrupted, tmp_path):
    out, go = tmp_path / "eval", tmp_path / "go"
    first = subprocess.Popen([sys.executable, "-m", "tests.fixtures.eval_kill", "wait", str(go), "--",
                              *_args(tiny_models["llava"], out)], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 240
        while not list(out.glob("model/*.answers.jsonl")) and time.monotonic() < deadline:  # generating, lock held
            assert first.poll() is None, first.communicate()[1][-3000:]
            time.sleep(0.1)
        second = subprocess.run([sys.executable, "-m", "mfpo_train.eval.cli", "run", *_args(tiny_models["llava"], out)],
                                cwd=REPO, capture_output=True, text=True, timeout=300)
        assert second.returncode == 1
        assert second.stderr.strip().splitlines() == [
            f"error: another mfpo-eval run (pid {first.pid}) is writing to {out}; wait for it to end or choose "
            "another output folder"]
    finally:
        go.touch()
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    assert tree(out) == tree(uninterrupted)  # every answer once, the numbers of a run that was alone
    assert _invoke(_args(tiny_models["llava"], out)).exit_code == 0  # the folder is free again


# -- killed runs resume ----------------------------------------------------------------------------------
KILL_POINTS = [
    ("generate", "2"),  # one batch of pope-random on disk
    ("generate", "5"),  # pope-random complete, pope-popular not started
    ("write", "pope-random.result.json"),  # every answer on disk, the first score half-written
    ("write", "results.json"),
    ("write", "results.md"),
]


@pytest.mark.parametrize(("mode", "arg"), KILL_POINTS, ids=[f"{m}-{a}" for m, a in KILL_POINTS])
def test_a_killed_run_resumes_to_the_uninterrupted_files(tiny_models, uninterrupted, tmp_path, fake_model, mode, arg):
    out = tmp_path / "eval"
    killed = _kill_run(tiny_models["llava"], out, mode, arg)
    assert killed.returncode == -9, killed.stderr[-3000:]
    if mode == "generate" and arg == "2":  # and the kill came half-way through a line
        with open(out / "model" / "pope-random.answers.jsonl", "a") as f:
            f.write('{"key": "9", "ans')
    result = _invoke(_args(tiny_models["llava"], out))
    assert result.exit_code == 0, result.output[-3000:]
    generated = sum(fake_model)
    expected = {"2": 90 - 8, "5": 90 - 30}.get(arg, 0) if mode == "generate" else 0
    assert generated == expected  # only what the killed run had not written
    assert tree(out) == tree(uninterrupted)  # the half-written temp file is replaced too


# -- a damaged answers file of a resumed run -----------------------------------------------------------
RESUME_CASES = [  # line 3 of the answers file replaced by ... -> what the one line says
    (b'{"key": "3", "answer": "caf\xe9"}', "not UTF-8 text"),
    (b'{"key": "3", "answer": "x", "n": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "JSON nested too deeply"),
    (b'{"key": "3", "ans', "not valid JSON"),
    (b'["3", "Yes."]', "expected a JSON object, got a list"),
    (b'{"key": 3, "answer": "Yes."}', "key must be a string, got an integer 3"),
    (b'{"key": "3", "answer": 5}', "field 'answer' must be a string, got an integer"),
    (b'{"key": "3"}', "missing field 'answer'"),
    (b'{"key": "1", "answer": "Yes."}', "key '1' is answered again (first on line 1)"),
    (b'{"key": "99999", "answer": "Yes."}', "key '99999' is not in this run's item set"),
    (b'{"key": "3", "prompt": "Is there a unicorn in the image?", "answer": "Yes."}',
     "item '3' was answered for another prompt"),
]


@pytest.mark.parametrize(("bad", "message"), RESUME_CASES, ids=[m for _, m in RESUME_CASES])
def test_a_damaged_answers_file_says_which_line_to_fix_or_delete(tiny_models, uninterrupted, tmp_path, fake_model,
                                                                 bad, message):
    out = tmp_path / "eval"
    shutil.copytree(uninterrupted, out)
    answers = out / "model" / "pope-random.answers.jsonl"
    lines = answers.read_bytes().splitlines(keepends=True)
    answers.write_bytes(b"".join([*lines[:2], bad + b"\n", *lines[3:]]))
    before, calls = tree(out), len(fake_model)
    line = one_error_line(_invoke(_args(tiny_models["llava"], out)))
    assert line.startswith(f"error: {answers}:3: ") and message in line, line
    assert line.endswith("; this answers file is resumed by the run: fix line 3, or delete it (its item is "
                         "generated again), and rerun")
    assert tree(out) == before and len(fake_model) == calls

    answers.write_bytes(b"".join([*lines[:2], *lines[3:]]))  # the user deletes the line
    del fake_model[:]
    assert _invoke(_args(tiny_models["llava"], out)).exit_code == 0
    assert fake_model == [1]  # that one item is generated again
    resumed = tree(out)
    ordered = {k: v for k, v in resumed.items() if k != "model/pope-random.answers.jsonl"}
    assert ordered == {k: v for k, v in tree(uninterrupted).items() if k != "model/pope-random.answers.jsonl"}
    assert sorted(resumed["model/pope-random.answers.jsonl"].splitlines()) == sorted(
        tree(uninterrupted)["model/pope-random.answers.jsonl"].splitlines())


def test_the_notebook_api_claims_its_out_dir_the_same_way(tiny_models, tmp_path, fake_model):
    from mfpo_data.folders import OutputFolderError
    from mfpo_train.eval import evaluate
    from mfpo_data.backends.vlm import load_vlm

    model, processor = load_vlm(tiny_models["llava"])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.json").write_text('{"mine": 1}\n')
    with pytest.raises(OutputFolderError, match="is not empty and holds no mfpo-eval run"):
        evaluate(model, processor, benchmark="pope", out_dir=mine, progress=False)
    assert [p.name for p in mine.iterdir()] == ["results.json"]
    first = evaluate(model, processor, benchmark="pope", out_dir=tmp_path / "ev", progress=False)
    calls = len(fake_model)
    again = evaluate(model, processor, benchmark="pope", out_dir=tmp_path / "ev", progress=False)
    assert again == first and len(fake_model) == calls  # resumed: nothing generated again
    assert json.loads((tmp_path / "ev" / "run.json").read_text())["format"] == "mfpo-eval/1"
