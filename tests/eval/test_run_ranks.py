"""`mfpo-eval run` launched with 2 CPU processes (torchrun, gloo): the items are shared, the answers and results
are a 1-process run's, a kill of one process resumes, and only the main process writes results and prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from typer.testing import CliRunner

from mfpo_train.eval.cli import app
from tests.fixtures.hostile import tree
from tests.paths import REPO


SPLITS = ("random", "popular", "adversarial")
# The launch the README gives for the CPU (gloo); on GPUs: accelerate launch --num_processes N -m mfpo_train.eval.cli
LAUNCH = ["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "mfpo_train.eval.cli", "run"]


def _launch(command: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    return subprocess.run([os.path.join(os.path.dirname(sys.executable), command[0]), *command[1:]], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env=env)


def test_the_readme_gives_this_launch():
    assert "ACCELERATE_USE_CPU=true " + " ".join(LAUNCH) + " " in (REPO / "README.md").read_text()


def test_two_processes_answer_like_one_and_resume_after_a_kill(tiny_models, tmp_path):
    args = ["--model", str(tiny_models["llava"]), "--benchmarks", "pope", "--batch-size", "4", "--max-new-tokens", "4"]
    one = tmp_path / "one"
    assert CliRunner().invoke(app, ["run", *args, "--out", str(one)]).exit_code == 0

    two = tmp_path / "two"
    # rank 1 dies at the start of its 3rd batch: 8 of its 15 pope-random answers are on disk, rank 0's part too
    killed = _launch([*LAUNCH[:5], "tests.fixtures.eval_kill", "rank", "1:3", "--", *args, "--out", str(two)])
    assert killed.returncode != 0
    on_disk = {p.name: len(p.read_text().splitlines()) for p in (two / "model").glob("pope-random.answers*.jsonl")}
    assert on_disk.get("pope-random.answers.rank1.jsonl") == 8 and "results.json" not in os.listdir(two)
    assert "pope-popular.answers.jsonl" not in os.listdir(two / "model")

    resumed = _launch([*LAUNCH, *args, "--out", str(two)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # the answers the killed run wrote are kept (merged first), only the others are generated
    assert f"pope-random: {sum(on_disk.values())} of 30 answers already in" in resumed.stderr
    # every file a 1-process run writes, byte for byte; no answers file of a single process is left
    expected = {k: v for k, v in tree(one).items() if k not in ("results.json", ".mfpo.lock")}
    assert {k: v for k, v in tree(two).items() if k not in ("results.json", ".mfpo.lock")} == expected
    one_report, two_report = (json.loads((d / "results.json").read_text()) for d in (one, two))
    assert two_report["settings"].pop("processes") == 2 and one_report["settings"].pop("processes") == 1
    assert two_report == one_report
    answers = [json.loads(line)["answer"] for s in SPLITS for line in
               (two / "model" / f"pope-{s}.answers.jsonl").read_text().splitlines()]
    assert len(answers) == 90 and len(set(answers)) > 5  # the model's own answers, which depend on the image
    # the main process alone prints the table and says where it wrote; no process is refused the folder
    assert resumed.stdout.count("| Model |") == 1 and resumed.stdout.count("wrote ") == 1
    assert "error" not in resumed.stderr and "another mfpo-eval run" not in resumed.stderr
    assert resumed.stderr.count("evaluating model") == 1


def test_a_refusal_is_said_once_by_the_main_process(tiny_models, tmp_path, monkeypatch):
    """Under a launcher: the main process prints its one line, the others end silently (both with code 1), and
    neither ends before the line is out (a barrier: the launcher stops every process once one has ended)."""
    from mfpo_train.eval import ranks as ranks_module

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    said = {}

    class Launched(ranks_module.Ranks):
        def barrier(self):
            said.setdefault("barriers", []).append(self.rank)

        def share(self, obj):
            if self.main:
                said["refusal"] = obj
            return said.get("refusal")

    outputs = {}
    for rank in (0, 1):
        monkeypatch.setattr(ranks_module, "launched_ranks", lambda rank=rank: Launched(rank, 2, "cpu"))
        result = CliRunner().invoke(app, ["run", "--model", str(tiny_models["llava"]), "--benchmarks", "pope",
                                          "--out", str(out)])
        assert result.exit_code == 1 and "Traceback" not in result.output
        outputs[rank] = result.output
    assert outputs[0].strip() == (f"error: output folder {out} is not empty and holds no mfpo-eval run (run.json) "
                                  "(e.g. 'notes.txt'); choose a new or empty folder")
    assert outputs[1] == "" and said["barriers"] == [0, 1]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
