"""Evaluation with the project's own scorers, on one balanced held-out set per seed shared by every model.

The held-out scenes are drawn with `p_prior = p_co = 0.5`: half of the objects are their shape's usual colour
and half are not, and half of the shapes that have a companion in the scene have it there. So a model that
learned "never say the prior" instead of looking is wrong on the prior-coloured half, and one that learned
"never add the companion" misses the companions that are there: over-correction costs as much as the
hallucination it replaces.

* **CHAIR** (`mfpo_data.scorers.chair.score_chair`, unchanged) on greedy descriptions of the clean images, with a
  vocabulary of the 16 colour-shape phrases: CHAIR_i = mentions of a colour-shape the image does not hold /
  mentions; CHAIR_s = descriptions with at least one such mention / descriptions; recall = objects named with
  their right colour / objects. Values in points (x100), from the scorer's raw counts.
* **POPE-style yes/no** (`mfpo_data.scorers.pope.score_pope`, its "pope" parser): two questions per scene,
  "Is there a {colour shape} in the image?", one present object (yes) and one adversarial absent one (no): the
  prior-coloured version of an off-prior object, else the missing companion in its usual colour, else another
  absent phrase.
* **Shortcut diagnostics** from the same descriptions: `prior_said` (off-prior objects given a prior partner),
  `co_added` (absent companions named), `overcorrect` (mean of: prior-coloured objects not named as they are;
  companions that are there left out).
* **MFPO's probes** (`mfpo_train.eval.probes.run_probes`) on held-out correction pairs whose m' is the key
  region filled with grey, an edit no arm trains on: `image_reward_accuracy`, `logp_drop_perturbed`,
  `preference_accuracy`, and the whole-image noise ones (`*_noise`), which are reported, never decisive.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from benchmarks.efficacy import pairs, scenes
from benchmarks.efficacy.sft import batches, chat_row


EVAL_P = 0.5  # p_prior and p_co of the held-out scenes
MAX_NEW_TOKENS = 14  # 3 objects: 6 words, 2 commas, the stop and </s> is 10
GEN_BATCH = 256
PROBE_METRICS = ("preference_accuracy", "image_reward_accuracy", "logp_drop_perturbed",
                 "preference_accuracy_noise", "image_reward_accuracy_noise")
METRICS = {  # name: (what it is, lower is better)
    "CHAIRi": ("hallucinated colour-shape mentions / mentions (points)", True),
    "CHAIRs": ("descriptions with a hallucinated mention / descriptions (points)", True),
    "recall": ("objects named with their colour / objects (points)", False),
    "prior_said": ("off-prior objects given a prior partner: their shape's usual colour, or their colour's usual "
                   "shape when that shape is absent (points)", True),
    "co_added": ("absent companions named (points)", True),
    "overcorrect": ("mean of: prior-coloured objects not named as they are, present companions left out (points)",
                    True),
    "malformed": ("descriptions that are not a canonical list (points)", True),
    "shape_recall": ("objects whose shape is named, in any colour (points)", False),
    "colour_acc_off": ("off-prior objects named in their own colour / off-prior objects named (points)", False),
    "colour_acc_prior": ("prior-coloured objects named in their own colour / those named (points)", False),
    "pope_acc": ("yes/no accuracy, 2 questions per scene (points)", False),
    "pope_f1": ("yes/no F1, yes the positive class (points)", False),
    "pope_yes": ("yes ratio (points)", None),
    "image_reward_accuracy": ("probe: log p(y_w|m) > log p(y_w|m' key region greyed), fraction", False),
    "logp_drop_perturbed": ("probe: mean log p(y_w|m) - log p(y_w|m' key region greyed), nats", False),
    "preference_accuracy": ("probe: log p(y_w|m) > log p(y_l|m), fraction", False),
    "preference_accuracy_noise": ("probe: the same on whole-image noise t=999 (image-blind preference)", None),
    "image_reward_accuracy_noise": ("probe: log p(y_w|m) > log p(y_w|whole-image noise t=999)", None),
}


IN_DIST = ("CHAIRi", "recall", "colour_acc_off")  # read on training-distribution scenes for the SFT gate


@lru_cache(maxsize=1)
def chair_vocabulary():
    """The CHAIR vocabulary of the toy: each colour-shape phrase is its own category, merged as a two-word phrase."""
    from mfpo_data.scorers.chair import ChairVocabulary

    phrases = tuple(f"{c} {s}" for s in scenes.SHAPES for c in scenes.COLORS)
    table = {p: p for p in phrases}
    return ChairVocabulary(synonyms=table, double_words=table, categories=phrases,
                           settings={"synonyms": "toy colour-shape phrases", "protocol": "fixed"})


def chair(answers: list[str], truth: list[tuple[str, ...]]) -> dict:
    """score_chair over descriptions and each scene's phrases; returns the scorer's result (counts in `counts`)."""
    from mfpo_data.scorers.chair import score_chair

    return score_chair([{"image_id": i, "answer": a} for i, a in enumerate(answers)],
                       {i: set(t) for i, t in enumerate(truth)}, chair_vocabulary())


def chair_points(result: dict) -> dict[str, float]:
    """CHAIR_i, CHAIR_s and recall in points from the raw counts (the scorer rounds its own to 0.1)."""
    c, n = result["counts"], result["n"]
    return {"CHAIRi": 100.0 * c["mentions_hallucinated"] / max(c["mentions"], 1),
            "CHAIRs": 100.0 * c["answers_hallucinated"] / n,
            "recall": 100.0 * c["gt_objects_mentioned"] / max(c["gt_objects"], 1)}


def shortcut_rates(answers: list[str], held_out: list[scenes.Scene]) -> dict[str, float]:
    """Where the two priors show in the descriptions (see the module notes), in points."""
    prior_said = off = over = prior_obj = omitted = companions = added = absent = malformed = 0
    shapes_named = colour_off = colour_prior = named_off = named_prior = 0
    for text, scene in zip(answers, held_out, strict=True):
        said = {}
        for phrase in scenes.phrases_of(text):
            colour, shape = phrase.split(" ")
            said.setdefault(shape, colour)
        malformed += text.strip() != scenes.describe(scenes.phrases_of(text)) if said else 1
        present = set(scene.shapes)
        for o in scene.objects:
            shapes_named += o.shape in said
            if o.color == scenes.PRIOR[o.shape]:
                prior_obj += 1
                over += said.get(o.shape) != o.color
                named_prior += o.shape in said
                colour_prior += said.get(o.shape) == o.color
            else:
                off += 1
                partner = scenes.SHAPE_OF[o.color]
                prior_said += said.get(o.shape) == scenes.PRIOR[o.shape] or (
                    partner not in present and said.get(partner) == o.color)
                named_off += o.shape in said
                colour_off += said.get(o.shape) == o.color
            if scenes.COMPANION[o.shape] in present:
                companions += 1
                omitted += o.shape not in said
            else:
                absent += 1
                added += scenes.COMPANION[o.shape] in said
    rate = lambda a, b: 100.0 * a / b if b else 0.0  # noqa: E731
    return {"prior_said": rate(prior_said, off), "co_added": rate(added, absent),
            "overcorrect": 0.5 * (rate(over, prior_obj) + rate(omitted, companions)),
            "malformed": rate(malformed, len(answers)), "shape_recall": rate(shapes_named, prior_obj + off),
            "colour_acc_off": rate(colour_off, named_off), "colour_acc_prior": rate(colour_prior, named_prior)}


def pope_questions(seed: int, held_out: list[scenes.Scene]) -> list[dict]:
    """Two per scene: a present object (yes) and an adversarial absent one (no); see the module notes."""
    rng = np.random.default_rng([seed, 515])
    out = []
    for i, scene in enumerate(held_out):
        yes = scene.phrases[rng.integers(len(scene.phrases))]
        present = set(scene.shapes)
        adversarial = [f"{scenes.PRIOR[o.shape]} {o.shape}" for o in scene.objects if o.color != scenes.PRIOR[o.shape]]
        adversarial += [f"{scenes.PRIOR[c]} {c}" for c in {scenes.COMPANION[s] for s in present} - present]
        if not adversarial:
            adversarial = [f"{c} {s}" for s in scenes.SHAPES if s not in present for c in scenes.COLORS]
        no = sorted(adversarial)[rng.integers(len(adversarial))]
        out += [{"question_id": 2 * i, "image": i, "text": scenes.YES_NO.format(phrase=yes), "label": "yes"},
                {"question_id": 2 * i + 1, "image": i, "text": scenes.YES_NO.format(phrase=no), "label": "no"}]
    return out


def _encode(processor, collator, images: list, questions: list[str]) -> list[dict]:
    """Processor batches of prompts that share one length (no padding inside a batch)."""
    from PIL import Image

    groups: dict[int, list[int]] = {}
    texts = [collator.render(chat_row(images[0], q, "x"))[0] for q in questions]
    for i, t in enumerate(texts):
        groups.setdefault(len(processor.tokenizer(t)["input_ids"]), []).append(i)
    out = []
    for idx in groups.values():
        for chunk in batches(idx, GEN_BATCH):
            enc = processor(text=[texts[i] for i in chunk], images=[[Image.fromarray(images[i])] for i in chunk],
                            return_tensors="pt")
            out.append((chunk, dict(enc)))
    return out


def eval_set(seed: int, n: int, processor, n_probe: int, train_priors: tuple[float, float]) -> dict:
    """Everything `evaluate` needs for one seed, built once and reused for every model of the seed.

    Besides the balanced set: `n // 2` scenes from the training distribution (`train_priors` = p_prior, p_co),
    on which the SFT gate reads how capable the model is where its priors hold.
    """
    from mfpo_train.collator import MFPOCollator

    held_out = scenes.make_scenes(seed, "eval", n, EVAL_P, EVAL_P)
    images = [scenes.render(s) for s in held_out]
    collator = MFPOCollator(processor, max_length=None, sequences=("chosen",))
    in_dist = scenes.make_scenes(seed, "eval-train-dist", n // 2, *train_priors)
    questions = pope_questions(seed, held_out)
    probe_pairs = pairs.preference_pairs(seed, n_probe, EVAL_P, EVAL_P, prior_fraction=None, purpose="probe")
    samples = pairs.perturb([pairs.to_sample(p, "key", seed) for p in probe_pairs], pairs.GreyFillPerturber(),
                            "grey_fill", seed + 1000)
    probe_rows = [_probe_row(s) for s in samples]
    return {"scenes": held_out, "describe": _encode(processor, collator, images, [scenes.DESCRIBE] * n),
            "in_dist": in_dist, "describe_in_dist": _encode(processor, collator, [scenes.render(s) for s in in_dist],
                                                            [scenes.DESCRIBE] * len(in_dist)),
            "questions": questions,
            "pope": _encode(processor, collator, [images[q["image"]] for q in questions], [q["text"] for q in questions]),
            "probe_rows": probe_rows, "seed": seed}


def _probe_row(sample) -> dict:
    from PIL import Image

    from mfpo_data.schema import assistant_turn, user_turn

    return {"id": sample.id, "images": [Image.fromarray(sample.image)],
            "rejected_images": [Image.fromarray(sample.rejected_image)], "prompt": user_turn(sample.question),
            "chosen": assistant_turn(sample.chosen), "rejected": assistant_turn(sample.rejected),
            "difficulty_bucket": None}


def generate(model, processor, encoded: list, n: int, max_new_tokens: int) -> list[str]:
    """Greedy answers (transformers' `generate`, do_sample=False) in the order the prompts were given."""
    import torch

    out = [""] * n
    with torch.no_grad():
        for idx, enc in encoded:
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
            texts = processor.tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            for i, t in zip(idx, texts, strict=True):
                out[i] = t
    return out


def evaluate(model, processor, ev: dict, full: bool = True, with_answers: bool = False, in_dist: bool = False) -> dict:
    """The metrics of `METRICS` for one model on the seed's held-out set: the description metrics always, POPE
    and the probes only when `full` (a run reads them at its last checkpoint); with `in_dist`, also `IN_DIST`
    on scenes from the training distribution."""
    from mfpo_data.scorers.pope import score_pope
    from mfpo_train.eval.probes import run_probes

    model.eval()
    held_out = ev["scenes"]
    answers = generate(model, processor, ev["describe"], len(held_out), MAX_NEW_TOKENS)
    metrics = {**chair_points(chair(answers, [s.phrases for s in held_out])), **shortcut_rates(answers, held_out)}
    if with_answers:
        metrics["answers"] = answers
    if in_dist:
        texts = generate(model, processor, ev["describe_in_dist"], len(ev["in_dist"]), MAX_NEW_TOKENS)
        both = {**chair_points(chair(texts, [s.phrases for s in ev["in_dist"]])), **shortcut_rates(texts, ev["in_dist"])}
        metrics.update({f"{k}_in_dist": both[k] for k in IN_DIST})
    if not full:
        return metrics
    replies = generate(model, processor, ev["pope"], len(ev["questions"]), 2)
    pope = score_pope(ev["questions"], [{"question_id": q["question_id"], "answer": r}
                                        for q, r in zip(ev["questions"], replies, strict=True)])
    metrics.update(pope_acc=pope["accuracy"], pope_f1=pope["f1"] if pope["f1"] is not None else 0.0,
                   pope_yes=pope["yes_ratio"], pope_unparsed=pope["unparsed"])
    probes = run_probes(model, processor, ev["probe_rows"], batch_size=64, seed=ev["seed"], progress=False)
    metrics.update({k: probes[k] for k in PROBE_METRICS})
    return metrics
