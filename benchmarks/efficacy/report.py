"""The claims, the summary of a run (results.json) and the report written from it.

Every claim has one primary metric (CHAIR_i on clean held-out images, in points) and one contrast: the
paper's full method against the arm its table ablates, paired by seed (same SFT checkpoint, same pairs, same
batch order). A seed's value is the mean over the run's last `--checkpoints` checkpoints. The rule is
`rule.decide` with k = the number of claims the invocation decides (one table: its claims). Every other metric
and sign count is description.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from benchmarks.efficacy import gates, rule
from benchmarks.efficacy.evaluate import METRICS
from benchmarks.efficacy.runs import RUNS, per_seed_metric
from benchmarks.efficacy.stats import mean_std


PRIMARY = "CHAIRi"
BUDGET_CPU_S = 900  # one table, one invocation: 15 CPU-minutes (all processes together, 2 cores)


@dataclass(frozen=True)
class Table:
    title: str
    rows: tuple[str, ...]
    paper: str


TABLES = {
    "4": Table("Table 4: loss composition", ("sft", "dpo", "mfpo-no-image", "mfpo-no-margin", "mfpo-no-text", "mfpo"),
               "MFPO CHAIRs 13.4, without L_image 21.9; MMHal 2.69, without L_text 2.34, without L_margin 2.61"),
    "5": Table("Table 5: margin eta", ("mfpo", "mfpo-eta0.2", "mfpo-eta0.4"), "eta 0 best (MMHal 2.69)"),
    "7": Table("Table 7: easy-to-hard curriculum vs end-to-end (same pairs, same steps)", ("mfpo", "mfpo-curriculum"),
               "MMHal 2.69 (curriculum) vs 2.53 (end-to-end); CHAIRs 13.4 vs 16.0"),
    "8": Table("Table 8: image-negative construction (diffusion noise t=500)", ("mfpo-global", "mfpo-random20", "mfpo"),
               "CHAIRs 21.7 (global noise) / 16.5 (random 20% region) / 13.4 (key regions)"),
}


@dataclass(frozen=True)
class Claim:
    id: str
    table: str
    text: str
    better: str  # the run the paper says is better
    worse: str


CLAIMS = (
    Claim("4a", "4", "L_image lowers CHAIR_i", "mfpo", "mfpo-no-image"),
    Claim("4b", "4", "L_margin lowers CHAIR_i", "mfpo", "mfpo-no-margin"),
    Claim("4c", "4", "L_text lowers CHAIR_i", "mfpo", "mfpo-no-text"),
    Claim("5a", "5", "eta 0 beats eta 0.2", "mfpo", "mfpo-eta0.2"),
    Claim("5b", "5", "eta 0 beats eta 0.4", "mfpo", "mfpo-eta0.4"),
    Claim("7", "7", "easy-to-hard beats end-to-end", "mfpo-curriculum", "mfpo"),
    Claim("8a", "8", "key-region negatives beat whole-image noise", "mfpo", "mfpo-global"),
    Claim("8b", "8", "key-region negatives beat a random 20% region", "mfpo", "mfpo-random20"),
)
CONTROL = Claim("control", "4", "L_image lowers CHAIR_i at the natural error rate", "mfpo@natural",
                "mfpo-no-image@natural")
SHOWN = ("CHAIRi", "CHAIRs", "recall", "prior_said", "co_added", "overcorrect", "pope_acc", "pope_f1",
         "image_reward_accuracy", "logp_drop_perturbed", "preference_accuracy_noise")


def seed_values(results: dict, name: str, metric: str) -> dict[int, float]:
    return {seed: per_seed_metric(r, metric) for seed, r in results.get(name, {}).items()}


def paired(results: dict, better: str, worse: str, metric: str = PRIMARY) -> list[float]:
    """Per seed, signed so that positive is the claimed direction (`better` ahead of `worse` on `metric`)."""
    a, b = seed_values(results, better, metric), seed_values(results, worse, metric)
    lower_better = METRICS[metric][1] is not False
    return [(b[s] - a[s]) if lower_better else (a[s] - b[s]) for s in sorted(set(a) & set(b))]


def summarize(args, results: dict, determinism: dict, infos: dict, run_info: dict) -> dict:
    """Everything the report shows, as plain JSON."""
    chosen = [c for c in CLAIMS if c.table in args.tables]
    k = len(chosen)
    sft_metrics = [r["checkpoints"][0] for r in results["sft"].values()]
    over = paired(results, "sft", "dpo", "overcorrect")  # positive: DPO over-corrects more than SFT
    control = rule.decide(paired(results, CONTROL.better, CONTROL.worse), args.delta, k)
    gate_list = gates.check(sft_metrics, over, control, determinism, k)
    failed = [g for g in gate_list if not g.passed]
    claims = []
    for claim in chosen:
        diffs = paired(results, claim.better, claim.worse)
        decision = rule.decide(diffs, args.delta, k)
        verdict = decision.verdict
        if failed and args.gates_first:
            verdict = "no verdict, because " + "; ".join(g.reason for g in failed)
        claims.append({**asdict(claim), "diffs": diffs, "decision": asdict(decision), "verdict": verdict})
    runs = {name: {str(s): {m: per_seed_metric(r, m) for m in r["checkpoints"][-1] if m != "step"}
                   for s, r in sorted(per_seed.items())} for name, per_seed in results.items()}
    curves = {name: {str(s): r["checkpoints"] for s, r in sorted(per_seed.items())} for name, per_seed in results.items()}
    train = {name: {str(s): r["train"] for s, r in sorted(per_seed.items())} for name, per_seed in results.items()}
    data = {k: v for k, v in infos.items() if k.startswith("data:")}
    return {"args": {k: str(v) if k == "out" else v for k, v in vars(args).items()}, "run": run_info,
            "k": k, "delta": args.delta, "primary": PRIMARY, "gates": [g.to_dict() for g in gate_list],
            "control": {**asdict(CONTROL), "decision": asdict(control)}, "determinism": determinism,
            "claims": claims, "runs": runs, "checkpoints": curves, "train": train, "data": data}


# -- text ------------------------------------------------------------------------------------------------------
def fmt_decision(d: dict) -> str:
    return (f"{d['mean']:+.2f} ± {d['std']:.2f} ({d['up']}↑{d['down']}↓) | [{d['lo']:+.2f}, {d['hi']:+.2f}]")


def decide_more(d: dict) -> str:
    if d["verdict"] != rule.INCONCLUSIVE:
        return "decided"
    if d["seeds_to_decide"] is None:
        return f"more than {rule.MAX_SEEDS} seeds"
    return f"{d['seeds_to_decide']} seeds ({d['decided_as']})"


def verdict_rows(summary: dict) -> list[str]:
    """The verdict table, one row per claim run: what the README quotes."""
    rows = ["| claim | contrast (CHAIR_i, worse − better) | n | mean ± sd (seeds ↑↓) | "
            f"{summary['claims'][0]['decision']['level']:.2%} interval | verdict | seeds that would decide |"
            if summary["claims"] else "| claim |", "|---|---|---|---|---|---|---|"]
    for c in summary["claims"]:
        d = c["decision"]
        rows.append(f"| Table {c['table']}: {c['text']} | {c['worse']} − {c['better']} | {d['n']} | "
                    f"{fmt_decision(d)} | **{c['verdict']}** | {decide_more(d)} |")
    return rows


def summary_row(claim: dict) -> str:
    """One claim in the README's overview table."""
    d = claim["decision"]
    return (f"| Table {claim['table']}: {claim['text']} | {d['mean']:+.2f} | [{d['lo']:+.2f}, {d['hi']:+.2f}] "
            f"({d['level']:.2%}) | {claim['verdict']} |")


def gate_rows(summary: dict) -> list[str]:
    rows = ["| gate | measured | required | outcome |", "|---|---|---|---|"]
    for g in summary["gates"]:
        rows.append(f"| {g['name']} | {g['value']} | {g['requirement']} | {'pass' if g['passed'] else 'FAIL'} |")
    return rows


def cost_line(summary: dict) -> str:
    """The table's cost in CPU seconds: this invocation's, plus what the tasks it reused from `--out` recorded."""
    r = summary["run"]
    parts = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["task_cpu_s"].items()))
    within = "within" if r["table_cpu_s"] <= BUDGET_CPU_S else "OVER"
    reused = (f"; {r['cpu_s']:.0f} in this invocation (tasks: {parts}) and {r['reused_cpu_s']:.0f} recorded by the "
              f"{r['reused_tasks']} tasks it reused from earlier invocations on the same --out" if r["reused_tasks"]
              else f"; tasks: {parts}")
    return (f"{r['table_cpu_s']:.0f} CPU-seconds ({within} the {BUDGET_CPU_S} budget{reused}), {r['wall_s']:.0f} s "
            f"wall for this invocation on {r['cpu_count']} CPUs, load average {r['loadavg_start'][0]:.2f} at the start "
            f"and {r['loadavg_end'][0]:.2f} at the end; torch {r['torch']}, transformers {r['transformers']}")


def settings_line(args: dict) -> str:
    return (f"seeds {args['seed_start']}..{args['seed_start'] + args['seeds'] - 1}; SFT {args['sft_steps']} steps x "
            f"{args['sft_batch']} from {args['sft_examples']} examples (lr {args['sft_lr']}, p_prior {args['p_prior']}, "
            f"p_co {args['p_co']}); {args['pref_pairs']} pairs x {args['pref_epochs']} epochs, batch {args['batch']} "
            f"= {args['steps']} steps, lr {args['lr']}, beta {args['beta']}, clip {args['max_grad_norm'] or 'off'}, "
            f"prior fraction {args['prior_fraction']}; checkpoints every {args['save_every']} steps, the last "
            f"{args['checkpoints']} averaged; {args['n_eval']} held-out scenes, {args['n_probe']} probe pairs per seed")


def readme_block(summary: dict, default_seeds: int) -> list[str]:
    """What the README quotes for one invocation: its size, cost, gates, verdicts and the negative control."""
    tid, n = summary["args"]["tables"][0], summary["args"]["seeds"]
    size = f"{n} seeds" if n == default_seeds else f"{n} seeds, not the default {default_seeds}"
    c = summary["control"]["decision"]
    return [f"### {TABLES[tid].title} ({size})", "", f"`{summary['run']['command']}`", "", cost_line(summary) + ".", "",
            *gate_rows(summary), "", *verdict_rows(summary), "",
            f"Negative control, {summary['control']['worse']} − {summary['control']['better']}: {fmt_decision(c)}: "
            f"{c['verdict']}."]


def runs_table(summary: dict, names) -> list[str]:
    head = "| run | n | " + " | ".join(SHOWN) + " |"
    lines = [head, "|" + "---|" * (len(SHOWN) + 2)]
    for name in names:
        per_seed = summary["runs"].get(name)
        if not per_seed:
            continue
        cells = [f"{m:.2f} ± {s:.2f}" for m, s in (mean_std([v[k] for v in per_seed.values()]) for k in SHOWN)]
        lines.append(f"| {name} | {len(per_seed)} | " + " | ".join(cells) + " |")
    return lines


def diffs_table(summary: dict, claims) -> list[str]:
    """Every shown metric's paired difference for each contrast (description: mean ± sd, seeds up / down)."""
    lines = ["| worse − better | " + " | ".join(SHOWN) + " |", "|" + "---|" * (len(SHOWN) + 1)]
    runs = summary["runs"]
    for c in claims:
        if c.worse not in runs or c.better not in runs:
            continue
        seeds = sorted(set(runs[c.worse]) & set(runs[c.better]))
        cells = []
        for k in SHOWN:
            d = [runs[c.worse][s][k] - runs[c.better][s][k] for s in seeds]
            m, sd = mean_std(d)
            cells.append(f"{m:+.2f} ± {sd:.2f} ({sum(x > 0 for x in d)}↑{sum(x < 0 for x in d)}↓)")
        lines.append(f"| {c.worse} − {c.better} | " + " | ".join(cells) + " |")
    return lines


def slim(summary: dict) -> dict:
    """The summary without per-checkpoint values and training logs: what the README's numbers are tied to."""
    return {k: v for k, v in summary.items() if k not in ("checkpoints", "train", "report")}


def curve_rows(summary: dict, names, claims, metric: str = PRIMARY) -> list[str]:
    """`metric` at each evaluated checkpoint: each run's mean over seeds, then each claim's paired difference."""
    curves = summary.get("checkpoints", {})
    trained = [n for n in names if n in curves and next(iter(curves[n].values()))[0]["step"] > 0]
    if not trained:
        return []
    steps = [c["step"] for c in next(iter(curves[trained[0]].values()))]
    lines = [f"`{metric}` at each evaluated checkpoint (mean over seeds; differences worse − better):", "",
             "| step | " + " | ".join(str(s) for s in steps) + " |", "|---|" + "---|" * len(steps)]
    for n in trained:
        cells = [mean_std([per_seed[i][metric] for per_seed in curves[n].values()])[0] for i in range(len(steps))]
        lines.append(f"| {n} | " + " | ".join(f"{v:.2f}" for v in cells) + " |")
    for c in claims:
        if c.worse not in curves or c.better not in curves:
            continue
        seeds = sorted(set(curves[c.worse]) & set(curves[c.better]))
        cells = []
        for i in range(len(steps)):
            d = [curves[c.worse][s][i][metric] - curves[c.better][s][i][metric] for s in seeds]
            cells.append(f"{mean_std(d)[0]:+.2f} ({sum(x > 0 for x in d)}↑{sum(x < 0 for x in d)}↓)")
        lines.append(f"| {c.worse} − {c.better} | " + " | ".join(cells) + " |")
    return lines


def report(summary: dict) -> str:
    args = summary["args"]
    lines = ["# Efficacy benchmark", "", f"`{summary['run']['command']}`", "", cost_line(summary) + ".", "",
             "Settings: " + settings_line(args) + ".", "", "## Gates", "", *gate_rows(summary), "",
             "## Verdict", "",
             f"Primary metric CHAIR_i (points) on clean held-out images; each row is the paired difference worse − "
             f"better over seeds (positive: the paper's direction), its {1 - rule.ALPHA / summary['k']:.2%} t interval "
             f"(Bonferroni over the k = {summary['k']} claims of this invocation), delta = {summary['delta']:g} points. Holds: the interval is "
             f"above 0 and reaches delta; does not hold: it lies below delta; otherwise inconclusive.", "",
             *verdict_rows(summary)]
    c = summary["control"]["decision"]
    lines += ["", f"Negative control (natural error rate, {summary['control']['worse']} − {summary['control']['better']}"
              f"): {fmt_decision(c)}: {c['verdict']}."]
    claims = [Claim(**{k: v for k, v in cl.items() if k in Claim.__dataclass_fields__}) for cl in summary["claims"]]
    for tid in args["tables"]:
        t = TABLES[tid]
        mine = [cl for cl in claims if cl.table == tid]
        lines += ["", f"## {t.title}", "", f"Paper (LLaVA-1.5-7B): {t.paper}.", "", *runs_table(summary, t.rows), "",
                  "Paired differences (description):", "", *diffs_table(summary, mine), "",
                  *curve_rows(summary, t.rows, mine)]
    gate_runs = ("sft", "dpo", "mfpo@natural", "mfpo-no-image@natural")
    shortcut = Claim("shortcut", "4", "", "sft", "dpo")
    lines += ["", "## Gate runs", "", *runs_table(summary, gate_runs), "",
              *diffs_table(summary, [CONTROL, shortcut]), "", *curve_rows(summary, gate_runs, [CONTROL]), "",
              *curve_rows(summary, ("dpo",), [], "overcorrect")]
    lines += ["", "## Runs and metrics", "", *(f"- `{r.name}`: {r.about}" for r in RUNS.values()), ""]
    lines += [f"- `{k}`: {d}" for k, (d, _) in METRICS.items()]
    return "\n".join(lines) + "\n"
