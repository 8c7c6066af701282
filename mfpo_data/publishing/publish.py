"""Publish a finished build to the Hugging Face Hub: check, split, write the folder, push it in one commit.

    from mfpo_data.publishing.publish import publish, push_to_hub
    publish("out/coco", "org/mfpo-coco", dry_run_dir="upload/")  # writes exactly what would be uploaded
    push_to_hub(layout, "org/mfpo-coco", private=True)            # from a notebook, after build_dataset()

The folder is the same in both cases: `README.md` (the card), `preview.png` and
`data/{split}-{i:05d}-of-{n:05d}.parquet`. A push uploads that folder in a single commit and deletes
stale `data/` files from an earlier push, so `load_dataset(repo_id)` never mixes two builds. Only
transient Hub errors (5xx, 429, connection errors) are retried, with exponential backoff. The token
comes from the argument, `HF_TOKEN` or the user's login, and is never printed, logged or written.
"""

from __future__ import annotations

import hashlib
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mfpo_data.errors import MfpoError
from mfpo_data.layout import shard_name


logger = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_TEST_SIZE = 0.05
DEFAULT_SEED = 0
MAX_SHARD_BYTES = 500 * 1024 * 1024  # Arrow bytes per parquet shard, as `datasets.push_to_hub`
PREVIEW_NAME = "preview.png"
PREVIEW_ROWS = 8
RETRY_ATTEMPTS = 5
RETRY_BASE_SECONDS = 2.0
RETRY_MAX_SECONDS = 60.0
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# Exception class names (anywhere in the MRO) that mean "the connection failed", across requests / httpx / httpx2.
TRANSIENT_NAMES = frozenset(
    {
        "ConnectionError",
        "ConnectError",
        "TimeoutError",
        "TimeoutException",
        "Timeout",
        "ReadTimeout",
        "ConnectTimeout",
        "TransportError",
        "NetworkError",
        "RemoteProtocolError",
        "ChunkedEncodingError",
    }
)


class PublishError(MfpoError):
    """The build cannot be published as it is, or the Hub refused it."""


@dataclass
class PublishResult:
    repo_id: str
    folder: Path | None  # the dry-run folder; None after a push (the staging folder is gone)
    files: list[str]  # paths in the repo, sorted
    splits: dict[str, int]  # rows per split
    commit_url: str | None = None
    revision: str | None = None
    deleted: list[str] = field(default_factory=list)  # stale files the commit removed


# ----------------------------------------------------------------------------------------------- token


def resolve_token(token: str | None = None) -> str:
    """The explicit token, else HF_TOKEN / the user's login (`huggingface_hub.get_token`). Never logged."""
    if token:
        return token
    from huggingface_hub import get_token

    found = get_token()
    if not found:
        raise PublishError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (or use --dry-run DIR)")
    return found


def _scrub(text: str, token: str | None) -> str:
    from mfpo_data.secrets import scrub

    return scrub(text, token)


# ----------------------------------------------------------------------------------------------- load


def verify_checksums(layout) -> None:
    """Every final shard is one the build's manifest lists, with the size and sha256 it recorded (a
    flipped byte or rows edited after the build are caught), and every listed shard is there."""
    from mfpo_data.layout import sha256_file
    from mfpo_data.pipeline.outdir import read_manifest

    listed = {name: entry for name, entry in (read_manifest(layout).get("files") or {}).items() if name.startswith("data/")}
    if not listed:
        raise PublishError(f"{layout.manifest_file} records no shard checksums (a build from an older mfpo, or one "
                           "that did not finish): rerun the same build command, which records them")  # fmt: skip
    present = {p.relative_to(layout.root).as_posix(): p for p in layout.final_shards()}
    for name in sorted(set(present) - set(listed)):
        raise PublishError(f"{present[name]} was not written by this build (not in {layout.manifest_file.name}); remove it")
    for name, entry in sorted(listed.items()):
        path = layout.root / name
        if name not in present:
            raise PublishError(f"{path} is missing: the build wrote it; rerun the build")
        if path.stat().st_size != entry.get("bytes") or sha256_file(path) != entry.get("sha256"):
            raise PublishError(f"{path} changed after the build (its sha256 differs from {layout.manifest_file.name}); "
                               "rebuild it with --restart, or restore the file")  # fmt: skip


def load_build(from_dir: str | Path, cache_dir: str | Path | None = None):
    """The build's rows as one `datasets.Dataset`, after every check that publishing relies on.

    Refuses an incomplete build (naming the missing ranks), a shard changed since the build wrote it
    (`verify_checksums`), a shard whose features differ from `schema.features()` (naming the shard and
    columns), rows that disagree with stats.json, duplicate ids and rows without a difficulty bucket.
    `datasets` writes its Arrow cache under `cache_dir` (publish passes a temporary folder it removes).
    Returns (dataset, stats, recipe_text).
    """
    import datasets

    from mfpo_data.layout import OutputLayout
    from mfpo_data.pipeline.outdir import read_resolved_recipe
    from mfpo_data.schema import DIFFICULTY_BUCKETS, features
    from mfpo_data.validate import check_build_complete, check_parquet_files

    root = Path(from_dir).expanduser()
    if not root.is_dir():
        raise PublishError(f"--from {root}: no such build folder")
    layout = OutputLayout.open(root)
    stats = check_build_complete(root)
    shards = layout.final_shards()
    check_parquet_files(shards, strict=True)  # first: a changed schema is named column by column
    verify_checksums(layout)
    recipe_text = read_resolved_recipe(layout)[0] if layout.recipe_file.is_file() else ""
    if not recipe_text:
        raise PublishError(
            f"{layout.recipe_file} is missing: the card must say how the data was made; rerun the build"
        )

    ds = datasets.concatenate_datasets(
        [datasets.Dataset.from_parquet(str(s), features=features(), keep_in_memory=False,
                                       cache_dir=str(cache_dir) if cache_dir else None) for s in shards]  # fmt: skip
    )
    if isinstance(stats.get("rows"), int) and stats["rows"] != len(ds):
        raise PublishError(
            f"stats.json counts {stats['rows']} rows but the shards in {layout.data_dir} hold {len(ds)}"
        )
    if len(ds) == 0:
        raise PublishError(f"the build in {root} has no rows")
    ids = list(ds["id"])  # datasets >= 4 returns a lazy Column
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = sorted({i for i in ids if i in seen or seen.add(i)})[:5]
        raise PublishError(f"duplicate sample ids in the shards (e.g. {', '.join(dup)}): rebuild into an empty folder")
    bad = sorted({str(b) for b in list(ds["difficulty_bucket"])} - set(DIFFICULTY_BUCKETS))
    if bad:
        raise PublishError(
            f"rows with difficulty_bucket {bad} (expected {', '.join(DIFFICULTY_BUCKETS)}): rerun the build"
        )
    return ds, stats, recipe_text


# ----------------------------------------------------------------------------------------------- split


def split_by_image(image_ids: list[str], test_size: float | int, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic train/test row indices; rows that share an image stay together.

    Images are ordered by sha256(seed, image_id) and taken into `test` until it holds at least
    `test_size` rows (a fraction of all rows when a float in (0, 1), a count when an int). The order
    does not depend on the shard layout, and a rebuild with more images keeps most of the old test set.
    """
    n = len(image_ids)
    if isinstance(test_size, float) and 0 < test_size < 1:
        target = max(1, math.ceil(n * test_size))
    elif isinstance(test_size, int) and not isinstance(test_size, bool) and test_size >= 1:
        target = test_size
    else:
        raise PublishError(f"--test-size {test_size!r} must be a fraction in (0, 1) or a row count >= 1")
    groups: dict[str, list[int]] = {}
    for i, image_id in enumerate(image_ids):
        groups.setdefault(str(image_id), []).append(i)

    def key(image_id: str) -> str:
        return hashlib.sha256(f"{seed}\x00{image_id}".encode()).hexdigest()

    test: list[int] = []
    for image_id in sorted(groups, key=key):
        if len(test) >= target:
            break
        test += groups[image_id]
    if len(test) >= n:
        raise PublishError(
            f"cannot split {n} rows from {len(groups)} image(s) into train and test with --test-size {test_size}"
        )
    test_set = set(test)
    return [i for i in range(n) if i not in test_set], sorted(test)


# ----------------------------------------------------------------------------------------------- folder


def _row_group_size(features) -> int:
    """Small row groups for image datasets (the dataset viewer reads one group at a time), as `datasets` does."""
    from datasets.arrow_writer import get_writer_batch_size_from_features

    return get_writer_batch_size_from_features(features) or 100


def _write_shards(ds, folder: Path, split: str) -> tuple[list[str], int]:
    """Parquet shards of at most MAX_SHARD_BYTES Arrow bytes, images embedded, like `datasets.push_to_hub`."""
    from datasets.table import embed_table_storage

    ds = ds.flatten_indices()
    n = max(1, math.ceil(ds.data.nbytes / MAX_SHARD_BYTES))
    names, size = [], 0
    for i in range(n):
        shard = ds.shard(num_shards=n, index=i, contiguous=True).with_format("arrow")
        shard = shard.map(embed_table_storage, batched=True, desc=None)
        name = f"data/{shard_name(split, i, n)}"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shard.with_format(None).to_parquet(str(folder / name), batch_size=_row_group_size(ds.features))
        names.append(name)
        size += (folder / name).stat().st_size
    return names, size


def _render_preview(ds, out_path: Path, n: int = PREVIEW_ROWS) -> bool:
    """The preview grid from `mfpo_data.inspect.render_grid`, rows spread over the split; False when unavailable."""
    try:
        from mfpo_data.inspect import render_grid
    except ImportError as e:
        logger.warning("no preview image: mfpo_data.inspect.render_grid is not available (%s)", e)
        return False
    count = min(n, len(ds))
    picks = sorted({round(i * (len(ds) - 1) / max(1, count - 1)) for i in range(count)})
    render_grid((ds[i] for i in picks), out_path, n=count)
    return out_path.is_file()


def write_folder(
    ds, stats: dict, recipe_text: str, folder: Path, repo_id: str, *, test_size: float | int, seed: int
) -> tuple[list[str], dict[str, int]]:
    """Write README.md, preview.png and data/ into an empty `folder`. Returns (files, rows per split)."""
    from mfpo_data.publishing.card import find_datasheet, render_card, summarize_split, validate_card

    train_idx, test_idx = split_by_image(list(ds["image_id"]), test_size, seed)
    # Each split's own table (a selection alone keeps the whole table: its bytes would be the dataset's).
    splits = {"train": ds.select(train_idx).flatten_indices(), "test": ds.select(test_idx).flatten_indices()}
    files, summaries = [], []
    for name, part in splits.items():
        summary = summarize_split(name, part)
        summary.shards, summary.download_bytes = _write_shards(part, folder, name)
        files += summary.shards
        summaries.append(summary)
    preview = PREVIEW_NAME if _render_preview(splits["train"], folder / PREVIEW_NAME) else None
    if preview:
        files.append(PREVIEW_NAME)
    datasheet = find_datasheet()
    if datasheet is None:
        logger.warning("DATASHEET.md not found next to the package: the card links to it instead of including it")
    card = render_card(
        repo_id=repo_id,
        splits=summaries,
        stats=stats,
        recipe_text=recipe_text,
        preview=preview,
        datasheet=datasheet.read_text() if datasheet else None,
    )
    validate_card(card, splits=list(splits))
    (folder / "README.md").write_text(card)
    files.append("README.md")
    return sorted(files), {name: len(part) for name, part in splits.items()}


# ----------------------------------------------------------------------------------------------- hub


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def is_transient(error: BaseException) -> bool:
    """5xx, 408 and 429 answers, and connection or timeout errors of any HTTP client. Not 401/403/404."""
    status = _status(error)
    if status is not None:
        return status in TRANSIENT_STATUS
    if _is_offline(error):  # a ConnectionError subclass, but waiting does not help
        return False
    return any(cls.__name__ in TRANSIENT_NAMES for cls in type(error).__mro__)


def _is_offline(error: BaseException) -> bool:
    return any(cls.__name__ == "OfflineModeIsEnabled" for cls in type(error).__mro__)


def _sleep(seconds: float) -> None:  # a seam for tests
    time.sleep(seconds)


def with_retries(what: str, fn: Callable[[], T], *, token: str | None = None, attempts: int = RETRY_ATTEMPTS) -> T:
    """Call `fn`; on a transient Hub error wait 2, 4, 8, ... seconds and try again. Others become PublishError."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except MfpoError:
            raise
        except Exception as e:
            status = _status(e)
            detail = _scrub(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, token)
            if is_transient(e) and attempt < attempts:
                delay = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** (attempt - 1))
                logger.warning("%s failed (%s); retry %d/%d in %.0fs", what, detail, attempt, attempts - 1, delay)
                _sleep(delay)
                continue
            if status in (401, 403):
                raise PublishError(
                    f"{what}: the Hub refused the token (HTTP {status}); it needs write access to the repo "
                    f"(set HF_TOKEN or run `hf auth login`)"
                ) from None
            if _is_offline(e):
                raise PublishError(f"{what}: HF_HUB_OFFLINE is set; unset it to push (or use --dry-run DIR)") from None
            tries = f" after {attempt} attempts" if attempt > 1 else ""
            code = f"HTTP {status}: " if status else f"{type(e).__name__}: "
            raise PublishError(f"{what} failed{tries}: {code}{detail}") from None
    raise AssertionError("unreachable")


def upload_folder_in_one_commit(
    folder: Path,
    files: list[str],
    repo_id: str,
    *,
    token: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload mfpo dataset",
) -> tuple[str | None, list[str]]:
    """Create the repo (and branch), then one commit adding `files` and deleting stale data/ files."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = HfApi(token=token)
    kind = {"repo_type": "dataset"}
    with_retries(
        "create_repo", lambda: api.create_repo(repo_id, private=private or None, exist_ok=True, **kind), token=token
    )
    if revision:
        with_retries(
            "create_branch", lambda: api.create_branch(repo_id, branch=revision, exist_ok=True, **kind), token=token
        )
    existing = with_retries(
        "list_repo_files", lambda: api.list_repo_files(repo_id, revision=revision, **kind), token=token
    )
    stale = sorted(f for f in existing if f.startswith("data/") and f not in files)
    operations = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(folder / f)) for f in files]
    operations += [CommitOperationDelete(path_in_repo=f) for f in stale]
    info = with_retries(
        "create_commit",
        lambda: api.create_commit(
            repo_id, operations=operations, commit_message=commit_message, revision=revision, **kind
        ),
        token=token,
    )
    return getattr(info, "commit_url", None), stale


# ----------------------------------------------------------------------------------------------- entry points


def publish(
    from_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    dry_run_dir: str | Path | None = None,
    test_size: float | int = DEFAULT_TEST_SIZE,
    seed: int = DEFAULT_SEED,
    token: str | None = None,
) -> PublishResult:
    """Check a build, split it, and either write the upload folder (`dry_run_dir`) or push it in one commit."""
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except Exception as e:
        raise PublishError(f"--repo-id {repo_id!r} is not a valid Hub repo id ({e})") from None
    if dry_run_dir is None:
        token = resolve_token(token)  # fail before the expensive part
    if dry_run_dir is not None:
        folder = Path(dry_run_dir).expanduser()
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise PublishError(f"--dry-run {folder} exists and is not an empty folder")
    # `datasets`' Arrow cache of the build (about the size of the dataset, more after the splits and the
    # image embedding) lives in a temporary folder for the duration of the call, and goes with it.
    with tempfile.TemporaryDirectory(prefix="mfpo-publish-cache-") as cache:
        ds, stats, recipe_text = load_build(from_dir, cache_dir=cache)
        if dry_run_dir is not None:
            folder.mkdir(parents=True, exist_ok=True)
            files, counts = write_folder(ds, stats, recipe_text, folder, repo_id, test_size=test_size, seed=seed)
            del ds
            logger.info("wrote %d files to %s (%s)", len(files), folder, counts)
            return PublishResult(repo_id=repo_id, folder=folder, files=files, splits=counts, revision=revision)
        return _push(ds, stats, recipe_text, repo_id, token=token, private=private, revision=revision,
                     test_size=test_size, seed=seed)  # fmt: skip


def _push(ds, stats, recipe_text, repo_id, *, token, private, revision, test_size, seed) -> PublishResult:
    with tempfile.TemporaryDirectory(prefix="mfpo-publish-") as tmp:
        folder = Path(tmp)
        files, counts = write_folder(ds, stats, recipe_text, folder, repo_id, test_size=test_size, seed=seed)
        total = sum(counts.values())
        url, stale = upload_folder_in_one_commit(
            folder,
            files,
            repo_id,
            token=token,
            private=private,
            revision=revision,
            commit_message=f"Upload mfpo dataset ({total} rows: "
            + ", ".join(f"{k} {v}" for k, v in counts.items())
            + ")",
        )
    logger.info("pushed %d files to %s (%s)", len(files), repo_id, url)
    return PublishResult(
        repo_id=repo_id, folder=None, files=files, splits=counts, commit_url=url, revision=revision, deleted=stale
    )


def push_to_hub(
    build: Any,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    test_size: float | int = DEFAULT_TEST_SIZE,
    seed: int = DEFAULT_SEED,
    token: str | None = None,
) -> PublishResult:
    """Push a finished build (an `OutputLayout` from `build_dataset`, or its folder) from Python or a notebook."""
    root = getattr(build, "root", build)
    return publish(root, repo_id, private=private, revision=revision, test_size=test_size, seed=seed, token=token)
