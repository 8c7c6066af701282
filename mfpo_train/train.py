"""The MFPO training loop: setup, curriculum stages, step, log, checkpoint. Plain PyTorch on `accelerate`.

One optimizer step:
  1. collate `gradient_accumulation_steps` micro-batches of pairs into `[y_w|m ; y_l|m ; y_w|m']` rows;
  2. one policy forward over all rows -> summed answer log-probs (model.batch_logps), or, with
     `train.sequence_chunks` > 1, gradient caching: no-grad log-probs now, chunk-wise re-forward at backward;
  3. reference log-probs: adapters disabled / "ref" adapter / frozen copy / precomputed columns;
  4. `mfpo_loss` -> backward; a non-finite loss skips the step (counted, the run stops past a limit);
  5. clip, optimizer and scheduler step; log TRL-named metrics; checkpoint every N steps and at each stage end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mfpo_train.checkpoint import (
    TrainState,
    check_metrics,
    check_same_shapes,
    load_checkpoint,
    read_state,
    register_hooks,
    saved_world_size,
    resolve_resume,
    save_checkpoint,
    trim_metrics,
)
from mfpo_train.collator import MFPOCollator
from mfpo_train.config import TrainConfig, config_to_dict
from mfpo_train.data import (
    DecodingRows,
    StageBatchSampler,
    has_reference_for,
    load_preference_dataset,
    reference_key,
    skip_undecodable,
    split_stages,
    trainer_columns,
)
from mfpo_train.errors import TrainingError
from mfpo_train.eval.during_training import TrainProbes, load_eval_split
from mfpo_train.gradcache import policy_logps
from mfpo_train.losses import mfpo_loss, needed_sequences
from mfpo_data.scorers.io import write_text
from mfpo_data.backends.vlm import check_model
from mfpo_train.model import Reference, add_lora, load_model_and_processor, make_reference_copy
from mfpo_train.processes import make_accelerator
from mfpo_train.rundir import CONFIG_FILE, check_processes, check_same_run, claim_run_folder


logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
_BAR_METRICS = {"loss": "loss", "rewards/margins": "margin", "image_rewards/margins": "img_margin"}


@dataclass
class TrainResult:
    output_dir: Path
    final_dir: Path | None
    state: TrainState
    history: list[dict] = field(default_factory=list)  # the metrics logged by this process, one dict per step
    model: object = None  # the trained (unwrapped) policy
    eval_metrics: dict = field(default_factory=dict)  # the last probes on the eval split (eval/*), if any
    elapsed_s: float = 0.0
    finished_before: bool = False  # --resume found the run finished: nothing was trained or written
    main_process: bool = True  # False on the other processes of a multi-process run (they print nothing)


def train(cfg: TrainConfig, resume: bool | str | Path = False) -> TrainResult:
    """Train (or, with `resume`, continue) the run `cfg` describes in `cfg.output_dir` (see the module notes).

    The folder is checked and locked first (`rundir`); on resume the checkpoint's state, the run's config and
    its metrics are checked, and the model's config is read, before anything is loaded or written.
    """
    trackers = _trackers(cfg.train.report_to)
    # First the processes: with several, only the main one checks and locks the folder; the others wait for it.
    accelerator = make_accelerator(mixed_precision=cfg.train.mixed_precision, log_with=trackers or None,
                                   project_dir=str(cfg.output_dir))
    with claim_run_folder(cfg.output_dir, bool(resume), accelerator):
        return _train(cfg, resume, accelerator, trackers)


def _train(cfg: TrainConfig, resume: bool | str | Path, accelerator, trackers: list[str]) -> TrainResult:
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    # 1. Seed ----------------------------------------------------------------------------------------
    started = time.monotonic()
    output_dir = cfg.output_dir
    set_seed(cfg.train.seed)

    # 2. Data: validated before any model is loaded, so a wrong dataset fails in seconds ---------
    ds = load_preference_dataset(cfg.data.dataset, split=cfg.data.split, revision=cfg.data.revision,
                                 image_term=cfg.loss.image_weight > 0)
    if cfg.data.max_samples is not None:
        ds = ds.select(range(min(cfg.data.max_samples, len(ds))))
    key = reference_key(cfg.model.name_or_path, cfg.model.revision, cfg.data.max_length)
    weighting = cfg.loss.token_weighting == "image_reliance"
    if weighting:
        _check_reliance_column(ds, cfg)
    precomputed = _use_precomputed(cfg.reference, ds, key) and not weighting
    # Token weights are applied one row per sequence: the shared-prefix packing is not used with them.
    shared_prefix = cfg.train.shared_prefix and not weighting
    ds = ds.select_columns(trainer_columns(ds))
    stages = split_stages(ds, cfg.stages)
    if not stages:
        raise TrainingError(f"no rows to train on in {cfg.data.dataset} for curriculum {cfg.stages}")
    loss_kwargs = dict(beta=cfg.loss.beta, text_weight=cfg.loss.text_weight, image_weight=cfg.loss.image_weight,
                       margin_weight=cfg.loss.margin_weight, eta=cfg.loss.eta)
    sequences = needed_sequences(cfg.loss.text_weight, cfg.loss.image_weight, cfg.loss.margin_weight)
    accum, world = cfg.train.gradient_accumulation_steps, accelerator.num_processes
    steps_per_epoch = [math.ceil(StageBatchSampler.num_batches(len(rows), cfg.train.batch_size, world) / accum)
                       for _, rows in stages]
    total_steps = sum(steps_per_epoch) * cfg.epochs_per_stage

    # 3. Resume: the checkpoint, the run's config and metrics are checked before anything is written --
    state = TrainState(world_size=world)
    checkpoint = resolve_resume(resume, output_dir)
    if resume:
        check_same_run(output_dir, config_to_dict(cfg))
        check_metrics(output_dir / METRICS_FILE)
    saved_world = world
    if checkpoint is not None:
        saved_world = saved_world_size(checkpoint)
        check_processes(output_dir, saved_world, world, cfg.train, cfg.lora.dropout if cfg.lora.enabled else 0.0,
                        [len(rows) for _, rows in stages])
        state = read_state(checkpoint, steps_per_epoch, cfg.epochs_per_stage)
        state.world_size = world  # the checkpoints written from here on are this run's
        check_same_shapes(checkpoint, cfg.lora)
        done = _finished(cfg, state, len(stages), output_dir)
        if done:
            logger.info("%s", done)
            return TrainResult(output_dir=output_dir, final_dir=output_dir / "final" if state.stage_index >= len(stages)
                               else None, state=state, elapsed_s=time.monotonic() - started, finished_before=True,
                               main_process=accelerator.is_main_process)
    eval_rows = load_eval_split(cfg)

    # 4. Policy, processor, reference: a model whose config cannot be read is refused before any weights load --
    check_model(cfg.model.name_or_path, revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code,
                model_key="model.name_or_path")
    model, processor = load_model_and_processor(cfg.model)
    ref_model = None
    if cfg.lora.enabled:
        model = add_lora(model, cfg.lora, with_ref_adapter=cfg.refresh_reference)
    elif not precomputed:
        ref_model = make_reference_copy(model).to(accelerator.device)
    model.train()
    collator = MFPOCollator(processor, max_length=cfg.data.max_length, sequences=sequences, token_weighting=weighting)

    # 5. Optimizer and schedule ------------------------------------------------------------------
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay)
    scheduler = get_scheduler("constant_with_warmup" if cfg.optim.scheduler == "constant" else cfg.optim.scheduler,
                              optimizer, num_warmup_steps=int(cfg.optim.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    if accelerator.distributed_type == "DEEPSPEED":
        if cfg.train.sequence_chunks > 1:
            raise TrainingError("train.sequence_chunks > 1 calls backward once per chunk, which DeepSpeed's engine "
                                "treats as one optimizer step each; use sequence_chunks: 1 with DeepSpeed")
        _configure_deepspeed(accelerator, cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    register_hooks(accelerator)
    reference = Reference(accelerator.unwrap_model(model), ref_model=ref_model, precomputed=precomputed,
                          shared_prefix=shared_prefix, chunk_size=cfg.train.logps_chunk_size)
    probes = None if eval_rows is None else TrainProbes(eval_rows, processor, accelerator, seed=cfg.train.seed,
                                                        batch_size=cfg.train.batch_size, max_length=cfg.data.max_length)
    eval_metrics, eval_step = {}, None

    # 6. Load the checkpoint; the folder is written from here on ---------------------------------
    if checkpoint is not None:
        state = load_checkpoint(accelerator, checkpoint, state, reference_model=ref_model, scheduler=scheduler,
                                restore_rng=saved_world == world)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_text(json.dumps(config_to_dict(cfg), indent=2), output_dir / CONFIG_FILE)  # marks the folder as a run
    if resume and accelerator.is_main_process:
        trim_metrics(output_dir / METRICS_FILE, state.global_step)  # the steps after it are trained again
    if accelerator.is_main_process and trackers:
        accelerator.init_trackers("mfpo", config=_flat(config_to_dict(cfg)))
    logger.info("training %d steps over stages %s (rows %s), reference: %s, sequences: %s", total_steps,
                [s for s, _ in stages], [len(r) for _, r in stages], reference.kind, sequences)

    # 7. Loop: stages -> epochs -> optimizer steps -----------------------------------------------
    history: list[dict] = []
    bar = tqdm(total=total_steps, initial=state.global_step, disable=not accelerator.is_main_process,
               desc="mfpo")
    max_steps = cfg.train.max_steps
    stopped = False  # set when train.max_steps is reached; the counters then stay where the run stopped
    stand_in: dict = {}  # several processes: the last trainable micro-batch of this one (see _step)
    while state.stage_index < len(stages) and not stopped:
        stage, rows = stages[state.stage_index]
        if state.epoch == 0 and state.step_in_epoch == 0 and state.stage_index > 0 and cfg.refresh_reference:
            reference.refresh()  # the reference becomes the policy that finished the previous stage
        while state.epoch < cfg.epochs_per_stage and not stopped:
            loader = _loader(rows, collator, cfg, state, accelerator)
            for micro_batches in _groups(loader, accum):
                if max_steps is not None and state.global_step >= max_steps:
                    stopped = True
                    break
                metrics = _step(accelerator, model, reference, optimizer, scheduler, micro_batches, sequences,
                                loss_kwargs, cfg, state, shared_prefix, stand_in=stand_in)
                state.step_in_epoch += 1
                state.global_step += 1
                metrics.update(step=state.global_step, stage=stage, stage_index=state.stage_index,
                               epoch=state.epoch, lr=scheduler.get_last_lr()[0],
                               nonfinite_steps=state.nonfinite_steps, dropped_rows=state.dropped_rows,
                               undecodable_rows=state.undecodable_rows, invalid_rows=state.invalid_rows)
                if probes is not None and cfg.train.eval_steps and state.global_step % cfg.train.eval_steps == 0:
                    eval_metrics, eval_step = probes(model), state.global_step
                    metrics.update(eval_metrics)
                history.append(metrics)
                if state.global_step % cfg.train.log_every == 0 or eval_step == state.global_step:
                    _log(accelerator, output_dir, metrics, trackers)
                bar.update(1)
                bar.set_postfix({short: f"{metrics[k]:.3f}" for k, short in _BAR_METRICS.items() if k in metrics})
                ends_stage = (state.step_in_epoch == steps_per_epoch[state.stage_index]
                              and state.epoch == cfg.epochs_per_stage - 1)  # the stage's own checkpoint follows
                if cfg.train.save_every and state.global_step % cfg.train.save_every == 0 and not ends_stage:
                    save_checkpoint(accelerator, output_dir, state, _saved_reference(cfg, ref_model),
                                    scheduler=scheduler, keep=cfg.train.save_total_limit)
            if not stopped:  # the epoch ran to its end
                state.epoch += 1
                state.step_in_epoch = 0
        if not stopped:  # every epoch of the stage ran
            state.stage_index += 1
            state.epoch = 0
            save_checkpoint(accelerator, output_dir, state, _saved_reference(cfg, ref_model),
                            scheduler=scheduler, keep=cfg.train.save_total_limit)
    bar.close()
    if probes is not None and eval_step != state.global_step:  # the probes at the end
        eval_metrics = probes(model)
        _log(accelerator, output_dir, {"step": state.global_step, **eval_metrics}, trackers)

    # 8. Save the final adapters (or model) with the processor -----------------------------------
    final_dir = None
    if state.stage_index >= len(stages):
        final_dir = output_dir / "final"
        accelerator.wait_for_everyone()
        weights = accelerator.get_state_dict(model)  # every process: FSDP and ZeRO-3 gather their shards here
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(model)
            kwargs = {"selected_adapters": ["default"]} if hasattr(unwrapped, "peft_config") else {}
            unwrapped.save_pretrained(final_dir, state_dict=weights, **kwargs)
            processor.save_pretrained(final_dir)
    if trackers:
        accelerator.end_training()
    if state.dropped_rows:
        logger.warning("%d rows were dropped: prompt with image tokens >= max_length", state.dropped_rows)
    if state.undecodable_rows:
        logger.warning("%d rows were skipped: their image could not be decoded", state.undecodable_rows)
    if state.invalid_rows:
        logger.warning("%d rows were skipped: empty answers or images that do not match (mfpo-train --dry-run lists "
                       "them)", state.invalid_rows)
    masked = sum(m.get("image_masked_rows", 0) for m in history)
    if masked:
        logger.info("L_image was masked for %d rows whose image pair is not valid (image_pair_valid: false)", masked)
    return TrainResult(output_dir=output_dir, final_dir=final_dir, state=state, history=history,
                       model=accelerator.unwrap_model(model), eval_metrics=eval_metrics,
                       elapsed_s=time.monotonic() - started, main_process=accelerator.is_main_process)


def _finished(cfg: TrainConfig, state: TrainState, stages: int, output_dir: Path) -> str | None:
    """What to say when the checkpoint to resume from is the end of the run (None when there is work left)."""
    if state.stage_index >= stages and (output_dir / "final").is_dir():
        return (f"the run in {output_dir} finished at step {state.global_step} (weights in {output_dir / 'final'}); "
                "nothing to do")
    if cfg.train.max_steps is not None and state.global_step >= cfg.train.max_steps:
        return (f"the run in {output_dir} stopped at train.max_steps={cfg.train.max_steps} (step {state.global_step}); "
                "nothing to do: raise train.max_steps, or remove it, to train on")
    return None


def _step(accelerator, model, reference, optimizer, scheduler, micro_batches, sequences, loss_kwargs, cfg,
          state: TrainState, shared_prefix: bool = True, stand_in: dict | None = None) -> dict:
    """One optimizer step over `micro_batches`; returns the step's metrics (means over micro-batches).

    With several processes every one runs as many forwards and backwards (DDP's, FSDP's and DeepSpeed's
    collectives wait for each): a micro-batch without a trainable row (all dropped or skipped) is replaced by this
    process's last trainable one (`stand_in` keeps it across steps) with weight 0, and the metrics are the means
    over the micro-batches of all processes.
    """
    sums: dict[str, float] = defaultdict(float)
    finite = True
    masked = 0  # rows whose image pair is not valid: L_image is masked for them
    several = accelerator.num_processes > 1
    counts = [sum(b["num_dropped"] for b in micro_batches), sum(b.pop("num_undecodable", 0) for b in micro_batches),
              sum(b.pop("num_invalid", 0) for b in micro_batches)]
    if several:  # the run's counts, the same on every process
        counts = [int(c) for c in accelerator.reduce(torch.tensor(counts, device=accelerator.device), "sum").tolist()]
    state.dropped_rows += counts[0]
    state.undecodable_rows += counts[1]
    state.invalid_rows += counts[2]
    usable = [b for b in micro_batches if b["num_pairs"] > 0]
    runs = [(b, True) for b in usable]
    if several:
        stand_in = {} if stand_in is None else stand_in
        if usable:
            stand_in["batch"] = usable[-1]
        runs = [(b, True) if b["num_pairs"] > 0 else (stand_in.get("batch"), False) for b in micro_batches]
        missing = torch.tensor([float(any(b is None for b, _ in runs))], device=accelerator.device)
        if accelerator.reduce(missing, "max").item():
            raise TrainingError(f"step {state.global_step + 1}: a process has no trainable row in its share of the "
                                "step and none before to keep the processes in step; check the data with "
                                "mfpo-train --dry-run")
    n = sum(real for _, real in runs)
    deepspeed = accelerator.distributed_type == "DEEPSPEED"
    for i, (batch, real) in enumerate(runs):
        batch = _to_device(batch, accelerator.device)
        sync = i == len(runs) - 1
        with (contextlib.nullcontext() if sync else accelerator.no_sync(model)), accelerator.autocast():
            with reference.sharing_image_features(model):  # the reference reuses the policy forward's image features
                policy = policy_logps(model, batch, sequences, chunks=cfg.train.sequence_chunks,
                                      shared_prefix=shared_prefix, chunk_size=cfg.train.logps_chunk_size)
                ref = reference.logps(model, batch, sequences)
            out = mfpo_loss(policy.logps, ref, image_mask=batch.get("image_pair_mask"), **loss_kwargs)
        if not _all_finite(accelerator, out.loss):
            finite = False
            break
        scale = 1.0 / n if real else 0.0
        if deepspeed:  # its engine divides by its accumulation steps and steps where accelerate says to sync
            scale *= cfg.train.gradient_accumulation_steps
            accelerator.gradient_state._set_sync_gradients(sync)
        policy.backward(out.loss * scale, accelerator, sync=sync)  # chunked: re-forwards chunk by chunk
        for k, v in {"loss": out.loss, **out.metrics}.items():
            sums[k] += v.item() if real else 0.0
        masked += int((batch["image_pair_mask"] == 0).sum()) if real and "image" in out.terms and "image_pair_mask" in batch else 0
    counted = n
    if several and finite:  # means over every process's micro-batches
        keys = sorted(sums)
        total = accelerator.reduce(torch.tensor([float(n), *(sums[k] for k in keys)], device=accelerator.device,
                                                dtype=torch.float64), "sum").tolist()
        counted, sums = int(total[0]), defaultdict(float, zip(keys, total[1:], strict=True))
    grad_norm = None
    if finite and counted:
        if cfg.optim.max_grad_norm is not None:
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
        if grad_norm is not None and not torch.isfinite(torch.as_tensor(grad_norm)).all():
            finite = False
        else:
            optimizer.step()
    if deepspeed:
        accelerator.gradient_state._set_sync_gradients(True)
    scheduler.step()  # the schedule advances with the step count, skipped steps included (resume stays exact)
    optimizer.zero_grad(set_to_none=True)
    if not finite:
        state.nonfinite_steps += 1
        logger.warning("non-finite loss or gradient at step %d: step skipped (%d so far)", state.global_step + 1,
                       state.nonfinite_steps)
        if state.nonfinite_steps > cfg.train.max_nonfinite_steps:
            raise TrainingError(f"{state.nonfinite_steps} steps had a non-finite loss or gradient "
                                f"(train.max_nonfinite_steps={cfg.train.max_nonfinite_steps}); stopping")
        return {"skipped": 1}
    metrics = {k: v / max(counted, 1) for k, v in sums.items()}
    if grad_norm is not None:
        metrics["grad_norm"] = float(grad_norm)
    metrics["skipped"] = 0
    metrics["image_masked_rows"] = masked  # this rank's count, not averaged
    return metrics


def _configure_deepspeed(accelerator, cfg: TrainConfig) -> None:
    """DeepSpeed's engine accumulates and clips itself: give it the run's micro-batch, accumulation and clipping
    (the shipped configs say "auto" for them), so that it steps where mfpo-train's optimizer step ends."""
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    accum = cfg.train.gradient_accumulation_steps
    config.update(train_micro_batch_size_per_gpu=cfg.train.batch_size, gradient_accumulation_steps=accum,
                  train_batch_size=cfg.train.batch_size * accum * accelerator.num_processes,
                  gradient_clipping=cfg.optim.max_grad_norm or 0.0)


def _all_finite(accelerator, loss: torch.Tensor) -> bool:
    flag = torch.isfinite(loss.detach()).float().reshape(1)
    if accelerator.num_processes > 1:  # every rank must agree, or DDP's collectives hang
        flag = accelerator.reduce(flag, "min")
    return bool(flag.item())


def _loader(rows, collator, cfg: TrainConfig, state: TrainState, accelerator):
    """This epoch's micro-batches of this rank, from where a resumed run left off."""
    accum = cfg.train.gradient_accumulation_steps
    sampler = StageBatchSampler(len(rows), cfg.train.batch_size, seed=cfg.train.seed, stage_index=state.stage_index,
                                epoch=state.epoch, rank=accelerator.process_index,
                                world_size=accelerator.num_processes, start=state.step_in_epoch * accum)
    # Its own generator: creating the iterator must not draw from the global RNG, or a resumed run's
    # dropout masks would be shifted by one draw against the uninterrupted run's.
    return torch.utils.data.DataLoader(DecodingRows(rows), batch_sampler=sampler, collate_fn=skip_undecodable(collator),
                                       num_workers=cfg.data.num_workers,
                                       generator=torch.Generator().manual_seed(cfg.train.seed))


def _groups(loader, size: int):
    group = []
    for batch in loader:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def _check_reliance_column(ds, cfg: TrainConfig) -> None:
    """`loss.token_weighting: image_reliance` needs the column on every row, and a reference computed in the run
    (precomputed reference log-probs are unweighted sums)."""
    if cfg.reference == "precomputed":
        raise TrainingError("loss.token_weighting: image_reliance weights the reference's tokens too; the precomputed "
                            "reference holds unweighted sums (use reference: auto)")
    if "image_reliance" not in ds.column_names:
        raise TrainingError(f"loss.token_weighting: image_reliance, but {cfg.data.dataset} has no image_reliance column "
                            "(build it with the `reliance` stage of mfpo-data)")
    missing = [ds[i]["id"] for i, value in enumerate(ds["image_reliance"]) if not value]
    if missing:
        raise TrainingError(f"loss.token_weighting: image_reliance, but {len(missing)} rows of {cfg.data.dataset} have no "
                            f"image_reliance (first: {missing[0]}; build the data with the `reliance` stage of mfpo-data)")


def _use_precomputed(mode: str, ds, key: str) -> bool:
    available = has_reference_for(ds, key)
    if mode == "precomputed" and not available:
        raise TrainingError(f"reference: precomputed, but the dataset has no reference log-probs for {key} "
                            "(run `mfpo-train precompute-ref` with this model and max_length)")
    return mode == "precomputed" or (mode == "auto" and available)


def _saved_reference(cfg: TrainConfig, ref_model):
    return ref_model if (ref_model is not None and cfg.refresh_reference) else None


def _trackers(report_to: list[str]) -> list[str]:
    import importlib.util

    from mfpo_data.errors import MissingExtraError

    for name in report_to:
        if importlib.util.find_spec(name) is None:
            raise MissingExtraError(f"train.report_to lists {name}, which is not installed: pip install {name}")
    return list(report_to)


def _log(accelerator, output_dir: Path, metrics: dict, trackers: list[str]) -> None:
    if not accelerator.is_main_process:
        return
    with open(output_dir / METRICS_FILE, "a") as f:
        f.write(json.dumps(metrics) + "\n")
    if trackers:
        accelerator.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=metrics["step"])


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
