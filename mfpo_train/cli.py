"""`mfpo-train`: train a vision-language model with MFPO, or precompute reference log-probs.

    mfpo-train --config llava15_7b_lora [--set loss.beta=0.2] [--resume]   # a name from `configs`, or a path
    mfpo-train --config llava15_7b_mfpo --dry-run       # config + dataset, no model
    mfpo-train precompute-ref --config llava15_7b_lora --output data/coco-ref
    mfpo-train configs                                   # the shipped configs (and ./recipes/train/)
    mfpo-train make-tiny-model runs/tiny-llava           # a tiny random model for the debug config
    mfpo-train merge-adapter runs/r1/final runs/r1/merged  # base + adapter as one model: the next round's policy

Commands are thin: parse, call one library function, print known errors in one line (exit code 1).
torch and transformers are imported inside the commands, so `--help` is instant.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from mfpo_data.errors import MfpoError
from mfpo_data.secrets import scrub


app = typer.Typer(add_completion=False, help="Train vision-language models on mfpo image-preference data.")

CONFIG = typer.Option(None, "--config", "-c", help="Training config: a name (see `configs`) or a YAML path.")
SET = typer.Option([], "--set", help="Override a config value, e.g. --set loss.beta=0.2 (repeatable).")
RESUME = typer.Option(False, "--resume", help="Continue from the latest checkpoint in the output dir.")
RESUME_FROM = typer.Option(None, "--resume-from", help="Continue from this checkpoint folder.")
PRINT_CONFIG = typer.Option(False, "--print-config", help="Print the resolved config and exit.")
DRY_RUN = typer.Option(False, "--dry-run", help="Check the config and the dataset (columns, stages) without loading a model.")
OUTPUT = typer.Option(..., "--output", "-o", help="Folder for the copy with ref_*_logps columns.")
BATCH_SIZE = typer.Option(None, "--batch-size", help="Pairs per forward (default train.batch_size).")


# What each command imports, named in one line with the extra that brings it when one is missing.
TRAINING = ("torch", "transformers", "accelerate", "peft")
MODEL = ("torch", "transformers")


def _run(fn, interrupted: str = "interrupted", needs: tuple[str, ...] = (), command: str = "mfpo-train"):
    """Run a command: its known errors are one line (exit code 1). Under several processes (torchrun, accelerate
    launch) only the main one prints them; the others log warnings only, each line naming its rank. `needs`: the
    libraries the command imports, refused in one line naming the extra when one is missing."""
    from mfpo_data.secrets import redact_logging
    from mfpo_train.processes import launch_rank, quiet_other_ranks

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redact_logging()
    quiet_other_ranks()
    main = launch_rank() == 0
    try:
        if needs:
            from mfpo_data._deps import require

            require(*needs, extra="train", feature=command)
        return fn()
    except MfpoError as e:
        if main:  # every process meets the same refusal; the main one says it
            typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        if main:
            typer.echo(f"\n{interrupted}", err=True)
        raise typer.Exit(130) from None


@app.callback(invoke_without_command=True)
def main(
    ctx: typer.Context,
    config: str | None = CONFIG,
    overrides: list[str] = SET,
    resume: bool = RESUME,
    resume_from: Path | None = RESUME_FROM,
    print_config: bool = PRINT_CONFIG,
    dry_run: bool = DRY_RUN,
):
    """Train with MFPO (L_text + L_image + L_margin) over the easy -> medium -> hard curriculum."""
    resume_from = resume_from.expanduser() if resume_from else None  # a --config path is expanded where it is found
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"config": config, "overrides": overrides}
        return
    if config is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)

    def run():
        from mfpo_train.config import config_to_dict, load_config

        cfg = load_config(config, overrides)
        if print_config:
            import yaml

            typer.echo(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
            return
        if dry_run:
            from mfpo_train.data import dry_run as check

            typer.echo(check(cfg))
            return
        from mfpo_train.summary import format_summary
        from mfpo_train.train import train

        result = train(cfg, resume=resume_from or resume)
        if result.main_process:
            typer.echo(format_summary(result))

    _run(run, interrupted="interrupted: rerun the same command with --resume to continue from the last checkpoint "
                          "(train.save_every sets how often one is written)", needs=() if print_config else TRAINING)


@app.command("precompute-ref")
def precompute_ref(
    ctx: typer.Context,
    output: Path = OUTPUT,
    config: str | None = CONFIG,
    overrides: list[str] = SET,
    batch_size: int | None = BATCH_SIZE,
):
    """Score every row with the reference model and write a copy of the dataset with ref_*_logps columns."""
    parent = ctx.obj or {}
    config = config or parent.get("config")
    output = output.expanduser()
    overrides = list(parent.get("overrides") or []) + list(overrides)
    if config is None:
        typer.echo("error: --config is required", err=True)
        raise typer.Exit(1)

    def run():
        from mfpo_train.config import load_config
        from mfpo_train.precompute import precompute_reference

        out = precompute_reference(load_config(config, overrides), output, batch_size=batch_size)
        typer.echo(scrub(f"wrote {out}; train on it with --set data.dataset={out}"))

    _run(run, needs=TRAINING, command="mfpo-train precompute-ref")


@app.command("configs")
def configs() -> None:
    """List the training configs found in ./recipes/train and shipped with mfpo."""
    from mfpo_data.config import list_recipes

    for name, path, header in list_recipes("train"):
        typer.echo(f"{name:<20} {header}  ({path})")


FAMILIES = ("llava", "idefics3", "qwen2_5_vl", "internvl", "gemma3")


@app.command("make-tiny-model")
def make_tiny_model(
    output: Path = typer.Argument(..., help="Empty or new folder to write the model and processor into."),
    family: str = typer.Option("llava", "--family", help="llava (LlavaForConditionalGeneration), idefics3, qwen2_5_vl, "
                                                         "internvl or gemma3."),
):
    """Write a tiny randomly initialised vision-language model (no download) for the debug config and tests."""

    def run():
        from mfpo_data.errors import ConfigError

        if family not in FAMILIES:
            raise ConfigError(f"--family must be one of {', '.join(FAMILIES)}, got {family!r}")
        target = output.expanduser()
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise ConfigError(f"{target} exists and is not an empty folder; choose a new one")
        from mfpo_train import tiny

        path = getattr(tiny, f"make_tiny_{family}")(target)
        typer.echo(f"wrote a tiny random {family} model to {path}; use it with --set model.name_or_path={path}")

    _run(run, needs=MODEL, command="mfpo-train make-tiny-model")


@app.command("merge-adapter")
def merge_adapter(
    adapter: Path = typer.Argument(..., help="LoRA adapter folder (mfpo-train's OUT/final)."),
    output: Path = typer.Argument(..., help="New or empty folder to write the merged model and its processor into."),
    model: str = typer.Option(None, "--model", help="Base model (default: the adapter's base_model_name_or_path)."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (the base checkpoint's), float32, bfloat16 or float16."),
):
    """Merge a LoRA adapter into its base model and save it as a model folder: the policy (and reference) of the
    next on-policy round (recipes/coco_on_policy.yaml)."""

    def run():
        import json

        from mfpo_data.backends.vlm import adapter_base_model, describe_model, load_vlm
        from mfpo_data.errors import ConfigError

        target = output.expanduser()
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise ConfigError(f"{target} exists and is not an empty folder; choose a new one")
        base = model or adapter_base_model(adapter, "ADAPTER")
        chosen = dtype if dtype != "auto" else _checkpoint_dtype(base)
        net, processor = load_vlm(base, adapter, merge=True, dtype=chosen, device="cpu", adapter_key="ADAPTER")
        target.mkdir(parents=True, exist_ok=True)
        net.save_pretrained(target)
        processor.save_pretrained(target)
        provenance = {**describe_model(base, adapter), "dtype": chosen}
        (target / "mfpo_merged_from.json").write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
        typer.echo(f"wrote {base} + {adapter} merged ({chosen}) to {target}; use it with --set model.name_or_path={target} "
                   f"or --set source.model={target}")

    _run(run, needs=(*MODEL, "peft"), command="mfpo-train merge-adapter")


def _checkpoint_dtype(model: str) -> str:
    """The dtype a checkpoint was saved in (its config's `dtype` / `torch_dtype`), float32 when it says none."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    found = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32")
    found = found.removeprefix("torch.")
    return found if found in ("float32", "bfloat16", "float16") else "float32"


if __name__ == "__main__":
    app()
