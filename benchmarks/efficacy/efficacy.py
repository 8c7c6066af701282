"""Efficacy benchmark: where do the MFPO paper's claims hold, at toy scale, on a CPU, in minutes?

Per seed: a tiny LLaVA is trained from scratch on biased synthetic data (each shape mostly its prior colour),
then preference-trained by `mfpo_train.train.train` on pairs whose rejected answer is the prior colour (the
text shortcut: "never say the prior"), from the same SFT checkpoint for every method, and evaluated after
every epoch on one fixed held-out set. The tables are the paper's ablations (4: loss terms, 8: image
negatives, 7: curriculum, 5: eta), each row mean ± std over seeds, each difference paired by seed.

    python -m benchmarks.efficacy.efficacy --out runs/efficacy        # all tables, 5 seeds (README)
    python -m benchmarks.efficacy.efficacy --tables 4                 # Table 4 only
    python -m benchmarks.efficacy.efficacy --fast                     # smoke run (the test suite's)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


DEFAULT_TABLES = ("4", "8", "7", "5")


def parse_args(argv=None):
    from benchmarks.efficacy.data import PERTURBATIONS

    p = argparse.ArgumentParser(prog="python -m benchmarks.efficacy.efficacy", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tables", default=",".join(DEFAULT_TABLES), help="comma-separated: 4, 8, 7, 5")
    p.add_argument("--methods", default="dpo,dpo+margin,dpo+image,mfpo,dpo-blank",
                   help="Table 4's trained rows (the SFT row is always there; mfpo also runs when another table needs it)")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds")
    p.add_argument("--seed-start", type=int, default=0, help="first seed")
    p.add_argument("--jobs", type=int, default=2, help="parallel worker processes (1: everything in this process)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (results are bit-identical "
                                                          "for a given count, whatever --jobs)")
    p.add_argument("--out", type=Path, default=None,
                   help="work folder: caches SFT models, datasets and finished runs (a rerun resumes), and gets "
                        "report.md and results.json; default: a temporary folder, deleted at the end")
    p.add_argument("--fast", action="store_true", help="2 seeds, a few steps, small sets: the test suite's smoke run")
    p.add_argument("--verbose", action="store_true", help="show mfpo-train's progress bars and warnings")
    g = p.add_argument_group("task and SFT")
    g.add_argument("--p-prior", type=float, default=0.8, help="P(a shape has its prior colour) in the SFT data")
    g.add_argument("--hidden", type=int, default=64, help="LM hidden size of the tiny LLaVA")
    g.add_argument("--layers", type=int, default=2)
    g.add_argument("--no-task-tokens", dest="task_tokens", action="store_false",
                   help="keep the tiny tokenizer's byte-level splits of the task's words (51 tokens a row, not 32)")
    g.add_argument("--sft-steps", type=int, default=150)
    g.add_argument("--sft-examples", type=int, default=3200, help="unique SFT examples")
    g.add_argument("--sft-batch", type=int, default=32)
    g.add_argument("--sft-lr", type=float, default=2e-3)
    g = p.add_argument_group("preference data and training")
    g.add_argument("--prior-fraction", type=float, default=1.0,
                   help="fraction of pairs whose rejected answer is the prior colour (the shortcut's strength)")
    g.add_argument("--pref-pairs", type=int, default=2000)
    g.add_argument("--pref-epochs", type=int, default=5)
    g.add_argument("--batch", type=int, default=32, help="preference pairs per step")
    g.add_argument("--lr", type=float, default=1e-4)
    g.add_argument("--beta", type=float, default=0.1)
    g.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping; 0 turns it off")
    g.add_argument("--perturbation", default="diffusion_noise", choices=PERTURBATIONS,
                   help="mfpo-data backend for the key-region (and random-region) image negative")
    g.add_argument("--n-eval", type=int, default=512, help="held-out anti-prior evaluation items per seed")
    args = p.parse_args(argv)
    if args.fast:
        args.seeds, args.sft_steps, args.sft_examples, args.sft_batch = 2, 10, 48, 16
        args.pref_pairs, args.pref_epochs, args.batch, args.n_eval = 12, 2, 6, 8
    args.tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    _check(p, args)
    return args


def _check(parser, args) -> None:
    from benchmarks.efficacy.report import TABLES
    from benchmarks.efficacy.runs import TABLE4_METHODS

    bad = [t for t in args.tables if t not in TABLES]
    if bad or not args.tables:
        parser.error(f"--tables: unknown table {bad[0] if bad else '(none)'}; choose from {', '.join(TABLES)}")
    bad = [m for m in args.methods if m not in TABLE4_METHODS]
    if bad:
        parser.error(f"--methods: unknown method {bad[0]!r}; choose from {', '.join(TABLE4_METHODS)}")
    for name in ("seeds", "jobs", "threads", "sft_steps", "sft_examples", "sft_batch", "pref_pairs", "pref_epochs",
                 "batch", "n_eval"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.seed_start < 0:
        parser.error(f"--seed-start must be >= 0, got {args.seed_start}")
    if args.max_grad_norm < 0:
        parser.error(f"--max-grad-norm must be >= 0 (0: no clipping), got {args.max_grad_norm}")
    for name in ("p_prior", "prior_fraction"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            parser.error(f"--{name.replace('_', '-')} must lie in [0, 1], got {getattr(args, name)}")


# -- the plan: which runs, which datasets, in which order ---------------------------------------------------
def plan(args) -> list[tuple]:
    """Tasks as (priority, kind, seed, what, dependencies); Table 4's first, so its part finishes first."""
    from benchmarks.efficacy.report import TABLES
    from benchmarks.efficacy.runs import RUNS

    seeds = range(args.seed_start, args.seed_start + args.seeds)
    order: list[str] = []
    first_table: dict[str, int] = {}
    for ti, tid in enumerate(args.tables):
        for name in TABLES[tid].rows:
            if tid == "4" and name not in ("sft", *args.methods):
                continue
            if name not in order:
                order.append(name)
                first_table[name] = ti
    if "sft" not in order:
        order.insert(0, "sft")
        first_table["sft"] = 0
    tasks = []
    for seed in seeds:
        tasks.append(((0, seed, 0, 0), "sft", seed, None, ()))
        regions: dict[str, int] = {}
        for name in order:
            region = RUNS[name].region
            if region is not None:
                regions[region] = min(regions.get(region, 99), first_table[name])
        for region, ti in regions.items():
            tasks.append(((ti, seed, 1, 0), "data", seed, region, (("sft", seed, None),)))
        for i, name in enumerate(order):
            region = RUNS[name].region
            dep = ("data", seed, region) if region else ("sft", seed, None)
            tasks.append(((first_table[name], seed, 2, i), "run", seed, name, (dep,)))
    return tasks


def _do(kind: str, args, seed: int, what):
    from benchmarks.efficacy import runs

    t0 = time.perf_counter()
    fn = {"sft": lambda: runs.task_sft(args, seed), "data": lambda: runs.task_data(args, seed, what),
          "run": lambda: runs.task_run(args, seed, what)}[kind]
    return fn(), time.perf_counter() - t0


def _worker_init(threads: int) -> None:
    import logging

    import transformers

    _determinism(threads)
    transformers.logging.set_verbosity_error()
    logging.getLogger("mfpo_train").setLevel(logging.WARNING)


def _determinism(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def execute(args, tasks, on_done) -> None:
    """Run `tasks` in dependency order on `args.jobs` processes, lowest priority tuple first."""
    pending = sorted(tasks)
    done: set = set()

    def ready():
        return [t for t in pending if all(d in done for d in t[4])]

    if args.jobs == 1:
        while pending:
            task = ready()[0]
            pending.remove(task)
            on_done(task, *_do(task[1], args, task[2], task[3]))
            done.add(task[1:4])
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_worker_init, initargs=(args.threads,)) as pool:
        running: dict = {}
        while pending or running:
            for task in ready()[: args.jobs - len(running)]:
                pending.remove(task)
                running[pool.submit(_do, task[1], args, task[2], task[3])] = task
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in sorted(finished, key=lambda f: running[f]):
                task = running.pop(future)
                on_done(task, *future.result())
                done.add(task[1:4])


# -- main ----------------------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)  # before torch is imported: --help and argument errors are instant
    import torch

    previous = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        return _main(args, "python -m benchmarks.efficacy.efficacy " + " ".join(argv))
    finally:  # the test suite calls main() in its own process
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1])


def _main(args, command: str) -> dict:
    import torch
    import transformers

    from benchmarks.efficacy.report import report
    from benchmarks.efficacy.runs import RUNS

    _worker_init(args.threads)
    start, load_start = time.perf_counter(), os.getloadavg()
    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="mfpo-efficacy-")
        args.out = Path(tmp.name)
    args.out = Path(args.out).resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    tasks = plan(args)
    results: dict = {}
    infos: dict = {}
    table4_runs = {(t[2], t[3]) for t in tasks if t[1] == "run" and t[0][0] == 0}
    marks = {}

    def on_done(task, result, seconds):
        kind, seed, what = task[1:4]
        if kind != "run":
            infos[f"{kind}:{seed}:{what}"] = result
            return
        results.setdefault(what, {})[seed] = result
        m = result["metrics"]
        print(f"[{time.perf_counter() - start:6.0f} s] seed {seed} {what:16s} acc_twin {m['acc_twin']:.3f} "
              f"acc_both {m['acc_both']:.3f} noise_pref {m['noise_pref']:.3f} ({seconds:.0f} s)", flush=True)
        if "table4_s" not in marks and all(w in results and s in results[w] for s, w in table4_runs):
            marks["table4_s"] = time.perf_counter() - start
        if all(seed in results.get(t[3], {}) for t in tasks if t[1] == "run" and t[2] == seed):
            per_seed = {name: results[name][seed] for name in results if seed in results[name]}
            (args.out / f"seed{seed}" / "results.json").write_text(json.dumps(per_seed, indent=2))

    try:
        execute(args, tasks, on_done)
        elapsed, load_end = time.perf_counter() - start, os.getloadavg()
        header = header_text(args, elapsed, marks.get("table4_s"), load_start, load_end, torch, transformers, command)
        text = header + "\n\n" + report(results, args.tables)
        summary = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                   "elapsed_s": elapsed, "table4_s": marks.get("table4_s"), "loadavg_start": load_start,
                   "loadavg_end": load_end, "torch": torch.__version__, "transformers": transformers.__version__,
                   "cpu_count": os.cpu_count(), "tasks": infos,
                   "results": {n: {str(s): r for s, r in sorted(results[n].items())} for n in RUNS if n in results}}
        print("\n" + text)
        (args.out / "report.md").write_text(text)
        (args.out / "results.json").write_text(json.dumps(summary, indent=2))
        summary["report"] = text
        return summary
    finally:
        if tmp is not None:
            tmp.cleanup()


def header_text(args, elapsed, table4_s, load_start, load_end, torch, transformers, command) -> str:
    seeds = f"seeds {args.seed_start}..{args.seed_start + args.seeds - 1}"
    t4 = f"; Table 4 part done after {table4_s:.0f} s" if table4_s is not None and args.tables[0] == "4" else ""
    lines = ["# Efficacy benchmark", "", f"`{command.strip()}`", "",
              f"{seeds}, tables {', '.join(args.tables)}; {elapsed:.0f} s wall{t4}; {args.jobs} process(es) x "
              f"{args.threads} torch thread(s) on {os.cpu_count()} CPUs; load average {load_start[0]:.2f} at start, "
              f"{load_end[0]:.2f} / {load_end[1]:.2f} / {load_end[2]:.2f} at the end; torch {torch.__version__}, "
              f"transformers {transformers.__version__}.",
              "",
              f"Settings: p_prior {args.p_prior}, prior fraction {args.prior_fraction}, {args.pref_pairs} pairs x "
              f"{args.pref_epochs} epochs, batch {args.batch} ({-(-args.pref_pairs // args.batch) * args.pref_epochs} "
              f"steps), lr {args.lr}, beta {args.beta}, clip {args.max_grad_norm or 'off'}, image negative "
              f"{args.perturbation}; SFT {args.sft_steps} steps x {args.sft_batch} from {args.sft_examples} examples "
              f"(lr {args.sft_lr}); {args.n_eval} evaluation items per seed."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
