"""Sequence log-probs, LoRA placement and the reference variants on tiny models."""

from __future__ import annotations

import pytest
import torch

from mfpo_train.collator import MFPOCollator
from mfpo_train.config import LoraConfig, ModelConfig
from mfpo_train.model import Reference, add_lora, load_model_and_processor
from mfpo_train.scoring import model_inputs, sequence_logps
from mfpo_train.synthetic import synthetic_rows


@pytest.fixture(params=["llava", "idefics3"])
def model_batch(request):
    path = request.getfixturevalue(f"tiny_{request.param}")
    model, processor = load_model_and_processor(ModelConfig(name_or_path=str(path)))
    batch = MFPOCollator(processor)(synthetic_rows(3))
    return model, batch


def _reference_logps(model, batch):
    """Summed answer log-probs from the full logits, the textbook way."""
    logits = model(**model_inputs(batch)).logits.float()
    logp = logits[:, :-1].log_softmax(-1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    return (logp * batch["completion_mask"][:, 1:]).sum(-1)


def test_sequence_logps_matches_full_logits(model_batch):
    model, batch = model_batch
    got = sequence_logps(model, batch)  # uses logits_to_keep from the first answer token
    torch.testing.assert_close(got, _reference_logps(model, batch), atol=1e-4, rtol=1e-5)
    assert got.shape == (batch["input_ids"].shape[0],) and (got < 0).all()


def test_bf16_log_softmax_path_is_close():
    from mfpo_train.scoring import selective_log_softmax

    logits = torch.randn(2, 5, 50)
    index = torch.randint(0, 50, (2, 5))
    exact = selective_log_softmax(logits, index)
    torch.testing.assert_close(selective_log_softmax(logits.bfloat16(), index), exact, atol=0.05, rtol=0.02)
    torch.testing.assert_close(exact, logits.log_softmax(-1).gather(-1, index[..., None]).squeeze(-1))


def test_lora_exclude_keeps_the_vision_tower_frozen(tiny_llava):
    model, _ = load_model_and_processor(ModelConfig(name_or_path=str(tiny_llava)))
    model = add_lora(model, LoraConfig(exclude_modules=".*(vision_tower|multi_modal_projector).*"))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("language_model" in n and "lora_" in n for n in trainable)


def test_disabled_adapters_and_ref_adapter_give_base_model_logps(model_batch):
    import copy

    model, batch = model_batch
    base = copy.deepcopy(model)
    expected = sequence_logps(base, batch)
    cfg = LoraConfig(init_lora_weights=False)  # random adapters: the policy differs from the base
    for with_ref in (False, True):
        policy = add_lora(copy.deepcopy(base), cfg, with_ref_adapter=with_ref)
        policy.train()
        if with_ref:  # the ref adapter starts equal to the trainable one; make it the base model's (zero B)
            for n, p in policy.named_parameters():
                if "lora_B.ref" in n:
                    p.data.zero_()
        ref = Reference(policy)
        got = ref.logps(policy, batch, ("chosen", "rejected", "perturbed"))
        torch.testing.assert_close(torch.cat([got.chosen, got.rejected, got.perturbed]), expected, atol=1e-4, rtol=1e-5)
        assert not torch.allclose(sequence_logps(policy, batch), expected, atol=1e-4)  # the policy itself differs
        assert policy.training  # back in train mode after the reference forward
        trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
        assert trainable and all(".default." in n for n in trainable)  # the ref adapter stays frozen
