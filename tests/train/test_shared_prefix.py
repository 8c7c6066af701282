"""The fast scoring paths (packed shared prefix, one image encoding per image, chunked LM head) equal today's."""

from __future__ import annotations

import copy
import logging
import math

import pytest
import torch

from mfpo_train.collator import MFPOCollator
from mfpo_train.config import LoraConfig, ModelConfig
from mfpo_train.losses import mfpo_loss
from mfpo_train.model import Reference, add_lora, batch_logps, load_model_and_processor, split_logps
from mfpo_train.scoring import chunked_token_logps, logits_sequence_logps, sequence_logps
from mfpo_train.shared_prefix import pack_pairs, shared_prefix_logps
from mfpo_train.synthetic import synthetic_rows
from tests.paths import DEBUG_TRAIN_RECIPE


SEQS = ("chosen", "rejected", "perturbed")
FAST = dict(shared_prefix=True, chunk_size=3)  # 3 tokens per LM-head chunk: every answer spans several chunks
TODAY = dict(shared_prefix=False, chunk_size=0)


@pytest.fixture(autouse=True)
def _fresh_log_once(monkeypatch):
    import mfpo_train.scoring as scoring

    monkeypatch.setattr(scoring, "_logged", set())
    monkeypatch.setattr(scoring, "_no_hidden_path", set())


@pytest.fixture(params=["cache", "packed"])
def method(request, monkeypatch):
    """Both shared-prefix methods: the prompt's key/value cache (default) and packed rows (its fallback)."""
    if request.param == "packed":
        import mfpo_train.shared_prefix as shared_prefix

        monkeypatch.setattr(shared_prefix, "PREFER_PACKED", True)
    return request.param


def _load(path, attn=None, lora=False):
    model, processor = load_model_and_processor(ModelConfig(name_or_path=str(path), attn_implementation=attn))
    if lora:  # random adapters: policy != reference, every loss term has a gradient
        model = add_lora(model, LoraConfig(r=4, alpha=8, init_lora_weights=False,
                                           exclude_modules=".*(vision_tower|vision_model|connector).*"))
    return model, processor


def _batch(processor, n=3):
    rows = synthetic_rows(n)
    rows[1]["chosen"] = [{"role": "assistant", "content": [{"type": "text", "text": "a cat. " * 6}]}]  # lengths differ
    return MFPOCollator(processor)(rows)


@pytest.mark.parametrize("family,attn", [("llava", "sdpa"), ("llava", "eager"), ("idefics3", "sdpa"),
                                         ("qwen2_5_vl", "sdpa"), ("qwen2_5_vl", "eager")])
def test_shared_prefix_and_chunked_logps_equal_todays(request, family, attn, method, caplog):
    model, processor = _load(request.getfixturevalue(f"tiny_{family}"), attn)
    batch = _batch(processor)
    today = logits_sequence_logps(model, batch)
    with caplog.at_level(logging.INFO, logger="mfpo_train.scoring"):
        packed = batch_logps(model, batch, SEQS, **FAST)
        batch_logps(model, batch, SEQS, **FAST)
    torch.testing.assert_close(packed, today, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(sequence_logps(model, batch, chunk_size=3), today, atol=1e-5, rtol=1e-6)
    assert packed.shape == (9,) and (packed < 0).all()
    said = [r.getMessage() for r in caplog.records if "shared prefix" in r.getMessage()]
    assert len(said) == 1 and type(model).__name__ in said[0]  # the path is named once per family
    assert ("key/value cache" in said[0]) == (method == "cache")


def test_dpo_only_and_no_rejected_sequences(tiny_llava, method):
    model, processor = _load(tiny_llava)
    for seqs in (("chosen", "rejected"), ("chosen", "perturbed")):
        batch = MFPOCollator(processor, sequences=seqs)(synthetic_rows(2))
        torch.testing.assert_close(batch_logps(model, batch, seqs, **FAST), logits_sequence_logps(model, batch),
                                   atol=1e-5, rtol=1e-6)
    assert shared_prefix_logps(model, batch, ("chosen", "perturbed")) is None  # nothing shared: one row each


def _vision_calls(model):
    """Images through the vision tower, counted by a forward hook."""
    seen = []
    tower = next(m for n, m in model.named_modules() if n.endswith(("vision_tower", "vision_model", "visual")))
    tower.register_forward_hook(lambda mod, args, kwargs, out: seen.append(_images(args, kwargs)), with_kwargs=True)
    return seen


def _images(args, kwargs):
    grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)  # Qwen2-VL: patches of all images flattened
    if grid is not None:
        return grid.shape[0]
    pixels = args[0] if args else kwargs["pixel_values"]
    return pixels.shape[0]


@pytest.mark.parametrize("family", ["llava", "idefics3", "qwen2_5_vl"])
def test_each_distinct_image_is_encoded_once(request, family, method):
    model, processor = _load(request.getfixturevalue(f"tiny_{family}"))
    batch = _batch(processor, n=2)
    seen = _vision_calls(model)
    batch_logps(model, batch, SEQS, **FAST)
    assert sum(seen) == 4  # m and m' of 2 pairs
    seen.clear()
    batch_logps(model, batch, SEQS, **TODAY)
    assert sum(seen) == 6  # today: m twice (y_w|m, y_l|m), m' once


def _step(model, batch, scoring: dict):
    """One MFPO loss + backward with `scoring` on both the policy and the (adapters-off) reference."""
    reference = Reference(model, **scoring)
    policy = batch_logps(model, batch, SEQS, **scoring)
    out = mfpo_loss(split_logps(policy, SEQS), reference.logps(model, batch, SEQS), beta=0.1)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out.loss.item(), policy.detach(), grads


@pytest.mark.parametrize("family", ["llava", "idefics3", "qwen2_5_vl"])
def test_lora_gradients_equal_todays(request, family, method):
    model, processor = _load(request.getfixturevalue(f"tiny_{family}"), lora=True)
    model.train()
    batch = _batch(processor)
    loss, logps, grads = _step(model, batch, TODAY)
    assert abs(loss - 3 * math.log(2)) > 1e-3 and grads and all("lora_" in n for n in grads)
    fast_loss, fast_logps, fast_grads = _step(model, batch, FAST)
    assert fast_loss == pytest.approx(loss, abs=1e-5)
    torch.testing.assert_close(fast_logps, logps, atol=1e-5, rtol=1e-6)
    assert set(fast_grads) == set(grads)
    for n, g in grads.items():
        assert g.abs().max() > 0, n
        torch.testing.assert_close(fast_grads[n], g, atol=1e-5, rtol=1e-4, msg=n)


def test_gradient_checkpointing_uses_packed_rows(tiny_llava, caplog):
    model, processor = _load(tiny_llava, lora=True)
    batch = _batch(processor, n=2)
    model.train()
    loss, logps, grads = _step(model, batch, TODAY)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    with caplog.at_level(logging.INFO, logger="mfpo_train.scoring"):
        fast_loss, fast_logps, fast_grads = _step(model, batch, FAST)
    assert any("packed" in r.getMessage() and "gradient checkpointing" in r.getMessage() for r in caplog.records)
    assert fast_loss == pytest.approx(loss, abs=1e-5)
    torch.testing.assert_close(fast_logps, logps, atol=1e-5, rtol=1e-6)
    for n, g in grads.items():
        torch.testing.assert_close(fast_grads[n], g, atol=1e-5, rtol=1e-4, msg=n)


def test_qwen2_vl_pairs_of_different_image_sizes_pack_exactly(qwen2vl_batch, method):
    """Qwen2-VL: 3D rope positions, every row's patches flattened into one pixel_values, and two pairs whose images
    differ in size (so in image tokens and patches). The fixture's rejected rows get their chosen row's prompt and
    image, as the collator makes them."""
    model, batch = qwen2vl_batch
    n = 2  # rows: chosen 0-1, rejected 2-3, perturbed 4-5
    batch = {k: v.clone() for k, v in batch.items()}
    starts = [0, *torch.cumsum(batch["image_grid_thw"].prod(-1), 0).tolist()]
    pixels = [batch["pixel_values"][starts[i]:starts[i + 1]] for i in range(3 * n)]
    for w in range(n):
        r = n + w
        prompt = int((batch["attention_mask"][w].bool() & ~batch["completion_mask"][w].bool()).sum())
        answer = batch["input_ids"][r][batch["completion_mask"][r].bool()]
        for key in ("input_ids", "attention_mask", "completion_mask", "mm_token_type_ids"):
            batch[key][r] = 0
            batch[key][r, :prompt] = batch[key][w, :prompt]
        batch["input_ids"][r, prompt:prompt + len(answer)] = answer
        batch["attention_mask"][r, :prompt + len(answer)] = 1
        batch["completion_mask"][r, prompt:prompt + len(answer)] = 1
        pixels[r], batch["image_grid_thw"][r] = pixels[w], batch["image_grid_thw"][w]
    batch["pixel_values"] = torch.cat(pixels)
    assert batch["image_grid_thw"][0].tolist() != batch["image_grid_thw"][1].tolist()
    assert shared_prefix_logps(model, batch, SEQS, chunk_size=3) is not None  # packed, not one row per sequence
    torch.testing.assert_close(batch_logps(model, batch, SEQS, **FAST), logits_sequence_logps(model, batch),
                               atol=1e-5, rtol=1e-6)


def test_unsupported_family_falls_back_logged_once(tiny_gemma3, caplog):
    model, processor = _load(tiny_gemma3)  # its image tokens attend to each other both ways: no packing
    batch = _batch(processor)
    with caplog.at_level(logging.INFO, logger="mfpo_train.scoring"):
        got = [batch_logps(model, batch, SEQS, **FAST) for _ in range(2)]
    today = logits_sequence_logps(model, batch)
    for g in got:
        torch.testing.assert_close(g, today, atol=1e-5, rtol=1e-6)
    said = [r.getMessage() for r in caplog.records if "one row per sequence" in r.getMessage()]
    assert said == ["Gemma3ForConditionalGeneration: one row per sequence (model type 'gemma3' is not one the packed "
                    "rows are exact for)"]


def test_batch_whose_pairs_do_not_share_an_image_is_not_packed(tiny_llava, caplog):
    model, processor = _load(tiny_llava)
    batch = _batch(processor, n=2)
    batch["pixel_values"][2] += 1.0  # y_l|m of pair 0 on another image than y_w|m
    with caplog.at_level(logging.INFO, logger="mfpo_train.scoring"):
        assert shared_prefix_logps(model, batch, SEQS) is None
        got = batch_logps(model, batch, SEQS, **FAST)
    torch.testing.assert_close(got, logits_sequence_logps(model, batch), atol=1e-5, rtol=1e-6)
    assert any("different 'pixel_values'" in r.getMessage() for r in caplog.records)


def test_family_whose_logits_are_not_the_head_of_the_hidden_states_uses_logits(tiny_llava, caplog):
    model, processor = _load(tiny_llava)
    batch = _batch(processor, n=2)
    today = logits_sequence_logps(model, batch)
    other = copy.deepcopy(model.get_output_embeddings())
    other.weight.data.mul_(2.0)  # e.g. a soft-capped or scaled head: lm_head(hidden) is not the model's logits
    model.get_output_embeddings = lambda: other
    with caplog.at_level(logging.INFO, logger="mfpo_train.scoring"):
        torch.testing.assert_close(sequence_logps(model, batch, chunk_size=3), today, atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(batch_logps(model, batch, SEQS, **FAST), today, atol=1e-5, rtol=1e-6)
    assert sum("logits are not lm_head" in r.getMessage() for r in caplog.records) == 1


def test_pack_pairs_layout_by_hand():
    # one pair: prompt [5 6 7], chosen answer [8 9], rejected answer [4]; perturbed block present but unused here
    ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, 4, 0], [5, 6, 7, 8, 9]])
    am = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    cm = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 1, 0], [0, 0, 0, 1, 1]])
    batch = {"input_ids": ids, "attention_mask": am, "completion_mask": cm, "pixel_values": torch.arange(3.0)[:, None],
             "token_type_ids": torch.tensor([[1, 1, 0, 0, 0]] * 3)}
    inputs, (rows, sources, targets, out_index) = pack_pairs(batch, n=1)
    assert inputs["input_ids"].tolist() == [[5, 6, 7, 8, 9, 4]]
    assert inputs["position_ids"].tolist() == [[0, 1, 2, 3, 4, 3]]  # the rejected answer continues the prompt
    assert inputs["token_type_ids"].tolist() == [[1, 1, 0, 0, 0, 0]]
    assert inputs["pixel_values"].tolist() == [[0.0]]  # one image per packed row
    mask = inputs["attention_mask"][0, 0].int().tolist()
    assert mask[5] == [1, 1, 1, 0, 0, 1]  # the rejected token sees the prompt and itself, not the chosen answer
    assert mask[4] == [1, 1, 1, 1, 1, 0] and mask[2] == [1, 1, 1, 0, 0, 0]  # causal elsewhere
    assert sources.tolist() == [2, 3, 2] and targets.tolist() == [8, 9, 4] and out_index.tolist() == [0, 0, 1]
    assert rows.tolist() == [0, 0, 0]
    eager = pack_pairs(batch, n=1, attention="eager")[0]["attention_mask"][0, 0]
    assert eager[5, 3] == torch.finfo(torch.float32).min and eager[5, 2] == 0  # additive for eager attention


def test_chunked_head_equals_full_log_softmax_with_gradients():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50)  # trainable, as in full fine-tuning
    hidden = torch.randn(11, 8, requires_grad=True)
    targets = torch.randint(0, 50, (11,))
    weights = torch.randn(11)
    got = chunked_token_logps(head, hidden, targets, chunk_size=4)  # chunks of 4, 4, 3
    (got * weights).sum().backward()
    g_hidden, g_weight = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad, head.weight.grad = None, None
    full = head(hidden).log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)
    (full * weights).sum().backward()
    torch.testing.assert_close(got, full)
    torch.testing.assert_close(g_hidden, hidden.grad)
    torch.testing.assert_close(g_weight, head.weight.grad)


def test_logps_chunk_size_must_not_be_negative():
    from mfpo_data.errors import ConfigError
    from mfpo_train.config import load_config

    with pytest.raises(ConfigError, match="logps_chunk_size"):
        load_config(DEBUG_TRAIN_RECIPE, ["train.logps_chunk_size=-1"])
    cfg = load_config(DEBUG_TRAIN_RECIPE)
    assert cfg.train.shared_prefix is True and cfg.train.logps_chunk_size == 1024
