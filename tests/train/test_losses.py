"""The loss terms on hand-made log-probs, and L_text against TRL's own DPO loss."""

from __future__ import annotations

import math

import pytest
import torch

from mfpo_train.losses import (
    SequenceLogps,
    dpo_loss,
    image_preference_loss,
    margin_loss,
    mfpo_loss,
    needed_sequences,
)


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def softplus(x):  # -log sigmoid(x) = log(1 + e^-x)
    return math.log1p(math.exp(-x))


def test_dpo_loss_hand_computed():
    # logits = (pi_w - ref_w) - (pi_l - ref_l) = (-1 + 1.5) - (-2 + 1.5) = 0.5 + 0.5 = 1.0; beta 0.5 -> -log s(0.5)
    got = dpo_loss(t(-1.0), t(-2.0), t(-1.5), t(-1.5), beta=0.5)
    assert got.item() == pytest.approx(softplus(0.5), abs=1e-12)
    assert got.item() == pytest.approx(0.4740769841801067, abs=1e-12)


def test_dpo_loss_symmetry_closed_form():
    # loss(a, b) + loss(b, a) = softplus(x) + softplus(-x) = x + 2 * softplus(x) - x ... = log(2 + e^x + e^-x)
    a, b, ra, rb = t(-3.0, -1.0), t(-4.0, -0.5), t(-3.5, -1.2), t(-3.0, -0.7)
    x = 0.2 * ((a - ra) - (b - rb))
    both = dpo_loss(a, b, ra, rb, beta=0.2) + dpo_loss(b, a, rb, ra, beta=0.2)
    torch.testing.assert_close(both, torch.log(2 + torch.exp(x) + torch.exp(-x)))


def test_image_preference_loss_hand_computed():
    # same chosen answer: original image (-10 policy, -11 ref) vs perturbed image (-12 policy, -11 ref)
    # logits = (-10 + 11) - (-12 + 11) = 1 + 1 = 2; beta 0.1 -> -log s(0.2)
    got = image_preference_loss(t(-10.0), t(-12.0), t(-11.0), t(-11.0), beta=0.1)
    assert got.item() == pytest.approx(softplus(0.2), abs=1e-12)
    # a policy that prefers the perturbed image pays more than one that prefers the original
    worse = image_preference_loss(t(-12.0), t(-10.0), t(-11.0), t(-11.0), beta=0.1)
    assert worse.item() > got.item()


def test_image_preference_loss_pairs_each_reference_with_its_own_image():
    # unequal references: ref(y_w|m) = -11, ref(y_w|m') = -13. logits = (-10 + 11) - (-12 + 13) = 1 - 1 = 0.
    # With the two references swapped it would be (-10 + 13) - (-12 + 11) = 4.
    got = image_preference_loss(t(-10.0), t(-12.0), t(-11.0), t(-13.0), beta=0.5)
    assert got.item() == pytest.approx(math.log(2.0), abs=1e-12)
    swapped = image_preference_loss(t(-10.0), t(-12.0), t(-13.0), t(-11.0), beta=0.5)
    assert swapped.item() == pytest.approx(softplus(2.0), abs=1e-12)
    # through mfpo_loss: the perturbed sequence's reference is ref.perturbed, not ref.chosen
    out = mfpo_loss(SequenceLogps(t(-10.0), t(-20.0), t(-12.0)), SequenceLogps(t(-11.0), t(-20.0), t(-13.0)),
                    beta=0.5, text_weight=0.0, margin_weight=0.0)
    assert out.loss.item() == pytest.approx(math.log(2.0), abs=1e-12)


def test_margin_loss_hand_computed_with_eta():
    # -log s(beta * r(y_w|m) - eta) with r = -4 - (-5) = 1, beta 0.5, eta 0.2 -> -log s(0.3)
    got = margin_loss(t(-4.0), t(-5.0), beta=0.5, eta=0.2)
    assert got.item() == pytest.approx(softplus(0.3), abs=1e-12)
    assert margin_loss(t(-4.0), t(-5.0), beta=0.5).item() == pytest.approx(softplus(0.5), abs=1e-12)


def test_mfpo_loss_weighted_sum_and_metrics():
    pol = SequenceLogps(chosen=t(-1.0, -2.0), rejected=t(-3.0, -1.0), perturbed=t(-2.0, -2.5))
    ref = SequenceLogps(chosen=t(-1.5, -2.0), rejected=t(-2.0, -2.0), perturbed=t(-1.5, -2.0))
    beta, w = 0.1, (1.0, 2.0, 0.5)
    out = mfpo_loss(pol, ref, beta=beta, text_weight=w[0], image_weight=w[1], margin_weight=w[2], eta=0.1)
    text = dpo_loss(pol.chosen, pol.rejected, ref.chosen, ref.rejected, beta=beta).mean()
    image = image_preference_loss(pol.chosen, pol.perturbed, ref.chosen, ref.perturbed, beta=beta).mean()
    margin = margin_loss(pol.chosen, ref.chosen, beta=beta, eta=0.1).mean()
    torch.testing.assert_close(out.loss, w[0] * text + w[1] * image + w[2] * margin)
    m = out.metrics
    # rewards: chosen 0.1*[0.5, 0] ; rejected 0.1*[-1, 1] ; perturbed 0.1*[-0.5, -0.5]
    assert m["rewards/chosen"].item() == pytest.approx(0.025)
    assert m["rewards/rejected"].item() == pytest.approx(0.0)
    assert m["rewards/margins"].item() == pytest.approx(0.025)
    assert m["rewards/accuracies"].item() == pytest.approx(0.5)
    assert m["image_rewards/rejected"].item() == pytest.approx(-0.05)
    assert m["image_rewards/margins"].item() == pytest.approx(0.075)
    assert m["image_rewards/accuracies"].item() == pytest.approx(1.0)
    assert m["logps/chosen"].item() == pytest.approx(-1.5)
    assert m["loss/text"].item() == pytest.approx(text.item())
    assert not any(v.requires_grad for v in m.values())


def test_terms_turn_off_and_need_fewer_sequences():
    pol = SequenceLogps(chosen=t(-1.0), rejected=t(-3.0))
    ref = SequenceLogps(chosen=t(-1.5), rejected=t(-2.0))
    out = mfpo_loss(pol, ref, beta=0.1, image_weight=0.0, margin_weight=0.0)  # plain DPO
    assert set(out.terms) == {"text"}
    assert "image_rewards/margins" not in out.metrics
    torch.testing.assert_close(out.loss, dpo_loss(pol.chosen, pol.rejected, ref.chosen, ref.rejected, beta=0.1).mean())
    assert needed_sequences(1, 0, 0) == ("chosen", "rejected")
    assert needed_sequences(0, 1, 1) == ("chosen", "perturbed")
    assert needed_sequences(1, 1, 1) == ("chosen", "rejected", "perturbed")


def test_gradient_flows_only_through_policy():
    pol = SequenceLogps(*(x.requires_grad_() for x in (t(-1.0), t(-3.0), t(-2.0))))
    ref = SequenceLogps(t(-1.5), t(-2.0), t(-1.5))
    mfpo_loss(pol, ref, beta=0.1).loss.backward()
    # d/d pi_w of (text + image + margin) is negative: raising the chosen log-prob lowers every term
    assert pol.chosen.grad.item() < 0
    assert pol.rejected.grad.item() > 0 and pol.perturbed.grad.item() > 0


def test_text_loss_equals_trl_sigmoid_dpo(tiny_llava, tmp_path):
    """Same tiny model, same TRL batch: TRL's DPOTrainer loss == our L_text on our log-probs."""
    trl = pytest.importorskip("trl")
    import copy

    import datasets
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mfpo_train.model import sequence_logps
    from mfpo_train.synthetic import synthetic_rows

    model = AutoModelForImageTextToText.from_pretrained(tiny_llava)
    ref_model = copy.deepcopy(model)
    with torch.no_grad():  # a reference that differs from the policy, so the loss is not log 2
        for p in ref_model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    processor = AutoProcessor.from_pretrained(tiny_llava)
    rows = [{k: r[k] for k in ("images", "prompt", "chosen", "rejected")} for r in synthetic_rows(4)]
    for r in rows:  # TRL's typed content: image parts carry no text key
        r["prompt"] = [{"role": "user", "content": [{"type": "image"}, r["prompt"][0]["content"][1]]}]
    ds = datasets.Dataset.from_list(rows)
    args = trl.DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, beta=0.3, use_cpu=True,
                         report_to=[], save_strategy="no", max_length=None)
    trainer = trl.DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=ds, processing_class=processor)
    batch = trainer.data_collator([ds[i] for i in range(4)])
    with torch.no_grad():
        trl_loss = trainer._compute_loss(trainer.model, dict(batch), return_outputs=False)
        pol_w, pol_l = sequence_logps(model, batch).chunk(2)
        ref_w, ref_l = sequence_logps(ref_model, batch).chunk(2)
    ours = dpo_loss(pol_w, pol_l, ref_w, ref_l, beta=0.3).mean()
    assert abs(ours.item() - math.log(2)) > 1e-3
    torch.testing.assert_close(ours, trl_loss.float(), atol=1e-5, rtol=1e-5)


def test_image_mask_zeroes_the_masked_rows_and_averages_over_the_rest():
    # rows 0 and 2 valid, row 1 not ("No, there is no dog": m' leaves the answer as true)
    pol = SequenceLogps(chosen=t(-1.0, -2.0, -3.0), rejected=t(-2.0, -2.0, -4.0), perturbed=t(-2.0, -9.0, -3.0))
    ref = SequenceLogps(chosen=t(-1.0, -2.0, -3.0), rejected=t(-2.0, -2.0, -4.0), perturbed=t(-1.0, -2.0, -3.0))
    mask = t(1.0, 0.0, 1.0)
    out = mfpo_loss(pol, ref, beta=1.0, text_weight=0.0, margin_weight=0.0, image_mask=mask)
    # per-row image logits: (0 - 0) - (-2 + 1) = 1 ; masked ; (0 - 0) - (-3 + 3) = 0
    assert out.terms["image"].tolist() == pytest.approx([softplus(1.0), 0.0, softplus(0.0)])
    assert out.loss.item() == pytest.approx((softplus(1.0) + softplus(0.0)) / 2)
    assert out.metrics["loss/image"].item() == pytest.approx((softplus(1.0) + softplus(0.0)) / 2)
    # image rewards over rows 0 and 2 only: margins 1 and 0 (row 1's margin would be 7)
    assert out.metrics["image_rewards/margins"].item() == pytest.approx(0.5)
    unmasked = mfpo_loss(pol, ref, beta=1.0, text_weight=0.0, margin_weight=0.0)
    assert unmasked.terms["image"][1].item() == pytest.approx(softplus(7.0))
    # every row masked: no image loss, metrics still present
    none = mfpo_loss(pol, ref, beta=1.0, text_weight=0.0, margin_weight=0.0, image_mask=t(0.0, 0.0, 0.0))
    assert none.loss.item() == 0.0 and "image_rewards/margins" in none.metrics
