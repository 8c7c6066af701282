"""The user's paths through `mfpo-train` that must never corrupt a run or run planted code.

Reruns into a run folder, resume without duplicated metrics, `save_total_limit`, checkpoints that are
verified against their manifest before anything in them is read, undecodable images, plain DPO on a
TRL-only dataset, configs by name, and the tiny model a user writes for the debug config.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from mfpo_train.errors import TrainingError


ROOT = Path(__file__).resolve().parents[2]


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "mfpo_train.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def _steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


class _WritesAFile:
    """Unpickling this object writes `target`: what a planted checkpoint file would do."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.write_text, (self.target, "planted code ran"))


def test_rerun_into_a_run_folder_without_resume_is_refused(tiny_llava, synthetic_data, tmp_path):
    run = tmp_path / "run"
    common = ["--config", "debug", "--set", f"model.name_or_path={tiny_llava}", "--set",
              f"data.dataset={synthetic_data}", "--set", f"train.output_dir={run}", "--set", "train.max_steps=2"]
    first = _cli(*common)
    assert first.returncode == 0, first.stderr[-2000:]
    before = (run / "metrics.jsonl").read_bytes()
    again = _cli(*common)
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert _error_lines(again.stderr) == [f"error: {run} holds a training run already (metrics.jsonl, checkpoints): "
                                          "pass --resume to continue it, or set train.output_dir to a new folder"]
    assert (run / "metrics.jsonl").read_bytes() == before


def test_resume_logs_every_step_once_and_save_total_limit_keeps_the_newest(tiny_llava, synthetic_data, make_config,
                                                                           tmp_path):
    from mfpo_train.train import train

    run = tmp_path / "run"
    opts = ("train.batch_size=2", "train.save_every=2", "train.save_total_limit=2")
    train(make_config(tiny_llava, synthetic_data, *opts, "train.max_steps=3", output_dir=run))
    assert _steps(run) == [1, 2, 3]  # step 3 is logged, but the last checkpoint is step 2
    train(make_config(tiny_llava, synthetic_data, *opts, output_dir=run), resume=True)
    assert _steps(run) == [1, 2, 3, 4, 5, 6]
    # checkpoints at 2, 4 and 6 (save_every) and at the stage ends (2, 4, 6): the newest two are kept
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000004", "step-00000006"]


@pytest.fixture
def checkpointed_run(tiny_llava, synthetic_data, make_config, tmp_path):
    """A run stopped after step 2 with a checkpoint there, and a config to resume it."""
    from mfpo_train.train import train

    run = tmp_path / "run"
    opts = ("train.batch_size=2", "train.save_every=2")
    train(make_config(tiny_llava, synthetic_data, *opts, "train.max_steps=2", output_dir=run))
    ckpt = run / "checkpoints" / "step-00000002"
    assert (ckpt / "manifest.json").is_file() and not list(ckpt.glob("*.pkl"))
    return make_config(tiny_llava, synthetic_data, *opts, output_dir=run), ckpt


def test_a_planted_pickle_in_a_checkpoint_is_never_executed(checkpointed_run, tmp_path):
    from mfpo_train.train import train

    cfg, ckpt = checkpointed_run
    target = tmp_path / "planted-code-ran.txt"
    # accelerate would read these with pickle: registered objects with weights_only=False, RNG states with True
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl"):
        (ckpt / name).write_bytes(pickle.dumps(_WritesAFile(target)))
    with pytest.raises(TrainingError, match=r"holds pickle files mfpo-train never writes \(custom_checkpoint_0"
                                            r"\.pkl, random_states_0\.pkl\)"):
        train(cfg, resume=True)
    assert not target.exists()
    # vouched for by a rewritten manifest, they are refused all the same (accelerate would die on them)
    from mfpo_train.checkpoint import MANIFEST_FILE, _file_hashes

    (ckpt / MANIFEST_FILE).write_text(json.dumps(_file_hashes(ckpt)))
    with pytest.raises(TrainingError, match=r"holds pickle files mfpo-train never writes"):
        train(cfg, resume=True)
    assert not target.exists()


def test_a_tampered_checkpoint_is_refused(checkpointed_run):
    from mfpo_train.train import train

    cfg, ckpt = checkpointed_run
    weights = ckpt / "model" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(TrainingError, match=r"changed files: model/adapter_model\.safetensors"):
        train(cfg, resume=True)
    (ckpt / "manifest.json").unlink()
    with pytest.raises(TrainingError, match="has no manifest.json"):
        train(cfg, resume=True)


def test_a_corrupt_rng_state_is_an_error_not_an_inexact_resume(checkpointed_run):
    from mfpo_train.checkpoint import MANIFEST_FILE, _file_hashes
    from mfpo_train.train import train

    cfg, ckpt = checkpointed_run
    (ckpt / "rng_state_0.json").write_text('{"python": [3, [1, 2], null]}')  # a truncated state
    (ckpt / MANIFEST_FILE).write_text(json.dumps(_file_hashes(ckpt)))  # vouched for, so only the content is wrong
    with pytest.raises(TrainingError, match="cannot restore the random state of rank 0"):
        train(cfg, resume=True)


def test_an_undecodable_image_skips_its_pair_and_is_counted(tiny_llava, make_config, tmp_path):
    import datasets

    from mfpo_data.schema import features
    from mfpo_train.synthetic import synthetic_rows
    from mfpo_train.train import train

    rows = synthetic_rows(12)
    ds = datasets.Dataset.from_list(rows, features=features())
    broken = ds.cast_column("images", datasets.List(datasets.Image(decode=False)))
    bad = {0, 5}
    fixed = broken.map(lambda r, i: {"images": [{"bytes": b"not an image", "path": None}]} if i in bad else {},
                       with_indices=True, features=broken.features)
    (tmp_path / "data" / "data").mkdir(parents=True)
    fixed.cast_column("images", features()["images"]).to_parquet(
        str(tmp_path / "data" / "data" / "train-00000-of-00001.parquet"))
    result = train(make_config(tiny_llava, tmp_path / "data", "curriculum=none", "train.batch_size=4"))
    assert result.state.undecodable_rows == 2
    assert result.history[-1]["undecodable_rows"] == 2
    assert result.state.global_step == 3 and all(h["skipped"] == 0 for h in result.history)


def _trl_only_dataset(tmp_path: Path) -> Path:
    import datasets

    from mfpo_train.synthetic import synthetic_rows

    rows = [{k: r[k] for k in ("images", "prompt", "chosen", "rejected")} for r in synthetic_rows(6)]
    (tmp_path / "trl" / "data").mkdir(parents=True)
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "trl" / "data" / "train-00000-of-00001.parquet"))
    return tmp_path / "trl"


def test_plain_dpo_on_a_trl_dataset_when_the_image_weight_is_zero(tiny_llava, make_config, tmp_path):
    from mfpo_train.train import train

    trl = _trl_only_dataset(tmp_path)
    result = train(make_config(tiny_llava, trl, "loss.image_weight=0", "train.batch_size=2"))
    assert result.state.global_step == 3  # 6 rows, one stage (no difficulty_bucket), batch 2
    assert {h["stage"] for h in result.history} == {"all"}
    assert all("image_rewards/margins" not in h and "rewards/margins" in h for h in result.history)


def test_the_image_term_on_a_trl_dataset_says_what_it_needs(tmp_path):
    trl = _trl_only_dataset(tmp_path)
    out = _cli("--config", "debug", "--set", f"data.dataset={trl}", "--set", f"train.output_dir={tmp_path / 'run'}")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    [line] = _error_lines(out.stderr)
    assert "the image term (loss.image_weight > 0) needs rejected_images" in line
    assert "loss.image_weight=0 to train plain DPO" in line


def test_configs_by_name_and_listed_from_any_folder(tmp_path):
    listed = _cli("configs", cwd=tmp_path)  # no ./recipes here: the shipped configs
    assert listed.returncode == 0
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert {"debug", "llava15_7b_lora"} <= set(names)
    shown = _cli("--config", "debug", "--print-config", cwd=tmp_path)
    assert shown.returncode == 0 and "name_or_path: runs/tiny-llava" in shown.stdout
    unknown = _cli("--config", "nope", cwd=tmp_path)
    assert unknown.returncode == 1
    assert _error_lines(unknown.stderr) == ["error: no training config named 'nope' (see `mfpo-train configs`)"]


def test_make_tiny_model_writes_a_loadable_model_and_never_overwrites(tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = _cli("make-tiny-model", str(tmp_path / "tiny"))
    assert out.returncode == 0, out.stderr[-2000:]
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "tiny")
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert AutoProcessor.from_pretrained(tmp_path / "tiny").chat_template
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    refused = _cli("make-tiny-model", str(tmp_path / "mine"))
    assert refused.returncode == 1
    assert _error_lines(refused.stderr) == [f"error: {tmp_path / 'mine'} exists and is not an empty folder; "
                                            "choose a new one"]
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_model_that_is_not_there_is_one_line_and_claims_no_folder(synthetic_data, tmp_path):
    run = tmp_path / "run"
    common = ["--config", "debug", "--set", f"data.dataset={synthetic_data}", "--set", f"train.output_dir={run}"]
    folder = _cli(*common, "--set", f"model.name_or_path={tmp_path / 'no-model'}")
    assert folder.returncode == 1 and "Traceback" not in folder.stderr
    assert _error_lines(folder.stderr) == [f"error: cannot load model {tmp_path / 'no-model'}: no model folder at "
                                           f"{tmp_path / 'no-model'} (model.name_or_path): point model.name_or_path at "
                                           "a folder with the model's config.json"]
    hub = _cli(*common, "--set", "model.name_or_path=org/not-cached-model")
    assert hub.returncode == 1 and "Traceback" not in hub.stderr
    assert _error_lines(hub.stderr) == [
        "error: cannot load model org/not-cached-model: model 'org/not-cached-model' (model.name_or_path) is neither "
        "a local folder nor in the Hugging Face cache and the Hub is offline (HF_HUB_OFFLINE): download it (hf download org/not-cached-model) or point "
        "model.name_or_path at a local folder"]


def test_ctrl_c_in_training_says_how_to_resume(monkeypatch, synthetic_data, tmp_path):
    from typer.testing import CliRunner

    import mfpo_train.train as train_module
    from mfpo_train.cli import app

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train", interrupted)
    result = CliRunner().invoke(app, ["--config", "debug", "--set", f"train.output_dir={tmp_path / 'run'}"])
    assert result.exit_code == 130
    assert result.output.strip().splitlines()[-1] == (
        "interrupted: rerun the same command with --resume to continue from the last checkpoint "
        "(train.save_every sets how often one is written)")
