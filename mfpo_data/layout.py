"""Where a build puts its files, in one place.

```
OUT/
  data/train-00000-of-00003.parquet   final shards (FEATURES, difficulty_bucket filled); what publish uploads
  staging/00000.arrow                 one shard per rank (Arrow IPC), written atomically (temp file, then rename)
  staging/00000.rejects.jsonl         the rank's dropped samples: {"id", "stage", "reason"}
  staging/00000.stats.json            the rank's counts
  staging/00000.pid                   the pid of the process that runs the rank (until finalize)
  staging/00000.answers.jsonl         the rank's sampled answers with their labels (`kind: on_policy`), resumable
  logs/                               datatrove's logging dir: logs/, stats/, completions/00000 markers
  rejects.jsonl                       every dropped sample of the build, sorted by id
  answers.jsonl                       `kind: on_policy`: every sampled answer with its label, sorted by key
  stats.json                          merged counts: rows, pair types, categories, buckets, drops per reason
  recipe.resolved.yaml                the fully resolved recipe plus package versions
  manifest.json                       what the build wrote: index fingerprint, final files with sha256
  .mfpo.lock                          held by the running build (`pipeline/outdir.py`)
```
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path


def rank_answers_name(rank: int) -> str:
    """A rank's answers file in staging/, beside the source index (`sources/on_policy.py`)."""
    return f"{rank:05d}.answers.jsonl"


def shard_name(split: str, index: int, count: int) -> str:
    """A parquet shard's file name, as `datasets` and the Hub name them: `train-00000-of-00003.parquet`."""
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


@dataclass(frozen=True)
class OutputLayout:
    root: Path
    logs: Path | None = None  # `executor.logging_dir` when the recipe sets one; else OUT/logs

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))
        if self.logs is not None:
            object.__setattr__(self, "logs", Path(self.logs))

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def staging_dir(self) -> Path:
        return self.root / "staging"

    @property
    def logging_dir(self) -> Path:
        return self.logs if self.logs is not None else self.root / "logs"

    @property
    def stats_file(self) -> Path:
        return self.root / "stats.json"

    @property
    def rejects_file(self) -> Path:
        return self.root / "rejects.jsonl"

    @property
    def recipe_file(self) -> Path:
        return self.root / "recipe.resolved.yaml"

    @property
    def source_index(self) -> Path:
        """The source's index, written once before the ranks (`sources/base.py`)."""
        return self.staging_dir / "source_index.jsonl"

    @property
    def manifest_file(self) -> Path:
        return self.root / "manifest.json"

    @classmethod
    def open(cls, root: str | Path) -> OutputLayout:
        """A finished or running build folder as its build recorded it: with the `executor.logging_dir`
        of its `recipe.resolved.yaml` (relative to the folder it ran in, as the build resolved it)."""
        import yaml

        root = Path(root).expanduser()
        layout = cls(root)
        try:
            recipe = yaml.safe_load(layout.recipe_file.read_text(encoding="utf-8")) or {}
        except (OSError, ValueError, RecursionError, yaml.YAMLError):  # ValueError: not UTF-8 (refused later)
            return layout
        executor = recipe.get("executor") if isinstance(recipe, dict) else None
        logs = executor.get("logging_dir") if isinstance(executor, dict) else None
        return cls(root, Path(logs).expanduser()) if isinstance(logs, str) and logs else layout

    def staging_shard(self, rank: int) -> Path:
        return self.staging_dir / f"{rank:05d}.arrow"

    def staging_rejects(self, rank: int) -> Path:
        return self.staging_dir / f"{rank:05d}.rejects.jsonl"

    def staging_pid(self, rank: int) -> Path:
        return self.staging_dir / f"{rank:05d}.pid"

    def staging_stats(self, rank: int) -> Path:
        return self.staging_dir / f"{rank:05d}.stats.json"

    def staging_answers(self, rank: int) -> Path:
        return self.staging_dir / rank_answers_name(rank)

    @property
    def answers_file(self) -> Path:
        """The sampled answers of an on-policy build, merged by finalize."""
        return self.root / "answers.jsonl"

    def final_shard(self, rank: int, tasks: int) -> Path:
        return self.data_dir / shard_name("train", rank, tasks)

    def completion_marker(self, rank: int) -> Path:
        return self.logging_dir / "completions" / f"{rank:05d}"

    def missing_ranks(self, tasks: int) -> list[int]:
        """Ranks whose completion marker is missing, or whose rows are in neither their staging shard nor their
        final shard (finalize removes a rank's staging shard once its final shard is written, unless
        `output.keep_staging`; a finished build's staging/ is removed whole)."""
        if self.staging_removed():
            return [r for r in range(tasks) if not (self.completion_marker(r).is_file()
                                                    and self.final_shard(r, tasks).is_file())]
        return [r for r in range(tasks) if not (self.completion_marker(r).is_file() and (
            self.staging_shard(r).is_file() or self.final_shard(r, tasks).is_file()))]

    def staging_removed(self) -> bool:
        """A finished build (stats.json written last by finalize) whose staging/ finalize removed."""
        return self.stats_file.is_file() and not self.staging_dir.exists()

    def read_stats(self) -> dict:
        return json.loads(self.stats_file.read_text())

    def final_shards(self) -> list[Path]:
        return sorted(self.data_dir.glob("train-*.parquet"))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` through a temp file and a rename: a reader sees the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
