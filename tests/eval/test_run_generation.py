"""The generation runner (`mfpo_data.backends.vlm`): batched greedy == batch size 1, resume after a kill,
the settings guard of `mfpo-eval run`'s folders, adapters."""

from __future__ import annotations

import json

import pytest

from mfpo_data.backends import vlm
from mfpo_data.backends.vlm import GenerationError, generate_answers, load_vlm
from mfpo_train.eval import outdir
from mfpo_train.eval.outdir import EvalError, check_settings
from mfpo_train.model import is_peft
from tests.fixtures.eval_run import sample_items


@pytest.mark.parametrize("family", ["llava", "idefics3"])
def test_batched_greedy_equals_batch_size_one(tiny_models, family):
    model, processor = load_vlm(tiny_models[family])
    items = sample_items()
    one = generate_answers(model, processor, items, batch_size=1, max_new_tokens=8, progress=False)
    many = generate_answers(model, processor, items, batch_size=6, max_new_tokens=8, progress=False)
    assert [a["key"] for a in many] == [it["key"] for it in items]
    assert [a["answer"] for a in many] == [a["answer"] for a in one]
    assert len({a["answer"] for a in one}) > 1  # the answers depend on the image
    assert processor.tokenizer.padding_side == "right"  # left padding is scoped to generation


def test_a_killed_run_resumes_to_the_uninterrupted_file(tiny_models, tmp_path, monkeypatch):
    model, processor = load_vlm(tiny_models["llava"])
    items = sample_items()
    full = tmp_path / "full.answers.jsonl"
    generate_answers(model, processor, items, full, batch_size=4, max_new_tokens=6, progress=False)

    real, calls = vlm.generate_batch, []

    def dies_on_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    killed = tmp_path / "killed.answers.jsonl"
    monkeypatch.setattr(vlm, "generate_batch", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        generate_answers(model, processor, items, killed, batch_size=4, max_new_tokens=6, progress=False)
    assert len(killed.read_text().splitlines()) == 8  # two batches were on disk before the kill
    with open(killed, "a") as f:  # and the process died half-way through writing a line
        f.write('{"key": "9", "ans')
    monkeypatch.setattr(vlm, "generate_batch", real)

    resumed_calls = []
    monkeypatch.setattr(vlm, "generate_batch", lambda m, p, batch, n: resumed_calls.append(len(batch)) or real(m, p, batch, n))
    answers = generate_answers(model, processor, items, killed, batch_size=4, max_new_tokens=6, progress=False)
    assert sum(resumed_calls) == len(items) - 8  # only the missing items are generated
    assert killed.read_bytes() == full.read_bytes()
    keys = [json.loads(line)["key"] for line in killed.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == len(items)
    assert [a["key"] for a in answers] == [it["key"] for it in items]


def test_answers_file_of_another_item_set_is_refused(tmp_path):
    path = tmp_path / "a.answers.jsonl"
    path.write_text('{"key": "1", "answer": "x"}\n{"key": "77", "answer": "y"}\n')
    with pytest.raises(GenerationError, match=r"a.answers.jsonl:2: key '77' is not in this run's item set"):
        vlm.read_answers(path, ["1", "2"])
    path.write_text('{"key": "1", "answer": "x"}\nnot json\n{"key": "2", "answer": "y"}\n')
    with pytest.raises(GenerationError, match=r"a.answers.jsonl:2: not valid JSON .*fix line 2, or delete it"):
        vlm.read_answers(path, ["1", "2"])


def test_an_answers_file_without_items_is_read_whole_by_the_same_reader(tmp_path):
    """The on-policy build resumes with `AnswersFile(path)`: its records come back with every field (labels,
    policy), a torn last line is cut off, and a damaged line is the one line `mfpo-eval run` gives too."""
    path = tmp_path / "00000.answers.jsonl"
    path.write_text('{"key": "a", "answer": "x", "label": {"hallucinated": []}, "policy": "p"}\n{"key": "b", "ans')
    with vlm.AnswersFile(path) as sink:
        assert sink.done == {"a": {"key": "a", "answer": "x", "label": {"hallucinated": []}, "policy": "p"}}
    assert path.read_text() == '{"key": "a", "answer": "x", "label": {"hallucinated": []}, "policy": "p"}\n'
    path.write_text('{"key": "a", "answer": "x"}\n{"key": "a", "answer": "y"}\n')
    with pytest.raises(GenerationError) as err:
        vlm.AnswersFile(path)
    assert str(err.value) == (f"{path}:2: key 'a' is answered again (first on line 1); each item must be answered "
                              "once (two files joined?); this answers file is resumed by the run: fix line 2, or "
                              "delete it (its item is generated again), and rerun")


def test_other_settings_in_the_same_folder_are_refused(tmp_path):
    settings = {"model": "m", "max_new_tokens": 8, "items": "abc"}
    check_settings(tmp_path, settings)
    check_settings(tmp_path, dict(settings))  # the same settings: a resume
    with pytest.raises(EvalError, match=r"\(max_new_tokens: 8 there, 16 now; see "):
        check_settings(tmp_path, {**settings, "max_new_tokens": 16})
    assert json.loads((tmp_path / outdir.SETTINGS_FILE).read_text()) == {"format": "mfpo-eval/1", **settings}


def test_bad_model_or_adapter_is_one_line(tmp_path):
    with pytest.raises(GenerationError, match="--adapter .*: no adapter_config.json"):
        load_vlm(tmp_path / "m", adapter=tmp_path)
    with pytest.raises(GenerationError) as err:
        load_vlm(tmp_path / "no-such-model")
    assert "cannot load model" in str(err.value) and "\n" not in str(err.value)


def test_adapter_from_mfpo_train_loads_unmerged_and_changes_answers(tiny_models, trained_adapter):
    items = sample_items()
    base = generate_answers(*load_vlm(tiny_models["llava"]), items, max_new_tokens=8, progress=False)
    model, processor = load_vlm(None, adapter=trained_adapter)  # the base model named by the adapter
    assert is_peft(model) and model.active_adapters == ["default"]
    tuned = generate_answers(model, processor, items, max_new_tokens=8, progress=False)
    assert [a["answer"] for a in tuned] != [a["answer"] for a in base]
    merged_model, _ = load_vlm(tiny_models["llava"], adapter=trained_adapter, merge=True)
    assert not is_peft(merged_model)
    merged = generate_answers(merged_model, processor, items, max_new_tokens=8, progress=False)
    assert [a["answer"] for a in merged] == [a["answer"] for a in tuned]
