"""`mfpo-eval`: score model answers for hallucination with CHAIR, Object HalBench, POPE and AMBER.

    mfpo-eval chair --coco-root coco --split val2014 --answers answers.jsonl --out chair.json
    mfpo-eval objhal --coco-root coco --answers objhal_answers.jsonl --out objhal.json
    mfpo-eval objhal-questions --out objhal_questions.jsonl
    mfpo-eval pope-questions --coco-root coco --split val2014 --sampling adversarial --out pope_adv.jsonl
    mfpo-eval pope --questions pope_adv.jsonl --answers pope_adv_answers.jsonl --out pope.json
    mfpo-eval amber --amber-root AMBER/data --answers amber_answers.json --out amber.json

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


class PopeParser(str, Enum):
    pope = "pope"
    strict = "strict"


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
ExactOpt = Annotated[
    bool,
    typer.Option("--reference-exact", help="Keep the reference's dead synonym entries and pattern's singular forms."),
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
    from mfpo_train.eval.results import write_result

    json_path, details = write_result(result, out)
    typer.echo(scrub(f"wrote {json_path} and {details}"))


def _chair_like(
    scorer: str, answers: Path, root: Path | None, split: str | None, synonyms: Synonyms, exact: bool, out: Path | None
):
    from mfpo_train.eval import chair, coco, objhal
    from mfpo_train.eval.io import read_answers

    _check_out(out)
    vocab = chair.load_vocabulary(synonyms.value, exact)
    ann = coco.read_coco(root, _split(root, split))
    rows = read_answers(answers, "image_id", ids=ann.images, benchmark=f"COCO split {ann.split!r}")
    truth = coco.chair_ground_truth(ann, vocab, {r["image_id"] for r in rows})
    result = objhal.score_objhal(rows, truth, vocab) if scorer == "objhal" else chair.score_chair(rows, truth, vocab)
    keys = ("CHAIRs", "CHAIRi", "recall", "len", "n") + (("CHAIRs_refine",) if scorer == "objhal" else ())
    _table(f"{scorer} ({synonyms.value}{', reference-exact' if exact else ''})", [(k, result[k]) for k in keys])
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
    reference_exact: ExactOpt = False,
) -> None:
    """CHAIRs / CHAIRi / recall of image descriptions against COCO instances and captions."""
    _run(lambda: _chair_like("chair", answers, coco_root, split, synonyms, reference_exact, out))


@app.command()
def objhal(
    answers: Annotated[Path, typer.Option("--answers", "-a", help='JSON lines {"image_id": int, "answer": str}.')],
    coco_root: CocoRootOpt = None,
    split: SplitOpt = None,
    out: OutOpt = None,
    synonyms: Annotated[Synonyms, typer.Option(help="Synonym list (RLAIF-V's refine by default).")] = Synonyms.refine,
    reference_exact: ExactOpt = False,
) -> None:
    """Object HalBench, rule-based: CHAIR over answers to the 300 description prompts."""
    _run(lambda: _chair_like("objhal", answers, coco_root, split, synonyms, reference_exact, out))


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
        from mfpo_train.eval import coco, objhal
        from mfpo_train.eval.io import write_jsonl

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
        from mfpo_train.eval import coco, pope

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
    parser: Annotated[
        PopeParser, typer.Option(help="Yes/no reading: POPE's evaluate.py (pope) or the first word (strict).")
    ] = PopeParser.pope,
) -> None:
    """Accuracy, precision, recall, F1 and yes-ratio per POPE split, and their mean."""

    def run():
        from mfpo_train.eval import pope
        from mfpo_train.eval.io import read_answers, shown
        from mfpo_train.eval.results import make_result

        _check_out(out)
        if len(questions) != len(answers):
            raise MfpoError(
                f"pope: {len(questions)} --questions but {len(answers)} --answers; give one answers file per questions file"
            )
        results = {}
        for q, a in zip(questions, answers, strict=True):
            name = pope.split_name(q)
            if name in results:
                raise MfpoError(f"pope: split {name!r} given twice")
            asked = pope.read_pope_questions(q)
            rows = read_answers(a, "question_id", ids=[x["question_id"] for x in asked], benchmark=shown(q))
            results[name] = pope.score_pope(asked, rows, parser=parser.value, split=name)
        keys = ("accuracy", "precision", "recall", "f1", "yes_ratio", "n", "unparsed")
        for name, r in results.items():
            _table(f"POPE {name} ({parser.value})", [(k, r[k]) for k in keys])
        if len(results) == 1:
            _save(next(iter(results.values())), out)
            return
        mean = pope.mean_over_splits(results)
        _table("POPE mean over splits", list(mean.items()))
        splits = {name: {k: v for k, v in r.items() if k != "details"} for name, r in results.items()}
        details = [{"split": name, **d} for name, r in results.items() for d in r["details"]]
        ids = [f"{name}:{d['question_id']}" for name, r in results.items() for d in r["details"]]
        combined = make_result(
            "pope", {"mean": mean, "splits": splits}, ids=ids, settings={"parser": parser.value}, details=details
        )
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
        )
        if "generative" in result:
            _table(
                f"AMBER generative (similarity: {result['meta']['settings']['similarity']})",
                list(result["generative"].items()),
            )
        for name, m in result.get("discriminative", {}).items():
            _table(f"AMBER discriminative: {name}", list(m.items()))
        _save(result, out)

    _run(run)



# `mfpo-eval run` (generation + scoring + probes) lives in its own module; registered here.
from mfpo_train.eval.cli_run import run as _run_command  # noqa: E402


app.command("run")(_run_command)


if __name__ == "__main__":
    app()
