"""POPE (Li et al., 2023): yes/no questions about object presence, built from COCO instances.

Construction follows RUCAIBox/POPE `utils.py`: keep the images with at least `min_objects`
annotated categories, sample `images` of them (seeded here; the reference sets no seed), and for
each image ask about its first `per_image` categories in annotation order ("yes"), each followed by
one absent category ("no") that has not been asked about that image yet:

- `random`: uniform over the categories that appear in the sampled images;
- `popular`: the most frequent of those categories (images containing it), first one not yet used;
- `adversarial`: the categories that co-occur most often with that positive, first one not yet used;
- popular and adversarial fall back to random when their list runs out.

The question is "Is there a/an {object} in the image?" (the reference's `replace("a", "an")` also
turns "image" into "imange"; its shipped files were corrected by hand, and so is the article here).
Questions are written and read in POPE's own JSON-lines format:
`{"question_id", "image", "text", "label"}`; the official files (`output/coco/coco_pope_*.json`) read as is.

Scoring (`evaluate.py`) with `parser="pope"`: keep the text before the first ".", drop commas, split
on spaces; if a word is "No", "not" or "no" the answer is no, otherwise yes. So an answer that is
neither ("I cannot tell", "") counts as yes; such answers are counted in `unparsed`. `parser="strict"`
takes the first word (lower-cased, punctuation stripped) and counts anything but yes/no as
unparsed: wrong for accuracy, left out of precision and recall. "yes" is the positive class.
Answers are matched to questions by `question_id` (the reference zips two files by position).
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from mfpo_data.errors import MfpoError
from mfpo_train.eval.coco import CocoAnnotations, unique_objects
from mfpo_train.eval.io import RecordError, id_field, numbered_records, refuse_duplicates, text_field, where, write_jsonl
from mfpo_train.eval.results import make_result


SAMPLINGS = ("random", "popular", "adversarial")
PARSERS = ("pope", "strict")
_NO_WORDS = ("No", "not", "no")


def question_text(obj: str) -> str:
    article = "an" if obj[:1] in "aeiou" and obj else "a"
    return f"Is there {article} {obj} in the image?"


def build_pope_questions(
    coco: CocoAnnotations,
    sampling: str,
    *,
    images: int | None = 500,
    min_objects: int = 3,
    per_image: int = 3,
    seed: int = 0,
) -> list[dict]:
    """POPE questions for one sampling strategy, 2 * `per_image` per image (half yes, half no).

    `images=None` uses every eligible image. The same arguments give the same list.
    """
    if sampling not in SAMPLINGS:
        raise MfpoError(f"--sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    if per_image > min_objects:
        raise MfpoError(f"pope: per_image ({per_image}) cannot exceed min_objects ({min_objects})")
    objects = unique_objects(coco.objects)
    eligible = sorted(i for i, objs in objects.items() if len(objs) >= min_objects)
    if images is not None and len(eligible) < images:
        raise MfpoError(
            f"pope: only {len(eligible)} images of split {coco.split!r} have at least {min_objects} annotated "
            f"categories, {images} asked (lower --images or --min-objects)"
        )
    rng = random.Random(seed)
    chosen = eligible if images is None else rng.sample(eligible, images)
    frequency: Counter[str] = Counter()
    co_occur: dict[str, Counter[str]] = defaultdict(Counter)
    for image_id in chosen:
        objs = objects[image_id]
        frequency.update(objs)
        for o in objs:
            co_occur[o].update(x for x in objs if x != o)
    pool = list(frequency)  # the categories of the sampled images, in order of first appearance
    popular = [o for o, _ in sorted(frequency.items(), key=lambda kv: kv[1], reverse=True)]
    adversarial = {
        o: [x for x, _ in sorted(c.items(), key=lambda kv: kv[1], reverse=True)] for o, c in co_occur.items()
    }
    questions, qid = [], 1
    for image_id in chosen:
        objs, asked = objects[image_id], []
        image = coco.images[image_id]
        for pos in objs[:per_image]:
            asked.append(pos)
            questions.append({"question_id": qid, "image": image, "text": question_text(pos), "label": "yes"})
            qid += 1
            ranked = (
                popular if sampling == "popular" else adversarial.get(pos, []) if sampling == "adversarial" else []
            )
            neg = next((o for o in ranked if o not in asked and o not in objs), None)
            if neg is None:
                candidates = [o for o in pool if o not in asked and o not in objs]
                if not candidates:
                    raise MfpoError(
                        f"pope: image {image_id} has no absent category left to ask about "
                        f"(the {len(pool)} categories of the sampled images are all present or asked)"
                    )
                neg = rng.choice(candidates)
            asked.append(neg)
            questions.append({"question_id": qid, "image": image, "text": question_text(neg), "label": "no"})
            qid += 1
    return questions


def write_pope_questions(questions: Sequence[Mapping], path: str | Path) -> Path:
    """POPE's format: one `{"question_id", "image", "text", "label"}` object per line."""
    return write_jsonl(questions, path)


def read_pope_questions(path: str | Path) -> list[dict]:
    """A POPE question file (ours or the official `coco_pope_*.json`); labels are "yes"/"no"."""
    path = Path(path)
    rows, first_line = [], {}
    for line, row in numbered_records(path, ("question_id", "image", "text", "label"), "POPE questions file"):
        qid = id_field(row, "question_id", path, line)
        for name in ("image", "text", "label"):
            text_field(row, (name,), path, line)
        label = row["label"].strip().lower()
        if label not in ("yes", "no"):
            raise RecordError(f"{where(path, line)}: label must be yes or no, got {row['label']!r}", path, line)
        if str(qid) in first_line:
            raise RecordError(f"{where(path, line)}: question_id {qid!r} appears again (first on line "
                              f"{first_line[str(qid)]})", path, line)
        first_line[str(qid)] = line
        rows.append({**row, "label": label})
    return rows


def split_name(path: str | Path) -> str:
    """`coco_pope_adversarial.json` -> "adversarial"; otherwise the file's stem."""
    stem = Path(path).stem
    m = re.search(r"(random|popular|adversarial)$", stem)
    return m.group(1) if m else stem


def parse_yes_no(answer: str, parser: str = "pope") -> str | None:
    """The answer read as "yes" or "no"; None only with `parser="strict"` (see the module notes)."""
    if parser == "pope":
        text = answer.split(".")[0] if "." in answer else answer
        words = text.replace(",", "").split(" ")
        return "no" if any(w in _NO_WORDS for w in words) else "yes"
    if parser == "strict":
        words = re.findall(r"[a-z]+", answer.lower())
        return words[0] if words and words[0] in ("yes", "no") else None
    raise MfpoError(f"pope.parser must be one of {', '.join(PARSERS)}, got {parser!r}")


def _says_yes(answer: str) -> bool:
    text = answer.split(".")[0] if "." in answer else answer
    return "yes" in re.findall(r"[a-z]+", text.lower())


def _rates(tp: int, fp: int, tn: int, fn: int, n: int, yes: int) -> dict[str, float | None]:
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / n if n else None,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": yes / n if n else None,
    }


def _x100(rates: Mapping[str, float | None]) -> dict[str, float | None]:
    return {k: (round(100 * v, 1) if v is not None else None) for k, v in rates.items()}


def score_pope(
    questions: Sequence[Mapping], answers: Sequence[Mapping], *, parser: str = "pope", split: str = ""
) -> dict:
    """Accuracy, precision, recall, F1 and yes-ratio (x100, one decimal) of `answers` to `questions`.

    `answers` are `{"question_id", "answer"}` dicts; every question needs exactly one. Returns
    `make_result(...)` with those metrics plus `TP`, `FP`, `TN`, `FN`, `n`, `unparsed`; one detail
    per question: `question_id`, `label`, `pred`, `answer`.
    """
    if parser not in PARSERS:
        raise MfpoError(f"pope.parser must be one of {', '.join(PARSERS)}, got {parser!r}")
    refuse_duplicates(answers, "question_id", "pope")
    by_id = {row["question_id"]: row["answer"] for row in answers}
    asked = {q["question_id"] for q in questions}
    unknown = [i for i in by_id if i not in asked]
    if unknown:
        raise MfpoError(f"pope: question_id {unknown[0]!r} is answered but not asked ({len(unknown)} such answers); "
                        "the answers belong to another question file")
    tp = fp = tn = fn = yes = unparsed = correct = 0
    details = []
    for q in questions:
        if q["question_id"] not in by_id:
            raise MfpoError(f"pope: question_id {q['question_id']!r} has no answer")
        answer = by_id[q["question_id"]]
        pred = parse_yes_no(answer, parser)
        if pred is None or (parser == "pope" and pred == "yes" and not _says_yes(answer)):
            unparsed += 1
        yes += pred == "yes"
        correct += pred == q["label"]
        if pred == "yes":
            tp, fp = tp + (q["label"] == "yes"), fp + (q["label"] == "no")
        elif pred == "no":
            tn, fn = tn + (q["label"] == "no"), fn + (q["label"] == "yes")
        details.append({"question_id": q["question_id"], "label": q["label"], "pred": pred, "answer": answer})
    n = len(questions)
    if not n:
        raise MfpoError("pope: no questions to score")
    rates = _rates(tp, fp, tn, fn, n, yes)
    rates["accuracy"] = correct / n
    metrics = {**_x100(rates), "TP": tp, "FP": fp, "TN": tn, "FN": fn, "n": n, "unparsed": unparsed}
    settings = {"parser": parser, "split": split}
    return make_result("pope", metrics, ids=[q["question_id"] for q in questions], settings=settings, details=details)


def mean_over_splits(results: Mapping[str, Mapping]) -> dict[str, float | None]:
    """The mean of each metric over the splits (LLaVA's "POPE 85.9" is the mean F1 of the three)."""
    keys = ("accuracy", "precision", "recall", "f1", "yes_ratio")
    out = {}
    for k in keys:
        values = [r[k] for r in results.values() if r.get(k) is not None]
        out[k] = round(sum(values) / len(values), 1) if values else None
    return out


__all__ = [
    "SAMPLINGS", "PARSERS", "build_pope_questions", "write_pope_questions", "read_pope_questions", "split_name",
    "parse_yes_no", "score_pope", "mean_over_splits", "question_text",
]  # fmt: skip
