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


def _vision_calls(model) -> list:
    from mfpo_train.scoring import transformers_model

    calls = []
    transformers_model(model).model.vision_tower.register_forward_hook(lambda m, a, o: calls.append(1))
    return calls


@pytest.mark.parametrize("shared_prefix", [True, False])
def test_reference_reuses_the_policy_forwards_image_features_exactly(tiny_llava, shared_prefix):
    from mfpo_train.gradcache import policy_logps

    base, processor = load_model_and_processor(ModelConfig(name_or_path=str(tiny_llava)))
    batch = MFPOCollator(processor)(synthetic_rows(3))
    seqs = ("chosen", "rejected", "perturbed")
    cfg = LoraConfig(init_lora_weights=False, exclude_modules=".*(vision_tower|multi_modal_projector).*")
    policy = add_lora(base, cfg).train()
    calls = _vision_calls(policy)
    results = {}
    for share in (False, True):
        ref = Reference(policy, shared_prefix=shared_prefix, share_image_features=share)
        for step in range(2):  # the second batch reuses the decision of the first
            calls.clear()
            with ref.sharing_image_features(policy):
                policy_logps(policy, batch, seqs, shared_prefix=shared_prefix)
                before = len(calls)
                got = ref.logps(policy, batch, seqs)
            results[share] = torch.cat([got.chosen, got.rejected, got.perturbed])
            assert before > 0 and (len(calls) == before) is share  # sharing: the reference encoded no image itself
        assert ref._features_exact is (True if share else None)
    torch.testing.assert_close(results[True], results[False], atol=1e-5, rtol=0)  # the same log-probs
    assert not any("get_image_features" in m.__dict__ for m in policy.modules())  # the model is as it was


def test_image_features_are_encoded_again_where_an_adapter_is_on_the_vision_path(tiny_llava, caplog, monkeypatch):
    import copy
    import logging

    from mfpo_train import scoring

    monkeypatch.setattr(scoring, "_logged", set())  # said once per process: an earlier test may have said it

    base, processor = load_model_and_processor(ModelConfig(name_or_path=str(tiny_llava)))
    batch = MFPOCollator(processor)(synthetic_rows(2))
    seqs = ("chosen", "rejected", "perturbed")
    expected = sequence_logps(copy.deepcopy(base), batch)
    policy = add_lora(base, LoraConfig(init_lora_weights=False)).train()  # all-linear: the vision tower too
    calls = _vision_calls(policy)
    ref = Reference(policy)
    with caplog.at_level(logging.INFO, logger="mfpo_train.scoring"), ref.sharing_image_features(policy):
        sequence_logps(policy, batch)
        before = len(calls)
        got = ref.logps(policy, batch, seqs)
    assert ref._features_exact is False and len(calls) > before  # refused: the reference encoded the images itself
    torch.testing.assert_close(torch.cat([got.chosen, got.rejected, got.perturbed]), expected, atol=1e-4, rtol=1e-5)
    assert any("encoded again (an adapter layer" in r.getMessage() for r in caplog.records)
