"""`mfpo-train`: train a vision-language model with MFPO, or precompute reference log-probs.

    mfpo-train --config recipes/train/llava15_7b_lora.yaml [--set loss.beta=0.2] [--resume]
    mfpo-train --config recipes/train/llava15_7b_mfpo.yaml --dry-run     # config + dataset, no model
    mfpo-train precompute-ref --config recipes/train/llava15_7b_lora.yaml --output data/coco-ref

Commands are thin: parse, call one library function, print known errors in one line (exit code 1).
torch and transformers are imported inside the commands, so `--help` is instant.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from mfpo_data.errors import MfpoError


app = typer.Typer(add_completion=False, help="Train vision-language models on mfpo image-preference data.")

CONFIG = typer.Option(None, "--config", "-c", help="Training config YAML (see recipes/train/).")
SET = typer.Option([], "--set", help="Override a config value, e.g. --set loss.beta=0.2 (repeatable).")
RESUME = typer.Option(False, "--resume", help="Continue from the latest checkpoint in the output dir.")
RESUME_FROM = typer.Option(None, "--resume-from", help="Continue from this checkpoint folder.")
PRINT_CONFIG = typer.Option(False, "--print-config", help="Print the resolved config and exit.")
DRY_RUN = typer.Option(False, "--dry-run", help="Check the config and the dataset (columns, stages) without loading a model.")
OUTPUT = typer.Option(..., "--output", "-o", help="Folder for the copy with ref_*_logps columns.")
BATCH_SIZE = typer.Option(None, "--batch-size", help="Pairs per forward (default train.batch_size).")


def _run(fn):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return fn()
    except MfpoError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None


@app.callback(invoke_without_command=True)
def main(
    ctx: typer.Context,
    config: Path | None = CONFIG,
    overrides: list[str] = SET,
    resume: bool = RESUME,
    resume_from: Path | None = RESUME_FROM,
    print_config: bool = PRINT_CONFIG,
    dry_run: bool = DRY_RUN,
):
    """Train with MFPO (L_text + L_image + L_margin) over the easy -> medium -> hard curriculum."""
    config, resume_from = (p.expanduser() if p else p for p in (config, resume_from))
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
        from mfpo_train.train import train

        result = train(cfg, resume=resume_from or resume)
        typer.echo(f"trained {result.state.global_step} steps; adapters in {result.final_dir or result.output_dir}")

    _run(run)


@app.command("precompute-ref")
def precompute_ref(
    ctx: typer.Context,
    output: Path = OUTPUT,
    config: Path | None = CONFIG,
    overrides: list[str] = SET,
    batch_size: int | None = BATCH_SIZE,
):
    """Score every row with the reference model and write a copy of the dataset with ref_*_logps columns."""
    parent = ctx.obj or {}
    config = config or parent.get("config")
    config, output = (p.expanduser() if p else p for p in (config, output))
    overrides = list(parent.get("overrides") or []) + list(overrides)
    if config is None:
        typer.echo("error: --config is required", err=True)
        raise typer.Exit(1)

    def run():
        from mfpo_train.config import load_config
        from mfpo_train.precompute import precompute_reference

        out = precompute_reference(load_config(config, overrides), output, batch_size=batch_size)
        typer.echo(f"wrote {out}; train on it with --set data.dataset={out}")

    _run(run)


if __name__ == "__main__":
    app()
