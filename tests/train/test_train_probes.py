"""`mfpo-train` with an eval split: probes logged as eval/* every `train.eval_steps` and at the end; the summary."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mfpo_train.eval import probes as probe_lib
from mfpo_train.train import train


@pytest.fixture(scope="module")
def with_test_split(tmp_path_factory):
    """Synthetic rows laid out like `mfpo-data publish --test-size`: data/train-*.parquet and data/test-*.parquet."""
    from mfpo_train.synthetic import synthetic_dataset, write_build_output

    out = write_build_output(tmp_path_factory.mktemp("published"), n=12)
    synthetic_dataset(6, seed=1).to_parquet(str(out / "data" / "test-00000-of-00001.parquet"))
    return out


def _records(output_dir):
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def test_probes_are_logged_at_eval_steps_and_at_the_end(tiny_llava, with_test_split, make_config, tmp_path):
    # 12 rows, batch 4: 3 steps (one per stage); eval every 2 steps -> at step 2, then at the end (step 3)
    cfg = make_config(tiny_llava, with_test_split, "train.batch_size=4", "train.eval_steps=2")
    result = train(cfg)
    logged = _records(tmp_path / "run")
    with_eval = [r for r in logged if "eval/preference_accuracy" in r]
    assert [r["step"] for r in with_eval] == [2, 3]
    assert "loss" in with_eval[0] and "loss" not in with_eval[1]  # step 2 beside the training metrics; the end alone
    assert with_eval[0]["eval/n"] == 6
    for key in ("eval/preference_accuracy_noise", "eval/image_reward_accuracy", "eval/logp_drop_noise",
                "eval/easy/preference_accuracy", "eval/hard/image_reward_accuracy"):
        assert key in with_eval[1], key
    assert result.eval_metrics == {k: v for k, v in with_eval[1].items() if k != "step"}

    # the logged values are the probes of the final model on the test split
    import datasets

    test = datasets.load_dataset(str(with_test_split), split="test")
    direct = probe_lib.run_probes(result.model, _processor(tiny_llava), test, max_length=cfg.data.max_length,
                                  progress=False)
    assert with_eval[1]["eval/preference_accuracy"] == pytest.approx(direct["preference_accuracy"])
    assert with_eval[1]["eval/logp_drop_perturbed"] == pytest.approx(direct["logp_drop_perturbed"], abs=1e-4)


def _processor(path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(path)


def test_no_test_split_means_no_probes_unless_asked(tiny_llava, synthetic_data, make_config, tmp_path):
    result = train(make_config(tiny_llava, synthetic_data, "train.max_steps=1", "train.eval_steps=1"))
    assert result.eval_metrics == {}
    assert not any(k.startswith("eval/") for r in _records(tmp_path / "run") for k in r)
    asked = train(make_config(tiny_llava, synthetic_data, "train.max_steps=1", "data.eval_split=train",
                              "data.eval_max_samples=2", output_dir=tmp_path / "asked"))
    assert asked.eval_metrics["eval/n"] == 2


def test_cli_prints_the_final_summary(tiny_llava, with_test_split, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "mfpo_train.cli", "--config", "recipes/train/debug.yaml",
         "--set", f"model.name_or_path={tiny_llava}", "--set", f"data.dataset={with_test_split}",
         "--set", "train.report_to=[]", "--set", f"train.output_dir={tmp_path / 'run'}", "--set", "train.batch_size=4",
         "--set", "train.save_every=null"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.strip().splitlines()
    assert lines[0].startswith("trained 3 steps in ")
    assert lines[1].startswith("last step: loss ") and "loss/image" in lines[1]
    assert lines[2].startswith("eval probes (6 rows): preference_accuracy ")
    assert lines[3].startswith(f"weights: {tmp_path / 'run' / 'final'}")
