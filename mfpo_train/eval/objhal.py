"""Object HalBench (RLHF-V / RLAIF-V): 300 COCO val2014 images, detailed-description prompts, CHAIR.

The image ids and prompts are RLAIF-V's `eval/data/obj_halbench_300_with_image.jsonl`, shipped in
`mfpo_data/assets/eval_ids/objhal_val2014.jsonl` (see the README there) so results are comparable;
`read_objhal_questions` reads RLAIF-V's file itself (its base64 images are ignored), and
`build_objhal_questions` draws the same kind of set from any COCO folder with a seed.

Scoring is rule-based CHAIR with RLAIF-V's refined synonym list, reporting CHAIRs, CHAIRi,
CHAIRs_refine (over answers that mention an object) and recall (RLAIF-V's `obj_rec`). Two scorers
(`SCORERS`, recorded in the result):
- `"rlaifv"` (default): RLAIF-V's `eval/eval_gpt_obj_halbench.py` run without `--use_gpt`: NLTK's
  WordNet lemmatiser, every multi-word entry merged (`chair` protocol "rlaifv");
- `"chair"`: the reference CHAIR pipeline (`pattern` singular forms) on the same refined list.
RLAIF-V's published tables extract the objects with gpt-3.5-turbo first; these numbers are labelled
`objects: rules` and are not comparable with GPT-judged tables.

Answers are read the way RLAIF-V's loader reads them (`objhal_answer`): its `text` field when there is
one, else `answer`, with every "Assistant:" removed and the ends stripped.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from mfpo_data.errors import MfpoError
from mfpo_data.eval_ids import EVAL_IDS_DIR, EVAL_SETS
from mfpo_data.scorers.chair import ChairVocabulary, load_vocabulary, score_chair


SCORERS = {"rlaifv": "rlaifv", "chair": "reference"}  # --objhal-scorer -> the CHAIR protocol it runs
from mfpo_data.scorers.coco import CocoAnnotations
from mfpo_data.scorers.io import id_field, numbered_records, text_field


def objhal_questions() -> list[dict]:
    """The shipped 300 `{"image_id", "question"}` items, in RLAIF-V's order."""
    return _questions(EVAL_IDS_DIR / EVAL_SETS["objhal"], "Object HalBench id list")


def objhal_prompts() -> list[str]:
    """The distinct description prompts of the shipped set, in order of first use."""
    return list(dict.fromkeys(q["question"] for q in objhal_questions()))


def read_objhal_questions(path: str | Path) -> list[dict]:
    """RLAIF-V's question file (`image_id`, `question`; other keys such as `image` are ignored)."""
    return _questions(path, "Object HalBench questions file")


def _questions(path: str | Path, what: str) -> list[dict]:
    path = Path(path)
    return [{"image_id": id_field(row, "image_id", path, line, text=False),
             "question": text_field(row, ("question",), path, line)}
            for line, row in numbered_records(path, ("image_id", "question"), what)]


def build_objhal_questions(
    coco: CocoAnnotations,
    *,
    images: int = 300,
    seed: int = 0,
    prompts: Sequence[str] | None = None,
    exclude: Iterable[int] = (),
) -> list[dict]:
    """`images` images of a COCO split (with at least one annotated object), each with a prompt, seeded."""
    prompts = list(prompts) if prompts else objhal_prompts()
    excluded = set(exclude)
    eligible = sorted(i for i, objs in coco.objects.items() if objs and i not in excluded)
    if len(eligible) < images:
        raise MfpoError(
            f"objhal: split {coco.split!r} has {len(eligible)} images with objects, {images} asked (lower --images)"
        )
    rng = random.Random(seed)
    chosen = rng.sample(eligible, images)
    return [{"image_id": i, "question": rng.choice(prompts)} for i in chosen]


def objhal_vocabulary(scorer: str = "rlaifv", *, fixed: bool = False) -> ChairVocabulary:
    """The vocabulary of an Object HalBench scorer ("rlaifv" or "chair"; see the module notes), or the fixed
    vocabulary (its own singulars: it is the rlaifv scorer's deviation; the chair scorer with it is refused, since
    its pattern singulars would not be used)."""
    if scorer not in SCORERS:
        raise MfpoError(f"--objhal-scorer must be one of {', '.join(SCORERS)}, got {scorer!r}")
    if fixed and scorer == "chair":
        raise MfpoError("objhal: scorer 'chair' with the fixed vocabulary would score exactly as scorer 'rlaifv' "
                        "with it (the fixed vocabulary brings its own singulars); drop one of the two")
    return load_vocabulary("refine", "fixed" if fixed else SCORERS[scorer])


def expected_items(coco: CocoAnnotations, answered: Iterable[int]) -> tuple[str, list[int] | None]:
    """(what, ids) an answers file should cover: the shipped 300 on val2014 when it answers only those, every
    image with objects of the bundled sample (the items `mfpo-eval run` asks about there); (what, None) for a set
    of the user's own, which has no list to check against."""
    answered = set(answered)
    if coco.split == "val2014":
        official = [q["image_id"] for q in objhal_questions()]
        if answered <= set(official):
            return f"the {len(official)} Object HalBench items", official
    elif coco.split == "sample":
        ids = sorted(i for i, objs in coco.objects.items() if objs)
        return f"the {len(ids)} images of the bundled COCO sample (not the 300 Object HalBench items)", ids
    return (f"{len(answered)} images of COCO split {coco.split!r} (the answers' own set, not the 300 Object HalBench "
            "items)"), None


def coverage(answered: Sequence[int], what: str, expected: Sequence[int] | None, *, allow_partial: bool,
             source: str) -> str:
    """"complete", or "partial: n=299 of the 300 Object HalBench items: not comparable with published tables"
    with `allow_partial`; without it, answers missing some `expected` items are one line naming them."""
    given = set(answered)
    missing = [i for i in expected or () if i not in given]
    if not missing:
        return "complete"
    n = len(expected) - len(missing)
    if not allow_partial:
        first = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        raise MfpoError(f"objhal: {source} answers {n} of {what}; {len(missing)} missing (image_id {first}): answer "
                        "every item, or --allow-partial to score them labelled partial")
    return f"partial: n={n} of {what}: not comparable with published tables"


def objhal_answer(row: Mapping) -> str:
    """An answer as RLAIF-V's `load_generated_captions` reads it: `text` before `answer`, "Assistant:" removed."""
    text = row["text"] if isinstance(row.get("text"), str) else row["answer"]
    return text.replace("Assistant:", "").strip()


def score_objhal(
    answers: Sequence[Mapping], ground_truth: Mapping[int, Iterable[str]], vocab: ChairVocabulary | None = None
) -> dict:
    """CHAIR over Object HalBench answers (`{"image_id", "answer"}` or `text`), RLAIF-V's rule path by default."""
    rows = [{"image_id": r["image_id"], "answer": objhal_answer(r)} for r in answers]
    result = score_chair(rows, ground_truth, vocab or objhal_vocabulary(), scorer="objhal")
    result["meta"]["settings"]["objects"] = "rules"
    return result
