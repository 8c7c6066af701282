"""AMBER (Wang et al., 2023): generative and yes/no hallucination scores, as AMBER's `inference.py`.

Reads AMBER's own files from its `data/` folder: `annotations.json` (one item per id: `type`,
`truth`, and for generative items `hallu`), `relation.json` (object -> associated words) and
`safe_words.txt`. Answers are AMBER's inference format, `[{"id": int, "response": str}]` (a JSON
list, or JSON lines; `answer` is accepted for `response`).

Generative (ids of type "generative"): the nouns of a response that lie in AMBER's vocabulary (the
keys and values of `relation.json`), minus the safe words, are matched to the item's `truth` objects
and their associations, else to its `hallu` objects; a noun that matches no truth object is a
hallucination. CHAIR = hallucinated nouns / nouns, Cover = truth objects mentioned / truth objects,
Hal = % responses with a hallucinated noun, Cog = `hallu` objects mentioned / `hallu` objects.

How each step is done is recorded in `settings` (and shown beside the numbers):
- nouns (`nouns`): the reference keeps the tokens `nltk.pos_tag` tags NN*, lemmatised by NLTK's
  `WordNetLemmatizer`. The lemmatiser here is the same algorithm on WordNet 3.0 (`text.lemmatize`);
  the tagger is NLTK's own when its data is installed (`nouns: nltk`, the reference), else the
  averaged perceptron that ships in `textblob-aptagger` (`nouns: aptagger`), else rules that read the
  common verb and modal uses of vocabulary words ("I can see", "about to ski", "people watch";
  `nouns: rules`), see `tagging`. Case is kept, as in the reference ("Dog" at the start of a sentence
  is not in the vocabulary).
- similarity (`similarity`): the reference also matches words whose spaCy `en_core_web_lg` vectors are
  more similar than 0.8. With spaCy and that model installed (`similarity="spacy"`, or "auto" when
  it loads) the reference rule applies; without them "auto" falls back to exact matches only and the
  result says `similarity: exact`, which the table prints next to the number.

Kept from the reference: the counters start at 0.001 (`data/metrics.txt`), a truth word found among
the associations of an earlier truth object marks that object, and precision/recall/F1 of the yes/no
task take "No" as the positive class with F1 computed from the rounded P and R (+0.0001 in the
denominator, +0.001 for existence). A yes/no response must be exactly "Yes" or "No"
(`parser="exact"`); `parser="lenient"` reads the first word, case-insensitively. Responses read as
neither are counted in `discriminative.overall.unparsed`. The attribute section sums the state, number
and action counters as the reference does (each starting at 0.001).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from mfpo_data.errors import MfpoError
from mfpo_data.scorers.io import (RecordError, id_field, numbered_records, read_answers, read_json, read_text,
                                  refuse_duplicates, shown, text_field, where)
from mfpo_data.scorers.results import make_result
from mfpo_data.scorers.text import lemmatize, tokenize
from mfpo_train.eval.tagging import noun_flags, resolve


_START = 0.001  # AMBER's data/metrics.txt starts every denominator here
SECTIONS = {
    "discriminative-hallucination": "existence",
    "discriminative-attribute-state": "state",
    "discriminative-attribute-number": "number",
    "discriminative-attribute-action": "action",
}  # every other discriminative type ("discriminative-relation", "relation") is "relation"


@dataclass
class AmberData:
    """AMBER's annotations by id, the word associations and the safe words."""

    annotations: dict[int, dict]
    association: dict[str, list[str]]
    safe_words: list[str]

    @property
    def vocabulary(self) -> set[str]:
        words = set(self.association)
        for values in self.association.values():
            words.update(values)
        return words


def load_amber(root: str | Path, *, annotations: str | Path | None = None) -> AmberData:
    """Read `annotations.json`, `relation.json` and `safe_words.txt` from AMBER's `data/` folder."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MfpoError(f"--amber-root: folder not found: {shown(root)}")
    ann_path = Path(annotations) if annotations else root / "annotations.json"
    by_id: dict[int, dict] = {}
    lines: dict[int, int] = {}
    for line, item in numbered_records(ann_path, ("id", "type", "truth"), "AMBER annotations file"):
        item_id = id_field(item, "id", ann_path, line, text=False)
        kind = text_field(item, ("type",), ann_path, line)
        if kind == "generative":
            for name in ("truth", "hallu"):
                _words(item.get(name, []), f"field {name!r}", ann_path, line)
        elif text_field(item, ("truth",), ann_path, line).strip().lower() not in ("yes", "no"):
            raise RecordError(f"{where(ann_path, line)}: field 'truth' of a yes/no item must be yes or no, got "
                              f"{item['truth']!r}", ann_path, line)
        if item_id in by_id:
            raise RecordError(f"{where(ann_path, line)}: id {item_id} appears again (first on line {lines[item_id]})",
                              ann_path, line)
        by_id[item_id], lines[item_id] = {**item, "id": item_id}, line
    rel_path = root / "relation.json"
    rel = read_json(rel_path, "AMBER relation file")
    if not isinstance(rel, dict):
        raise RecordError(f"{shown(rel_path)}: expected a JSON object (word -> associated words)", rel_path)
    for word, values in rel.items():
        _words(values, f"the entry {word!r}", rel_path, None)
    safe = read_text(root / "safe_words.txt", "AMBER safe words file")
    safe = safe.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # as Python's text mode reads it
    return AmberData(by_id, rel, [w for w in safe if w])


def _words(value, what: str, path: Path, line: int | None) -> None:
    if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
        raise RecordError(f"{where(path, line)}: {what} must be a list of words", path, line)


def read_amber_answers(path: str | Path, ids=None) -> list[dict]:
    """AMBER inference answers: `{"id", "response"}` (or `answer`) items, JSON list or JSON lines.

    With `ids` (the annotations' ids), an answer to an id outside them is refused (`io.read_answers`).
    """
    rows = read_answers(path, "id", ids=ids, benchmark="AMBER's annotations", text=("response", "answer"))
    return [{"id": row["id"], "response": row["answer"]} for row in rows]


@lru_cache(maxsize=2)
def _spacy_similarity(model: str) -> Callable[[str, str], float] | None:
    try:
        import spacy

        nlp = spacy.load(model)
    except Exception:  # noqa: BLE001 - not installed, or the model is missing: fall back to exact
        return None
    cache: dict[str, object] = {}

    def sim(a: str, b: str) -> float:
        for w in (a, b):
            if w not in cache:
                cache[w] = nlp(w)
        return cache[a].similarity(cache[b])

    return sim


def resolve_similarity(similarity: str = "auto", spacy_model: str = "en_core_web_lg") -> str:
    """"spacy" or "exact": what `similarity` stands for here; "spacy" without spaCy's model is a one-line error."""
    if similarity not in ("auto", "exact", "spacy"):
        raise MfpoError(f"amber.similarity must be auto, exact or spacy, got {similarity!r}")
    if similarity == "exact":
        return "exact"
    if _spacy_similarity(spacy_model) is None:
        if similarity == "spacy":
            raise MfpoError(f"amber: similarity 'spacy' needs spaCy and its model {spacy_model!r} installed "
                            f"(pip install spacy && python -m spacy download {spacy_model})")
        return "exact"
    return "spacy"


def amber_nouns(text: str, vocabulary: set[str], nouns: str = "auto") -> list[str]:
    """The response's nouns (lemmatised) that are in AMBER's vocabulary, in order (see the module notes).

    `nouns` is the tagger: "nltk", "aptagger", "rules" or "auto" (`tagging.resolve`).
    """
    tokens = tokenize(text)
    flags = noun_flags(tokens, lambda t: lemmatize(t) in vocabulary, resolve(nouns))
    lemmas = (lemmatize(t) for t, is_noun in zip(tokens, flags, strict=True) if is_noun)
    return [w for w in lemmas if w in vocabulary]


def coverage(answered: Sequence[int], data: AmberData) -> dict[str, str]:
    """Per task answered ("generative", "discriminative"): "complete" when the answers cover every item of that
    type in annotations.json, else "partial: n=X of the Y AMBER <task> items: not comparable with published tables"
    (the reference scores whatever its inference file holds; a table number needs the whole set)."""
    done = set(answered)
    out = {}
    for task in ("generative", "discriminative"):
        items = [i for i, item in data.annotations.items() if (item["type"] == "generative") == (task == "generative")]
        n = sum(i in done for i in items)
        if n:
            out[task] = "complete" if n == len(items) else \
                f"partial: n={n} of the {len(items)} AMBER {task} items: not comparable with published tables"
    return out


def _mark(flags: list, j: int, tail: int) -> None:
    # inference.py: an association hit (j in the head) marks the object it belongs to (flags[j]).
    if j < len(flags) - tail:
        flags[flags[j] + len(flags) - tail] = 1
    else:
        flags[j] = 1


def _generative(item: dict, nouns: list[str], data: AmberData, similar: Callable[[str, str], bool]) -> tuple:
    assoc = data.association
    for word in list(item["truth"]) + list(item.get("hallu", [])):
        if word not in assoc:
            raise MfpoError(f"AMBER item {item['id']}: object {word!r} is not in relation.json")
    safe_words, safe_list = [], []
    for idx, word in enumerate(item["truth"]):
        safe_words += assoc[word]
        safe_list += [idx] * len(assoc[word])
    ha_words, ha_list = [], []
    for idx, word in enumerate(item.get("hallu", [])):
        ha_words += assoc[word]
        ha_list += [idx] * len(assoc[word])
    safe_words += item["truth"]
    safe_len = len(item["truth"])
    safe_list += [0] * safe_len
    ha_words += item.get("hallu", [])
    ha_len = len(item.get("hallu", []))
    ha_list += [0] * ha_len
    hallucinated = [0] * len(nouns)
    for idx, noun in enumerate(nouns):
        if noun in data.safe_words:
            continue
        if noun in safe_words:
            _mark(safe_list, safe_words.index(noun), safe_len)
            continue
        if noun in ha_words:
            _mark(ha_list, ha_words.index(noun), ha_len)
        for j, word in enumerate(ha_words):
            if similar(noun, word):
                _mark(ha_list, j, ha_len)
                break
        matched = False
        for j, word in enumerate(safe_words):
            if similar(noun, word):
                _mark(safe_list, j, safe_len)
                matched = True
                break
        if not matched:
            hallucinated[idx] = 1
    # `list[-0:]` is the whole list: kept, as the reference computes it.
    return hallucinated, safe_list[-safe_len:], ha_list[-ha_len:]


def _yes_no(response: str, parser: str) -> str | None:
    if parser == "exact":
        return {"Yes": "yes", "No": "no"}.get(response)
    words = re.findall(r"[a-z]+", response.lower())
    return words[0] if words and words[0] in ("yes", "no") else None


def _prf(c: Mapping[str, float], eps: float) -> dict[str, float]:
    acc = round(c["correct"] / c["num"] * 100, 1)
    precision = round(c["ans_no_score"] / c["ans_no_num"] * 100, 1)
    recall = round(c["no_score"] / c["no_num"] * 100, 1)
    f1 = round(2 * (precision / 100) * (recall / 100) / ((precision / 100) + (recall / 100) + eps) * 100, 1)
    return {"Accuracy": acc, "Precision": precision, "Recall": recall, "F1": f1, "n": int(c["num"])}


def score_amber(
    answers: Sequence[Mapping],
    data: AmberData,
    *,
    similarity: str = "auto",
    threshold: float = 0.8,
    spacy_model: str = "en_core_web_lg",
    parser: str = "exact",
    nouns: str = "auto",
) -> dict:
    """AMBER's metrics for `answers` (`{"id", "response"}`), generative and discriminative parts.

    Returns `make_result(...)` with `generative: {CHAIR, Cover, Hal, Cog, n, unparsed (empty responses)}` (when there are
    generative answers) and `discriminative: {overall, existence, attribute, state, number, action,
    relation}`, each `{Accuracy, Precision, Recall, F1, n}` (sections without answers are left out).
    Settings record `similarity` as "exact" or "spacy:<model>" and `nouns` as the tagger used.
    """
    if parser not in ("exact", "lenient"):
        raise MfpoError(f"amber.parser must be exact or lenient, got {parser!r}")
    refuse_duplicates(answers, "id", "amber")
    sim = _spacy_similarity(spacy_model) if resolve_similarity(similarity, spacy_model) == "spacy" else None
    similar = (lambda a, b: sim(a, b) > threshold) if sim else (lambda a, b: a == b)
    tagger = resolve(nouns)
    vocabulary = data.vocabulary
    g = dict.fromkeys(("chair_score", "safe_cover_score", "hallu_cover_score", "non_hallu_score"), 0.0)
    g.update(dict.fromkeys(("chair_num", "safe_cover_num", "hallu_cover_num", "non_hallu_num"), _START))
    sections = ("overall", "existence", "state", "number", "action", "relation")
    d = {
        s: dict.fromkeys(("correct", "no_score", "ans_no_score"), 0.0)
        | dict.fromkeys(("num", "no_num", "ans_no_num"), _START)
        for s in sections
    }
    details = []
    unparsed = g_empty = 0
    for row in answers:
        item = data.annotations.get(row["id"])
        if item is None:
            raise MfpoError(f"amber: answer id {row['id']!r} is not in annotations.json")
        if item["type"] == "generative":
            found = amber_nouns(row["response"], vocabulary, tagger)
            hallucinated, cover, cog = _generative(item, found, data, similar)
            g["chair_score"] += sum(hallucinated)
            g["chair_num"] += len(hallucinated)
            g["safe_cover_score"] += sum(cover)
            g["safe_cover_num"] += len(cover)
            g["hallu_cover_score"] += sum(cog)
            g["hallu_cover_num"] += len(cog)
            g["non_hallu_score"] += sum(hallucinated) == 0
            g["non_hallu_num"] += 1
            g_empty += not row["response"].strip()
            details.append({"id": row["id"], "type": "generative", "nouns": found,
                            "hallucinated": [n for n, h in zip(found, hallucinated, strict=True) if h]})  # fmt: skip
            continue
        section = SECTIONS.get(item["type"], "relation")
        pred, truth = _yes_no(row["response"], parser), str(item["truth"]).lower()
        unparsed += pred is None
        for s in ("overall", section):
            c = d[s]
            c["num"] += 1
            c["correct"] += pred == truth
            if truth == "no":
                c["no_num"] += 1
                c["no_score"] += pred == "no"
            if pred == "no":
                c["ans_no_num"] += 1
                c["ans_no_score"] += truth == "no"
        details.append({"id": row["id"], "type": item["type"], "truth": truth, "pred": pred})
    metrics: dict = {}
    if g["non_hallu_num"] > _START:
        metrics["generative"] = {
            "CHAIR": round(g["chair_score"] / g["chair_num"] * 100, 1),
            "Cover": round(g["safe_cover_score"] / g["safe_cover_num"] * 100, 1),
            "Hal": round(100 - g["non_hallu_score"] / g["non_hallu_num"] * 100, 1),
            "Cog": round(g["hallu_cover_score"] / g["hallu_cover_num"] * 100, 1),
            "n": round(g["non_hallu_num"] - _START),
            "unparsed": g_empty,
        }
    parts = [d[s] for s in ("state", "number", "action")]  # the reference sums the three sections' counters
    d["attribute"] = {k: sum(c[k] for c in parts) for k in parts[0]}
    disc = {s: _prf(d[s], 0.001 if s == "existence" else 0.0001)
            for s in ("overall", "existence", "attribute", "state", "number", "action", "relation")
            if d[s]["num"] > _START * (3 if s == "attribute" else 1) + 1e-9}
    if disc:
        disc["overall"]["unparsed"] = unparsed
        metrics["discriminative"] = disc
    metrics["n"] = len(answers)
    settings = {
        "similarity": f"spacy:{spacy_model}" if sim else "exact",
        "threshold": threshold,
        "nouns": tagger,
        "parser": parser,
    }
    return make_result("amber", metrics, ids=[r["id"] for r in answers], settings=settings, details=details)
