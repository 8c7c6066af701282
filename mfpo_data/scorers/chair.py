"""CHAIR (Rohrbach et al., 2018): which COCO objects an answer mentions that are not in the image.

The algorithm of the reference `utils/chair.py` (LisaAnne/Hallucination), step by step:

1. lower-case, tokenise, singularise every token (`mfpo_data.scorers.text`);
2. merge the two-word phrases of the synonym list, left to right ("hot dog", "teddy bear"), with the
   reference's special cases: "baby/adult <animal>" -> the animal, "passenger jet/train" -> jet/train,
   "bow tie" -> tie, "toilet seat" -> toilet, "wine glas" -> wine glass;
3. if both "toilet" and "seat" remain, drop every "seat" (so the seat of a toilet is not a chair);
4. every remaining word on the synonym list is a mention of its category (repeats count).

An image's ground truth is its instance categories plus the objects its human captions mention
(`mfpo_data.scorers.coco.chair_ground_truth`). CHAIRs = answers with at least one hallucinated
mention / answers; CHAIRi = hallucinated mentions / mentions; recall = distinct ground-truth
objects mentioned / ground-truth objects (summed over answers); len = mean words per answer.
All are x100 with one decimal, as papers print them.

Protocols (`load_vocabulary(synonyms, protocol)`), recorded in the result's settings:
- `"reference"` (default): LisaAnne/Hallucination `chair.py` exactly. The synonym list is parsed as
  it does (`line.strip().split(', ')`), so its dead entries stay dead: " motor bike" and " cheesecake"
  (a double space in `synonyms.txt`) and "iPhone" (capitalised, against lower-cased text) never
  match; tokens are singularised by `pattern.en.singularize` with its mistakes ("a bus" is never
  counted, "tennis racket" is never merged, "ties" is not a tie).
- `"rlaifv"`: RLAIF-V's `eval_gpt_obj_halbench.py` without `--use_gpt` (its rule path): the refined
  list with every entry stripped (so "motor bike" and "cheesecake" match; "iPhone" still does not),
  tokens lemmatised by NLTK's `WordNetLemmatizer` (`text.lemmatize`), every multi-word entry merged.
- `"fixed"`: what the reference cannot match is fixed: entries stripped and lower-cased, tokens
  singularised by `inflect` (so "a bus", "tennis racket", "ties" and "iPhone" count). Not the
  reference's numbers: results say `protocol: fixed`.

`synonyms="coco"` is the reference list; `"refine"` is RLAIF-V's `synonyms_refine.txt`: the reference
list with its entries stripped, plus brother, pedestrian, coffee table and remote control.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from mfpo_data.errors import MfpoError
from mfpo_data.scorers.io import refuse_duplicates
from mfpo_data.scorers.results import make_result, pct
from mfpo_data.scorers.text import lemmatize, singularize, tokenize


# The reference's list of two-word objects (chair.py, `coco_double_words`), in its order.
REFERENCE_DOUBLE_WORDS = (
    "motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal", "stop light",
    "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball", "baseball bat", "baseball glove",
    "tennis racket", "wine glass", "hot dog", "cell phone", "mobile phone", "teddy bear", "hair drier",
    "potted plant", "bow tie", "laptop computer", "stove top oven", "hot dog", "teddy bear", "home plate",
    "train track",
)  # fmt: skip
ANIMAL_WORDS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub")
VEHICLE_WORDS = ("jet", "train")
# RLAIF-V's `synonyms_refine.txt` = the reference list plus these words (category -> added synonyms).
REFINE_ADDITIONS = {
    "person": ("brother", "pedestrian"),
    "dining table": ("coffee table",),
    "remote": ("remote control",),
}


@dataclass(frozen=True)
class ChairVocabulary:
    """Word -> COCO category, the phrases to merge, and how tokens are singularised."""

    synonyms: Mapping[str, str]
    double_words: Mapping[str, str]
    categories: tuple[str, ...]
    settings: Mapping[str, object] = field(default_factory=dict)

    @property
    def protocol(self) -> str:
        return str(self.settings.get("protocol", "reference"))

    def normalise(self, token: str) -> str:
        """A lower-cased token as the protocol reads it: pattern's singular, WordNet's lemma or inflect's."""
        if self.protocol == "rlaifv":
            return lemmatize(token)
        return singularize(token, reference=self.protocol == "reference")


PROTOCOLS = ("reference", "rlaifv", "fixed")


@lru_cache(maxsize=8)
def load_vocabulary(synonyms: str = "coco", protocol: str = "reference") -> ChairVocabulary:
    """The CHAIR vocabulary: `synonyms` is "coco" (the reference list) or "refine" (RLAIF-V's);
    `protocol` is "reference", "rlaifv" or "fixed" (module notes)."""
    if synonyms not in ("coco", "refine"):
        raise MfpoError(f"chair.synonyms must be 'coco' or 'refine', got {synonyms!r}")
    if protocol not in PROTOCOLS:
        raise MfpoError(f"chair protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if protocol == "rlaifv" and synonyms != "refine":
        raise MfpoError("chair protocol 'rlaifv' uses RLAIF-V's refined synonyms: synonyms='refine'")
    text = resources.files("mfpo_data.scorers").joinpath("data/synonyms.txt").read_text(encoding="utf-8")
    rows = []
    for line in text.splitlines():
        # The reference parses with `line.strip().split(', ')`: an entry after a double space keeps
        # its leading space and never matches. RLAIF-V's refined file has the entries stripped; the
        # fixed parse also lower-cases them.
        entries = line.strip().split(", ")
        if synonyms == "refine" or protocol == "fixed":
            entries = [e.strip() for e in entries]
        if protocol == "fixed":
            entries = [e.lower() for e in entries]
        rows.append(entries)
    if synonyms == "refine":
        for row in rows:
            row.extend(REFINE_ADDITIONS.get(row[0], ()))
    words: dict[str, str] = {}
    for row in rows:
        for word in row:
            words[word] = row[0]
    if synonyms == "refine":
        doubles = [w for w in words if len(w.split(" ")) >= 2] + ["home plate", "train track"]
    else:
        doubles = list(REFERENCE_DOUBLE_WORDS)
    double_words = {d: d for d in doubles}
    for animal in ANIMAL_WORDS:
        double_words[f"baby {animal}"] = animal
        double_words[f"adult {animal}"] = animal
    for vehicle in VEHICLE_WORDS:
        double_words[f"passenger {vehicle}"] = vehicle
    double_words["bow tie"] = "tie"
    double_words["toilet seat"] = "toilet"
    double_words["wine glas"] = "wine glass"
    settings = {"synonyms": synonyms, "protocol": protocol}
    return ChairVocabulary(words, double_words, tuple(r[0] for r in rows), settings)


@dataclass(frozen=True)
class Mention:
    """One COCO object named in a text: the word as matched (after merging) and its category."""

    word: str
    category: str


def caption_words(text: str, vocab: ChairVocabulary) -> list[str]:
    """Tokens after singularising and merging two-word phrases (step 1-3 of the module notes)."""
    words = [vocab.normalise(w) for w in tokenize(text.lower())]
    merged, i = [], 0
    while i < len(words):
        pair = " ".join(words[i : i + 2])
        if pair in vocab.double_words:
            merged.append(vocab.double_words[pair])
            i += 2
        else:
            merged.append(words[i])
            i += 1
    if "toilet" in merged and "seat" in merged:
        merged = [w for w in merged if w != "seat"]
    return merged


def find_mentions(text: str, vocab: ChairVocabulary) -> list[Mention]:
    """Every mention of a COCO object in `text`, in order, repeats included."""
    return [Mention(w, vocab.synonyms[w]) for w in caption_words(text, vocab) if w in vocab.synonyms]


def score_chair(
    answers: Sequence[Mapping],
    ground_truth: Mapping[int, Iterable[str]],
    vocab: ChairVocabulary | None = None,
    *,
    scorer: str = "chair",
) -> dict:
    """CHAIRs, CHAIRi, recall and len over `answers` (`{"image_id": int, "answer": str}` dicts).

    `ground_truth` maps each image id to its COCO categories. Returns `make_result(...)` with
    metrics `CHAIRs`, `CHAIRi`, `recall`, `len` (x100, one decimal; len in words), `CHAIRs_refine`
    (RLAIF-V's: over the answers that mention at least one object), `n`, and the raw counts
    (`answers_hallucinated`, `answers_with_objects`, `mentions`, `mentions_hallucinated`,
    `gt_objects`, `gt_objects_mentioned`, `words`), and `unparsed` (empty answers, which score as
    describing nothing). One detail per answer: `image_id`, `mentioned`
    (categories in order, repeats included), `hallucinated` (`[word, category]` pairs), `ground_truth`
    (sorted), `words`.
    """
    vocab = vocab or load_vocabulary()
    if not answers:
        raise MfpoError("chair: no answers to score")
    refuse_duplicates(answers, "image_id", scorer)
    counts = dict.fromkeys(
        ("answers_hallucinated", "answers_with_objects", "mentions", "mentions_hallucinated", "gt_objects",
         "gt_objects_mentioned", "words"), 0)  # fmt: skip
    unparsed = 0
    details = []
    for i, row in enumerate(answers):
        image_id = row["image_id"]
        if image_id not in ground_truth:
            raise MfpoError(f"chair: answer {i + 1} is about image_id {image_id!r}, which has no ground truth")
        gt = set(ground_truth[image_id])
        answer = row["answer"]
        unparsed += not answer.strip()
        mentions = find_mentions(answer, vocab)
        hallucinated = [(m.word, m.category) for m in mentions if m.category not in gt]
        covered = {m.category for m in mentions if m.category in gt}
        counts["mentions"] += len(mentions)
        counts["mentions_hallucinated"] += len(hallucinated)
        counts["answers_hallucinated"] += bool(hallucinated)
        counts["answers_with_objects"] += bool(mentions)
        counts["gt_objects"] += len(gt)
        counts["gt_objects_mentioned"] += len(covered)
        n_words = len(answer.strip().split(" "))
        counts["words"] += n_words
        details.append(
            {
                "image_id": image_id,
                "mentioned": [m.category for m in mentions],
                "hallucinated": [list(h) for h in hallucinated],
                "ground_truth": sorted(gt),
                "words": n_words,
            }
        )
    n = len(answers)
    metrics = {
        "CHAIRs": pct(counts["answers_hallucinated"], n),
        "CHAIRi": pct(counts["mentions_hallucinated"], counts["mentions"]),
        "recall": pct(counts["gt_objects_mentioned"], counts["gt_objects"]),
        "len": round(counts["words"] / n, 1),
        "CHAIRs_refine": pct(counts["answers_hallucinated"], counts["answers_with_objects"]),
        "n": n,
        "unparsed": unparsed,
        "counts": counts,
    }
    return make_result(
        scorer, metrics, ids=[r["image_id"] for r in answers], settings=dict(vocab.settings), details=details
    )
