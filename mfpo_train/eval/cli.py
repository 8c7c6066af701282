"""`mfpo-eval`: score model answers for hallucination with CHAIR, Object HalBench, POPE and AMBER.

    mfpo-eval chair --coco-root coco --split val2014 --answers answers.jsonl --out chair.json
    mfpo-eval objhal --coco-root coco --answers objhal_answers.jsonl --out objhal.json
    mfpo-eval objhal-questions --out objhal_questions.jsonl
    mfpo-eval pope-questions --coco-root coco --split val2014 --sampling adversarial --out pope_adv.jsonl
    mfpo-eval pope --questions pope_adv.jsonl --answers pope_adv_answers.jsonl --out pope.json
    mfpo-eval amber --amber-root AMBER/data --answers amber_answers.json --out amber.json
    mfpo-eval mmhal --questions response_template.json --answers mmhal_answers.jsonl --judge Qwen/Qwen2.5-7B-Instruct

Every command scores the reference protocol by default; each deviation is a named option, recorded in
the result's settings and printed in the table title.

Commands are thin: parse, call one scorer, print a table, write the result JSON (and the per-item
details beside it). Known problems are one line on stderr, exit code 1. Nothing heavy is imported
before a command runs, so `--help` is instant.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from mfpo_data.errors import MfpoError
from mfpo_data.secrets import scrub


app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__.splitlines()[0])


class Sampling(str, Enum):
    random = "random"
    popular = "popular"
    adversarial = "adversarial"


class Synonyms(str, Enum):
    coco = "coco"
    refine = "refine"


class Protocol(str, Enum):
    reference = "reference"
    fixed = "fixed"


class ObjhalScorer(str, Enum):
    rlaifv = "rlaifv"
    chair = "chair"


class PopeConvention(str, Enum):
    pope = "pope"
    llava = "llava"
    lmms_eval = "lmms-eval"
    vlmevalkit = "vlmevalkit"


class Nouns(str, Enum):
    auto = "auto"
    nltk = "nltk"
    aptagger = "aptagger"
    rules = "rules"


class Similarity(str, Enum):
    auto = "auto"
    exact = "exact"
    spacy = "spacy"


class AmberParser(str, Enum):
    exact = "exact"
    lenient = "lenient"


CocoRootOpt = Annotated[
    Path | None, typer.Option("--coco-root", help="COCO folder (annotations/ inside); default: the bundled sample.")
]
SplitOpt = Annotated[
    str | None,
    typer.Option("--split", help="COCO split, e.g. val2014 (default: 'sample' without --coco-root, else val2014)."),
]
OutOpt = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Write the result JSON here (details in a .details.jsonl beside it)."),
]
FixedOpt = Annotated[
    bool,
    typer.Option("--fixed-vocabulary", help="Count what the reference cannot (dead synonym entries, 'a bus', 'ties'); "
                 "not the reference's numbers."),
]


def _run(fn):
    from mfpo_data.secrets import redact_logging

    redact_logging()  # the scorer commands configure no logging: Python's last-resort handler prints warnings
    try:
        return fn()
    except MfpoError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


def _split(root: Path | None, split: str | None) -> str:
    return split or ("val2014" if root else "sample")


def _warn_unparsed(part: str, unparsed: int, n: int) -> None:
    if n and unparsed / n > 0.05:
        typer.secho(f"warning: {part}: {unparsed} of {n} answers ({100 * unparsed / n:.1f}%) could not be read",
                    fg=typer.colors.YELLOW, err=True)


def _table(title: str, rows: list[tuple[str, object]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for name, _ in rows:
        table.add_column(name, justify="right")
    table.add_row(*("-" if v is None else str(v) for _, v in rows))
    Console().print(table)


def _check_out(out: Path | None) -> None:
    """`--out` names a file: a folder there is one line (before anything is read or scored)."""
    if out is not None and out.is_dir():
        raise MfpoError(f"--out {out} is a folder; give the path of a file to write (e.g. {out / 'result.json'})")


def _save(result: dict, out: Path | None) -> None:
    if out is None:
        return
    from mfpo_data.scorers.results import write_result

    json_path, details = write_result(result, out)
    typer.echo(scrub(f"wrote {json_path} and {details}"))


def _chair_like(scorer: str, answers: Path, root: Path | None, split: str | None, vocab, out: Path | None,
                objhal_scorer: str | None = None, allow_partial: bool = False):
    from mfpo_data.scorers import chair, coco
    from mfpo_data.scorers.io import read_answers, shown
    from mfpo_train.eval import objhal

    _check_out(out)
    ann = coco.read_coco(root, _split(root, split))
    rows = read_answers(answers, "image_id", ids=ann.images, benchmark=f"COCO split {ann.split!r}",
                        text=("text", "answer") if scorer == "objhal" else ("answer", "text"))  # RLAIF-V: text first
    extra: dict = {}
    if scorer == "objhal":  # which items the file should answer: a partial file is refused or labelled
        answered = [r["image_id"] for r in rows]
        what, expected = objhal.expected_items(ann, answered)
        extra = {"scorer": objhal_scorer, "items": what,
                 "coverage": objhal.coverage(answered, what, expected, allow_partial=allow_partial,
                                             source=shown(answers))}
    truth = coco.chair_ground_truth(ann, vocab, {r["image_id"] for r in rows})
    result = objhal.score_objhal(rows, truth, vocab) if scorer == "objhal" else chair.score_chair(rows, truth, vocab)
    result["meta"]["settings"].update(extra)
    keys = ("CHAIRs", "CHAIRi", "recall", "len", "n", "unparsed") + (("CHAIRs_refine",) if scorer == "objhal" else ())
    settings = vocab.settings
    how = f"synonyms {settings['synonyms']}, protocol {settings['protocol']}"
    if extra:
        done = extra["coverage"] if extra["coverage"] != "complete" else f"n={result['n']} of {extra['items']}"
        how += f", scorer {objhal_scorer}; {done}"
    _table(f"{scorer} ({how})", [(k, result[k]) for k in keys])
    if extra.get("coverage", "complete") != "complete":
        typer.secho(f"warning: objhal: {extra['coverage']}", fg=typer.colors.YELLOW, err=True)
    _warn_unparsed(scorer, result["unparsed"], result["n"])
    _save(result, out)


@app.command()
def chair(
    answers: Annotated[Path, typer.Option("--answers", "-a", help='JSON lines {"image_id": int, "answer": str}.')],
    coco_root: CocoRootOpt = None,
    split: SplitOpt = None,
    out: OutOpt = None,
    synonyms: Annotated[
        Synonyms, typer.Option(help="Synonym list: the reference's (coco) or RLAIF-V's (refine).")
    ] = Synonyms.coco,
    fixed_vocabulary: FixedOpt = False,
) -> None:
    """CHAIRs / CHAIRi / recall of image descriptions against COCO instances and captions (the reference chair.py)."""

    def run():
        from mfpo_data.scorers.chair import load_vocabulary

        vocab = load_vocabulary(synonyms.value, "fixed" if fixed_vocabulary else "reference")
        _chair_like("chair", answers, coco_root, split, vocab, out)

    _run(run)


@app.command()
def objhal(
    answers: Annotated[Path, typer.Option("--answers", "-a", help='JSON lines {"image_id": int, "text" or "answer": str}.')],
    coco_root: CocoRootOpt = None,
    split: SplitOpt = None,
    out: OutOpt = None,
    scorer: Annotated[
        ObjhalScorer, typer.Option(help="rlaifv: RLAIF-V's rule path (WordNet lemmas); chair: the reference CHAIR.")
    ] = ObjhalScorer.rlaifv,
    fixed_vocabulary: FixedOpt = False,
    allow_partial: Annotated[
        bool, typer.Option("--allow-partial", help="Score answers that leave items of the set out (refused by "
                           "default), labelled 'partial: n of N' in the table and the result.")
    ] = False,
) -> None:
    """Object HalBench, rule-based: CHAIR over answers to the 300 description prompts, RLAIF-V's refined synonyms."""

    def run():
        from mfpo_train.eval.objhal import objhal_vocabulary

        vocab = objhal_vocabulary(scorer.value, fixed=fixed_vocabulary)
        _chair_like("objhal", answers, coco_root, split, vocab, out, scorer.value, allow_partial)

    _run(run)


@app.command("objhal-questions")
def objhal_questions(
    out: Annotated[Path, typer.Option("--out", "-o", help='Write {"image_id", "question"} lines here.')],
    coco_root: CocoRootOpt = None,
    split: SplitOpt = None,
    questions: Annotated[
        Path | None, typer.Option("--questions", help="RLAIF-V's obj_halbench_300_with_image.jsonl.")
    ] = None,
    images: Annotated[int, typer.Option(help="Images to draw from --coco-root.")] = 300,
    seed: Annotated[int, typer.Option(help="Seed for drawing images and prompts.")] = 0,
) -> None:
    """The Object HalBench questions: the shipped 300, RLAIF-V's file, or a seeded set from a COCO folder."""

    def run():
        from mfpo_data.scorers import coco
        from mfpo_data.scorers.io import write_jsonl
        from mfpo_train.eval import objhal

        _check_out(out)
        if questions is not None:
            rows = objhal.read_objhal_questions(questions)
        elif coco_root is not None:
            rows = objhal.build_objhal_questions(
                coco.read_coco(coco_root, _split(coco_root, split), captions=False), images=images, seed=seed
            )
        else:
            rows = objhal.objhal_questions()
        write_jsonl(rows, out)
        typer.echo(scrub(f"wrote {len(rows)} questions to {out}"))

    _run(run)


@app.command("pope-questions")
def pope_questions(
    sampling: Annotated[Sampling, typer.Option(help="How negatives are drawn.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Write POPE-format JSON lines here.")],
    coco_root: CocoRootOpt = None,
    split: SplitOpt = None,
    images: Annotated[int, typer.Option(help="Images to sample (POPE: 500).")] = 500,
    seed: Annotated[int, typer.Option(help="Seed for the image sample and random negatives.")] = 0,
    min_objects: Annotated[int, typer.Option(help="Only images with at least this many annotated categories.")] = 3,
    per_image: Annotated[int, typer.Option(help="Positive questions per image (each paired with a negative).")] = 3,
) -> None:
    """Build POPE questions from a COCO folder's instances."""

    def run():
        from mfpo_data.scorers import coco, pope

        _check_out(out)
        ann = coco.read_coco(coco_root, _split(coco_root, split), captions=False)
        rows = pope.build_pope_questions(
            ann, sampling.value, images=images, min_objects=min_objects, per_image=per_image, seed=seed
        )
        pope.write_pope_questions(rows, out)
        typer.echo(scrub(f"wrote {len(rows)} questions ({len(rows) // 2} yes, {len(rows) // 2} no) to {out}"))

    _run(run)


@app.command("pope")
def pope_score(
    questions: Annotated[
        list[Path], typer.Option("--questions", "-q", help="POPE question file (repeat, one per split).")
    ],
    answers: Annotated[
        list[Path],
        typer.Option("--answers", "-a", help='JSON lines {"question_id", "answer"} (same order as --questions).'),
    ],
    out: OutOpt = None,
    convention: Annotated[
        PopeConvention,
        typer.Option(help="Whose scoring: POPE's evaluate.py, LLaVA's eval_pope.py, lmms-eval's, VLMEvalKit's."),
    ] = PopeConvention.pope,
) -> None:
    """Accuracy, precision, recall, F1 and yes-ratio per POPE split, their mean and the pooled F1."""

    def run():
        from mfpo_data.scorers import pope
        from mfpo_data.scorers.io import shown
        from mfpo_data.scorers.results import make_result

        _check_out(out)
        if len(questions) != len(answers):
            raise MfpoError(
                f"pope: {len(questions)} --questions but {len(answers)} --answers; give one answers file per questions file"
            )
        conv = pope.convention(convention.value)
        results, given_q, given_a, hashes = {}, {}, {}, {}
        for q, a in zip(questions, answers, strict=True):
            given = pope.read_pope_questions(q)
            sha = pope.file_sha256(q)
            name = pope.file_split(q, sha)  # an official file is labelled by its own split
            if name in results:
                raise MfpoError(f"pope: split {name!r} given twice")
            given_q[name] = given
            given_a[name] = pope.read_pope_answers(a, given, split=name, questions_path=q)
            results[name] = pope.score_pope(given_q[name], given_a[name], parser=conv.parser, split=name)
            checked = pope.answers_carry_questions(given_a[name])
            hashes[name] = {"sha256": sha, "official": sha == pope.OFFICIAL_SHA256.get(name), "answers_checked": checked}
            results[name]["meta"]["settings"].update(convention=conv.name, questions_sha256=sha,
                                                     official=hashes[name]["official"], answers_checked=checked)
            if not checked:
                typer.secho(f"warning: pope {name}: {shown(a)} carries no question text ('prompt' or 'question'), so "
                            f"it cannot be checked against {shown(q)}; answers to another split would score as "
                            f"{name}", fg=typer.colors.YELLOW, err=True)
        keys = ("accuracy", "precision", "recall", "f1", "yes_ratio", "n", "unparsed")
        for name, r in results.items():
            official = "official file" if hashes[name]["official"] else "not the official file"
            _table(f"POPE {name} (convention {conv.name}, {official})", [(k, r[k]) for k in keys])
            _warn_unparsed(f"pope {name}", r["unparsed"], r["n"])
        if len(results) == 1:
            _save(next(iter(results.values())), out)
            return
        mean = pope.mean_over_splits(results)
        pooled = pope.pooled_over_splits(given_q, given_a, conv.parser)
        counts = [("n", sum(r["n"] for r in results.values())), ("unparsed", sum(r["unparsed"] for r in results.values()))]
        _table("POPE mean over splits" + (" (the headline)" if conv.headline == "mean" else ""),
               list(mean.items()) + counts)
        _table("POPE pooled over splits" + (" (the headline)" if conv.headline == "pooled" else ""),
               [(k, pooled[k]) for k in keys])
        splits = {name: {k: v for k, v in r.items() if k != "details"} for name, r in results.items()}
        details = [{"split": name, **d} for name, r in results.items() for d in r["details"]]
        ids = [f"{name}:{d['question_id']}" for name, r in results.items() for d in r["details"]]
        settings = {"parser": conv.parser, "convention": conv.name, "headline": conv.headline, "files": hashes}
        combined = make_result("pope", {"mean": mean, "pooled": pooled, "splits": splits}, ids=ids, settings=settings,
                               details=details)
        _save(combined, out)

    _run(run)


@app.command()
def amber(
    amber_root: Annotated[
        Path,
        typer.Option("--amber-root", help="AMBER's data/ folder (annotations.json, relation.json, safe_words.txt)."),
    ],
    answers: Annotated[
        Path, typer.Option("--answers", "-a", help='AMBER inference file: [{"id", "response"}] (JSON or JSON lines).')
    ],
    out: OutOpt = None,
    similarity: Annotated[
        Similarity,
        typer.Option(help="Word similarity: spaCy vectors when installed (auto), exact match, or spaCy required."),
    ] = Similarity.auto,
    threshold: Annotated[float, typer.Option(help="spaCy similarity above which two words match.")] = 0.8,
    parser: Annotated[
        AmberParser, typer.Option(help="Yes/no reading: exactly 'Yes'/'No' (AMBER) or the first word (lenient).")
    ] = AmberParser.exact,
    nouns: Annotated[
        Nouns, typer.Option(help="Noun tagger: nltk (the reference's, needs its data), aptagger, rules, or auto.")
    ] = Nouns.auto,
) -> None:
    """AMBER: generative CHAIR / Cover / Hal / Cog and yes/no accuracy, precision, recall, F1."""

    def run():
        from mfpo_train.eval import amber as amber_mod

        _check_out(out)
        data = amber_mod.load_amber(amber_root)
        result = amber_mod.score_amber(
            amber_mod.read_amber_answers(answers, ids=data.annotations),
            data,
            similarity=similarity.value,
            threshold=threshold,
            parser=parser.value,
            nouns=nouns.value,
        )
        settings = result["meta"]["settings"]
        settings["coverage"] = coverage = amber_mod.coverage([row["id"] for row in result["details"]], data)
        for part, label in coverage.items():
            if label != "complete":
                typer.secho(f"warning: amber {part}: {label}", fg=typer.colors.YELLOW, err=True)
        if "generative" in result:
            sim = settings["similarity"]
            how = "exact match, not the reference's 0.8 similarity" if sim == "exact" else f"{sim} > {threshold}"
            partial = "" if coverage["generative"] == "complete" else f"; {coverage['generative']}"
            _table(f"AMBER generative (nouns: {settings['nouns']}; {how}{partial})", list(result["generative"].items()))
            _warn_unparsed("amber generative", result["generative"]["unparsed"], result["generative"]["n"])
        how = "" if settings["parser"] == "exact" else " (parser lenient: the first word, not AMBER's exact 'Yes'/'No')"
        if coverage.get("discriminative", "complete") != "complete":
            how += f" ({coverage['discriminative']})"
        for name, m in result.get("discriminative", {}).items():
            _table(f"AMBER discriminative: {name}{how}", list(m.items()))
        if "discriminative" in result:
            overall = result["discriminative"]["overall"]
            _warn_unparsed("amber yes/no", overall["unparsed"], overall["n"])
        _save(result, out)

    _run(run)



@app.command()
def mmhal(
    questions: Annotated[Path, typer.Option("--questions", "-q", help="MMHal-Bench's response_template.json.")],
    answers: Annotated[
        Path,
        typer.Option("--answers", "-a", help="The template with 'model_answer' filled (JSON), or JSON lines with "
                     "'answer'/'text' in the questions' order (RLAIF-V's format)."),
    ],
    judge: Annotated[str, typer.Option("--judge", help="A local causal LM (Hub id or folder), or a model name at --judge-url.")],
    judge_url: Annotated[str | None, typer.Option("--judge-url", help="OpenAI-compatible endpoint (…/v1).")] = None,
    judge_key_env: Annotated[str, typer.Option("--judge-key-env", help="Environment variable with the endpoint's key.")] = "OPENAI_API_KEY",
    max_new_tokens: Annotated[int, typer.Option("--judge-max-new-tokens", help="Longest review, in tokens.")] = 512,
    out: OutOpt = None,
) -> None:
    """MMHal-Bench: a judge rates each answer 0-6 with the reference template; score and hallucination rate."""

    def run():
        from mfpo_train.eval import mmhal as mmhal_mod

        qs = mmhal_mod.read_mmhal_questions(questions)
        rows = mmhal_mod.read_mmhal_answers(answers, len(qs))
        info = mmhal_mod.judge_info(judge, judge_url)
        scorer = mmhal_mod.make_judge(judge, judge_url, key_env=judge_key_env, max_new_tokens=max_new_tokens)
        result = mmhal_mod.score_mmhal(qs, rows, mmhal_mod.review_all(scorer, qs, rows), info)
        _table(f"MMHal-Bench (judge: {info['label']}; the paper's judge is {mmhal_mod.REFERENCE_JUDGE})",
               [(k, result[k]) for k in ("score", "hallucination_rate", "n", "unparsed")])
        _warn_unparsed("mmhal judge reviews", result["unparsed"], result["n"])
        _save(result, out)

    _run(run)


# `mfpo-eval run` (generation + scoring + probes) lives in its own module; registered here.
from mfpo_train.eval.cli_run import run as _run_command  # noqa: E402


app.command("run")(_run_command)


if __name__ == "__main__":
    app()
