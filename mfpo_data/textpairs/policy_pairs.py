"""Preference pairs from a model's own sampled answers, labelled by the benchmarks' scorers (no judge model).

Labels, one per answer (the on-policy source writes each beside its answer):

- a free-form answer (pair type `description`, e.g. "Please describe this image in detail."): CHAIR
  against the image's ground truth, computed by `score_chair` on that answer alone, the function
  `mfpo-eval chair` runs: the COCO objects it mentions, those that are not in the image
  (`hallucinated`, `[word, category]` in order of mention) and the ground-truth objects it names
  (`recall` = named / ground truth);
- a yes/no answer to a POPE-style question (pair type `presence`, "Is there a dog in the image?"):
  POPE's answer parser (`pope.parse_yes_no`, the parser `mfpo-eval pope` runs) against whether the
  object is in the image.

The pair of one image and prompt, from its K answers (`choose_description_pair`, `choose_presence_pair`):

- description: the rejected answer hallucinates at least one object; the chosen answer hallucinates
  fewer distinct objects (none, with `chosen: clean`) and names at least `min_recall` of the
  ground-truth objects, so that saying less does not win. Among the candidates the chosen one has the
  fewest hallucinated objects, then the highest recall; the rejected one the most hallucinated
  objects; ties go to the earlier sample.
- presence: the chosen answer is the first one the parser reads as the truth, the rejected one the
  first it reads as the opposite (an answer the parser cannot read is neither).

When there is no such pair the image and prompt give a reject with one of `REASONS` as its code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mfpo_data.scorers.chair import ChairVocabulary, score_chair
from mfpo_data.scorers.pope import parse_yes_no


REASONS = {
    "no_ground_truth": "the image has no CHAIR ground-truth object, so recall and hallucination are undefined",
    "no_hallucination": "none of the answers names an object that is not in the image",
    "no_contrast": "every answer hallucinates as many objects as the worst one",
    "low_recall": "the answers that hallucinate fewer objects name too few of the image's objects (min_recall)",
    "no_clean_answer": "no answer that names enough of the image's objects is free of hallucination (chosen: clean)",
    "no_wrong_answer": "every answer is right",
    "no_right_answer": "no answer is right",
}
CHOSEN_RULES = ("fewest", "clean")


@dataclass(frozen=True)
class Choice:
    """Indices of the chosen and rejected answers, or the reason code (a key of `REASONS`) why there is no pair."""

    chosen: int | None = None
    rejected: int | None = None
    reason: str | None = None

    @property
    def message(self) -> str:
        return f"{self.reason}: {REASONS[self.reason]}" if self.reason else ""


def chair_label(answer: str, image_id, truth: Sequence[str], vocab: ChairVocabulary) -> dict:
    """The answer's CHAIR detail (`score_chair` on it alone): `mentioned` categories (repeats included),
    `hallucinated` `[word, category]` pairs, and the ground-truth objects it names out of how many."""
    result = score_chair([{"image_id": image_id, "answer": answer}], {image_id: set(truth)}, vocab)
    detail, counts = result["details"][0], result["counts"]
    return {"mentioned": detail["mentioned"], "hallucinated": detail["hallucinated"],
            "gt_objects": counts["gt_objects"], "gt_objects_mentioned": counts["gt_objects_mentioned"]}


def hallucinated_objects(label: dict) -> list[str]:
    """The distinct categories an answer hallucinated, in order of first mention."""
    return list(dict.fromkeys(category for _, category in label["hallucinated"]))


def recall(label: dict) -> float | None:
    return label["gt_objects_mentioned"] / label["gt_objects"] if label["gt_objects"] else None


def choose_description_pair(labels: Sequence[dict], min_recall: float = 0.0, chosen: str = "fewest") -> Choice:
    """The pair of one image and prompt from its answers' CHAIR labels (module notes)."""
    if chosen not in CHOSEN_RULES:
        raise ValueError(f"chosen must be one of {', '.join(CHOSEN_RULES)}, got {chosen!r}")
    if not labels or not labels[0]["gt_objects"]:
        return Choice(reason="no_ground_truth")
    n_hal = [len(hallucinated_objects(label)) for label in labels]
    worst = max(n_hal)
    if worst == 0:
        return Choice(reason="no_hallucination")
    fewer = [i for i in range(len(labels)) if n_hal[i] < worst]
    if not fewer:
        return Choice(reason="no_contrast")
    candidates = [i for i in fewer if recall(labels[i]) >= min_recall]
    if not candidates:
        return Choice(reason="low_recall")
    if chosen == "clean":
        candidates = [i for i in candidates if n_hal[i] == 0]
        if not candidates:
            return Choice(reason="no_clean_answer")
    best = min(candidates, key=lambda i: (n_hal[i], -recall(labels[i]), i))
    rejected = max((i for i in range(len(labels)) if n_hal[i] > n_hal[best]), key=lambda i: (n_hal[i], -i))
    return Choice(best, rejected)


def presence_label(answer: str, truth: str, parser: str = "pope") -> dict:
    """What POPE's parser reads in the answer (`yes`, `no`, or None when it cannot read it) and whether that is `truth`."""
    parsed = parse_yes_no(answer, parser)
    return {"parsed": parsed, "truth": truth, "correct": None if parsed is None else parsed == truth}


def choose_presence_pair(labels: Sequence[dict]) -> Choice:
    """The first right answer over the first wrong one (module notes)."""
    right = [i for i, label in enumerate(labels) if label["correct"] is True]
    wrong = [i for i, label in enumerate(labels) if label["correct"] is False]
    if not wrong:
        return Choice(reason="no_wrong_answer")
    if not right:
        return Choice(reason="no_right_answer")
    return Choice(right[0], wrong[0])
