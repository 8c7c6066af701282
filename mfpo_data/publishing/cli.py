"""`mfpo-data publish`: parse, call `mfpo_data.publishing.publish.publish`, map known errors to one line and exit code 1.

Registered in `cli.py` with `app.command("publish")(publish_command)`. Nothing heavy is imported at
module level, so `mfpo-data --help` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def _test_size(value: float) -> float | int:
    """0.05 is a fraction of the rows; 100 (a whole number >= 1) is a row count."""
    return int(value) if value >= 1 and float(value).is_integer() else value


def publish_command(
    from_dir: Annotated[
        Path,
        typer.Option("--from", help="The build's output folder (what `mfpo-data build` wrote).", show_default=False),
    ],
    repo_id: Annotated[
        str, typer.Option("--repo-id", help="The Hub dataset repo, ORG/NAME (named in the card with --dry-run too).")
    ],
    private: Annotated[bool, typer.Option("--private", help="Create the repo as private.")] = False,
    revision: Annotated[
        str | None, typer.Option("--revision", help="Push to this branch (created if missing) instead of main.")
    ] = None,
    dry_run: Annotated[
        Path | None,
        typer.Option(
            "--dry-run", help="Write exactly the folder that would be uploaded to this empty DIR; push nothing."
        ),
    ] = None,
    test_size: Annotated[
        float,
        typer.Option(
            "--test-size", help="Test split: a fraction of the rows (0.05) or a row count (100); split by image."
        ),
    ] = 0.05,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the deterministic train/test split.")] = 0,
) -> None:
    """Check a finished build, split it into train/test, and push it with its dataset card in one commit."""
    import logging

    from mfpo_data.errors import MfpoError
    from mfpo_data.publishing.publish import publish
    from mfpo_data.secrets import redact_logging, scrub

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    redact_logging()
    try:
        result = publish(
            from_dir,
            repo_id,
            private=private,
            revision=revision,
            dry_run_dir=dry_run,
            test_size=_test_size(test_size),
            seed=seed,
        )
    except MfpoError as e:
        typer.echo(f"error: {e}", err=True)  # MfpoError messages are scrubbed
        raise typer.Exit(code=1) from None
    counts = ", ".join(f"{name} {rows}" for name, rows in result.splits.items())
    if result.folder is not None:
        typer.echo(scrub(f"wrote {len(result.files)} files ({counts} rows) to {result.folder}; nothing was pushed"))
    else:
        where = f"{repo_id}@{revision}" if revision else repo_id
        typer.echo(scrub(f"pushed {len(result.files)} files ({counts} rows) to {where}: {result.commit_url}"))
