"""`mfpo-data`: build, validate, list recipes, inspect, publish and export MFPO image-preference datasets.

Commands are thin: parse, call one library function, print a one-line message for known problems
(exit code 1). Heavy imports happen inside the commands so `--help` is instant.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from mfpo_data.publishing.cli import publish_command
from mfpo_data.secrets import scrub


app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__.splitlines()[0])

RecipeOpt = Annotated[str, typer.Option("--recipe", "-r", help="Recipe name (see `recipes`) or path to a YAML file.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a recipe key: --set a.b=value (repeatable).")]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {scrub(message)}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


def _known_errors():
    from mfpo_data.errors import MfpoError

    return (MfpoError,)


@app.command()
def build(
    recipe: RecipeOpt = "coco",
    set_: SetOpt = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output folder (overrides output.dir).")] = None,
    restart: Annotated[bool, typer.Option("--restart", help="Delete what an earlier build wrote in the folder and start over.")] = False,
) -> None:
    """Build a dataset from a recipe. Rerunning the same command resumes an interrupted build."""
    from mfpo_data.secrets import redact_logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    redact_logging()
    try:
        from mfpo_data.config import load_recipe
        from mfpo_data.pipeline.build import build_dataset

        loaded = load_recipe(recipe, tuple(set_ or ()))
        layout = build_dataset(loaded, (), output, restart=restart)
    except _known_errors() as e:
        raise _fail(str(e)) from None
    except KeyboardInterrupt:
        typer.echo("\ninterrupted: finished ranks are kept; rerun the same command to resume", err=True)
        raise typer.Exit(130) from None
    if loaded.executor.kind == "slurm":
        typer.echo(scrub(
            f"submitted {loaded.executor.tasks} tasks and a finalize job to Slurm (see `squeue --me`); "
            f"the dataset appears in {layout.data_dir}. Rerun the same command to resubmit unfinished tasks."
        ))
        return
    stats = layout.read_stats()
    dropped = sum(stats.get("dropped", {}).values())
    pair_types = ", ".join(f"{k} {v}" for k, v in stats.get("pair_types", {}).items())
    typer.echo(scrub(
        f"built {stats['rows']} pairs ({pair_types}) over {len(stats.get('categories', {}))} key-object categories; "
        f"{dropped} dropped (see {layout.rejects_file})"
    ))
    typer.echo(scrub(f"dataset: {layout.data_dir}"))


@app.command()
def validate(
    recipe: RecipeOpt = "coco",
    set_: SetOpt = None,
    sample: Annotated[int | None, typer.Option("--sample", help="Check only the first N input items.", min=1)] = None,
) -> None:
    """Check a recipe (keys, types, backend values) and its input records as the build would, without loading any model."""
    try:
        from mfpo_data.config import find_recipe, load_recipe
        from mfpo_data.pipeline.assemble import check_models, make_source

        loaded = load_recipe(recipe, tuple(set_ or ()))
        for note in check_models(loaded):  # builds every backend: values they refuse (perturbation.t=5000) fail here
            typer.echo(f"note: {note}")
        n, reasons = make_source(loaded).check_records(sample)
    except _known_errors() as e:
        raise _fail(str(e)) from None
    bad = sum(reasons.values())
    counts = ", ".join(f"{code} {count}" for code, count in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
    typer.echo(scrub(f"ok: {find_recipe(recipe)}: {n} input items checked, {bad} records would be rejected" + (f" ({counts})" if bad else "")))


@app.command()
def recipes() -> None:
    """List the recipes found in ./recipes and shipped with mfpo."""
    from mfpo_data.config import list_recipes

    for name, path, header in list_recipes():
        typer.echo(f"{name:<20} {header}  ({path})")


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="A build output folder, a dataset folder or a parquet file.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the PNG grid.")] = Path("inspect.png"),
    n: Annotated[int, typer.Option("--n", help="Rows to draw.")] = 12,
    seed: Annotated[int | None, typer.Option("--seed", help="Draw n random rows with this seed.")] = None,
) -> None:
    """Draw a PNG grid: original, mask overlay with the key object, perturbed image, and per row the texts,
    pair type, key object, which negative, image-pair validity and difficulty."""
    from mfpo_data.inspect import read_rows, render_grid

    try:
        path, out = path.expanduser(), out.expanduser()
        rows = read_rows(path, n=n, seed=seed)
        render_grid(rows, out, n=n)
    except (FileNotFoundError, ValueError, *_known_errors()) as e:
        raise _fail(str(e)) from None
    typer.echo(scrub(f"wrote {out}"))


app.command("publish")(publish_command)


@app.command()
def export(
    source: Annotated[str, typer.Option("--from", help="A build folder, a published or dry-run folder, or a Hub id.",
                                        show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="New or empty folder for the JSONL and the images.",
                                         show_default=False)],
    fmt: Annotated[str, typer.Option("--format", help="swift: ms-swift's DPO rows (swift rlhf --rlhf_type dpo).")] = "swift",
    split: Annotated[str | None, typer.Option("--split", help="Only this split (default: every split).")] = None,
    revision: Annotated[str | None, typer.Option("--revision", help="A Hub dataset's branch, tag or commit.")] = None,
    relative_paths: Annotated[bool, typer.Option("--relative-paths", help="Name images relative to the output "
                                                 "folder (run ms-swift with ROOT_IMAGE_DIR=OUTPUT).")] = False,
    by_bucket: Annotated[bool, typer.Option("--by-bucket", help="One file per difficulty bucket (a staged "
                                            "curriculum), SPLIT-easy.jsonl ...")] = False,
) -> None:
    """Write the dataset in another trainer's format, with its own images: each row as a text pair (rejected
    answer) and an image pair (perturbed image, where valid)."""
    from mfpo_data.publishing.export import export_dataset
    from mfpo_data.secrets import redact_logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    redact_logging()

    try:
        result = export_dataset(source, output.expanduser(), fmt, split=split, revision=revision,
                                relative_paths=relative_paths, by_bucket=by_bucket)
    except _known_errors() as e:
        raise _fail(str(e)) from None
    skipped = sum(result.skipped.values())
    typer.echo(scrub(f"wrote {sum(result.files.values())} pairs ({', '.join(f'{k} {v}' for k, v in sorted(result.pairs.items()))}) "
                     f"from {result.rows} rows{f' ({skipped} skipped, see export.json)' if skipped else ''} and "
                     f"{result.images} images to {result.folder}: {', '.join(result.files)}"))


if __name__ == "__main__":
    app()
