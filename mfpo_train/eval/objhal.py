"""Object HalBench (RLHF-V / RLAIF-V): 300 COCO val2014 images, detailed-description prompts, CHAIR.

The image ids and prompts are RLAIF-V's `eval/data/obj_halbench_300_with_image.jsonl`, shipped in
`mfpo_data/assets/eval_ids/objhal_val2014.jsonl` (see the README there) so results are comparable;
`read_objhal_questions` reads RLAIF-V's file itself (its base64 images are ignored), and
`build_objhal_questions` draws the same kind of set from any COCO folder with a seed.

Scoring is rule-based CHAIR with RLAIF-V's refined synonym list (`chair.load_vocabulary("refine")`),
reporting CHAIRs, CHAIRi, CHAIRs_refine (over answers that mention an object) and recall
(RLAIF-V's `obj_rec`). RLAIF-V's published tables extract the objects with gpt-3.5-turbo first;
these numbers are labelled `objects: rules` and are not comparable with GPT-judged tables.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from mfpo_data.errors import MfpoError
from mfpo_data.eval_ids import EVAL_IDS_DIR, EVAL_SETS
from mfpo_train.eval.chair import ChairVocabulary, load_vocabulary, score_chair
from mfpo_train.eval.coco import CocoAnnotations
from mfpo_train.eval.io import id_field, numbered_records, text_field


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


def score_objhal(
    answers: Sequence[Mapping], ground_truth: Mapping[int, Iterable[str]], vocab: ChairVocabulary | None = None
) -> dict:
    """CHAIR over Object HalBench answers (`{"image_id", "answer"}`), RLAIF-V's refined synonyms by default."""
    result = score_chair(answers, ground_truth, vocab or load_vocabulary("refine"), scorer="objhal")
    result["meta"]["settings"]["objects"] = "rules"
    return result
