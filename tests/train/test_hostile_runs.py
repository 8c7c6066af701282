"""`mfpo-train` keeps the build's promises: a folder of the user's files (a model folder) is refused and left
byte-identical, a damaged checkpoint or metrics file is one line before anything is written, rows that cannot be
trained are dropped and counted, a finished run is left alone, and a run killed at several points resumes to the
numbers of an uninterrupted one."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mfpo_train.cli import app
from tests.fixtures.hostile import one_error_line, tree
from tests.paths import REPO




def _args(model, data, out, *extra) -> list[str]:
    return ["--config", "debug", "--set", f"model.name_or_path={model}", "--set", f"data.dataset={data}",
            "--set", f"train.output_dir={out}", "--set", "train.report_to=[]", "--set", "train.batch_size=2",
            "--set", "train.save_every=2", *[a for x in extra for a in ("--set", x)]]


# -- user folders ---------------------------------------------------------------------------------------
def _user_folders(tiny_llava: Path) -> dict[str, dict[str, bytes]]:
    model = {p.name: p.read_bytes() for p in tiny_llava.iterdir() if p.is_file()}
    return {
        "a model folder": model,
        "notes": {"notes.txt": b"keep me\n"},
        "a config.json of another tool": {"config.json": b'{"lr": 0.1, "train": "yes"}\n'},
        "a config.json that is not UTF-8": {"config.json": b'{"model": "\xff"}'},
        "checkpoints of another trainer": {"checkpoints/step-1/weights.bin": b"\x00" * 16},
    }


@pytest.mark.parametrize("resume", [False, True], ids=["fresh", "resume"])
def test_a_folder_of_the_users_files_is_refused_and_left_alone(tiny_llava, synthetic_data, tmp_path, resume):
    for case, files in _user_folders(tiny_llava).items():
        out = tmp_path / case.replace(" ", "-")
        for name, data in files.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(data)
        before = tree(out)
        result = CliRunner().invoke(app, _args(tiny_llava, synthetic_data, out) + (["--resume"] if resume else []))
        first = sorted(p.name for p in out.iterdir())[0]
        assert one_error_line(result) == (f"error: output folder {out} is not empty and holds no mfpo-train run "
                                           f"(config.json) (e.g. {first!r}); choose a new or empty folder"), case
        assert tree(out) == before and not (out / ".mfpo.lock").exists(), case


def test_a_second_run_into_a_busy_folder_names_the_first_ones_pid(tiny_llava, synthetic_data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from pathlib import Path; from mfpo_data.folders import FolderLock\n"
        f"with FolderLock(Path({str(out)!r}), 'mfpo-train run'):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        line = one_error_line(CliRunner().invoke(app, _args(tiny_llava, synthetic_data, out)))
        assert line == (f"error: another mfpo-train run (pid {holder.pid}) is writing to {out}; wait for it to end or "
                        "choose another output folder")
        assert sorted(p.name for p in out.iterdir()) == [".mfpo.lock"]
    finally:
        holder.kill()
        holder.wait()


# -- a run, stopped after step 3 with a checkpoint at step 2 ---------------------------------------------
@pytest.fixture(scope="module")
def stopped_run(tiny_llava, synthetic_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("stopped") / "run"
    result = CliRunner().invoke(app, _args(tiny_llava, synthetic_data, out, "train.max_steps=3"))
    assert result.exit_code == 0, result.output[-3000:]
    return out


@pytest.fixture(scope="module")
def uninterrupted(tiny_llava, synthetic_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    result = CliRunner().invoke(app, _args(tiny_llava, synthetic_data, out))
    assert result.exit_code == 0, result.output[-3000:]
    return out


def _copy_of(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def _revouch(ckpt: Path) -> None:
    from mfpo_train.checkpoint import MANIFEST_FILE, _file_hashes

    (ckpt / MANIFEST_FILE).write_text(json.dumps(_file_hashes(ckpt)))


def _state(**changes) -> bytes:
    state = {"global_step": 2, "stage_index": 1, "epoch": 0, "step_in_epoch": 0, "nonfinite_steps": 0,
             "dropped_rows": 0, "undecodable_rows": 0, "invalid_rows": 0}
    state.update(changes)
    return json.dumps({k: v for k, v in state.items() if v is not ...}).encode()


STATE_CASES = {  # trainer_state.json of the step-2 checkpoint (re-vouched in its manifest) -> the one line's text
    "a negative step": (_state(global_step=-5, stage_index=3), "global_step must be a whole number >= 0, got -5"),
    "a step as text": (_state(global_step="2"), "global_step must be a whole number >= 0, got '2'"),
    "a step as a boolean": (_state(epoch=True), "epoch must be a whole number >= 0, got True"),
    "a step as a fraction": (_state(global_step=2.0), "global_step must be a whole number >= 0, got 2.0"),
    "a stage past the last": (_state(stage_index=7), "stage_index 7 is past the last stage"),
    "an epoch past the last": (_state(epoch=3), "epoch 3 is past the stage's last epoch"),
    "a position past the epoch": (_state(step_in_epoch=9), "step_in_epoch 9 is past the epoch's 2"),
    "finished by its counters": (_state(stage_index=3), "global_step 2 is not the step its position gives (6)"),
    "a step its position does not give": (_state(global_step=4, stage_index=2), "global_step 4 does not match the "
                                                                                 "checkpoint's name step-00000002"),
    "more non-finite steps than steps": (_state(nonfinite_steps=3), "nonfinite_steps 3 exceeds global_step 2"),
    "a key missing": (_state(stage_index=...), "not a trainer state"),
    "an unknown key": (_state(evil=1), "not a trainer state"),
    "a list": (b"[2, 1, 0, 0]", "not a trainer state"),
    "not JSON": (b'{"global_step": 2', "not valid JSON"),
    "not UTF-8": (b'{"global_step": 2, "\xff": 1}', "not UTF-8 text"),
    "nested 100,000 deep": (b"[" * 100_000, "JSON nested too deeply"),
}


@pytest.mark.parametrize("case", list(STATE_CASES))
def test_a_damaged_trainer_state_is_one_line_and_nothing_is_written(tiny_llava, synthetic_data, stopped_run,
                                                                     tmp_path, case):
    data, message = STATE_CASES[case]
    out = _copy_of(stopped_run, tmp_path)
    ckpt = out / "checkpoints" / "step-00000002"
    (ckpt / "trainer_state.json").write_bytes(data)
    _revouch(ckpt)
    before = tree(out)
    line = one_error_line(CliRunner().invoke(app, _args(tiny_llava, synthetic_data, out) + ["--resume"]))
    assert line.startswith(f"error: {ckpt / 'trainer_state.json'}") and message in line, line
    assert tree(out) == before and not (out / "final").exists()


SCHEDULER_CASES = {  # scheduler.json of the step-2 checkpoint -> the one line's text
    "last_epoch as text": (lambda s: {**s, "last_epoch": "2"}, "last_epoch must look like"),
    "a base_lrs that is not a list": (lambda s: {**s, "base_lrs": 0.001}, "base_lrs must look like"),
    "too many learning rates": (lambda s: {**s, "_last_lr": s["_last_lr"] * 2}, "_last_lr must look like"),
    "a key missing": (lambda s: {k: v for k, v in s.items() if k != "last_epoch"}, "not the state of this run's"),
    "an unknown key": (lambda s: {**s, "evil": 1}, "not the state of this run's"),
    "another step": (lambda s: {**s, "last_epoch": 5}, "last_epoch 5 is not the checkpoint's step 2"),
    "a list": (lambda s: [s], "not the state of this run's"),
}


@pytest.mark.parametrize("case", list(SCHEDULER_CASES))
def test_a_scheduler_state_of_wrong_types_is_one_line(tiny_llava, synthetic_data, stopped_run, tmp_path, case):
    change, message = SCHEDULER_CASES[case]
    out = _copy_of(stopped_run, tmp_path)
    ckpt = out / "checkpoints" / "step-00000002"
    (ckpt / "scheduler.json").write_text(json.dumps(change(json.loads((ckpt / "scheduler.json").read_text()))))
    _revouch(ckpt)
    before = tree(out)
    line = one_error_line(CliRunner().invoke(app, _args(tiny_llava, synthetic_data, out) + ["--resume"]))
    assert line.startswith(f"error: {ckpt / 'scheduler.json'}: ") and message in line, line
    assert tree(out) == before


def test_a_pickle_in_place_of_the_optimizer_state_is_one_line(tiny_llava, synthetic_data, stopped_run, tmp_path):
    """Vouched for by a rewritten manifest: accelerate's weights-only load refuses it, in one line, no code runs."""
    import pickle

    out = _copy_of(stopped_run, tmp_path)
    ckpt = out / "checkpoints" / "step-00000002"
    target = tmp_path / "planted-code-ran"
    (ckpt / "optimizer.bin").write_bytes(pickle.dumps(_Planted(target)))
    _revouch(ckpt)
    line = one_error_line(CliRunner().invoke(app, _args(tiny_llava, synthetic_data, out) + ["--resume"]))
    assert line.startswith(f"error: cannot load checkpoint {ckpt} (UnpicklingError: "), line
    assert not target.exists() and not (out / "final").exists()


class _Planted:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.write_text, (self.target, "ran"))


RESUME_CONFIG_CASES = {  # a --set that changes what the checkpoint means -> the key named
    "another LoRA rank": ("lora.r=4", "lora.r=8, the config now says 4"),
    "another LoRA alpha": ("lora.alpha=8", "lora.alpha=16, the config now says 8"),
    "no LoRA": ("lora.enabled=false", "lora.enabled=True, the config now says False"),
    "another batch size": ("train.batch_size=4", "train.batch_size=2, the config now says 4"),
    "another seed": ("train.seed=3", "train.seed=0, the config now says 3"),
}


@pytest.mark.parametrize("case", list(RESUME_CONFIG_CASES))
def test_resume_with_settings_that_change_the_checkpoint_is_one_line(tiny_llava, synthetic_data, stopped_run,
                                                                      tmp_path, case):
    change, message = RESUME_CONFIG_CASES[case]
    out = _copy_of(stopped_run, tmp_path)
    before = tree(out)
    line = one_error_line(CliRunner().invoke(app, _args(tiny_llava, synthetic_data, out, change) + ["--resume"]))
    assert line == (f"error: --resume: the run in {out} was trained with {message.split(', the')[0]}, the config now "
                    f"says {message.split('says ')[1]} (see {out / 'config.json'}); resume with the run's settings, or "
                    "set train.output_dir to a new folder"), line
    assert tree(out) == before


METRICS_CASES = {  # line 2 of metrics.jsonl -> the one line's text
    "not UTF-8": (b'{"step": 2, "loss": "\xff"}', ":2: not UTF-8 text"),
    "not JSON": (b'{"step": 2, "loss": ', ":2: not valid JSON"),
    "a step as text": (b'{"step": "2"}', ":2: 'step' must be a whole number >= 0, got '2'"),
    "no step": (b'{"loss": 1.0}', ":2: 'step' must be a whole number >= 0, got None"),
}


@pytest.mark.parametrize("case", list(METRICS_CASES))
def test_a_damaged_metrics_file_says_which_line_to_fix(tiny_llava, synthetic_data, stopped_run, tmp_path, case):
    bad, message = METRICS_CASES[case]
    out = _copy_of(stopped_run, tmp_path)
    lines = (out / "metrics.jsonl").read_bytes().splitlines(keepends=True)
    (out / "metrics.jsonl").write_bytes(lines[0] + bad + b"\n" + b"".join(lines[2:]))
    before = tree(out)
    line = one_error_line(CliRunner().invoke(app, _args(tiny_llava, synthetic_data, out) + ["--resume"]))
    assert line.startswith(f"error: {out / 'metrics.jsonl'}{message}") and line.endswith(
        "; fix line 2 of the metrics file, or delete it, and rerun with --resume"), line
    assert tree(out) == before


# -- a finished run ------------------------------------------------------------------------------------
def test_resume_on_a_finished_run_does_nothing_and_says_so(tiny_llava, synthetic_data, uninterrupted, tmp_path):
    out = _copy_of(uninterrupted, tmp_path)
    before = tree(out)
    result = CliRunner().invoke(app, _args(tiny_llava, synthetic_data, out) + ["--resume"])
    assert result.exit_code == 0, result.output[-3000:]
    assert result.output.strip().splitlines()[-1] == (f"nothing to do: the run in {out} finished at step 6 (weights in "
                                                      f"{out / 'final'})")
    assert tree(out) == before


def test_resume_at_max_steps_does_nothing_and_says_how_to_go_on(tiny_llava, synthetic_data, tmp_path):
    out = tmp_path / "run"
    assert CliRunner().invoke(app, _args(tiny_llava, synthetic_data, out, "train.max_steps=2")).exit_code == 0
    before = tree(out)
    result = CliRunner().invoke(app, _args(tiny_llava, synthetic_data, out, "train.max_steps=2") + ["--resume"])
    assert result.exit_code == 0 and result.output.strip().splitlines()[-1] == (
        f"nothing to do: the run in {out} finished at step 2 (stopped at train.max_steps: raise it, or remove it, to "
        "train on)")
    assert tree(out) == before


# -- rows that cannot be trained -------------------------------------------------------------------------
def _hostile_rows(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    import datasets

    from mfpo_data.schema import features
    from mfpo_train.synthetic import synthetic_rows

    rows = synthetic_rows(12)
    bad = {
        "syn-0001": ("chosen", lambda r: [{"role": "assistant", "content": [{"type": "text", "text": "  "}]}]),
        "syn-0004": ("rejected", lambda r: []),
        "syn-0006": ("rejected_images", lambda r: r["rejected_images"] * 2),
        "syn-0009": ("images", lambda r: []),
        "syn-0010": ("rejected_images", lambda r: []),
    }
    for row in rows:
        if row["id"] in bad:
            column, change = bad[row["id"]]
            row[column] = change(row)
    (tmp_path / "data" / "data").mkdir(parents=True)
    datasets.Dataset.from_list(rows, features=features()).to_parquet(
        str(tmp_path / "data" / "data" / "train-00000-of-00001.parquet"))
    return tmp_path / "data", {
        "syn-0001": "empty chosen answer", "syn-0004": "empty rejected answer",
        "syn-0006": "1 images but 2 rejected_images", "syn-0009": "no image", "syn-0010": "1 images but 0 rejected_images"}


def test_rows_that_cannot_be_trained_are_dropped_counted_and_found_by_dry_run(tiny_llava, tmp_path, caplog):
    from mfpo_train.config import load_config
    from mfpo_train.train import train

    data, reasons = _hostile_rows(tmp_path)
    dry = CliRunner().invoke(app, _args(tiny_llava, data, tmp_path / "run") + ["--dry-run"])
    assert dry.exit_code == 0, dry.output[-3000:]
    assert dry.output.strip().endswith(
        "; 5 rows cannot be trained and will be skipped (images and rejected_images differ in count 2, empty chosen "
        "answer 1, empty rejected answer 1, no image 1; ids syn-0001, syn-0004, syn-0006, syn-0009, syn-0010)")
    cfg = load_config("debug", [f"model.name_or_path={tiny_llava}", f"data.dataset={data}", "train.report_to=[]",
                                f"train.output_dir={tmp_path / 'run'}", "train.batch_size=2", "train.save_every=null"])
    result = train(cfg)
    assert result.state.invalid_rows == 5 and result.history[-1]["invalid_rows"] == 5
    assert result.final_dir is not None and all(h["skipped"] == 0 for h in result.history)
    for row_id, why in reasons.items():
        assert f"row {row_id}: {why}; pair skipped" in caplog.text


# -- killed runs resume ----------------------------------------------------------------------------------
KILL_POINTS = [("step", "2"), ("step", "4"), ("checkpoint", "4"), ("final", "-")]


@pytest.mark.parametrize(("point", "arg"), KILL_POINTS, ids=[f"{p}-{a}" for p, a in KILL_POINTS])
def test_a_killed_run_resumes_to_the_numbers_of_an_uninterrupted_one(tiny_llava, synthetic_data, uninterrupted,
                                                                     tmp_path, point, arg):
    out = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-m", "tests.fixtures.train_kill", point, arg, "--",
                             *_args(tiny_llava, synthetic_data, out)], cwd=REPO, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = CliRunner().invoke(app, _args(tiny_llava, synthetic_data, out) + ["--resume"])
    assert resumed.exit_code == 0, resumed.output[-3000:]
    got = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    want = [json.loads(line) for line in (uninterrupted / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in got] == [m["step"] for m in want] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(got, want, strict=True):
        for key in ("loss", "rewards/margins", "image_rewards/margins", "lr"):
            assert math.isclose(a[key], b[key], rel_tol=0, abs_tol=1e-5), (a["step"], key)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000002", "step-00000004",
                                                                        "step-00000006"]
    assert (out / "final" / "adapter_model.safetensors").is_file()


def test_precompute_ref_refuses_a_folder_of_the_users_files(tiny_llava, synthetic_data, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me\n")
    result = CliRunner().invoke(app, ["precompute-ref", "--config", "debug", "--set", f"model.name_or_path={tiny_llava}",
                                      "--set", f"data.dataset={synthetic_data}", "--output", str(out)])
    assert one_error_line(result) == (f"error: output folder {out} is not empty and holds no copy written by "
                                      "precompute-ref (reference.json) (e.g. 'notes.txt'); choose a new or empty folder")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_precompute_ref_leaves_rows_that_cannot_be_trained_without_log_probs(tiny_llava, tmp_path):
    import datasets

    data, reasons = _hostile_rows(tmp_path)
    result = CliRunner().invoke(app, ["precompute-ref", "--config", "debug", "--set", f"model.name_or_path={tiny_llava}",
                                      "--set", f"data.dataset={data}", "--set", "train.batch_size=4",
                                      "--output", str(tmp_path / "ref")])
    assert result.exit_code == 0, result.output[-3000:]
    assert json.loads((tmp_path / "ref" / "reference.json").read_text())["rows_without_logps"] == len(reasons)
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "ref" / "data" / "*.parquet"), split="train")
    nulls = {row_id for row_id, value in zip(ds["id"], ds["ref_chosen_logps"], strict=True) if value is None}
    assert nulls == set(reasons)
