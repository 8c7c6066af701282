"""Every refusal of `mfpo-eval run` comes before a model loads (counted at the loader, not timed): a rerun with other
settings, a missing model or base, a bad adapter, a busy or foreign --out folder, a missing question file."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from typer.testing import CliRunner

from mfpo_data.backends import vlm
from mfpo_data.folders import FolderLock
from mfpo_train.eval.cli import app
from tests.fixtures.eval_kill import fake_answers
from tests.fixtures.hostile import one_error_line, tree


@pytest.fixture(scope="module")
def finished(tiny_models, tmp_path_factory):
    """A finished run of the tiny LLaVA on POPE (scripted answers) at --max-new-tokens 4."""
    out = tmp_path_factory.mktemp("finished") / "eval"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vlm, "generate_batch", lambda m, p, items, n: fake_answers(items))
        result = CliRunner().invoke(app, ["run", "--model", str(tiny_models["llava"]), "--benchmarks", "pope",
                                          "--max-new-tokens", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output[-3000:]
    return out


@pytest.fixture
def loads(monkeypatch):
    """Every model load (the loader `load_vlm` calls), by name."""
    calls = []
    real = vlm.from_pretrained
    monkeypatch.setattr(vlm, "from_pretrained", lambda name, **kw: calls.append(name) or real(name, **kw))
    return calls


def _refused(*args) -> str:
    return one_error_line(CliRunner().invoke(app, ["run", *map(str, args)]))


def test_a_rerun_with_other_settings(tiny_models, finished, tmp_path, loads):
    out = tmp_path / "eval"
    shutil.copytree(finished, out)
    before = tree(out)
    line = _refused("--model", tiny_models["llava"], "--benchmarks", "pope", "--max-new-tokens", 5, "--out", out)
    assert f"{out / 'model'} holds a run with other settings (max_new_tokens: 4 there, 5 now; see " in line
    line = _refused("--model", tiny_models["llava"], "--benchmarks", "pope", "--max-new-tokens", 4,
                    "--pope-convention", "llava", "--out", out)
    assert "other settings (pope_convention: pope there, llava now; see " in line  # the suite's key, both values
    assert loads == [] and tree(out) == before


@pytest.fixture(scope="module")
def finished_two(tiny_models, tmp_path_factory):
    """A finished run of the tiny LLaVA and its base on POPE and Object HalBench (scripted answers)."""
    out = tmp_path_factory.mktemp("finished_two") / "eval"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vlm, "generate_batch", lambda m, p, items, n: fake_answers(items))
        result = CliRunner().invoke(app, ["run", "--model", str(tiny_models["llava"]), "--base",
                                          str(tiny_models["llava"]), "--benchmarks", "pope,objhal",
                                          "--max-new-tokens", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output[-3000:]
    return out


@pytest.mark.parametrize("subset", ["one benchmark", "no base"])
def test_a_rerun_with_a_subset_keeps_the_results(tiny_models, finished_two, tmp_path, loads, subset):
    out = tmp_path / "eval"
    shutil.copytree(finished_two, out)
    before = tree(out)
    model = tiny_models["llava"]
    args = (["--base", model, "--benchmarks", "pope"] if subset == "one benchmark" else ["--benchmarks", "pope,objhal"])
    line = _refused("--model", model, *args, "--max-new-tokens", 4, "--out", out)
    dropped = "objhal" if subset == "one benchmark" else "the base model"
    assert line == (f"error: {out} holds a run of benchmarks pope, objhal for model and base; this run would rewrite "
                    f"its results without {dropped}: use another --out folder, or the same --benchmarks and models")
    assert loads == [] and tree(out) == before


def test_a_base_that_is_an_adapter_folder_is_one_plain_line(tiny_models, tmp_path, loads):
    adapter = tmp_path / "final"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_models["llava"])}))
    line = _refused("--model", tiny_models["llava"], "--base", adapter, "--benchmarks", "pope", "--out",
                    tmp_path / "eval")
    assert line.startswith(f"error: cannot load model '{adapter}' (--base): ") and line.count("cannot load model") == 1
    assert loads == [] and not (tmp_path / "eval").exists()


@pytest.mark.parametrize("which", ["--model", "--base"])
def test_a_missing_model_or_base(tiny_models, tmp_path, loads, which):
    missing = tmp_path / "no-such-model"
    models = (["--model", missing] if which == "--model" else ["--model", tiny_models["llava"], "--base", missing])
    line = _refused(*models, "--benchmarks", "pope", "--out", tmp_path / "eval")
    assert line == (f"error: cannot load model {missing}: no model folder at {missing} ({which}): point {which} at a "
                    "folder with the model's config.json")
    assert loads == [] and not (tmp_path / "eval").exists()


@pytest.mark.parametrize("damage", ["no weights", "no config", "config not JSON"])
def test_a_bad_adapter(tiny_models, tmp_path, loads, damage):
    adapter = tmp_path / "final"
    adapter.mkdir()
    config = {"base_model_name_or_path": str(tiny_models["llava"]), "peft_type": "LORA"}
    if damage != "no config":
        (adapter / "adapter_config.json").write_text("{" if damage == "config not JSON" else json.dumps(config))
    expected = {"no weights": f"--adapter {adapter}: no adapter weights there (adapter_model.safetensors or "
                              "adapter_model.bin)",
                "no config": f"--adapter {adapter}: no adapter_config.json there",
                "config not JSON": f"{adapter / 'adapter_config.json'}:1: not valid JSON"}[damage]
    for models in (["--adapter", adapter], ["--model", tiny_models["llava"], "--adapter", adapter]):
        assert expected in _refused(*models, "--benchmarks", "pope", "--out", tmp_path / "eval")
    assert loads == [] and not (tmp_path / "eval").exists()


def test_a_busy_out_folder(tiny_models, finished, tmp_path, loads):
    out = tmp_path / "eval"
    shutil.copytree(finished, out)
    before = tree(out)
    with FolderLock(out, "mfpo-eval run"):  # another run holds it
        line = _refused("--model", tiny_models["llava"], "--benchmarks", "pope", "--max-new-tokens", 4, "--out", out)
    assert line == (f"error: another mfpo-eval run (pid {os.getpid()}) is writing to {out}; wait for it to end or "
                    "choose another output folder")
    assert loads == [] and tree(out) == before


def test_a_foreign_out_folder(tiny_models, tmp_path, loads):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("do not delete\n")
    line = _refused("--model", tiny_models["llava"], "--benchmarks", "pope", "--out", out)
    assert "is not empty and holds no mfpo-eval run (run.json) (e.g. 'notes.txt')" in line
    assert loads == [] and tree(out) == {"notes.txt": b"do not delete\n"}


@pytest.mark.parametrize("bench", ["pope", "mmhal", "objhal"])
def test_a_missing_question_file(tiny_models, tmp_path, loads, bench):
    missing = tmp_path / "nowhere.json"
    (tmp_path / "images").mkdir()
    args, expected = {
        "pope": (["--pope-questions", tmp_path / "nowhere"],
                 f"error: POPE questions not found: {tmp_path / 'nowhere' / 'coco_pope_random.json'} (download "),
        "mmhal": (["--mmhal-questions", missing, "--mmhal-images", tmp_path / "images", "--judge", "j"],
                  f"error: MMHal-Bench question file (response_template.json) not found: {missing}"),
        "objhal": (["--objhal-questions", missing], f"error: Object HalBench questions file not found: {missing}"),
    }[bench]
    line = _refused("--model", tiny_models["llava"], "--benchmarks", bench, *args, "--out", tmp_path / "eval")
    assert line.startswith(expected)
    assert loads == [] and not (tmp_path / "eval").exists()


def test_the_chair_objhal_scorer_with_the_fixed_vocabulary(tiny_models, tmp_path, loads):
    line = _refused("--model", tiny_models["llava"], "--benchmarks", "objhal", "--objhal-scorer", "chair",
                    "--fixed-vocabulary", "--out", tmp_path / "eval")
    assert line == ("error: objhal: scorer 'chair' with the fixed vocabulary would score exactly as scorer 'rlaifv' "
                    "with it (the fixed vocabulary brings its own singulars); drop one of the two")
    assert loads == [] and not (tmp_path / "eval").exists()
