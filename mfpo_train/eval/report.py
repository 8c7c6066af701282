"""The results table in the papers' layout: one row per model, and the difference row against the base.

Columns come from the benchmarks that ran (results.json `models[i].results`), each a path into its
scorer's result. Scores are x100 with one decimal, as the scorers return them; probe accuracies are
fractions and are printed x100 too; log-prob drops are in nats.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


# (benchmark, header, path in that benchmark's result, scale)
COLUMNS: tuple[tuple[str, str, tuple[str, ...], float], ...] = (
    ("objhal", "ObjHal CHAIRs↓", ("CHAIRs",), 1),
    ("objhal", "ObjHal CHAIRi↓", ("CHAIRi",), 1),
    ("chair-coco", "COCO CHAIRs↓", ("CHAIRs",), 1),
    ("chair-coco", "COCO CHAIRi↓", ("CHAIRi",), 1),
    ("chair-coco", "Recall↑", ("recall",), 1),
    ("amber", "AMBER CHAIR↓", ("generative", "CHAIR"), 1),
    ("amber", "Cover↑", ("generative", "Cover"), 1),
    ("amber", "Hal↓", ("generative", "Hal"), 1),
    ("amber", "Cog↓", ("generative", "Cog"), 1),
    ("amber", "AMBER-d Acc↑", ("discriminative", "overall", "Accuracy"), 1),
    ("amber", "AMBER-d F1↑", ("discriminative", "overall", "F1"), 1),
    ("pope", "POPE rand F1↑", ("random", "f1"), 1),
    ("pope", "pop F1↑", ("popular", "f1"), 1),
    ("pope", "adv F1↑", ("adversarial", "f1"), 1),
    ("pope", "POPE avg F1↑", ("mean", "f1"), 1),
    ("pope", "POPE pooled F1↑", ("pooled", "f1"), 1),
    ("pope", "yes-ratio", ("mean", "yes_ratio"), 1),
    ("mmhal", "MMHal score↑", ("score",), 1),
    ("mmhal", "MMHal hal.%↓", ("hallucination_rate",), 1),
    ("probes", "Pref acc↑", ("preference_accuracy",), 100),
    ("probes", "Pref acc m'", ("preference_accuracy_perturbed",), 100),
    ("probes", "Pref acc noise↓", ("preference_accuracy_noise",), 100),
    ("probes", "Img-reward acc↑", ("image_reward_accuracy",), 100),
    ("probes", "Δlogp m'↑", ("logp_drop_perturbed",), 1),
    ("probes", "Δlogp noise↑", ("logp_drop_noise",), 1),
)


def lookup(result: Mapping[str, Any] | None, path: Sequence[str]) -> float | None:
    value: Any = result
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def row_values(results: Mapping[str, Any]) -> dict[str, float | None]:
    """{header: value} of one model's results over the columns of the benchmarks it has."""
    return {header: (None if (v := lookup(results.get(bench), path)) is None else v * scale)
            for bench, header, path, scale in COLUMNS if bench in results}


def difference(model: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, float | None]:
    """model - base for every column both have (None where either is missing)."""
    a, b = row_values(model), row_values(base)
    return {h: (a[h] - b[h] if a.get(h) is not None and b.get(h) is not None else None) for h in a if h in b}


def column_labels(settings: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Headers that say how their number deviates from the reference (`settings`: results.json's
    `settings.benchmarks`): header -> the header shown."""
    out: dict[str, str] = {}

    def tag(bench: str, text: str) -> None:
        for b, header, _, _ in COLUMNS:
            if b == bench:
                out[header] = f"{out.get(header, header)} ({text})"

    for bench in ("objhal", "chair-coco"):
        if settings.get(bench, {}).get("protocol") == "fixed":
            tag(bench, "fixed vocab")
    if str(settings.get("objhal", {}).get("source", "")).startswith("seeded"):  # not the 300 Object HalBench items
        tag("objhal", "seeded")
    pope = settings.get("pope", {})
    if pope:
        if pope.get("labels") == "repope":
            tag("pope", "RePOPE")
        source = str(pope.get("source", ""))
        if not source.startswith(("official", "RePOPE")):
            tag("pope", "seeded" if source.startswith("seeded") else "user's file")
        if pope.get("convention", "pope") != "pope":
            tag("pope", str(pope["convention"]))
    amber = settings.get("amber", {})
    if amber.get("similarity") == "exact":
        tag("amber", "exact match")
    if amber.get("nouns") not in (None, "nltk"):
        tag("amber", f"{amber['nouns']} nouns")
    if settings.get("mmhal"):
        tag("mmhal", f"judge: {settings['mmhal'].get('judge', {}).get('label')}")
    return out


def unparsed_cell(unparsed: Mapping[str, Mapping[str, int]]) -> str:
    """`pope-random 3/3000, objhal 0/300`: the answers no parser could read, per part."""
    return ", ".join(f"{part} {c['unparsed']}/{c['n']}" for part, c in unparsed.items()) or "–"


def hidden_columns(settings: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """Columns left out of the table: the pooled POPE F1 unless it is the convention's headline (VLMEvalKit)."""
    return set() if settings.get("pope", {}).get("headline") == "pooled" else {"POPE pooled F1↑"}


def markdown_table(models: Sequence[Mapping[str, Any]], diff: Mapping[str, float | None] | None = None,
                   labels: Mapping[str, str] | None = None, hidden: set[str] | frozenset[str] = frozenset()) -> str:
    """`models`: results.json's `models` list (each with `name`, `results` and `unparsed`); `labels`
    replace headers (`column_labels`); `hidden` columns are left out (`hidden_columns`)."""
    labels = labels or {}
    rows = [(m["name"], row_values(m["results"]), m.get("unparsed")) for m in models]
    headers = [h for _, h, _, _ in COLUMNS if h not in hidden and any(h in values for _, values, _ in rows)]
    with_unparsed = any(u is not None for _, _, u in rows)
    shown = [labels.get(h, h) for h in headers] + (["Unparsed"] if with_unparsed else [])
    lines = ["| Model | " + " | ".join(shown) + " |", "|---|" + "---:|" * len(shown)]
    for name, values, unparsed in rows:
        cells = [_fmt(values.get(h), h) for h in headers] + ([unparsed_cell(unparsed or {})] if with_unparsed else [])
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if diff is not None:
        cells = [_fmt(diff.get(h), h, signed=True) for h in headers] + (["–"] if with_unparsed else [])
        lines.append("| difference | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None, header: str, signed: bool = False) -> str:
    if value is None:
        return "–"
    digits = 2 if header.startswith(("Δlogp", "MMHal score")) else 1
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
