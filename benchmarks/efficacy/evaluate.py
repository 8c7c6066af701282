"""Evaluation: one fixed set of held-out anti-prior items per seed, shared by every model of that seed.

The answer to "What color is the {shape}?" is the colour with the highest `log p(colour</s> | image, question)`
(`mfpo_train.model.sequence_logps` over the 4 colours). Each item is scored on five images:

  orig        the item: the asked shape is *not* its prior colour
  twin        the same scene with the asked shape repainted in its prior colour (the right answer is the prior)
  noised      the asked shape's region noised, diffusion noise t=500 (the training perturbation, held out)
  grey        the asked shape's region filled with uniform grey (a probe the training never saw)
  pure_noise  the whole image noised at t=999 (nothing of the scene is left)

Images are edited by mfpo-data's `PerturbationStage`, like the training data.
"""

from __future__ import annotations

from benchmarks.efficacy import shapes
from benchmarks.efficacy.sft import batches


VARIANTS = ("orig", "twin", "noised", "grey", "pure_noise")
METRICS = {  # name: (description, higher is better for a grounded model?)
    "acc_anti": ("accuracy on the anti-prior items", True),
    "acc_twin": ("accuracy on their twins (the prior colour is right)", True),
    "acc_both": ("item and twin both right", True),
    "chg_noise": ("answer changes when the key region is noised (t=500)", True),
    "chg_grey": ("answer changes when the key region is greyed", True),
    "noise_pref": ("log p(true) > log p(prior) on pure noise (t=999, whole image)", False),
    "grey_pref": ("log p(true) > log p(prior) with the key region greyed", False),
    "grey_drop": ("mean drop of log p(true) when the key region is greyed (nats)", True),
}
ROWS_PER_BATCH = 512


def eval_set(seed: int, n: int, p_prior: float, processor) -> dict:
    """Everything `evaluate` needs, built once per seed and reused for every model of that seed.

    All items asking about the same shape have the same prompt length (the question depends only on the
    shape), so their prompts are batched without padding; `evaluate` runs each prompt once and scores the
    four colour answers from its cached keys and values.
    """
    import numpy as np
    import torch

    from mfpo_data.backends.perturbers import DiffusionNoisePerturber
    from mfpo_train.collator import MFPOCollator

    scenes = shapes.make_scenes(seed, "eval", n, p_prior, anti=True)
    images = {"orig": [shapes.render(s)[0] for s in scenes], "twin": [shapes.render(s.twin())[0] for s in scenes]}
    for variant, perturber, kind, region in (("noised", DiffusionNoisePerturber(t=500), "diffusion_noise", "key"),
                                             ("grey", shapes.GreyFillPerturber(), "grey_fill", "key"),
                                             ("pure_noise", DiffusionNoisePerturber(t=999), "diffusion_noise", "global")):
        samples = [shapes.to_sample(s, s.asked.color, s.prior, region) for s in scenes]
        images[variant] = [smp.rejected_image for smp in shapes.perturb(samples, perturber, kind, seed + 1000)]
    collator = MFPOCollator(processor, max_length=None, sequences=("chosen",))
    rows = {(v, i): shapes.chat_row(images[v][i], s.question, "red") for v in VARIANTS for i, s in enumerate(scenes)}
    # The answers as the collator renders and tokenises them ("red</s>"), padded to one length.
    answers = [collator.tokenizer(collator.render(shapes.chat_row(images["orig"][0], scenes[0].question, c))[1]["chosen"],
                                  add_special_tokens=False)["input_ids"] for c in shapes.COLORS]
    width = max(len(a) for a in answers)
    answer_ids = torch.tensor([a + [collator.tokenizer.pad_token_id] * (width - len(a)) for a in answers])
    answer_mask = torch.tensor([[1.0] * len(a) + [0.0] * (width - len(a)) for a in answers])
    groups = []
    for shape in shapes.SHAPES:
        items = [i for i, s in enumerate(scenes) if s.asked.shape == shape]
        keys = [(v, i) for v in VARIANTS for i in items]
        for chunk in batches(keys, ROWS_PER_BATCH // len(shapes.COLORS)):
            texts = [collator.render(rows[k])[0] for k in chunk]
            enc = processor(text=texts, images=[[rows[k]["images"][0]] for k in chunk], padding=True, return_tensors="pt")
            if not bool(enc["attention_mask"].all()):
                raise RuntimeError(f"prompts about the {shape} differ in length; cannot share them across answers")
            groups.append(({**enc}, [VARIANTS.index(v) for v, _ in chunk], [i for _, i in chunk]))
    return {"groups": groups, "answer_ids": answer_ids, "answer_mask": answer_mask,
            "true": np.array([shapes.COLORS.index(s.asked.color) for s in scenes]),
            "prior": np.array([shapes.COLORS.index(s.prior) for s in scenes]), "n": len(scenes)}


def colour_logps(model, ev: dict):
    """(variants, items, colours): summed log p(answer tokens | image, question) of each colour answer.

    The same sum `mfpo_train.model.sequence_logps` computes over `prompt + answer` rows (the test checks they
    agree), with each prompt run once: its last logits give the first answer token, and its cached keys and
    values, repeated once per colour, carry the remaining answer tokens.
    """
    import inspect

    import torch

    ids, mask = ev["answer_ids"], ev["answer_mask"]
    colours, width = ids.shape
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"  # 5.x / 4.x
    out = torch.zeros(len(VARIANTS), ev["n"], colours)
    with torch.no_grad():
        for enc, variants, items in ev["groups"]:
            rows = len(items)
            first = model(**enc, use_cache=True, logits_to_keep=1)
            lp = torch.log_softmax(first.logits[:, -1].float(), -1)[:, ids[:, 0]]  # (rows, colours)
            if width > 1:
                cache = getattr(first, "cache", None) or first.past_key_values
                cache.batch_repeat_interleave(colours)
                cont = ids[:, :-1].repeat(rows, 1)
                attention = torch.ones(rows * colours, enc["input_ids"].shape[1] + width - 1, dtype=torch.long)
                logits = model(input_ids=cont, attention_mask=attention, use_cache=True, **{cache_arg: cache}).logits
                rest = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:].repeat(rows, 1).unsqueeze(-1))
                lp = lp + (rest.squeeze(-1) * mask[:, 1:].repeat(rows, 1)).sum(-1).view(rows, colours)
            out[torch.tensor(variants), torch.tensor(items)] = lp
    return out.numpy()


def evaluate(model, ev: dict) -> dict[str, float]:
    import numpy as np

    model.eval()
    lp = dict(zip(VARIANTS, colour_logps(model, ev), strict=True))
    pred = {v: a.argmax(-1) for v, a in lp.items()}
    idx = np.arange(ev["n"])
    true, prior = ev["true"], ev["prior"]
    right, twin_right = pred["orig"] == true, pred["twin"] == prior
    return {
        "acc_anti": float(right.mean()),
        "acc_twin": float(twin_right.mean()),
        "acc_both": float((right & twin_right).mean()),
        "chg_noise": float((pred["noised"] != pred["orig"]).mean()),
        "chg_grey": float((pred["grey"] != pred["orig"]).mean()),
        "noise_pref": float((lp["pure_noise"][idx, true] > lp["pure_noise"][idx, prior]).mean()),
        "grey_pref": float((lp["grey"][idx, true] > lp["grey"][idx, prior]).mean()),
        "grey_drop": float((lp["orig"][idx, true] - lp["grey"][idx, true]).mean()),
    }
