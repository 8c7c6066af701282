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

The official COCO question files (RUCAIBox/POPE `output/coco/coco_pope_{random,popular,adversarial}.json`,
MIT licence) ship in `data/` and are checked by sha256 (`OFFICIAL_SHA256`); `official_questions(split)`
reads them, and `file_sha256` tells whether a user's file is one of them. RePOPE (Neuhaus & Hein
2025) relabels them and drops ambiguous questions; its files (no licence stated, so not shipped) are
read like POPE's and checked against the official questions (`read_repope_questions`).

Conventions (`CONVENTIONS`): the toolkits score the same answers differently, by points.
- `"pope"` (default): POPE's `evaluate.py`. Keep the text before the first ".", drop commas, split on
  spaces; if a word is "No", "not" or "no" the answer is no, otherwise yes. So an answer that is
  neither ("I cannot tell", "") counts as yes; such answers are counted in `unparsed`. Per split.
- `"llava"`: LLaVA-1.5's `eval_pope.py`: the same parser, the question followed by "\nAnswer the
  question using a single word or phrase.", and the headline is the mean F1 of the three splits.
- `"lmms-eval"`: lmms-eval's `pope` tasks: the same prompt suffix; `answer.lower().strip()` must equal
  "yes" or "no" ("Yes." is neither: wrong for accuracy, left out of precision and recall, and counted
  in `unparsed`); a rate with an empty denominator is 0. lmms-eval's `pope_yes_ratio` reports the
  share of "yes" labels (always 50); here `yes_ratio` is the share of "yes" answers, as elsewhere.
- `"vlmevalkit"`: VLMEvalKit's `POPE`: `YOrN_Extraction` (lower-case, its punctuation rule, "yes"
  without "no" is yes, "no" without "yes" is no, else Unknown, counted in `unparsed`); Unknown is
  wrong for accuracy and counts as "no" in precision, recall and F1; the headline ("Overall") is F1
  pooled over the rows of all splits (`pooled_over_splits`); empty denominators give 0. VLMEvalKit can ask an
  LLM judge about the Unknown answers; that path is not reproduced (its exact-matching path is, as run without a
  judge), and `mfpo-eval run` says so in results.md.
"yes" is the positive class in all four. Answers are matched to questions by `question_id` (the
references zip two files by position); `read_pope_answers` refuses a file whose lines carry another
question than the file's (answers written for another split) or leave a question unanswered, and
`file_split` an official file saved under another split's name.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mfpo_data.errors import MfpoError
from mfpo_data.scorers.coco import CocoAnnotations, unique_objects
from mfpo_data.scorers.io import (
    RecordError,
    answer_records,
    id_field,
    jsonl_text,
    numbered_records,
    refuse_duplicates,
    shown,
    text_field,
    where,
    write_jsonl,
)
from mfpo_data.scorers.results import make_result


SAMPLINGS = ("random", "popular", "adversarial")
PARSERS = ("pope", "exact", "yorn")
_NO_WORDS = ("No", "not", "no")
ANSWER_SUFFIX = "\nAnswer the question using a single word or phrase."


@dataclass(frozen=True)
class Convention:
    """How one toolkit asks and scores POPE: the prompt suffix, the answer parser, the headline number."""

    name: str
    suffix: str
    parser: str
    headline: str  # "split" (per split), "mean" (mean of the split F1s) or "pooled" (F1 over all rows)
    source: str


CONVENTIONS = {
    "pope": Convention("pope", "", "pope", "split", "RUCAIBox/POPE evaluate.py"),
    "llava": Convention("llava", ANSWER_SUFFIX, "pope", "mean", "haotian-liu/LLaVA llava/eval/eval_pope.py"),
    "lmms-eval": Convention("lmms-eval", ANSWER_SUFFIX, "exact", "split", "lmms-eval tasks/pope"),
    "vlmevalkit": Convention("vlmevalkit", "", "yorn", "pooled", "VLMEvalKit POPE (YOrN_Extraction)"),
}
# sha256 of RUCAIBox/POPE @ 3df3ba1b output/coco/coco_pope_<split>.json (3,000 questions each) and of
# YanNeu/RePOPE @ bcf22e5 annotations/coco_repope_<split>.json.
OFFICIAL_SHA256 = {
    "random": "ac25245170b975a5bdf9080b23fd431dfe6be458bc038259c1f4f09a6bef7994",
    "popular": "72c1a8ad45d0c13514f5f22598261df41d3b533854d29682e924db50ed8aa753",
    "adversarial": "420b3407db1fa9f1187a805dca41cb7b97fd91504e6c2179706188c107fb8ef8",
}
REPOPE_SHA256 = {
    "random": "f464fcaf60b24ce2f280cf33f122e000dbdd35c8e88f77c4141c9c2cba864611",
    "popular": "57832b055bae5fd6176278a4f104c98ddd84811f7d26dfcb93d481f6c9da09a5",
    "adversarial": "8c346dbb060bf422ff92e769fa68e5ab3e8a777cb28a26e973387441e05c9ccf",
}


def convention(name: str) -> Convention:
    if name not in CONVENTIONS:
        raise MfpoError(f"--pope-convention must be one of {', '.join(CONVENTIONS)}, got {name!r}")
    return CONVENTIONS[name]


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


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def questions_sha256(rows: Sequence[Mapping]) -> str:
    """The sha256 of `rows` written as a POPE file by `write_pope_questions` (the questions a run built)."""
    return hashlib.sha256(jsonl_text(rows).encode("utf-8")).hexdigest()


def official_split(sha256: str) -> str | None:
    """The split whose official file has this sha256, or None."""
    return next((s for s, h in OFFICIAL_SHA256.items() if h == sha256), None)


def file_split(path: str | Path, sha256: str) -> str:
    """The split a question file holds: an official file's own split, else the one its name gives.

    An official file named as another split (the adversarial file saved as `coco_pope_popular.json`)
    is refused: its numbers would be printed under the wrong split.
    """
    named, real = split_name(path), official_split(sha256)
    if real is not None and named in SAMPLINGS and named != real:
        raise MfpoError(f"{shown(path)} is POPE's official {real} file (sha256 {sha256[:4]}…), not {named}: "
                        f"give the {named} file under this name, or this file as coco_pope_{real}.json")
    return real or named


# Where an answers line may carry the question it answers: `mfpo-eval run` and LLaVA write `prompt`;
# `text` counts only beside an `answer` (in LLaVA's files `text` is the answer itself).
_ASKED_FIELDS = ("prompt", "question")


def _asked(row: Mapping) -> str | None:
    for name in _ASKED_FIELDS:
        if isinstance(row.get(name), str):
            return row[name]
    return row["text"] if "answer" in row and isinstance(row.get("text"), str) else None


def _plain(text: str) -> str:
    return " ".join(text.split())


def _short(text: str, limit: int = 60) -> str:
    text = _plain(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def read_pope_answers(path: str | Path, questions: Sequence[Mapping], *, split: str,
                      questions_path: str | Path) -> list[dict]:
    """The answers file of one split, every line checked against the question file it answers.

    Beyond `read_answers`' checks: a line that carries its question (`prompt` or `question`, as
    `mfpo-eval run` and LLaVA write them, possibly with a convention's suffix) must ask that question
    (whitespace and case aside), else the file answers another split or question set; and every
    question must be answered. Each problem is one line naming the answers file and the split.
    """
    path, name = Path(path), Path(questions_path).name
    records = answer_records(path, "question_id", ids=[q["question_id"] for q in questions],
                             benchmark=shown(questions_path))
    text = {q["question_id"]: q["text"] for q in questions}
    wrong = [(line, row) for line, row in records
             if _asked(row) is not None and _plain(text[row["question_id"]]).lower() not in _plain(_asked(row)).lower()]
    if wrong:
        line, row = wrong[0]
        qid = row["question_id"]
        raise RecordError(f"{where(path, line)}: question_id {qid!r} asks {_short(_asked(row))!r} but {name} asks "
                          f"{_short(text[qid])!r}: answers to another question set ({len(wrong)} of {len(records)} "
                          f"lines ask another question than the {split} file's)", path, line)
    answered = {row["question_id"] for _, row in records}
    missing = [q["question_id"] for q in questions if q["question_id"] not in answered]
    if missing:
        raise RecordError(f"{shown(path)}: question_id {missing[0]!r} of {name} (split {split}) has no answer "
                          f"({len(missing)} of {len(questions)} questions unanswered)", path)
    return [row for _, row in records]


def answers_carry_questions(rows: Sequence[Mapping]) -> bool:
    """Whether any line of an answers file carries the question it answers (`prompt` or `question`), so that
    `read_pope_answers` could check it against the split. Plain `{"question_id", "answer"}` lines cannot be
    checked: the official splits share ids, images and labels, so another split's answers read as this one's."""
    return any(_asked(row) is not None for row in rows)


def official_file(split: str) -> Path:
    """The shipped official question file of a split (gzip of POPE's `coco_pope_<split>.json`)."""
    if split not in SAMPLINGS:
        raise MfpoError(f"pope: no official file for split {split!r} (choose from {', '.join(SAMPLINGS)})")
    return Path(str(resources.files("mfpo_data.scorers").joinpath(f"data/coco_pope_{split}.json.gz")))


def official_questions(split: str) -> list[dict]:
    """POPE's official COCO questions of a split, checked against the recorded sha256."""
    data = gzip.decompress(official_file(split).read_bytes())
    if hashlib.sha256(data).hexdigest() != OFFICIAL_SHA256[split]:
        raise MfpoError(f"{official_file(split)}: not POPE's official file (sha256 differs); reinstall mfpo")
    rows = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
    for row in rows:
        row["label"] = row["label"].strip().lower()
    return rows


def read_repope_questions(path: str | Path, split: str) -> list[dict]:
    """RePOPE's relabelled questions of a split: every one must be the official question of its id."""
    rows = read_pope_questions(path)
    official = {q["question_id"]: q for q in official_questions(split)}
    for row in rows:
        q = official.get(row["question_id"])
        if q is None or (q["image"], q["text"]) != (row["image"], row["text"]):
            raise MfpoError(f"{path}: question_id {row['question_id']!r} is not POPE's {split} question of that id")
    return rows


def _yorn(answer: str) -> str | None:
    """VLMEvalKit's `YOrN_Extraction` after its `process_punctuation`."""
    text = answer.lower()
    out = text
    comma_strip = re.compile(r"(\d)(,)(\d)")
    for p in (";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"):
        if (p + " " in text or " " + p in text) or (re.search(comma_strip, text) is not None):
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    out = re.sub(r"(?<!\d)\.(?!\d)", "", out, count=32)  # the reference passes re.UNICODE (32) as the count
    words = out.split()
    if "yes" in words and "no" not in words:
        return "yes"
    if "yes" not in words and "no" in words:
        return "no"
    return None


def parse_yes_no(answer: str, parser: str = "pope") -> str | None:
    """The answer read as "yes" or "no", or None when the parser cannot read it (see the module notes).

    POPE's parser never returns None: what it cannot read is "yes" (`unparsed` counts those).
    """
    if parser == "pope":
        text = answer.split(".")[0] if "." in answer else answer
        words = text.replace(",", "").split(" ")
        return "no" if any(w in _NO_WORDS for w in words) else "yes"
    if parser == "exact":
        text = answer.lower().strip()
        return text if text in ("yes", "no") else None
    if parser == "yorn":
        return _yorn(answer)
    raise MfpoError(f"pope.parser must be one of {', '.join(PARSERS)}, got {parser!r}")


def _says_yes(answer: str) -> bool:
    text = answer.split(".")[0] if "." in answer else answer
    return "yes" in re.findall(r"[a-z]+", text.lower())


def _div(num: float, den: float, empty: float | None) -> float | None:
    return num / den if den else empty


def _x100(rates: Mapping[str, float | None]) -> dict[str, float | None]:
    return {k: (round(100 * v, 1) if v is not None else None) for k, v in rates.items()}


def score_pope(
    questions: Sequence[Mapping], answers: Sequence[Mapping], *, parser: str = "pope", split: str = ""
) -> dict:
    """Accuracy, precision, recall, F1 and yes-ratio (x100, one decimal) of `answers` to `questions`.

    `answers` are `{"question_id", "answer"}` dicts; every question needs exactly one. Returns
    `make_result(...)` with those metrics plus `TP`, `FP`, `TN`, `FN`, `n`, `unparsed`; one detail
    per question: `question_id`, `label`, `pred` (None: unparsed), `answer`.

    - `pope`: an unreadable answer is "yes" (so it is in TP or FP); rates of an empty denominator are None
      (POPE's script divides by zero there), F1 too when precision and recall are both 0.
    - `exact` (lmms-eval): an unparsed answer is wrong for accuracy and in no cell; empty rates are 0.
    - `yorn` (VLMEvalKit): an unparsed answer is wrong for accuracy and counts as "no" (FN or TN); empty
      rates are 0.
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
            raise MfpoError(f"pope{' ' + split if split else ''}: question_id {q['question_id']!r} has no answer")
        answer = by_id[q["question_id"]]
        pred = parse_yes_no(answer, parser)
        if pred is None or (parser == "pope" and pred == "yes" and not _says_yes(answer)):
            unparsed += 1
        counted = "no" if pred is None and parser == "yorn" else pred
        yes += pred == "yes"
        correct += pred == q["label"]
        if counted == "yes":
            tp, fp = tp + (q["label"] == "yes"), fp + (q["label"] == "no")
        elif counted == "no":
            tn, fn = tn + (q["label"] == "no"), fn + (q["label"] == "yes")
        details.append({"question_id": q["question_id"], "label": q["label"], "pred": pred, "answer": answer})
    n = len(questions)
    if not n:
        raise MfpoError("pope: no questions to score")
    rates = _rates(tp, fp, fn, correct=correct, yes=yes, n=n, parser=parser)
    metrics = {**_x100(rates), "TP": tp, "FP": fp, "TN": tn, "FN": fn, "n": n, "unparsed": unparsed}
    settings = {"parser": parser, "split": split}
    return make_result("pope", metrics, ids=[q["question_id"] for q in questions], settings=settings, details=details)


def _rates(tp: int, fp: int, fn: int, *, correct: int, yes: int, n: int, parser: str) -> dict[str, float | None]:
    """The five rates as fractions, unrounded (see `score_pope` for the empty denominators)."""
    empty = None if parser == "pope" else 0.0
    precision, recall = _div(tp, tp + fp, empty), _div(tp, tp + fn, empty)
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = _div(2 * precision * recall, precision + recall, empty)  # TP 0 beside FP and FN: POPE divides by 0
    return {"accuracy": correct / n, "precision": precision, "recall": recall, "f1": f1, "yes_ratio": yes / n}


def _split_rates(result: Mapping) -> Mapping[str, float | None]:
    """A split's rates unrounded, recomputed from a `score_pope` result's counts and details; else its numbers."""
    details, parser = result.get("details"), result.get("meta", {}).get("settings", {}).get("parser")
    if not details or parser not in PARSERS or not all(k in result for k in ("TP", "FP", "FN", "n")):
        return {k: (v / 100 if isinstance(v, (int, float)) else None) for k, v in result.items()}
    return _rates(result["TP"], result["FP"], result["FN"], correct=sum(d["pred"] == d["label"] for d in details),
                  yes=sum(d["pred"] == "yes" for d in details), n=result["n"], parser=parser)


def mean_over_splits(results: Mapping[str, Mapping]) -> dict[str, float | None]:
    """The mean of each metric over the splits (LLaVA's "POPE 85.9" is the mean F1 of the three).

    Of `score_pope` results, the mean of the unrounded split rates, rounded once (splits at 1/2 and 1/3
    give 41.7, where the mean of their printed 50.0 and 33.3 would give 41.6); of plain dicts, of their numbers.
    A metric that some split lacks (None: POPE's script divides by zero there) has no mean: a mean of the
    other splits would read as the mean of all of them.
    """
    keys = ("accuracy", "precision", "recall", "f1", "yes_ratio")
    rates = [_split_rates(r) for r in results.values()]
    out = {}
    for k in keys:
        values = [r.get(k) for r in rates]
        out[k] = None if not values or None in values else round(100 * sum(values) / len(values), 1)
    return out


def pooled_over_splits(questions: Mapping[str, Sequence[Mapping]], answers: Mapping[str, Sequence[Mapping]],
                       parser: str) -> dict:
    """The metrics over the rows of all splits together (VLMEvalKit's "Overall"); ids become "split:id"."""
    qs = [{**q, "question_id": f"{s}:{q['question_id']}"} for s in questions for q in questions[s]]
    ans = [{**a, "question_id": f"{s}:{a['question_id']}"} for s in answers for a in answers[s]]
    result = score_pope(qs, ans, parser=parser, split="pooled")
    return {k: v for k, v in result.items() if k not in ("details", "meta")}


__all__ = [
    "SAMPLINGS", "PARSERS", "CONVENTIONS", "build_pope_questions", "write_pope_questions", "read_pope_questions",
    "split_name", "file_split", "official_split", "questions_sha256", "read_pope_answers", "answers_carry_questions", "official_questions", "read_repope_questions", "parse_yes_no", "score_pope", "mean_over_splits",
    "pooled_over_splits", "question_text",
]  # fmt: skip
