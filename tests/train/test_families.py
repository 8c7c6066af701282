"""Three more model families, each a tiny random model built from its config and saved like a Hub model, through
`mfpo-train` (the three sequences, the probes), `precompute-ref` and `mfpo-eval run` with the trained adapter (its
batched greedy answers equal batch size 1's): Qwen2.5-VL (3D rope positions), InternVL
(transformers' own classes) and Gemma 3 (image tokens that attend to each other both ways)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from mfpo_train.cli import app
from mfpo_train.eval.cli import app as eval_app
from tests.fixtures.eval_run import sample_items
from tests.fixtures.multiproc import cli_args, metrics, probed_data


FAMILIES = {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration", "internvl": "InternVLForConditionalGeneration",
            "gemma3": "Gemma3ForConditionalGeneration"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return probed_data(tmp_path_factory.mktemp("published"))


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    from mfpo_train import tiny

    name = request.param
    return name, getattr(tiny, f"make_tiny_{name}")(tmp_path_factory.mktemp(name))


def _train(model, data, out, *sets):
    result = CliRunner().invoke(app, cli_args(model, data, out, "train.batch_size=4", "train.save_every=null", *sets))
    assert result.exit_code == 0, result.output[-3000:]
    return result


def test_the_family_trains_probes_precomputes_and_generates(family, data, tmp_path):
    from mfpo_data.backends.vlm import generate_answers, load_vlm

    name, model = family
    run = tmp_path / "run"
    result = _train(model, data, run)  # 12 rows, batch 4: one step per stage; probes at step 3 (the end)
    logged = metrics(run)
    assert [m["stage"] for m in logged] == ["easy", "medium", "hard"]
    assert logged[0]["loss"] == pytest.approx(3 * math.log(2), abs=1e-5)  # LoRA B = 0: policy == reference
    for m in logged:  # the three sequences: y_w|m, y_l|m and y_w|m' each scored
        assert all(math.isfinite(m[k]) for k in ("loss/text", "loss/image", "loss/margin", "logps/chosen",
                                                  "logps/rejected", "image_rewards/rejected"))
        assert m["logps/chosen"] < 0 and m["logps/rejected"] < 0
    assert logged[-1]["rewards/margins"] != 0 and logged[-1]["eval/n"] == 5
    for key in ("eval/preference_accuracy", "eval/image_reward_accuracy_noise", "eval/logp_drop_perturbed"):
        assert math.isfinite(logged[-1][key]), key
    assert "eval probes (5 rows)" in result.output and (run / "final" / "adapter_model.safetensors").is_file()

    # precompute-ref: the columns give the loss the model reference gives (random adapters: the loss is not 3 log 2)
    ref = tmp_path / "with-ref"
    made = CliRunner().invoke(app, ["precompute-ref", "--output", str(ref), *cli_args(model, data, ref)])
    assert made.exit_code == 0, made.output[-3000:]
    first = ("lora.init_lora_weights=false", "train.max_steps=1", "curriculum=none", "data.eval_split=null")
    _train(model, ref, tmp_path / "online", "reference=model", *first)
    _train(model, ref, tmp_path / "pre", "reference=precomputed", *first)
    online, pre = metrics(tmp_path / "online")[0], metrics(tmp_path / "pre")[0]
    assert abs(online["loss"] - 3 * math.log(2)) > 1e-4
    for key in ("loss", "rewards/margins", "image_rewards/margins"):
        assert pre[key] == pytest.approx(online[key], abs=1e-5), key

    # generation: batched greedy (left-padded: prompts of 3 lengths) == batch size 1
    items = [dict(it, prompt="describe the image." + " what is in it?" * (i % 3)) for i, it in enumerate(sample_items())]
    net, processor = load_vlm(model)
    assert type(net).__name__ == FAMILIES[name]
    one = generate_answers(net, processor, items, batch_size=1, max_new_tokens=6, progress=False)
    many = generate_answers(net, processor, items, batch_size=len(items), max_new_tokens=6, progress=False)
    assert [a["answer"] for a in many] == [a["answer"] for a in one]
    assert len({a["answer"] for a in one}) > 1  # the answers depend on the input

    # mfpo-eval run with the trained adapter (Object HalBench on the bundled sample, batches of 8): its answers are
    # the adapted model's at batch size 1, and its results are scored
    out = tmp_path / "eval"
    evaluated = CliRunner().invoke(eval_app, ["run", "--model", str(model), "--adapter", str(run / "final"),
                                              "--benchmarks", "objhal", "--max-new-tokens", "6", "--out", str(out)])
    assert evaluated.exit_code == 0, evaluated.output[-3000:]
    [report] = json.loads((out / "results.json").read_text())["models"]
    assert report["unparsed"]["objhal"]["n"] == 15 and "CHAIRs" in report["results"]["objhal"]
    written = [json.loads(line) for line in (out / "model" / "objhal.answers.jsonl").read_text().splitlines()]
    images = {it["image_id"]: it["image"] for it in sample_items()}
    asked = [{"key": str(a["image_id"]), "image": images[a["image_id"]], "prompt": a["prompt"]} for a in written]
    net, processor = load_vlm(model, adapter=run / "final")
    alone = generate_answers(net, processor, asked, batch_size=1, max_new_tokens=6, progress=False)
    assert [a["answer"] for a in written] == [a["answer"] for a in alone]


def test_processors_without_torchvision_load_without_their_video_processor(family, caplog):
    """Qwen2.5-VL's and InternVL's processors need torchvision for their video part; without it they load image-only."""
    import importlib.util
    import logging

    from mfpo_data.backends.vlm import from_pretrained

    name, model = family
    with caplog.at_level(logging.INFO, logger="mfpo_data.backends.vlm"):
        net, processor = from_pretrained(str(model))
    assert "video_processor" not in processor.get_attributes()
    said = [r.getMessage() for r in caplog.records if "without its video processor" in r.getMessage()]
    assert len(said) == (name != "gemma3" and importlib.util.find_spec("torchvision") is None)
    inputs = processor(text=[processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it?"}]}],
        add_generation_prompt=True, tokenize=False)], images=[[_image()]], return_tensors="pt")
    with torch.no_grad():
        assert net(**inputs).logits.shape[:2] == inputs["input_ids"].shape


def _image():
    import numpy as np
    from PIL import Image

    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8))
