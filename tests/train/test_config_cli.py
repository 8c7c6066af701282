"""Training configs (strict loading, overrides, recipes) and the `mfpo-train` command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mfpo_data.errors import ConfigError
from mfpo_train.config import load_config
from tests.paths import DEBUG_TRAIN_RECIPE, TRAIN_RECIPES


RECIPES = sorted(TRAIN_RECIPES.glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipes_load(path):
    cfg = load_config(path)
    assert cfg.model.name_or_path and cfg.data.dataset
    assert cfg.model.trust_remote_code is False


@pytest.mark.parametrize("name", ["llava15_7b_lora.yaml", "qwen2vl_2b_lora.yaml"])
def test_paper_recipes_settings_and_launch_commands(name):
    cfg = load_config(TRAIN_RECIPES / name)
    assert (cfg.loss.text_weight, cfg.loss.image_weight, cfg.loss.margin_weight, cfg.loss.eta) == (1.0, 1.0, 1.0, 0.0)
    assert cfg.curriculum == ["easy", "medium", "hard"] and cfg.lora.enabled
    assert cfg.train.mixed_precision == "bf16" and cfg.loss.beta == 0.1
    header = (TRAIN_RECIPES / name).read_text().split("\nmodel:")[0]
    assert "accelerate launch --num_processes 1" in header and "--num_processes 8" in header


def test_overrides_and_types():
    cfg = load_config(DEBUG_TRAIN_RECIPE, ["loss.beta=0.5", "curriculum=none", "lora.target_modules=[q_proj]"])
    assert cfg.loss.beta == 0.5 and cfg.stages == ["all"] and cfg.lora.target_modules == ["q_proj"]


@pytest.mark.parametrize("override, key", [
    ("loss.betta=1", "loss.betta"),
    ("loss.beta=high", "loss.beta"),
    ("curriculum=[easy, extreme]", "curriculum.1"),
    ("train.batch_size=0", "train.batch_size"),
    ("reference=frozen", "reference"),
    ("train.report_to=[mlflow]", "train.report_to"),
])
def test_bad_values_name_the_dotted_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(DEBUG_TRAIN_RECIPE, [override])
    assert key in str(err.value) and "\n" not in str(err.value)


def test_refresh_needs_a_model_reference_and_duplicate_keys_fail(tmp_path):
    with pytest.raises(ConfigError, match="refresh_reference"):
        load_config(DEBUG_TRAIN_RECIPE, ["refresh_reference=true", "reference=precomputed"])
    dup = tmp_path / "dup.yaml"
    dup.write_text("model:\n  name_or_path: a\n  name_or_path: b\ndata:\n  dataset: x\n")
    with pytest.raises(ConfigError, match="model.name_or_path"):
        load_config(dup)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mfpo_train.cli", *args], capture_output=True, text=True, timeout=120)


def test_help_is_instant_and_imports_no_torch():
    code = "import sys; import mfpo_train.cli; print('torch' in sys.modules or 'transformers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    out = _cli("--help")
    assert out.returncode == 0 and "precompute-ref" in out.stdout


def test_known_errors_are_one_line_with_exit_code_1(tmp_path):
    out = _cli("--config", str(DEBUG_TRAIN_RECIPE), "--set", "loss.bogus=1")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == ["error: unknown key 'loss.bogus' (allowed: beta, text_weight, "
                                               "image_weight, margin_weight, eta, token_weighting)"]
    missing = _cli("--config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1 and "not found" in missing.stderr and "Traceback" not in missing.stderr


def test_cli_refuses_a_dataset_without_mfpo_columns(tmp_path):
    import datasets

    from mfpo_train.synthetic import synthetic_rows

    rows = [{k: r[k] for k in ("images", "prompt", "chosen", "rejected")} for r in synthetic_rows(2)]
    (tmp_path / "trl" / "data").mkdir(parents=True)
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "trl" / "data" / "train-00000-of-00001.parquet"))
    out = _cli("--config", str(DEBUG_TRAIN_RECIPE), "--set", f"data.dataset={tmp_path / 'trl'}",
               "--set", f"train.output_dir={tmp_path / 'run'}")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    error = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "rejected_images" in error[0] and "difficulty_bucket" in error[0]


def test_cli_trains_and_precomputes(tiny_llava, synthetic_data, tmp_path):
    base = ["--set", f"model.name_or_path={tiny_llava}", "--set", "train.report_to=[]",
            "--set", f"train.output_dir={tmp_path / 'run'}", "--set", "train.max_steps=1"]
    pre = _cli("precompute-ref", "--config", str(DEBUG_TRAIN_RECIPE), "--output", str(tmp_path / "ref"), *base,
               "--set", f"data.dataset={synthetic_data}")
    assert pre.returncode == 0, pre.stderr[-2000:]
    run = _cli("--config", str(DEBUG_TRAIN_RECIPE), *base, "--set", f"data.dataset={tmp_path / 'ref'}",
               "--set", "reference=precomputed")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "trained 1 steps" in run.stdout
    assert (tmp_path / "run" / "metrics.jsonl").is_file()


def test_data_revision_pins_a_hub_dataset(monkeypatch, make_config, tmp_path):
    import datasets

    from mfpo_data.errors import SchemaError
    from mfpo_train.train import train

    calls = []

    def fake_load_dataset(*args, **kwargs):  # offline: record the call, return a dataset without MFPO columns
        calls.append((args, kwargs))
        return datasets.Dataset.from_dict({"prompt": ["q"], "chosen": ["a"], "rejected": ["b"]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    cfg = make_config(tmp_path / "no-such-model", "org/mfpo-coco", "data.revision=v1.0")
    assert cfg.data.revision == "v1.0"
    with pytest.raises(SchemaError):  # refused after loading, before any model is loaded
        train(cfg)
    assert calls == [(("org/mfpo-coco",), {"revision": "v1.0"})]
