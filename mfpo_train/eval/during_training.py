"""The probes inside `mfpo-train`: on the eval split every `train.eval_steps` and at the end, as `eval/*`.

Each process probes its share of the rows (`index % world_size == rank`); counts and sums are reduced
across processes before the means are taken, so 1 and N processes log the same values. Every process runs the
same number of forwards (FSDP and DeepSpeed ZeRO-3 need each of them on every process).
"""

from __future__ import annotations

import logging
import math

import torch

from mfpo_train.eval import probes
from mfpo_train.model import _eval_mode


logger = logging.getLogger(__name__)

PREFIX = "eval/"
_GROUPS = ("all", "easy", "medium", "hard", "none")


def load_eval_split(cfg):
    """The rows to probe during training (the trainer's columns), or None when there is no eval split.

    `data.eval_split`: `auto` = `test` when the dataset has one, else none; a split name; or null.
    """
    split = cfg.data.eval_split
    if split is None or split == "none":
        return None
    from mfpo_data.validate import load_and_validate
    from mfpo_train.data import trainer_columns

    from mfpo_data.schema import TRL_COLUMNS

    # plain DPO on a TRL-only dataset (loss.image_weight 0): loaded as training loads it, and not probed
    dd = load_and_validate(str(cfg.data.dataset), revision=cfg.data.revision,
                           required=None if cfg.loss.image_weight > 0 else TRL_COLUMNS)
    if any("rejected_images" not in ds.column_names for ds in dd.values()):
        logger.info("no probes: %s has no rejected_images (the probes compare the answers on m and m')",
                    cfg.data.dataset)
        return None
    if split == "auto":
        if "test" not in dd:
            logger.info("no eval split: %s has no 'test' split (set data.eval_split to probe another)",
                        cfg.data.dataset)
            return None
        split = "test"
    if split not in dd:
        from mfpo_data.validate import DatasetLoadError

        raise DatasetLoadError(f"data.eval_split: {cfg.data.dataset} has no split '{split}' (it has: {', '.join(dd)})")
    if split == cfg.data.split:
        logger.warning("data.eval_split is the training split '%s': the probes measure rows the model trains on", split)
    ds = dd[split]
    if cfg.data.eval_max_samples is not None:
        ds = ds.select(range(min(cfg.data.eval_max_samples, len(ds))))
    logger.info("probing %d rows of split '%s' every %s steps and at the end", len(ds), split,
                cfg.train.eval_steps or "-")
    return ds.select_columns(trainer_columns(ds))


class TrainProbes:
    """`probes(model)` -> {"eval/preference_accuracy": ..., "eval/easy/preference_accuracy": ..., ...}."""

    def __init__(self, dataset, processor, accelerator, *, batch_size: int, max_length: int | None, seed: int):
        self.dataset, self.processor, self.accelerator = dataset, processor, accelerator
        self.batch_size, self.max_length, self.seed = batch_size, max_length, seed

    def __call__(self, model) -> dict[str, float]:
        acc = self.accelerator
        mine = list(range(acc.process_index, len(self.dataset), acc.num_processes))
        # Every process runs as many forwards (FSDP and ZeRO-3 gather weights in each): a shorter share is padded
        # with its first row again (or the split's first row, for a process with none), whose values are not counted.
        padded = mine + (mine[:1] or [0]) * (math.ceil(len(self.dataset) / acc.num_processes) - len(mine))
        records = []
        with _eval_mode(model), acc.autocast():
            for start in range(0, len(padded), self.batch_size):
                index = padded[start:start + self.batch_size]
                rows = [self.dataset[i] for i in index]
                values = probes.row_logps(model, self.processor, rows, max_length=self.max_length, seed=self.seed)
                records += [{"difficulty_bucket": r.get("difficulty_bucket"), **v}
                            for k, (r, v) in enumerate(zip(rows, values, strict=True))
                            if v is not None and start + k < len(mine)]
        sums = probes.accumulate(records)
        keys = [(g, m) for g in _GROUPS for m in ("n", *probes.METRICS)]
        flat = torch.tensor([sums.get(g, {}).get(m, 0.0) for g, m in keys], dtype=torch.float64, device=acc.device)
        if acc.num_processes > 1:
            flat = acc.reduce(flat, "sum")
        reduced: dict[str, dict[str, float]] = {}
        for (g, m), v in zip(keys, flat.tolist(), strict=True):
            reduced.setdefault(g, {})[m] = v
        reduced = {g: s for g, s in reduced.items() if s["n"] > 0}
        return flatten(probes.finalize(reduced))


def flatten(result: dict) -> dict[str, float]:
    out = {f"{PREFIX}{m}": result[m] for m in probes.METRICS if result.get(m) is not None}
    out[f"{PREFIX}n"] = result["n"]
    for bucket, values in result.get("by_bucket", {}).items():
        out.update({f"{PREFIX}{bucket}/{m}": values[m] for m in probes.METRICS if values.get(m) is not None})
    return out
