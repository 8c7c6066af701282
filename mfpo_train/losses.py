"""MFPO losses: pure functions on summed answer log-probs (paper Eq. 5-7).

Notation: `logps` are log pi(y | q, m) summed over the answer tokens, one value per example;
r(y|m) = logps_policy(y|m) - logps_ref(y|m) is the implicit reward (times beta).

    L_text   = -log s(b * [r(y_w|m) - r(y_l|m)])          Eq. 5, DPO on the original image
    L_image  = -log s(b * [r(y_w|m) - r(y_w|m')])         Eq. 6, same answer, original vs perturbed image
    L_margin = -log s(b * r(y_w|m) - eta)                 Eq. 7, keeps the chosen reward from falling
    L        = w_text * L_text + w_image * L_image + w_margin * L_margin   (1 : 1 : 1 best, eta = 0)

With `loss.token_weighting: image_reliance` the log-probs of the chosen answer (on m and on m') are weighted
sums, sum_t w_t log pi(y_t | ...), with `reliance_weights` from the dataset's per-token image reliance
(the default is the paper's uniform sum, w_t = 1).

A weight of 0 turns a term off: (1, 0, 0) is plain DPO (TRL's `loss_type="sigmoid"`), (1, 1, 1)
with eta 0 has the form of mDPO's loss, and is MFPO's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, *, beta: float) -> torch.Tensor:
    """Per-example sigmoid DPO loss (Eq. 5): -log s(b * ([pi_w - ref_w] - [pi_l - ref_l]))."""
    logits = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return -F.logsigmoid(beta * logits)


def image_preference_loss(policy_original_logps: torch.Tensor, policy_perturbed_logps: torch.Tensor,
                          ref_original_logps: torch.Tensor, ref_perturbed_logps: torch.Tensor, *,
                          beta: float) -> torch.Tensor:
    """Per-example image reward loss (Eq. 6): the chosen answer on m is preferred to the same answer on m'."""
    logits = (policy_original_logps - ref_original_logps) - (policy_perturbed_logps - ref_perturbed_logps)
    return -F.logsigmoid(beta * logits)


def margin_loss(policy_chosen_logps: torch.Tensor, ref_chosen_logps: torch.Tensor, *, beta: float,
                eta: float = 0.0) -> torch.Tensor:
    """Per-example anchor (Eq. 7): -log s(b * r(y_w|m) - eta); penalises a falling chosen reward."""
    return -F.logsigmoid(beta * (policy_chosen_logps - ref_chosen_logps) - eta)


def reliance_weights(values) -> list[float]:
    """Token weights from per-token image reliance r_t = log p(y_t | m) - log p(y_t | m'), normalised per answer:
    w_t = T * max(r_t, 0) / sum_s max(r_s, 0) for an answer of T tokens, so they sum to T as the uniform
    weights do; tokens the image does not support (r_t <= 0) get 0. An answer with no positive r_t (or a
    non-finite one) keeps uniform weights."""
    clipped = [max(float(v), 0.0) for v in values]
    total = sum(clipped)
    if not clipped or not total > 0 or total == float("inf"):
        return [1.0] * len(clipped)
    return [len(clipped) * v / total for v in clipped]


@dataclass
class SequenceLogps:
    """Summed answer log-probs of the three sequences of a batch; `None` where a sequence is not computed."""

    chosen: torch.Tensor  # y_w | m
    rejected: torch.Tensor | None = None  # y_l | m
    perturbed: torch.Tensor | None = None  # y_w | m'

    def detach(self) -> SequenceLogps:
        return SequenceLogps(*(None if t is None else t.detach() for t in (self.chosen, self.rejected, self.perturbed)))


@dataclass
class MFPOLossOutput:
    loss: torch.Tensor  # scalar: the weighted sum of the batch means of the active terms
    terms: dict[str, torch.Tensor]  # per-example losses of the active terms: text, image, margin
    metrics: dict[str, torch.Tensor]  # scalar, detached; TRL's names plus image_rewards/* and loss/*


def needed_sequences(text_weight: float, image_weight: float, margin_weight: float) -> tuple[str, ...]:
    """The sequences the active terms need: chosen always, rejected for L_text, perturbed for L_image."""
    seqs = ["chosen"]
    if text_weight > 0:
        seqs.append("rejected")
    if image_weight > 0:
        seqs.append("perturbed")
    return tuple(seqs)


def mfpo_loss(policy: SequenceLogps, ref: SequenceLogps, *, beta: float, text_weight: float = 1.0,
              image_weight: float = 1.0, margin_weight: float = 1.0, eta: float = 0.0,
              image_mask: torch.Tensor | None = None) -> MFPOLossOutput:
    """The weighted MFPO objective and its metrics. Terms with weight 0 are neither computed nor logged.

    `image_mask` (one 0/1 value per example, from the `image_pair_valid` column) keeps `L_image` to the
    pairs whose perturbed image makes the chosen answer less true: a masked example's image term is 0
    and the term is the mean over the unmasked ones (0 when none is left). `image_rewards/*` are
    measured on the unmasked examples too.
    """
    terms: dict[str, torch.Tensor] = {}
    if text_weight > 0:
        terms["text"] = dpo_loss(policy.chosen, policy.rejected, ref.chosen, ref.rejected, beta=beta)
    if image_weight > 0:
        terms["image"] = image_preference_loss(policy.chosen, policy.perturbed, ref.chosen, ref.perturbed, beta=beta)
        if image_mask is not None:
            terms["image"] = terms["image"] * image_mask.to(terms["image"].dtype)
    if margin_weight > 0:
        terms["margin"] = margin_loss(policy.chosen, ref.chosen, beta=beta, eta=eta)
    weights = {"text": text_weight, "image": image_weight, "margin": margin_weight}
    means = {name: term.mean() for name, term in terms.items()}
    if "image" in terms and image_mask is not None:
        means["image"] = terms["image"].sum() / image_mask.sum().clamp(min=1).to(terms["image"].dtype)
    loss = sum(weights[name] * means[name] for name in terms)
    metrics = reward_metrics(policy, ref, beta=beta, terms=terms, image_mask=image_mask)
    for name, mean in means.items():
        metrics[f"loss/{name}"] = mean.detach()
    return MFPOLossOutput(loss=loss, terms=terms, metrics=metrics)


def reward_metrics(policy: SequenceLogps, ref: SequenceLogps, *, beta: float,
                   terms: dict[str, torch.Tensor] | None = None,
                   image_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Batch-mean metrics, named as TRL's DPOTrainer names them, plus `image_rewards/*` (over the
    examples `image_mask` keeps, all when it is None) and `loss/<term>`."""
    policy, ref = policy.detach(), ref.detach()
    out: dict[str, torch.Tensor] = {}
    chosen = beta * (policy.chosen - ref.chosen)
    out["rewards/chosen"] = chosen.mean()
    out["logps/chosen"] = policy.chosen.mean()
    if policy.rejected is not None:
        rejected = beta * (policy.rejected - ref.rejected)
        out["rewards/rejected"] = rejected.mean()
        out["rewards/margins"] = (chosen - rejected).mean()
        out["rewards/accuracies"] = (chosen > rejected).float().mean()
        out["logps/rejected"] = policy.rejected.mean()
    if policy.perturbed is not None:
        keep = torch.ones_like(chosen, dtype=torch.bool) if image_mask is None else image_mask.to(chosen.device).bool()
        if not keep.any():  # every pair masked: measure them all, so every rank logs the same keys
            keep = torch.ones_like(keep)
        image_chosen, perturbed = chosen[keep], beta * (policy.perturbed - ref.perturbed)[keep]
        out["image_rewards/chosen"] = image_chosen.mean()
        out["image_rewards/rejected"] = perturbed.mean()
        out["image_rewards/margins"] = (image_chosen - perturbed).mean()
        out["image_rewards/accuracies"] = (image_chosen > perturbed).float().mean()
        out["logps/perturbed"] = policy.perturbed[keep].mean()
    for name, term in (terms or {}).items():
        out[f"loss/{name}"] = term.detach().mean()
    return out
