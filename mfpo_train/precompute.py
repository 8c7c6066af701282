"""`mfpo-train precompute-ref`: score every row once with the reference and store the log-probs as columns.

Training with these columns skips every reference forward (TRL refuses this for vision datasets;
the log-probs of three sequences per row are three floats, so there is nothing to stop it). The
copy keeps every column of the source and adds:

    ref_chosen_logps     log pi_ref(y_w | q, m)    summed over answer tokens
    ref_rejected_logps   log pi_ref(y_l | q, m)
    ref_perturbed_logps  log pi_ref(y_w | q, m')
    ref_logps_model      "<model id>@<revision>|max_length=<n>": training uses the columns only when
                         this matches its own model and max_length (truncation changes the sums)

Rows too long for `max_length`, rows whose image does not decode and rows training cannot use
(`data.row_problem`: an empty answer, images that do not match) get nulls (training drops them anyway). The copy is written where a
build writes its shards (`OUT/data/train-00000-of-00001.parquet`), so it loads like any build output.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from mfpo_data.layout import shard_name
from mfpo_train.collator import SEQUENCES, MFPOCollator
from mfpo_train.config import TrainConfig
from mfpo_train.data import (REF_COLUMNS, REF_KEY_COLUMN, DecodingRows, Unusable, load_preference_dataset, reference_key,
                             trainer_columns)


logger = logging.getLogger(__name__)


def precompute_reference(cfg: TrainConfig, output_dir: str | Path, batch_size: int | None = None) -> Path:
    """Write a copy of `cfg.data.dataset` with reference log-prob columns into `output_dir`; return it."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from mfpo_train.model import batch_logps, load_model_and_processor, split_logps

    from mfpo_data.folders import check_output_folder, output_root

    from mfpo_train.errors import TrainingError
    from mfpo_train.processes import launch_world_size

    if launch_world_size() > 1:  # each process would score every row and write the same copy
        raise TrainingError("precompute-ref runs as one process: start it with mfpo-train (or python -m "
                            "mfpo_train.cli), not torchrun or accelerate launch with several processes")
    output_dir = output_root(output_dir)
    check_output_folder(output_dir, lambda root: (root / "reference.json").is_file(),
                        ours="copy written by precompute-ref (reference.json)", choose="choose a new --output folder")
    accelerator = Accelerator(mixed_precision=cfg.train.mixed_precision)  # the same autocast as training
    ds = load_preference_dataset(cfg.data.dataset, split=cfg.data.split, revision=cfg.data.revision)
    ds = ds.remove_columns([c for c in (*REF_COLUMNS.values(), REF_KEY_COLUMN) if c in ds.column_names])
    model, processor = load_model_and_processor(cfg.model)  # no adapters: the base model is the reference
    model.to(accelerator.device).eval().requires_grad_(False)
    collator = MFPOCollator(processor, max_length=cfg.data.max_length, sequences=SEQUENCES)
    rows = ds.select_columns(trainer_columns(ds))
    decoding = DecodingRows(rows)  # a row whose image does not decode, or that training cannot use, is skipped
    batch_size = batch_size or cfg.train.batch_size
    values = {s: [None] * len(ds) for s in SEQUENCES}
    for start in tqdm(range(0, len(ds), batch_size), desc="reference log-probs",
                      disable=not accelerator.is_local_main_process):
        fetched = [(i, decoding[i]) for i in range(start, min(start + batch_size, len(ds)))]
        usable = [(i, row) for i, row in fetched if not isinstance(row, Unusable)]  # the others keep nulls
        if not usable:
            continue
        idx = [i for i, _ in usable]
        batch = collator([row for _, row in usable])
        if not batch["num_pairs"]:
            continue
        batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        with torch.no_grad(), accelerator.autocast():
            flat = batch_logps(model, batch, SEQUENCES, shared_prefix=cfg.train.shared_prefix,
                               chunk_size=cfg.train.logps_chunk_size)
            logps = split_logps(flat, SEQUENCES)
        for seq in SEQUENCES:
            for pos, value in zip(batch["kept"], getattr(logps, seq).tolist(), strict=True):
                values[seq][idx[pos]] = value
    key = reference_key(cfg.model.name_or_path, cfg.model.revision, cfg.data.max_length)
    for seq, col in REF_COLUMNS.items():
        ds = ds.add_column(col, values[seq], feature=_float32())
    ds = ds.add_column(REF_KEY_COLUMN, [key] * len(ds), feature=_string())
    data_dir = output_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(data_dir / shard_name("train", 0, 1)))
    missing = sum(v is None for v in values["chosen"])
    (output_dir / "reference.json").write_text(json.dumps(
        {"reference": key, "source": str(cfg.data.dataset), "rows": len(ds), "rows_without_logps": missing}, indent=2))
    logger.info("wrote %d rows with reference log-probs (%d without: too long or unusable) to %s", len(ds), missing,
                output_dir)
    return output_dir


def _float32():
    import datasets

    return datasets.Value("float32")


def _string():
    import datasets

    return datasets.Value("string")
