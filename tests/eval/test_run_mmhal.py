"""MMHal-Bench through `mfpo-eval run`: the user's question file and images, a tiny random local judge, the model
and its base freed before the judge loads (once, for both)."""

from __future__ import annotations

import gc
import json
import shutil
import weakref

from typer.testing import CliRunner

from mfpo_data.backends import vlm
from mfpo_train.eval import mmhal
from mfpo_train.eval.cli import app
from tests.fixtures.eval_run import sample_items


TYPES = ["attribute", "adversarial", "comparison", "counting", "relation", "environment", "holistic", "other"]


def _mmhal_files(root, n=4):
    """MMHal-Bench's response_template.json for `n` questions about images of the bundled sample, and their folder."""
    images = root / "images"
    images.mkdir(parents=True)
    rows = []
    for i, item in enumerate(sample_items()[:n]):
        shutil.copy(item["image"], images / item["image"].name)
        rows.append({"question_type": TYPES[i], "question_topic": "outdoor", "image_id": item["key"],
                     "image_src": f"https://farm.example.org/photos/{item['image'].name}", "image_content": ["Person"],
                     "question": f"What is happening in picture {i}?", "gt_answer": "People outdoors.",
                     "model_answer": ""})
    (root / "response_template.json").write_text(json.dumps(rows))
    return root / "response_template.json", images


def _tiny_judge(folder):
    from transformers import LlamaConfig, LlamaForCausalLM

    from mfpo_train.tiny import make_tokenizer

    tok = make_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16384,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_mmhal_through_run_frees_the_models_before_the_judge_loads_once(tiny_models, trained_adapter, tmp_path,
                                                                       monkeypatch):
    questions, images = _mmhal_files(tmp_path / "mmhal")
    judge = _tiny_judge(tmp_path / "judge")
    events, alive = [], {}
    real_load, real_judge = vlm.from_pretrained, mmhal.LocalJudge.__init__

    def counted_load(name, **kwargs):
        model, processor = real_load(name, **kwargs)
        label = f"model {len([e for e in events if e.startswith('load')])}"
        events.append(f"load {label}")
        alive[label] = weakref.ref(model)
        weakref.finalize(model, events.append, f"free {label}")
        return model, processor

    def counted_judge(self, model, **kwargs):
        gc.collect()
        events.append("load judge" + (" beside " + ", ".join(k for k, r in alive.items() if r() is not None)
                                      if any(r() is not None for r in alive.values()) else ""))
        real_judge(self, model, **kwargs)

    monkeypatch.setattr(vlm, "from_pretrained", counted_load)
    monkeypatch.setattr(mmhal.LocalJudge, "__init__", counted_judge)
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["run", "--adapter", str(trained_adapter), "--base", str(tiny_models["llava"]),
                                      "--benchmarks", "mmhal", "--mmhal-questions", str(questions), "--mmhal-images",
                                      str(images), "--judge", str(judge), "--judge-max-new-tokens", "4",
                                      "--max-new-tokens", "6", "--out", str(out)])
    assert result.exit_code == 0, result.output[-3000:]
    assert events == ["load model 0", "free model 0", "load model 1", "free model 1", "load judge"]

    report = json.loads((out / "results.json").read_text())
    assert [m["role"] for m in report["models"]] == ["model", "base"]
    for m in report["models"]:
        folder = out / m["role"]
        answers = [json.loads(line) for line in (folder / "mmhal.answers.jsonl").read_text().splitlines()]
        assert [a["key"] for a in answers] == ["0", "1", "2", "3"] and all(a["answer"] for a in answers)
        details = [json.loads(line) for line in (folder / "mmhal.result.details.jsonl").read_text().splitlines()]
        assert [d["answer"] for d in details] == [a["answer"] for a in answers]  # the judge read these answers
        res = m["results"]["mmhal"]
        ratings = [0 if d["rating"] is None else d["rating"] for d in details]
        assert res["n"] == 4 and res["score"] == round(sum(ratings) / 4, 2)
        assert res["unparsed"] == sum(d["rating"] is None for d in details) == m["unparsed"]["mmhal"]["unparsed"]
        assert res["judge"] == {"model": str(judge), "endpoint": "local", "label": "judge (local)"}
    assert report["settings"]["benchmarks"]["mmhal"]["judge"]["label"] == "judge (local)"
    table = (out / "results.md").read_text()
    assert "MMHal-Bench: judged by judge (local), not the paper's gpt-4-0314; 4 questions" in table
    assert "judge (local)" in table.split("\n\n", 1)[1].splitlines()[0]  # the column names its judge
