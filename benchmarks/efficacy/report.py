"""The report: the paper's ablation tables at toy scale, paired differences, per-epoch curves, and a verdict.

`results[name][seed]` is a run's result (runs.task_run). Every table row is mean ± std over seeds; every
difference is paired by seed (same SFT checkpoint, same pairs, same batches) and shows how many seeds went
up and down and the two-sided paired t-test's p-value. The verdict's rule is fixed here, before any number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from benchmarks.efficacy.evaluate import METRICS
from benchmarks.efficacy.runs import RUNS
from benchmarks.efficacy.stats import Paired, mean_std, paired


@dataclass(frozen=True)
class Table:
    title: str
    rows: tuple[str, ...]
    contrasts: tuple[tuple[str, str], ...]  # (a, b): the difference a - b, paired by seed
    paper: str


TABLES = {
    "4": Table("Table 4: loss composition", ("sft", "dpo", "dpo+margin", "dpo+image", "mfpo", "dpo-blank"),
               (("mfpo", "dpo+margin"), ("mfpo", "dpo+image"), ("mfpo", "dpo"), ("dpo", "sft"), ("dpo", "dpo-blank")),
               "MFPO CHAIRs 13.4, without L_image 21.9; MMHal 2.69, without L_margin 2.61"),
    "8": Table("Table 8: image-negative construction (MFPO, diffusion noise t=500)",
               ("mfpo-global", "mfpo-random20", "mfpo"), (("mfpo", "mfpo-global"), ("mfpo", "mfpo-random20")),
               "CHAIRs 21.7 (global noise) / 16.5 (random 20% region) / 13.4 (key regions)"),
    "7": Table("Table 7: easy-to-hard curriculum vs end-to-end (same pairs, same number of steps)",
               ("mfpo", "mfpo-curriculum"), (("mfpo-curriculum", "mfpo"),),
               "MMHal 2.69 (curriculum) vs 2.53 (end-to-end); CHAIRs 13.4 vs 16.0"),
    "5": Table("Table 5: margin eta", ("mfpo", "mfpo-eta0.2", "mfpo-eta0.4"),
               (("mfpo", "mfpo-eta0.2"), ("mfpo", "mfpo-eta0.4")), "eta 0 best (MMHal 2.69)"),
}


@dataclass(frozen=True)
class Claim:
    text: str
    table: str
    contrasts: tuple[tuple[str, str], ...]  # each a - b must favour a


CLAIMS = (
    Claim("the image term helps beyond the margin", "4", (("mfpo", "dpo+margin"),)),
    Claim("key-region negatives beat global and random-region ones", "8",
          (("mfpo", "mfpo-global"), ("mfpo", "mfpo-random20"))),
    Claim("the easy-to-hard curriculum beats end-to-end", "7", (("mfpo-curriculum", "mfpo"),)),
    Claim("eta 0 is best", "5", (("mfpo", "mfpo-eta0.2"), ("mfpo", "mfpo-eta0.4"))),
)
VERDICT_METRICS = ("acc_both", "noise_pref")
ALPHA = 0.05
RULE = (
    f"Rule, fixed before the numbers: on each metric, a claim **holds** when every one of its contrasts goes the "
    f"claimed way in every seed and the two-sided paired t-test over seeds gives p < {ALPHA}; it **does not hold** "
    f"when one of its contrasts goes the other way with p < {ALPHA}; otherwise it is **inconclusive** at this scale. "
    "Deciding metrics: `acc_both` (the item and its twin both right: the model reads the colour; higher is better) "
    "and `noise_pref` (prefers the true colour over the prior on pure noise: an image-blind preference; lower is better)."
)
CURVE_METRICS = ("acc_twin", "acc_both", "noise_pref")


def _seeds(results: dict, names) -> list[int]:
    """Seeds every run in `names` has finished."""
    sets = [set(results.get(n, {})) for n in names]
    return sorted(set.intersection(*sets)) if sets else []


def diff(results: dict, a: str, b: str, metric: str, step: int | None = None) -> Paired | None:
    seeds = _seeds(results, (a, b))
    if not seeds:
        return None
    return paired([_value(results[a][s], metric, step) for s in seeds], [_value(results[b][s], metric, step) for s in seeds])


def _value(run: dict, metric: str, index: int | None) -> float:
    """The final value, or the value after epoch `index` (0: before training, i.e. the SFT model's)."""
    if index is None or not run["curve"]:
        return run["metrics"][metric]
    return run["curve"][min(index, len(run["curve"])) - 1][metric] if index > 0 else math.nan


def fmt_p(p: float) -> str:
    return "n/a" if math.isnan(p) else "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_diff(d: Paired | None) -> str:
    if d is None:
        return "not run"
    return f"{d.mean:+.3f} ± {d.std:.3f} ({d.up}↑{d.down}↓, p {fmt_p(d.p)})"


def decide(d: Paired | None, higher_is_better: bool) -> str:
    if d is None:
        return "not run"
    good = d.mean > 0 if higher_is_better else d.mean < 0
    significant = not math.isnan(d.p) and d.p < ALPHA
    if significant and d.favours(higher_is_better) == d.n:
        return "holds"
    if significant and not good and d.mean != 0:
        return "does not hold"
    return "inconclusive"


def claim_verdict(results: dict, claim: Claim, metric: str) -> tuple[str, list[Paired | None]]:
    higher = METRICS[metric][1]
    diffs = [diff(results, a, b, metric) for a, b in claim.contrasts]
    each = [decide(d, higher) for d in diffs]
    if "not run" in each:
        return "not run", diffs
    if "does not hold" in each:
        return "does not hold", diffs
    return ("holds" if all(e == "holds" for e in each) else "inconclusive"), diffs


def verdict_block(results: dict, tables: list[str]) -> str:
    lines = ["## Verdict", "", RULE, "", "| claim | contrast | " + " | ".join(VERDICT_METRICS) + " |",
             "|---|---|" + "---|" * len(VERDICT_METRICS)]
    for claim in CLAIMS:
        if claim.table not in tables:
            continue
        cells = []
        for metric in VERDICT_METRICS:
            verdict, diffs = claim_verdict(results, claim, metric)
            cells.append(f"**{verdict}**: " + "; ".join(fmt_diff(d) for d in diffs))
        contrast = "; ".join(f"{a} − {b}" for a, b in claim.contrasts)
        lines.append(f"| {claim.text} (Table {claim.table}) | {contrast} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def means_table(results: dict, names) -> list[str]:
    head = "| run | n | " + " | ".join(METRICS) + " |"
    lines = [head, "|" + "---|" * (len(METRICS) + 2)]
    for name in names:
        runs = [results[name][s] for s in sorted(results.get(name, {}))]
        if not runs:
            continue
        cells = [f"{m:.3f} ± {s:.3f}" for m, s in (mean_std([r["metrics"][k] for r in runs]) for k in METRICS)]
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    return lines


def diffs_table(results: dict, contrasts) -> list[str]:
    lines = ["| difference | " + " | ".join(METRICS) + " |", "|" + "---|" * (len(METRICS) + 1)]
    for a, b in contrasts:
        if diff(results, a, b, "acc_anti") is None:
            continue
        lines.append(f"| {a} − {b} | " + " | ".join(fmt_diff(diff(results, a, b, k)) for k in METRICS) + " |")
    return lines


def _epochs(results: dict, names) -> int:
    return max((len(r["curve"]) for n in names for r in results.get(n, {}).values()), default=0)


def curves(results: dict, names, contrasts) -> list[str]:
    """Per epoch (0 = the SFT model): mean over seeds of each run, then the paired differences."""
    epochs = _epochs(results, names)
    if epochs < 1:
        return []
    sft = results.get("sft", {})
    head = "| | " + " | ".join(f"ep {e}" for e in range(epochs + 1)) + " |"
    rule = "|---|" + "---|" * (epochs + 1)
    lines = []
    for metric in CURVE_METRICS:
        lines += ["", f"`{metric}` after each epoch (mean over seeds; ep 0 is the SFT model):", "", head, rule]
        for name in names:
            runs = results.get(name, {})
            if not runs or not next(iter(runs.values()))["curve"]:
                continue
            start = mean_std([sft[s]["metrics"][metric] for s in runs if s in sft])[0] if sft else math.nan
            cells = [f"{start:.3f}"] + [f"{mean_std([_value(r, metric, e) for r in runs.values()])[0]:.3f}"
                                        for e in range(1, epochs + 1)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        for a, b in contrasts:
            if b == "sft" or diff(results, a, b, metric) is None:
                continue
            cells = ["0"]
            for e in range(1, epochs + 1):
                d = diff(results, a, b, metric, e)
                cells.append(f"{d.mean:+.3f} ({d.up}↑{d.down}↓)")
            lines.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
    return lines


def training_table(results: dict, names) -> list[str]:
    keys = ("steps", "logps/chosen", "rewards/margins", "image_rewards/margins")
    lines = ["| run | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for name in names:
        runs = [r for r in results.get(name, {}).values() if r["train"]]
        if not runs:
            continue
        cells = []
        for k in keys:
            xs = [r["train"][k] for r in runs if k in r["train"]]
            cells.append(f"{mean_std(xs)[0]:.3g}" if xs else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def report(results: dict, tables: list[str]) -> str:
    lines = [verdict_block(results, tables)]
    for tid in tables:
        t = TABLES[tid]
        names = [n for n in t.rows if results.get(n)]
        lines += ["", f"## {t.title}", "", f"Paper (LLaVA-1.5-7B): {t.paper}.", "", *means_table(results, names), "",
                  "Paired differences (same seed, same SFT checkpoint, same pairs and batch order; k↑m↓: seeds "
                  "up / down; p: two-sided paired t-test):", "", *diffs_table(results, t.contrasts),
                  *curves(results, [n for n in names if n != "sft"], t.contrasts),
                  "", "Training, last step (mean over seeds):", "", *training_table(results, names)]
    lines += ["", "## Runs and metrics", "", *(f"- `{r.name}`: {r.about}" for r in RUNS.values()), ""]
    lines += [f"- `{k}`: {d} ({'higher' if hib else 'lower'} is better for a grounded model)"
              for k, (d, hib) in METRICS.items()]
    return "\n".join(lines) + "\n"
