"""What makes two results comparable: scorer name and version, the hash of the item ids, n, settings.

Every scorer returns `make_result(...)`: the metrics at the top level (so `jq .CHAIRs` works),
`meta` with what must match before two numbers may be compared, and `details` (one dict per item)
that `write_result` puts in a JSON-lines file beside the JSON.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mfpo_data.scorers.io import write_json, write_jsonl


# Bump a scorer's version whenever its numbers can change for the same input.
SCORER_VERSIONS = {"chair": "2", "objhal": "2", "pope": "3", "amber": "2", "mmhal": "1"}


def ids_sha256(ids: Iterable) -> str:
    """sha256 of the sorted, de-duplicated ids (as strings, one per line): order-free and stable."""
    text = "\n".join(sorted({str(i) for i in ids}))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def pct(num: float, den: float) -> float | None:
    """100 * num / den with one decimal, as the papers print it; None when den is 0."""
    return round(100.0 * num / den, 1) if den else None


def make_result(
    scorer: str,
    metrics: Mapping[str, Any],
    *,
    ids: Iterable,
    settings: Mapping[str, Any],
    details: list[dict] | None = None,
) -> dict:
    """`{**metrics, "meta": {scorer, version, n, ids_sha256, settings}, "details": [...]}`."""
    ids = list(ids)
    meta = {
        "scorer": scorer,
        "version": SCORER_VERSIONS[scorer],
        "n": len(ids),
        "ids_sha256": ids_sha256(ids),
        "settings": dict(settings),
    }
    return {**metrics, "meta": meta, "details": details if details is not None else []}


def details_path(path: str | Path) -> Path:
    """`results.json` -> `results.details.jsonl`."""
    path = Path(path)
    return path.with_name(path.stem + ".details.jsonl")


def write_result(result: Mapping[str, Any], path: str | Path) -> tuple[Path, Path]:
    """Write the result without `details` to `path` and the details beside it; returns both paths."""
    body = {k: v for k, v in result.items() if k != "details"}
    out = write_json(body, path)
    det = write_jsonl(result.get("details", []), details_path(path))
    return out, det


def comparable(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The reasons two results may not be compared (empty when they may): scorer, version, ids, settings."""
    ma, mb = a["meta"], b["meta"]
    reasons = [
        f"{k}: {ma.get(k)!r} != {mb.get(k)!r}" for k in ("scorer", "version", "ids_sha256") if ma.get(k) != mb.get(k)
    ]
    if json.dumps(ma.get("settings"), sort_keys=True) != json.dumps(mb.get("settings"), sort_keys=True):
        reasons.append("settings differ")
    return reasons
