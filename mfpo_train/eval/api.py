"""Evaluate models on the benchmarks and the probes: the notebook API and what `mfpo-eval run` calls.

    from mfpo_train.eval import evaluate
    results = evaluate(model, processor, benchmark="pope")                 # {"pope": {...}}
    results = evaluate(model, processor, benchmark=["objhal", "probes"], probe_data="runs/coco", out_dir="ev")

`run_evaluation` (the CLI) loads each model in turn (the trained one, then `--base`), each freed before the
next loads and before an MMHal judge loads (once, for all), and writes

```
OUT/run.json                               marks the folder as ours (a folder of other files is refused; `outdir.py`)
OUT/results.json  OUT/results.md          every model's results, the table, the difference row
OUT/benchmarks/                            the question sets used (POPE's format for POPE), shared by the models
OUT/<model|base>/run.json                  the settings that decide the answers (a rerun with others is refused)
OUT/<model|base>/<part>.answers.jsonl      answers, in item order once complete; a rerun resumes after the last one
OUT/<model|base>/<part>.answers.rank<r>.jsonl  while several processes answer: each one's (`ranks.py`)
OUT/<model|base>/<part>.result.json        the scorer's result (+ .details.jsonl: per item)
OUT/<model|base>/probes.jsonl              the probes' per-row log-probs
```

results.json records per benchmark how its numbers were computed (`settings.benchmarks`, `protocols` in
words), and per model the answers no parser could read (`unparsed`); results.md says the same in words,
and a part with more than 5% of its answers unparsed gets a one-line warning (log, results.json, results.md).
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mfpo_data.errors import MfpoError
from mfpo_train.eval.suite import BENCHMARKS, SuiteOptions


logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
TABLE_FILE = "results.md"
UNPARSED_WARNING = 0.05  # warn when more than this share of a part's answers could not be read
UNPARSED_MEANING = {
    "pope": "neither yes nor no to the convention's parser (POPE's own parser counts them as yes)",
    "objhal": "empty", "chair-coco": "empty",
    "amber": "not exactly Yes/No (yes/no items) or empty (descriptions)",
    "mmhal": "judge reviews with no single 'rating: k' (scored 0, as the reference does)",
}


@dataclass
class Decoding:
    batch_size: int = 8
    max_new_tokens: int = 512
    probe_batch_size: int = 4
    progress: bool = True


@dataclass
class ModelSpec:
    name: str  # "model" or "base": the folder under OUT
    model: str | None
    adapter: str | None = None
    merge: bool = False
    revision: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        base = Path(self.model).name if self.model and Path(self.model).exists() else (self.model or "?")
        return f"{base} + {Path(self.adapter).name}" if self.adapter else base


def parse_benchmarks(benchmarks: str | Sequence[str]) -> list[str]:
    names = [b.strip() for b in benchmarks.split(",")] if isinstance(benchmarks, str) else list(benchmarks)
    names = [n for n in names if n]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        what = f"unknown {unknown[0]!r}" if unknown else "none given"
        raise MfpoError(f"--benchmarks: {what} (choose from {', '.join(BENCHMARKS)})")
    return list(dict.fromkeys(names))


def evaluate(model, processor, benchmark: str | Sequence[str] = "pope", *, out_dir: str | Path | None = None,
             batch_size: int = 8, max_new_tokens: int = 512, probe_batch_size: int = 4, progress: bool = True,
             **options) -> dict:
    """Evaluate a loaded model (a PeftModel too) on `benchmark`(s); returns {benchmark: result}.

    `options` are `SuiteOptions` fields (coco_root, pope_questions, amber_root, probe_data, ...). With
    `out_dir`, answers and results are written there as `mfpo-eval run` writes one model's folder (and
    a rerun resumes); without it, nothing is written. An MMHal judge is loaded beside `model` (`mfpo-eval run`
    frees its models first).
    """
    names = parse_benchmarks(benchmark)
    opts = SuiteOptions(**options)
    prepared = _prepare(names, opts)
    decoding = Decoding(batch_size=batch_size, max_new_tokens=max_new_tokens, probe_batch_size=probe_batch_size,
                        progress=progress)
    device = str(next(model.parameters()).device)
    if out_dir is None:
        return _evaluate_loaded(model, processor, names, prepared, opts, decoding, None, device)
    from mfpo_train.eval.outdir import check_settings, claim

    with claim(out_dir, "evaluation") as folder:
        _write_question_files(folder / "benchmarks", prepared)
        check_settings(folder, {"model": _loaded_model_name(model), "max_new_tokens": max_new_tokens,
                                "dtype": str(next(model.parameters()).dtype), "suite": opts.answer_settings()})
        return _evaluate_loaded(model, processor, names, prepared, opts, decoding, folder, device)


def run_evaluation(specs: Sequence[ModelSpec], benchmarks: str | Sequence[str], out_dir: str | Path, *,
                   opts: SuiteOptions | None = None, decoding: Decoding | None = None, dtype: str = "auto",
                   device: str = "auto", trust_remote_code: bool = False, ranks=None) -> dict:
    """Evaluate every model of `specs` into OUT/<spec.name>/; write results.json and results.md.

    Everything that can refuse the run (the folder, its settings and answers files, every data file, every
    model and adapter) is checked before the first model loads. Each model answers every part, then is freed;
    an MMHal judge is loaded once, after the last, and scores every model's answers. Launched with several
    processes (`ranks.py`), each answers its share of the items and the main process does the rest; the others
    return an empty dict.
    """
    from mfpo_train.eval.ranks import RefusedOnMain, launched_ranks

    ranks = launched_ranks() if ranks is None else ranks
    opts, decoding = opts or SuiteOptions(), decoding or Decoding()
    with contextlib.ExitStack() as stack:
        failure, run = None, None
        if ranks.main:
            try:
                run = _checked_run(specs, benchmarks, out_dir, opts, decoding, dtype, device, trust_remote_code,
                                   stack, ranks)
            except BaseException as e:  # the others learn of it below, then end
                failure = e
        said = ranks.share(None if failure is None else (str(failure) or type(failure).__name__))
        if failure is not None:
            raise failure
        if said is not None:
            raise RefusedOnMain(said)
        ranks.started = True
        if run is None:  # another process than the main one: the same items, nothing checked or written
            from mfpo_data.folders import output_root

            names = parse_benchmarks(benchmarks)
            run = _Run(names, _prepare(names, opts), output_root(out_dir), _device(device, ranks), {}, {})
        return _run_models(specs, run, opts, decoding, dtype, trust_remote_code, ranks)


@dataclass
class _Run:
    names: list[str]
    prepared: dict
    out: Path
    device: str  # this process's
    described: dict  # model role -> what identifies its weights
    settings: dict  # model role -> what its run.json holds


def _device(device: str, ranks) -> str:
    """The device of this process: `--device` (auto: a GPU when there is one), or the process's own when launched
    with several and `--device` is auto or cuda."""
    from mfpo_data.backends.vlm import resolve_device

    return ranks.device if ranks.world > 1 and device in ("auto", "cuda") else resolve_device(device)


def _checked_run(specs, benchmarks, out_dir, opts: SuiteOptions, decoding: Decoding, dtype: str, device: str,
                 trust_remote_code: bool, stack: contextlib.ExitStack, ranks) -> _Run:
    """Everything that can refuse the run, before a model loads; claims OUT (held by `stack`) and writes the
    question files."""
    from mfpo_data.backends.vlm import check_model, describe_model
    from mfpo_data.folders import output_root
    from mfpo_train.eval.outdir import check_folder, check_scope, check_settings, claim
    from mfpo_train.eval.ranks import check_part

    names = parse_benchmarks(benchmarks)
    check_folder(out_dir)  # a folder of the user's files is refused before anything else
    check_scope(output_root(out_dir), names, [spec.name for spec in specs])
    prepared = _prepare(names, opts)  # every data file is checked before a model is loaded
    for spec in specs:
        check_model(spec.model, spec.adapter, revision=spec.revision, trust_remote_code=trust_remote_code,
                    model_key="--model" if spec.name == "model" else "--base")
    device = _device(device, ranks)
    described = {spec.name: describe_model(spec.model, spec.adapter, spec.revision) for spec in specs}
    settings = {spec.name: {**described[spec.name], "merge": spec.merge, "dtype": dtype,
                            "device_kind": device.split(":")[0], "max_new_tokens": decoding.max_new_tokens,
                            "trust_remote_code": trust_remote_code, "suite": opts.answer_settings()}
                for spec in specs}
    out = stack.enter_context(claim(out_dir))
    for spec in specs:  # every model's folder and answers files are checked before the first model loads
        check_settings(out / spec.name, settings[spec.name], write=False)
        for bench in prepared.values():
            for part in bench.parts:
                check_part(part.items, _answers_file(out / spec.name, part.name))
    _write_question_files(out / "benchmarks", prepared)
    return _Run(names, prepared, out, device, described, settings)


def _run_models(specs, run: _Run, opts: SuiteOptions, decoding: Decoding, dtype: str, trust_remote_code: bool,
                ranks) -> dict:
    from mfpo_data.backends.vlm import load_vlm
    from mfpo_data.scorers.io import write_json, write_text
    from mfpo_train.eval.outdir import check_settings
    from mfpo_train.eval.report import column_labels, difference, hidden_columns, markdown_table

    names, prepared, out, device = run.names, run.prepared, run.out, run.device
    if not ranks.main and not prepared:  # the probes alone: the main process's work
        return {}
    answers: dict[str, dict] = {}
    probes: dict[str, dict] = {}
    for spec in specs:
        folder = out / spec.name
        if ranks.main:
            logger.info("evaluating %s (%s) on %s%s", spec.name, spec.label, ", ".join(names),
                        f" over {ranks.world} processes" if ranks.world > 1 else "")
        model, processor = load_vlm(spec.model, spec.adapter, merge=spec.merge, dtype=dtype, device=device,
                                    revision=spec.revision, trust_remote_code=trust_remote_code)
        if ranks.main:
            check_settings(folder, run.settings[spec.name])  # written once the model loaded
        answers[spec.name] = _generate(model, processor, names, prepared, decoding, folder, ranks)
        if "probes" in names and ranks.main:
            probes[spec.name] = _probes(model, processor, opts, decoding, folder)
        del model, processor
        _free_memory()
    if not ranks.main:
        return {}
    models = []
    with _judge(prepared, device) as judge:  # loaded once every evaluated model is freed
        for spec in specs:
            results = _score(names, prepared, answers[spec.name], probes.get(spec.name), out / spec.name, judge,
                             decoding)
            unparsed = unparsed_counts(results)
            models.append({"name": spec.label, "role": spec.name, **run.described[spec.name], "results": results,
                           "unparsed": unparsed, "warnings": unparsed_warnings(spec.label, unparsed)})
    from mfpo_train.eval.suite import describe

    report: dict[str, Any] = {
        "mfpo_eval": {"version": _version(), "benchmarks": names},
        "settings": {"batch_size": decoding.batch_size, "max_new_tokens": decoding.max_new_tokens, "dtype": dtype,
                     "device": device.split(":")[0] if ranks.world > 1 else device, "processes": ranks.world,
                     "suite": opts.to_dict(), "benchmarks": {n: b.settings for n, b in prepared.items()}},
        "protocols": {n: describe(n, b.settings) for n, b in prepared.items()},
        "models": models,
    }
    if len(models) == 2:
        report["difference"] = difference(models[0]["results"], models[1]["results"])
    write_json(report, out / RESULTS_FILE)
    settings = {n: b.settings for n, b in prepared.items()}
    table = markdown_table(models, report.get("difference"), labels=column_labels(settings),
                           hidden=hidden_columns(settings))
    write_text(_table_notes(names, prepared, models, decoding) + table, out / TABLE_FILE)
    report["table"] = table
    return report


# -- internals ----------------------------------------------------------------------------------------
def _prepare(names: Sequence[str], opts: SuiteOptions) -> dict:
    from mfpo_train.eval.suite import prepare

    prepared = {n: prepare(n, opts) for n in names if n != "probes"}
    if "probes" in names and not opts.probe_data:
        raise MfpoError("probes need an mfpo dataset: --probe-data DIR_OR_HUB_ID (a build folder from "
                        "`mfpo-data build`, or a published dataset; its test split is used when it has one)")
    return prepared


def _write_question_files(folder: Path, prepared: dict) -> None:
    from mfpo_data.scorers.io import write_jsonl

    for bench in prepared.values():
        for file_name, rows in bench.files.items():
            write_jsonl(rows, folder / file_name)


def _evaluate_loaded(model, processor, names, prepared, opts: SuiteOptions, decoding: Decoding,
                     folder: Path | None, device: str) -> dict:
    from mfpo_train.eval.ranks import Ranks

    answers = _generate(model, processor, names, prepared, decoding, folder, Ranks())
    probes = _probes(model, processor, opts, decoding, folder) if "probes" in names else None
    with _judge(prepared, device) as judge:
        return _score(names, prepared, answers, probes, folder, judge, decoding)


def _generate(model, processor, names, prepared, decoding: Decoding, folder: Path | None, ranks) -> dict:
    """{benchmark: {part: answer records}} (the main process's; the others answer their share and get {})."""
    from mfpo_data.backends.vlm import generate_answers
    from mfpo_data.backends.vlm_inputs import ImageCache
    from mfpo_train.eval.ranks import generate_part

    out: dict[str, dict] = {}
    for name in names:
        if name == "probes":
            continue
        cache = ImageCache()  # the parts of a benchmark ask about the same images (POPE's three splits)
        answers = {}
        for part in prepared[name].parts:
            common = dict(batch_size=decoding.batch_size, max_new_tokens=decoding.max_new_tokens, desc=part.name,
                          progress=decoding.progress, image_cache=cache)
            if folder is None:
                answers[part.name] = generate_answers(model, processor, part.items, None, **common)
            else:
                answers[part.name] = generate_part(model, processor, part.items, _answers_file(folder, part.name),
                                                   ranks, **common)
        out[name] = answers
    return out


def _score(names, prepared, answers: dict, probes: dict | None, folder: Path | None, judge,
           decoding: Decoding) -> dict:
    from mfpo_data.scorers.results import write_result

    results: dict[str, Any] = {}
    for name in names:
        if name == "probes":
            results["probes"] = probes
            continue
        extra = {"scorer": judge, "progress": decoding.progress} if name == "mmhal" else {}
        scored = prepared[name].score(answers[name], **extra)
        if name == "pope":  # one scorer result per split, plus the mean
            for split in [k for k in scored if k not in ("mean", "pooled")]:
                if folder is not None:
                    write_result(scored[split], folder / f"pope-{split}.result.json")
                scored[split] = _without_details(scored[split])
        else:
            if folder is not None:
                write_result(scored, folder / f"{name}.result.json")
            scored = _without_details(scored)
        results[name] = scored
    return results


@contextlib.contextmanager
def _judge(prepared: dict, device: str):
    """The MMHal judge for the scoring (None without MMHal), freed afterwards."""
    bench = prepared.get("mmhal")
    if bench is None or bench.load_judge is None:
        yield None
        return
    judge = bench.load_judge(device)
    try:
        yield judge
    finally:
        del judge
        _free_memory()


def _probes(model, processor, opts: SuiteOptions, decoding: Decoding, folder: Path | None) -> dict:
    from mfpo_train.eval.probes import load_probe_dataset, run_probes

    ds, split = load_probe_dataset(opts.probe_data, opts.probe_split, max_samples=opts.probe_max_samples)
    result = run_probes(model, processor, ds, batch_size=decoding.probe_batch_size, seed=opts.seed,
                        records_file=None if folder is None else folder / "probes.jsonl", progress=decoding.progress)
    result.update(dataset=str(opts.probe_data), split=split)
    return result


def _answers_file(folder: Path, part: str) -> Path:
    return folder / f"{part}.answers.jsonl"


def _without_details(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "details"}


def _loaded_model_name(model) -> str:
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    name = getattr(base.config, "_name_or_path", "") or type(base).__name__
    adapters = sorted(getattr(model, "peft_config", {}) or {})
    return f"{name} + adapters {adapters}" if adapters else name


def unparsed_counts(results: dict) -> dict[str, dict[str, int]]:
    """{part: {"unparsed", "n"}} of one model's results: the answers (or judge reviews) no parser could read."""
    out: dict[str, dict[str, int]] = {}
    for name, result in results.items():
        if name == "pope":
            for split, r in result.items():
                if isinstance(r, dict) and "unparsed" in r and split != "pooled":
                    out[f"pope-{split}"] = {"unparsed": r["unparsed"], "n": r["n"]}
        elif name == "amber":
            if "generative" in result:
                out["amber-generative"] = {"unparsed": result["generative"]["unparsed"], "n": result["generative"]["n"]}
            if "discriminative" in result:
                overall = result["discriminative"]["overall"]
                out["amber-discriminative"] = {"unparsed": overall["unparsed"], "n": overall["n"]}
        elif isinstance(result, dict) and "unparsed" in result:
            out[name] = {"unparsed": result["unparsed"], "n": result["n"]}
    return out


def unparsed_warnings(label: str, unparsed: dict[str, dict[str, int]]) -> list[str]:
    """One line per part with more than 5% of its answers unparsed; each is also logged."""
    lines = []
    for part, c in unparsed.items():
        if c["n"] and c["unparsed"] / c["n"] > UNPARSED_WARNING:
            meaning = UNPARSED_MEANING.get(part.split("-")[0] if part.startswith(("pope-", "amber-")) else part, "")
            lines.append(f"{label}: {part}: {c['unparsed']} of {c['n']} answers ({100 * c['unparsed'] / c['n']:.1f}%) "
                         f"unparsed ({meaning}); check the chat template and --max-new-tokens")
            logger.warning(lines[-1])
    return lines


def _table_notes(names, prepared, models, decoding: Decoding) -> str:
    from mfpo_data.scorers.io import shown
    from mfpo_train.eval.suite import describe

    notes = []
    if decoding.max_new_tokens != Decoding.max_new_tokens:  # answers cut short change CHAIR and the parsers
        notes.append(f"Answers limited to --max-new-tokens {decoding.max_new_tokens} (default "
                     f"{Decoding.max_new_tokens}); answers cut short change CHAIR and recall.")
    notes += [describe(n, prepared[n].settings) for n in names if n in prepared]
    if "probes" in names:
        runs = "; ".join(f"{m['name']} n={p.get('n')} ({p.get('dropped', 0)} dropped)" for m in models
                         if isinstance(p := m["results"].get("probes"), dict))
        first = next((m["results"]["probes"] for m in models if isinstance(m["results"].get("probes"), dict)), {})
        notes.append(f"Probes on {shown(str(first.get('dataset')))} split {first.get('split')!r} ({runs}): accuracies x100 "
                     "(preference y_w > y_l on the image m, on the perturbed image m' and on whole-image noise t=999; "
                     "image reward log p(y_w|m) > log p(y_w|m')); Δlogp in nats.")
    for m in models:
        counts = ", ".join(f"{part} {c['unparsed']}/{c['n']}" for part, c in m.get("unparsed", {}).items())
        if counts:
            notes.append(f"Unparsed answers, {m['name']}: {counts}.")
        notes.extend(f"WARNING: {w}" for w in m.get("warnings", []))
    return "".join(f"- {n}\n" for n in notes) + ("\n" if notes else "")


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mfpo")
    except PackageNotFoundError:
        return "unknown"
