"""The few lines `mfpo-train` prints when a run ends: steps, time, last losses, eval probes, where the weights are."""

from __future__ import annotations


_LOSSES = ("loss", "loss/text", "loss/image", "loss/margin", "rewards/margins", "image_rewards/margins")
_PROBES = ("preference_accuracy", "preference_accuracy_noise", "image_reward_accuracy", "logp_drop_perturbed")


def format_summary(result) -> str:
    """`result`: a `mfpo_train.train.TrainResult`."""
    state = result.state
    if result.finished_before:
        done = (f"weights in {result.final_dir}" if result.final_dir is not None else
                "stopped at train.max_steps: raise it, or remove it, to train on")
        return f"nothing to do: the run in {result.output_dir} finished at step {state.global_step} ({done})"
    lines = [f"trained {state.global_step} steps in {_duration(result.elapsed_s)}"
             + (f" ({state.nonfinite_steps} skipped as non-finite)" if state.nonfinite_steps else "")
             + (f"; {state.dropped_rows} rows dropped (prompt >= max_length)" if state.dropped_rows else "")
             + (f"; {state.undecodable_rows} rows skipped (image does not decode)" if state.undecodable_rows else "")
             + (f"; {state.invalid_rows} rows skipped (empty answer or images that do not match)"
                if state.invalid_rows else "")]
    last = next((h for h in reversed(result.history) if not h.get("skipped")), None)
    if last is not None:
        lines.append("last step: " + "  ".join(f"{k} {last[k]:.4f}" for k in _LOSSES if k in last))
    if result.eval_metrics:
        m = result.eval_metrics
        lines.append(f"eval probes ({int(m.get('eval/n', 0))} rows): "
                     + "  ".join(f"{k} {m['eval/' + k]:.3f}" for k in _PROBES if f"eval/{k}" in m))
    if result.final_dir is not None:
        flag = "--adapter" if (result.final_dir / "adapter_config.json").is_file() else "--model"  # full fine-tuning
        lines.append(f"weights: {result.final_dir}  (evaluate: mfpo-eval run {flag} {result.final_dir} ...)")
    else:
        lines.append(f"stopped before the end (train.max_steps); checkpoints in {result.output_dir / 'checkpoints'}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"
