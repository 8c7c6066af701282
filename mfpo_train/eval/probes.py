"""MFPO's image-reliance probes: log-prob comparisons on an mfpo dataset, no generation.

For each row (question q, image m, perturbed image m', chosen y_w, rejected y_l) the probes score six
sequences with `mfpo_train.model.sequence_logps`: y_w and y_l on m, on m', and on m'' = the whole image
under forward-diffusion noise at t = 999 (`mfpo_data`'s DiffusionNoisePerturber, no mask):

  preference_accuracy            log p(y_w|m)   > log p(y_l|m)     does the model prefer the right answer
  preference_accuracy_perturbed  log p(y_w|m')  > log p(y_l|m')    the same with the key objects noised
  preference_accuracy_noise      log p(y_w|m'') > log p(y_l|m'')   the same with no image left (paper Fig. 1b)
  image_reward_accuracy          log p(y_w|m)   > log p(y_w|m')    does the answer need the key objects
  image_reward_accuracy_noise    log p(y_w|m)   > log p(y_w|m'')   does the answer need the image at all
  logp_drop_perturbed            mean of log p(y_w|m) - log p(y_w|m')   (nats; higher: relies more on the image)
  logp_drop_noise                mean of log p(y_w|m) - log p(y_w|m'')

A model that looks at the image keeps its preference on m and loses it (towards 50%) on m''. Every value
is reported over all rows and per `difficulty_bucket`. Accuracies are fractions in [0, 1], as
TRL's `rewards/accuracies`; ties count as not greater.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any


logger = logging.getLogger(__name__)

NOISE_T = 999
# (name, sequence a, sequence b): the fraction of rows where log p(a) > log p(b)
ACCURACIES = (
    ("preference_accuracy", "chosen_m", "rejected_m"),
    ("preference_accuracy_perturbed", "chosen_perturbed", "rejected_perturbed"),
    ("preference_accuracy_noise", "chosen_noise", "rejected_noise"),
    ("image_reward_accuracy", "chosen_m", "chosen_perturbed"),
    ("image_reward_accuracy_noise", "chosen_m", "chosen_noise"),
)
DROPS = (("logp_drop_perturbed", "chosen_m", "chosen_perturbed"), ("logp_drop_noise", "chosen_m", "chosen_noise"))
LOGP_KEYS = ("chosen_m", "rejected_m", "chosen_perturbed", "rejected_perturbed", "chosen_noise", "rejected_noise")
METRICS = tuple(name for name, _, _ in ACCURACIES) + tuple(name for name, _, _ in DROPS)
_IMAGES = ("m", "perturbed", "noise")


def noise_image(image, row_id: str, seed: int = 0, t: int = NOISE_T):
    """The whole image under forward-diffusion noise at step `t`, seeded by (seed, row id): mfpo's perturber."""
    import numpy as np
    from PIL import Image

    from mfpo_data.backends.perturbers import DiffusionNoisePerturber
    from mfpo_data.schema import Sample
    from mfpo_data.seeding import sample_seed

    array = np.asarray(image.convert("RGB"))
    sample = Sample(id=str(row_id), source="", image_id="", pair_type="", question="", chosen="", rejected="",
                    image=array)
    (result,) = DiffusionNoisePerturber(t=t).perturb([sample], [sample_seed(seed, str(row_id), "probe-noise")])
    return Image.fromarray(result.image)


def row_logps(model, processor, rows: Sequence[dict], *, max_length: int | None = None, seed: int = 0,
              noise_t: int = NOISE_T) -> list[dict | None]:
    """The six log-probs of each row (None for a row whose prompt leaves no room for an answer)."""
    import torch

    from mfpo_train.collator import MFPOCollator
    from mfpo_data.backends.vlm import to_model
    from mfpo_train.model import sequence_logps

    variants = []
    for kind in _IMAGES:  # the same rows three times, each with one image in the `images` column
        for row in rows:
            if kind == "m":
                images = row["images"]
            elif kind == "perturbed":
                images = row["rejected_images"]
            else:
                images = [noise_image(row["images"][0], row.get("id", ""), seed, noise_t)]
            variants.append({**row, "images": images})
    collator = MFPOCollator(processor, max_length=max_length, sequences=("chosen", "rejected"))
    batch = collator(variants)
    out: list[dict | None] = [None] * len(rows)
    if not batch["num_pairs"]:
        return out
    batch = to_model(batch, model)
    with torch.no_grad():
        flat = sequence_logps(model, batch).cpu().tolist()
    kept = batch["kept"]
    n = len(kept)
    chosen, rejected = flat[:n], flat[n:]
    values: dict[int, dict] = defaultdict(dict)
    for j, pos in enumerate(kept):
        kind, i = _IMAGES[pos // len(rows)], pos % len(rows)
        values[i][f"chosen_{kind}"] = chosen[j]
        values[i][f"rejected_{kind}"] = rejected[j]
    for i, v in values.items():
        if len(v) == len(LOGP_KEYS):  # all three images kept (they have the same size, so they always are)
            out[i] = v
    return out


def summarize(records: Sequence[dict]) -> dict:
    """Metrics over `records` (each with the six log-probs and `difficulty_bucket`), overall and per bucket."""
    sums = accumulate(records)
    return finalize(sums)


def accumulate(records: Sequence[dict]) -> dict[str, dict[str, float]]:
    """Per group ("all" and each bucket): counts and sums that add up across shards (for a distributed reduce)."""
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in records:
        for group in ("all", r.get("difficulty_bucket") or "none"):
            s = sums[group]
            s["n"] += 1
            for name, a, b in ACCURACIES:
                s[name] += float(r[a] > r[b])
            for name, a, b in DROPS:
                s[name] += r[a] - r[b]
    return {g: dict(v) for g, v in sums.items()}


def finalize(sums: dict[str, dict[str, float]]) -> dict:
    def means(s):
        n = s.get("n", 0)
        return {"n": int(n), **{m: (s[m] / n if n else None) for m in METRICS}}

    out = means(sums.get("all", {}))
    out["by_bucket"] = {g: means(s) for g, s in sorted(sums.items()) if g != "all"}
    return out


def run_probes(model, processor, dataset, *, batch_size: int = 4, max_length: int | None = None, seed: int = 0,
               noise_t: int = NOISE_T, records_file: str | Path | None = None, progress: bool = True,
               indices: Sequence[int] | None = None) -> dict:
    """Probe every row of `dataset` (or `indices` of it); return the metrics, with `dropped` rows counted.

    `records_file`: a JSONL of the per-row log-probs (id, difficulty_bucket and the six values).
    """
    import json

    from tqdm.auto import tqdm

    from mfpo_train.model import _eval_mode

    order = list(range(len(dataset))) if indices is None else list(indices)
    records, dropped = [], []
    bar = tqdm(total=len(order), unit="row", desc="probes", disable=not progress, dynamic_ncols=True)
    with _eval_mode(model):
        for start in range(0, len(order), batch_size):
            rows = [dataset[i] for i in order[start:start + batch_size]]
            for row, values in zip(rows, row_logps(model, processor, rows, max_length=max_length, seed=seed,
                                                   noise_t=noise_t), strict=True):
                if values is None:
                    dropped.append(row.get("id"))
                    continue
                records.append({"id": row.get("id"), "difficulty_bucket": row.get("difficulty_bucket"), **values})
            bar.update(len(rows))
    bar.close()
    if dropped:
        logger.warning("probes: %d rows dropped, prompt with image tokens >= max_length (ids: %s)", len(dropped),
                       dropped[:5])
    if records_file is not None:
        path = Path(records_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        tmp.replace(path)
    result = summarize(records)
    result.update(dropped=len(dropped), noise_t=noise_t, seed=seed)
    return result


def load_probe_dataset(source: str | Path, split: str | None = None, revision: str | None = None,
                       max_samples: int | None = None) -> tuple[Any, str]:
    """(rows, split used). `split=None`: `test` when the dataset has one, else `train` (with a warning)."""
    from mfpo_data.validate import load_and_validate

    dd = load_and_validate(str(source), revision=revision)
    if split is None:
        split = "test" if "test" in dd else "train"
        if split == "train":
            logger.warning("probes: %s has no test split; probing its train split (rows the model may have "
                           "trained on)", source)
    elif split not in dd:
        from mfpo_data.validate import DatasetLoadError

        raise DatasetLoadError(f"{source} has no split '{split}' (it has: {', '.join(dd)})")
    ds = dd[split]
    if max_samples is not None:
        ds = ds.select(range(min(max_samples, len(ds))))
    return ds, split
