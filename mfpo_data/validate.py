"""Load an mfpo dataset from wherever it lives and check it against `schema.features()`.

    from mfpo_data.validate import load_and_validate
    dd = load_and_validate("out/coco")                 # a build's output folder
    dd = load_and_validate("dry-run/")                 # a `publish --dry-run` folder (README.md + data/)
    train = load_and_validate("org/name", split="train")  # a dataset on the Hugging Face Hub
    train = load_and_validate("org/name", split="train", revision="v1.0")  # pinned: a tag, branch or commit

Local parquet files are checked one by one from their own schema before anything is loaded, so a
tampered shard is named and never silently cast. A mismatch is one `SchemaError` that lists the
missing, mistyped (and, with `strict=True`, unexpected) columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mfpo_data.errors import MfpoError, SchemaError


class IncompleteBuildError(MfpoError):
    """A build output folder whose ranks did not all finish."""


class DatasetLoadError(MfpoError):
    """A path or Hub id that `datasets` cannot load."""


def describe(feature: Any) -> str:
    """A short, readable type: `List[Image]`, `{size: List[int32, 2], counts: string}`."""
    import datasets

    if isinstance(feature, datasets.Value):
        return feature.dtype
    if isinstance(feature, datasets.Image):
        return "Image" if feature.decode else "Image(decode=False)"
    if isinstance(feature, datasets.List | datasets.LargeList):
        inner = describe(feature.feature)
        name = "List" if isinstance(feature, datasets.List) else "LargeList"
        length = getattr(feature, "length", -1)
        return f"{name}[{inner}, {length}]" if length not in (-1, None) else f"{name}[{inner}]"
    if isinstance(feature, Mapping):
        return "{" + ", ".join(f"{k}: {describe(v)}" for k, v in feature.items()) + "}"
    if isinstance(feature, list | tuple) and len(feature) == 1:
        return f"List[{describe(feature[0])}]"
    return repr(feature)


def features_problems(
    got: Mapping[str, Any], expected: Mapping[str, Any] | None = None, *, strict: bool = False,
    required: Iterable[str] | None = None,
) -> list[str]:
    """What differs between `got` and the schema, one phrase per kind (empty when they match).

    The schema's `LATER_COLUMNS` may be absent unless `strict` (a dataset built before they existed).

    `required` narrows the schema to those columns plus the schema's columns that `got` has (they must
    still have the schema's types), e.g. TRL's columns for a plain-DPO dataset.
    """
    from mfpo_data.schema import LATER_COLUMNS

    if expected is None:
        from mfpo_data.schema import features

        expected = features()
    if required is not None:
        required = set(required)
        expected = {c: f for c, f in expected.items() if c in required or c in got}
    later = () if strict else LATER_COLUMNS  # a dataset built before them loads with them added (`with_later_columns`)
    missing = [c for c in expected if c not in got and c not in later]
    mistyped = [
        f"{c} (expected {describe(expected[c])}, got {describe(got[c])})"
        for c in expected
        if c in got and got[c] != expected[c]
    ]
    unexpected = [c for c in got if c not in expected] if strict else []
    problems = []
    if missing:
        problems.append("missing columns: " + ", ".join(missing))
    if mistyped:
        problems.append("mistyped columns: " + "; ".join(mistyped))
    if unexpected:
        problems.append("unexpected columns: " + ", ".join(unexpected))
    return problems


def check_features(got: Mapping[str, Any], where: str, *, strict: bool = False,
                   required: Iterable[str] | None = None) -> None:
    """Raise one `SchemaError` naming `where` and every column that does not match the schema."""
    problems = features_problems(got, strict=strict, required=required)
    if problems:
        raise SchemaError(f"{where} does not match the mfpo schema: " + " | ".join(problems))


def parquet_features(path: Path):
    """The `datasets.Features` a parquet file declares (its Hugging Face metadata, else its Arrow types)."""
    import datasets
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for a file that is not parquet
        raise SchemaError(f"{path} is not a readable parquet file: {type(e).__name__}: {e}") from None
    return datasets.Features.from_arrow_schema(schema)


def check_parquet_files(paths: Iterable[Path], *, strict: bool = True, required: Iterable[str] | None = None) -> None:
    """Check every shard's own schema; the first bad shard is named with all its bad columns."""
    for path in paths:
        check_features(parquet_features(Path(path)), f"shard {path}", strict=strict, required=required)


def check_build_complete(root: Path) -> dict:
    """For a build output folder: every rank finished and final shards exist. Returns stats.json."""
    import json

    from mfpo_data.layout import OutputLayout

    layout = OutputLayout.open(root)  # with the logging dir the build recorded
    if not layout.stats_file.is_file():
        raise IncompleteBuildError(f"{root} has no {layout.stats_file.name}: the build did not finish (rerun it)")
    try:
        stats = layout.read_stats()
    except json.JSONDecodeError as e:
        raise IncompleteBuildError(f"{layout.stats_file} is not valid JSON ({e}): rerun the build") from None
    tasks = stats.get("tasks")
    if not isinstance(tasks, int) or tasks < 1:
        raise IncompleteBuildError(f"{layout.stats_file} has no valid 'tasks' count: rerun the build")
    missing = layout.missing_ranks(tasks)
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (f", ... ({len(missing)} in all)" if len(missing) > 20 else "")
        raise IncompleteBuildError(
            f"incomplete build in {root}: rank(s) {shown} of {tasks} did not finish; rerun the build to complete them"
        )
    if not layout.final_shards():
        raise IncompleteBuildError(
            f"incomplete build in {root}: no final shards in {layout.data_dir}; rerun the build"
        )
    return stats


def is_build_dir(path: Path) -> bool:
    from mfpo_data.layout import OutputLayout

    layout = OutputLayout.open(path)
    return layout.manifest_file.is_file() or layout.stats_file.is_file() or layout.completion_marker(0).parent.is_dir() or layout.staging_dir.is_dir()


_CACHE: list[str] = []


def process_cache_dir() -> str:
    """A `datasets` cache folder for local files read in this process, inside `datasets`' own cache (the
    same disk) and removed when the process exits: loading a local build leaves no Arrow copy behind."""
    if not _CACHE:
        import atexit
        import shutil
        import tempfile

        import datasets

        Path(datasets.config.HF_DATASETS_CACHE).mkdir(parents=True, exist_ok=True)
        _CACHE.append(tempfile.mkdtemp(prefix="mfpo-local-", dir=datasets.config.HF_DATASETS_CACHE))
        atexit.register(shutil.rmtree, _CACHE[0], ignore_errors=True)
    return _CACHE[0]


def _load(*args, **kwargs):
    import datasets

    try:
        return datasets.load_dataset(*args, **kwargs)
    except MfpoError:
        raise
    except Exception as e:  # datasets raises many types (FileNotFoundError, DatasetNotFoundError, ...): say which
        what = args[0] if args[0] != "parquet" else kwargs.get("data_files")
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise DatasetLoadError(f"cannot load {what}: {type(e).__name__}: {msg}") from e


def with_later_columns(ds, where: str = "the dataset"):
    """`ds` with the `schema.LATER_COLUMNS` it lacks (a dataset built before they existed), in the meaning they
    had then: `targets_key_object` from each row's perturbation_params (`schema.targets_key_object`: only a
    negative on the key object's region or an inserted object targets it; a random box, the whole image and a
    random crop do not) and `image_reliance` null. A dataset without MFPO's columns (plain TRL) is returned as
    it is."""
    import json

    from mfpo_data.schema import LATER_COLUMNS, features, targets_key_object

    if "perturbation_params" not in ds.column_names:
        return ds
    schema = features()
    for name in (c for c in LATER_COLUMNS if c not in ds.column_names):
        if name == "targets_key_object":
            values = []
            for i, params in enumerate(ds.with_format(None)["perturbation_params"]):
                try:
                    values.append(targets_key_object(json.loads(params) if params else {}))
                except (json.JSONDecodeError, AttributeError):
                    raise SchemaError(f"{where} row {i}: perturbation_params is not a JSON object: {str(params)[:80]!r}") from None
        else:
            values = [None] * len(ds)
        ds = ds.add_column(name, values, feature=schema[name])
    return ds


def load_and_validate(path_or_repo_id: str | Path, split: str | None = None, *, strict: bool = False,
                      revision: str | None = None, required: Iterable[str] | None = None):
    """Load a build output folder, a published or dry-run folder, a parquet file or a Hub id, and validate it.

    `revision` (a branch, tag or commit sha) pins a Hub dataset; it is passed to `datasets.load_dataset`.
    A local path has no revisions, so a `revision` with one is refused (`DatasetLoadError`).

    Returns a `datasets.DatasetDict` (or the `Dataset` of `split`) whose features are exactly
    `schema.features()` for every column the schema names. Raises `IncompleteBuildError` for a build
    whose ranks did not all finish, `SchemaError` listing the missing and mistyped columns (plus the
    unexpected ones when `strict`), `DatasetLoadError` when `datasets` cannot load it. `required` (see
    `features_problems`) accepts datasets that have only some of the schema's columns. A dataset built
    before the schema's `LATER_COLUMNS` existed gets them added in their old meaning (`with_later_columns`).
    """
    import datasets

    from mfpo_data.layout import OutputLayout

    where = str(path_or_repo_id)
    path = Path(path_or_repo_id).expanduser() if str(path_or_repo_id).startswith("~") else Path(path_or_repo_id)
    if revision is not None and path.exists():
        raise DatasetLoadError(f"{where} is a local path: revision={revision!r} applies to Hub datasets only "
                               "(drop the revision, or check out that revision of the files yourself)")
    if path.is_dir() and is_build_dir(path):
        check_build_complete(path)
        shards = OutputLayout.open(path).final_shards()
        check_parquet_files(shards, strict=strict, required=required)
        dd = _load("parquet", data_files={"train": [str(s) for s in shards]}, cache_dir=process_cache_dir())
    elif path.is_dir():
        check_parquet_files(sorted(path.rglob("*.parquet")), strict=strict, required=required)
        dd = _load(str(path), cache_dir=process_cache_dir())
    elif path.is_file() and path.suffix == ".parquet":
        check_parquet_files([path], strict=strict, required=required)
        dd = _load("parquet", data_files={"train": [str(path)]}, cache_dir=process_cache_dir())
    elif path.exists():
        raise DatasetLoadError(f"{where} is neither a folder nor a parquet file")
    else:
        dd = _load(where, revision=revision)

    if not isinstance(dd, datasets.DatasetDict):  # load_dataset returns a DatasetDict when no split is asked for
        dd = datasets.DatasetDict({"train": dd})
    for name, ds in dd.items():
        check_features(ds.features, f"{where} split '{name}'", strict=strict, required=required)
        dd[name] = with_later_columns(ds, f"{where} split '{name}'")
    if split is None:
        return dd
    if split not in dd:
        raise DatasetLoadError(f"{where} has no split '{split}' (it has: {', '.join(dd)})")
    return dd[split]
