"""`mfpo-train` under two processes (torchrun, gloo, CPU) trains the model one process trains with the same pairs
per step: the same losses, probes and LoRA weights, the same curriculum and data; only the main process writes
and prints; a kill and `--resume` under two processes ends where the uninterrupted run does; a resume with another
number of processes is exact or refused in one line.

Three launches of two processes (about a minute on two cores), everything else in this process.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mfpo_train.cli import app
from tests.fixtures.hostile import one_error_line
from tests.fixtures.multiproc import (adapter, assert_same_run, assert_same_weights, cli_args, metrics, one_process,
                                     probed_data, torchrun)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return probed_data(tmp_path_factory.mktemp("published"))


@pytest.fixture(scope="module")
def one(tiny_llava, data, tmp_path_factory):
    """One process, batch 1 x accumulation 2: the run two processes must reproduce."""
    return one_process(tiny_llava, data, tmp_path_factory.mktemp("one") / "run")


@pytest.fixture(scope="module")
def two(tiny_llava, data, tmp_path_factory):
    """Two processes, batch 1 x accumulation 1 each: the same 2 pairs per optimizer step."""
    out = tmp_path_factory.mktemp("two") / "run"
    run = torchrun("-m", "mfpo_train.cli", *cli_args(tiny_llava, data, out))
    assert run.returncode == 0, run.stderr[-4000:]
    return out, run


def test_two_processes_train_what_one_process_trains(one, two):
    out, _ = two
    got, want = metrics(out), metrics(one)
    assert [m["step"] for m in want] == [1, 2, 3, 4, 5, 6]
    assert [m["stage"] for m in want if "stage" in m] == ["easy", "easy", "medium", "medium", "hard", "hard"]
    assert_same_run(got, want)  # losses, rewards, lr, grad norms, stages, and the probes at steps 3 and 6
    probed = [m for m in got if "eval/n" in m]
    assert [m["step"] for m in probed] == [3, 6] and all(m["eval/n"] == 5 for m in probed)  # gathered: 3 + 2 rows
    assert_same_weights(adapter(out), adapter(one))
    assert_same_weights(adapter(out / "checkpoints" / "step-00000004", "model"),
                        adapter(one / "checkpoints" / "step-00000004", "model"))


def test_only_the_main_process_prints_and_writes(two):
    out, run = two
    assert run.stdout.count("trained 6 steps") == 1 and run.stdout.count("weights: ") == 1, run.stdout
    saves = [line for line in run.stderr.splitlines() if "mfpo_train.checkpoint: saved checkpoint" in line]
    assert [s.rsplit("/", 1)[-1] for s in saves] == ["step-00000002", "step-00000004", "step-00000006"]
    assert "[rank 1]" not in run.stderr and run.stderr.count("training 6 steps over stages") == 1
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert [f for f in files if not f.startswith(("checkpoints/", "final/"))] == [".mfpo.lock", "config.json",
                                                                                  "metrics.jsonl"]
    for step in ("step-00000002", "step-00000004", "step-00000006"):  # each rank adds its own random state, no more
        names = sorted(f.split("/", 2)[2] for f in files if f.startswith(f"checkpoints/{step}/"))
        assert [n for n in names if n.startswith("rng_state")] == ["rng_state_0.json", "rng_state_0.safetensors",
                                                                   "rng_state_1.json", "rng_state_1.safetensors"]
        assert json.loads((out / "checkpoints" / step / "trainer_state.json").read_text())["world_size"] == 2
    assert sorted((out / "checkpoints").iterdir()) == [out / "checkpoints" / s for s in
                                                      ("step-00000002", "step-00000004", "step-00000006")]


def test_a_killed_two_process_run_resumes_to_the_uninterrupted_run(tiny_llava, data, two, tmp_path):
    out = tmp_path / "run"
    killed = torchrun("-m", "tests.fixtures.train_kill", "step", "5", "--", *cli_args(tiny_llava, data, out))
    assert killed.returncode != 0 and [m["step"] for m in metrics(out)] == [1, 2, 3, 4]
    assert "trained" not in killed.stdout
    resumed = torchrun("-m", "mfpo_train.cli", *cli_args(tiny_llava, data, out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert resumed.stdout.count("trained 6 steps") == 1
    assert_same_run(metrics(out), metrics(two[0]))
    assert_same_weights(adapter(out), adapter(two[0]))


def _copy_checkpoint(run: Path, step: str, to: Path) -> Path:
    shutil.copytree(run / "checkpoints" / step, to / "checkpoints" / step)
    shutil.copy(run / "config.json", to)
    shutil.copy(run / "metrics.jsonl", to)
    return to


def test_another_number_of_processes_resumes_exactly_or_is_refused(tiny_llava, data, two, tmp_path):
    run = two[0]
    # 1 process x accumulation 2 = the 2 pairs per step of 2 x 1, stages of 4 rows, no dropout: exact
    out = _copy_checkpoint(run, "step-00000004", tmp_path / "exact")
    resumed = CliRunner().invoke(app, cli_args(tiny_llava, data, out, "train.gradient_accumulation_steps=2")
                                 + ["--resume"])
    assert resumed.exit_code == 0, resumed.output[-3000:]
    assert_same_run(metrics(out), metrics(run))
    assert_same_weights(adapter(out), adapter(run))

    # 1 process x accumulation 1: another number of pairs per step
    out = _copy_checkpoint(run, "step-00000004", tmp_path / "refused")
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.name != ".mfpo.lock")
    refused = CliRunner().invoke(app, cli_args(tiny_llava, data, out) + ["--resume"])
    assert one_error_line(refused) == (
        f"error: --resume: the run in {out} took 2 pairs per optimizer step (2 processes x batch_size 1 x "
        "gradient_accumulation_steps 1), now 1 (1 x 1 x 1); its data position and schedule count steps of 2 pairs: "
        "set train.gradient_accumulation_steps=2")
    # dropout: its masks come from each process's random stream
    refused = CliRunner().invoke(app, cli_args(tiny_llava, data, out, "train.gradient_accumulation_steps=2",
                                               "lora.dropout=0.1") + ["--resume"])
    assert one_error_line(refused) == (
        "error: --resume with 1 processes instead of 2: lora.dropout 0.1 draws its masks from each process's random "
        "stream, which cannot be carried over to another number of processes; resume the run in "
        f"{out} with 2 processes")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.name != ".mfpo.lock") == before


def test_stages_that_are_not_whole_steps_refuse_another_number_of_processes(tmp_path):
    from mfpo_train.config import RunConfig
    from mfpo_train.errors import TrainingError
    from mfpo_train.rundir import check_processes

    (tmp_path / "config.json").write_text(json.dumps({"model": {}, "loss": {}, "train": {
        "output_dir": str(tmp_path), "batch_size": 2, "gradient_accumulation_steps": 2}}))
    same = RunConfig(batch_size=2, gradient_accumulation_steps=4)
    check_processes(tmp_path, 2, 1, same, 0.0, [8, 16])  # 8 pairs per step either way, whole steps
    check_processes(tmp_path, 2, 2, RunConfig(batch_size=2, gradient_accumulation_steps=2), 0.1, [3])  # same processes
    with pytest.raises(TrainingError, match="^--resume with 1 processes instead of 2: a stage of 12 rows is not a whole "
                                            "number of steps of 8 pairs"):
        check_processes(tmp_path, 2, 1, same, 0.0, [8, 12])


def test_a_process_removes_only_its_own_pickled_random_state(tmp_path):
    """accelerate writes random_states_{rank}.pkl on every process; removing all of them from each process raced
    (FileNotFoundError when another process had removed its own first, seen under DeepSpeed ZeRO-2)."""
    from mfpo_train.checkpoint import TrainState, save_checkpoint

    class SecondProcess:  # what save_checkpoint asks of accelerate's Accelerator, on rank 1 of 2
        process_index, is_main_process = 1, False

        def wait_for_everyone(self):
            pass

        def save_state(self, folder):
            Path(folder).mkdir(parents=True)
            for rank in (0, 1):
                (Path(folder) / f"random_states_{rank}.pkl").write_bytes(b"")

    save_checkpoint(SecondProcess(), tmp_path, TrainState(global_step=2))
    tmp = tmp_path / "checkpoints" / "step-00000002.tmp"  # the main process renames it
    assert sorted(p.name for p in tmp.iterdir()) == ["random_states_0.pkl", "rng_state_1.json",
                                                     "rng_state_1.safetensors"]


def test_the_readme_gives_the_launch_these_tests_run():
    from tests.paths import REPO

    readme = " ".join((REPO / "README.md").read_text().split())
    assert "ACCELERATE_USE_CPU=true torchrun --standalone --nproc_per_node 2 -m mfpo_train.cli --config debug" in readme


def test_the_data_order_of_two_processes_is_the_data_order_of_one(tmp_path):
    from mfpo_train.data import StageBatchSampler

    for stage in range(3):
        for epoch in range(2):
            one = list(StageBatchSampler(12, 2, seed=7, stage_index=stage, epoch=epoch))  # batch 2 (or 1 x accum 2)
            ranks = [list(StageBatchSampler(12, 1, seed=7, stage_index=stage, epoch=epoch, rank=r, world_size=2))
                     for r in range(2)]
            assert [sorted(b) for b in one] == [sorted(r0 + r1) for r0, r1 in zip(*ranks, strict=True)]


def test_a_launch_that_accelerate_runs_as_one_process_is_refused(monkeypatch):
    from mfpo_train.errors import TrainingError
    from mfpo_train.processes import make_accelerator

    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun without ACCELERATE_USE_CPU on a machine without GPUs
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    with pytest.raises(TrainingError, match=r"^launched as 2 processes \(WORLD_SIZE=2\), but accelerate runs 1 "):
        make_accelerator()


def test_precompute_ref_refuses_several_processes(tiny_llava, data, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # each process would score every row and write the same copy
    result = CliRunner().invoke(app, ["precompute-ref", "--output", str(tmp_path / "ref"),
                                      *cli_args(tiny_llava, data, tmp_path / "run")])
    assert one_error_line(result) == ("error: precompute-ref runs as one process: start it with mfpo-train (or python "
                                      "-m mfpo_train.cli), not torchrun or accelerate launch with several processes")
    assert not (tmp_path / "ref").exists()


def test_a_process_whose_share_of_a_step_cannot_be_trained_keeps_in_step(tiny_llava, tmp_path):
    """Rank 1's only pair of step 2 has an empty answer: it runs its step-1 pair again with weight 0 (DDP's
    all-reduce waits for every process's backward), rank 0's pair alone moves the weights, and the run ends."""
    import datasets

    from mfpo_data.schema import features
    from mfpo_train.data import StageBatchSampler
    from mfpo_train.synthetic import synthetic_rows

    rows = synthetic_rows(12)
    (first, second) = StageBatchSampler(4, 1, seed=0, stage_index=0, epoch=0, rank=1, world_size=2).batches
    rows[second[0]]["chosen"] = [{"role": "assistant", "content": [{"type": "text", "text": ""}]}]  # easy: rows 0-3
    (tmp_path / "data" / "data").mkdir(parents=True)
    datasets.Dataset.from_list(rows, features=features()).to_parquet(
        str(tmp_path / "data" / "data" / "train-00000-of-00001.parquet"))
    out = tmp_path / "run"
    run = torchrun("-m", "mfpo_train.cli", *cli_args(tiny_llava, tmp_path / "data", out, "train.save_every=null"))
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.stdout.count("trained 6 steps") == 1 and "1 rows skipped (empty answer" in run.stdout
    logged = metrics(out)
    assert [m["step"] for m in logged] == [1, 2, 3, 4, 5, 6] and all(m["skipped"] == 0 for m in logged)
    assert f"row syn-{second[0]:04d}: empty chosen answer; pair skipped" in run.stderr
