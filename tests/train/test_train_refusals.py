"""Every refusal of `mfpo-train` comes before a model loads (counted at transformers' loader, not timed): a rerun
into a folder that holds a run, a `--resume` with settings that change what the checkpoint means, a model that is
not there. The eval side: tests/eval/test_run_refusals.py."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mfpo_train.cli import app
from tests.fixtures.hostile import one_error_line, tree


@pytest.fixture
def loads(monkeypatch):
    """Every model `from_pretrained` call (any class: transformers' Auto classes end in PreTrainedModel's), by name."""
    from transformers import PreTrainedModel

    calls = []
    real = PreTrainedModel.from_pretrained.__func__

    def spy(cls, name, *args, **kwargs):
        calls.append(str(name))
        return real(cls, name, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(spy))
    return calls


def _args(model, data, out, *sets) -> list[str]:
    return ["--config", "debug", *[a for s in (f"model.name_or_path={model}", f"data.dataset={data}",
                                               f"train.output_dir={out}", "train.report_to=[]", *sets)
                                   for a in ("--set", s)]]


def _a_run(out, model, data, **change) -> None:
    """A folder as a run leaves it after its first steps: its config.json (with `change`) and metrics.jsonl."""
    from mfpo_train.config import config_to_dict, load_config

    config = config_to_dict(load_config("debug", [f"model.name_or_path={model}", f"data.dataset={data}",
                                                  f"train.output_dir={out}", "train.report_to=[]"]))
    for key, value in change.items():
        section, name = key.split(".")
        config[section][name] = value
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 0.69}) + "\n")


def test_the_load_counter_sees_a_model_load(tiny_llava, loads):
    from mfpo_train.config import ModelConfig
    from mfpo_train.model import load_model_and_processor

    load_model_and_processor(ModelConfig(name_or_path=str(tiny_llava)))
    assert loads == [str(tiny_llava)]


def test_a_rerun_into_a_run(tiny_llava, synthetic_data, tmp_path, loads):
    out = tmp_path / "run"
    _a_run(out, tiny_llava, synthetic_data)
    before = tree(out)
    line = one_error_line(CliRunner().invoke(app, _args(tiny_llava, synthetic_data, out)))
    assert line == (f"error: {out} holds a training run already (metrics.jsonl): pass --resume to continue it, or set "
                    "train.output_dir to a new folder")
    assert loads == [] and tree(out) == before


def test_a_resume_with_other_settings(tiny_llava, synthetic_data, tmp_path, loads):
    out = tmp_path / "run"
    _a_run(out, tiny_llava, synthetic_data, **{"lora.r": 4})
    before = tree(out)
    line = one_error_line(CliRunner().invoke(app, _args(tiny_llava, synthetic_data, out) + ["--resume"]))
    assert line == (f"error: --resume: the run in {out} was trained with lora.r=4, the config now says 8 (see "
                    f"{out / 'config.json'}); resume with the run's settings, or set train.output_dir to a new folder")
    assert loads == [] and tree(out) == before


@pytest.mark.parametrize("resume", [False, True], ids=["fresh", "resume"])
def test_a_missing_model(synthetic_data, tmp_path, loads, resume):
    out, missing = tmp_path / "run", tmp_path / "no-such-model"
    if resume:
        _a_run(out, missing, synthetic_data)
    before = tree(out) if resume else None
    line = one_error_line(CliRunner().invoke(app, _args(missing, synthetic_data, out) + (["--resume"] if resume else [])))
    assert line == (f"error: cannot load model {missing}: no model folder at {missing} (model.name_or_path): point "
                    "model.name_or_path at a folder with the model's config.json")
    assert loads == [] and tree(out) == (before if resume else {})  # nothing written (our lock file aside)
