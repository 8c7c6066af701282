"""Gradient caching (`train.sequence_chunks` > 1) gives the single forward's loss, metrics and gradients."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from mfpo_train.collator import MFPOCollator
from mfpo_train.config import LoraConfig, ModelConfig
from mfpo_train.gradcache import policy_logps, slice_rows
from mfpo_train.losses import mfpo_loss
from mfpo_train.model import (
    Reference,
    add_lora,
    load_model_and_processor,
    make_reference_copy,
    sequence_logps,
    split_logps,
)
from mfpo_train.synthetic import synthetic_rows
from tests.paths import DEBUG_TRAIN_RECIPE


SEQS = ("chosen", "rejected", "perturbed")


@pytest.fixture
def accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


def _setup(path, lora: bool, dropout: float = 0.0):
    model, processor = load_model_and_processor(ModelConfig(name_or_path=str(path)))
    batch = MFPOCollator(processor)(synthetic_rows(2))
    if lora:  # random adapters: policy != reference, so the loss is not 3 log 2 and every term has a gradient
        model = add_lora(model, LoraConfig(r=4, alpha=8, init_lora_weights=False, dropout=dropout))
        reference = Reference(model)
    else:
        reference = Reference(model, ref_model=make_reference_copy(model))
        with torch.no_grad():  # move the policy away from its reference copy
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
    return model.train(), batch, reference


def _step(model, batch, reference, accelerator, chunks: int, scale: float = 1.0, seed: int = 0):
    torch.manual_seed(seed)
    policy = policy_logps(model, batch, SEQS, chunks=chunks)
    out = mfpo_loss(policy.logps, reference.logps(model, batch, SEQS), beta=0.1)
    policy.backward(out.loss * scale, accelerator)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out, grads


def _assert_same(a, b):
    out_a, grads_a = a
    out_b, grads_b = b
    assert out_b.loss.item() == pytest.approx(out_a.loss.item(), abs=1e-5)
    assert set(out_b.metrics) == set(out_a.metrics)
    for k in out_a.metrics:
        assert out_b.metrics[k].item() == pytest.approx(out_a.metrics[k].item(), abs=1e-5), k
    assert grads_a and set(grads_b) == set(grads_a)
    for n in grads_a:
        torch.testing.assert_close(grads_b[n], grads_a[n], atol=1e-5, rtol=1e-4, msg=n)


@pytest.mark.parametrize("family,lora", [("llava", True), ("llava", False), ("idefics3", True)])
def test_chunked_gradients_equal_the_single_forward(request, accelerator, family, lora):
    model, batch, reference = _setup(request.getfixturevalue(f"tiny_{family}"), lora)
    single = _step(model, batch, reference, accelerator, chunks=1)
    assert abs(single[0].loss.item() - 3 * math.log(2)) > 1e-3
    for chunks in (3, 2, 6):  # one sequence per chunk; chunks across sequence blocks; one row per chunk
        _assert_same(single, _step(model, batch, reference, accelerator, chunks=chunks))
    if lora:
        assert all("lora_" in n for n in single[1])


def test_chunked_with_dropout_recomputes_the_same_masks(tiny_llava, accelerator):
    model, batch, reference = _setup(tiny_llava, lora=True, dropout=0.5)
    chunked = _step(model, batch, reference, accelerator, chunks=3, seed=1)
    # What gradient caching must equal: the three chunks forwarded *with* grad under the same RNG draws.
    torch.manual_seed(1)
    flat = torch.cat([sequence_logps(model, slice_rows(batch, s, s + 2)) for s in (0, 2, 4)])
    out = mfpo_loss(split_logps(flat, SEQS), reference.logps(model, batch, SEQS), beta=0.1)
    out.loss.backward()
    direct = (out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    _assert_same(direct, chunked)
    torch.manual_seed(2)  # and dropout is really on: other draws give other log-probs
    other = policy_logps(model, batch, SEQS, chunks=3).flat
    assert not torch.allclose(other, flat.detach(), atol=1e-3)


def test_train_with_gradient_accumulation_matches(tiny_llava, synthetic_data, make_config, tmp_path):
    from mfpo_train.train import train

    common = ("train.batch_size=2", "train.gradient_accumulation_steps=2", "train.max_steps=1", "curriculum=none",
              "lora.init_lora_weights=false", "optim.lr=1.0e-2")
    runs = [train(make_config(tiny_llava, synthetic_data, *common, f"train.sequence_chunks={k}",
                              output_dir=tmp_path / f"k{k}")) for k in (1, 3)]
    for a, b in zip(runs[0].history, runs[1].history, strict=True):
        for key in ("loss", "rewards/margins", "image_rewards/margins", "logps/chosen", "grad_norm"):
            assert b[key] == pytest.approx(a[key], abs=1e-5), key
    weights = [{n: p for n, p in r.model.named_parameters() if "lora_" in n} for r in runs]
    for n, p in weights[0].items():
        torch.testing.assert_close(weights[1][n], p, atol=1e-5, rtol=1e-4)


def test_slice_rows_qwen_style_flattened_patches_and_refusal():
    batch = {"input_ids": torch.zeros(3, 5, dtype=torch.long), "image_grid_thw": torch.tensor([[1, 2, 2], [1, 2, 4],
                                                                                               [1, 2, 2]]),
             "pixel_values": torch.arange(16.0)[:, None].repeat(1, 3), "num_pairs": 1}
    part = slice_rows(batch, 1, 3)
    assert part["pixel_values"][:, 0].tolist() == list(range(4, 16)) and part["image_grid_thw"].shape[0] == 2
    assert part["num_pairs"] == 1
    with pytest.raises(ValueError, match="sequence_chunks: 1"):
        slice_rows(dict(batch, pixel_values=torch.zeros(7, 3), image_grid_thw=None), 0, 1)


def test_sequence_chunks_must_be_positive():
    from mfpo_data.errors import ConfigError
    from mfpo_train.config import load_config

    with pytest.raises(ConfigError, match="sequence_chunks"):
        load_config(DEBUG_TRAIN_RECIPE, ["train.sequence_chunks=0"])
    assert copy.deepcopy(load_config(DEBUG_TRAIN_RECIPE)).train.sequence_chunks == 1


def test_qwen2vl_chunked_gradients_equal_the_single_forward(accelerator, qwen2vl_batch):
    model, batch = qwen2vl_batch
    assert len(set(batch["image_grid_thw"].prod(-1).tolist())) > 1  # rows differ in patches: offsets matter
    model = add_lora(model, LoraConfig(r=4, alpha=8, init_lora_weights=False, exclude_modules=".*visual.*")).train()
    reference = Reference(model)
    single = _step(model, batch, reference, accelerator, chunks=1)
    _assert_same(single, _step(model, batch, reference, accelerator, chunks=4))  # 2, 2, 1, 1 rows: uneven cuts
