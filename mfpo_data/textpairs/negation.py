"""Negated mentions: does an answer say an object is NOT there ("there is no dog", "I don't see any cars")?

A key object that the chosen answer denies cannot be "made less true" by perturbing the image, so the build
must not take it for the pair's key object. `is_negated(text, phrase)` tells whether every mention of the
phrase in `text` is negated; a phrase that is not mentioned is not negated.

A mention is negated when a negation cue stands before it in the same clause, at most `WINDOW` words away
("no", "not", "n't", "without", "never", "neither", "nor", "none of", "nothing", "lack of", "absence of"), or a
denial of the object follows it in the same clause ("... is absent", "... is not visible", "... are missing",
"... cannot be seen in the image"; not "... is not running"). Clauses end at punctuation and at the words of `CLAUSE_BREAKS` ("but", "and", "while", ...), except
that "or"/"nor" carry a negation on ("no dogs or cats"). A rule, not a parser: "not only a dog" counts as a
denial, which errs on the side of not building an image pair on it.
"""

from __future__ import annotations

import re

from mfpo_data.textpairs.vocabulary import category_of, find_mentions, plural


WINDOW = 5  # words between a preceding cue and the mention
_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?|[.,;:!?()\"]")
_CUES = {"no", "not", "without", "never", "neither", "nor", "none", "nothing", "nobody", "cannot", "lack", "lacks",
         "absence", "absent"}  # fmt: skip
CLAUSE_BREAKS = {"but", "and", "while", "although", "though", "whereas", "however", "which", "who", "that", "instead",
                 "except", "yet", "so", "because", "only"}  # fmt: skip
_DENIED = r"(?:present|visible|there|shown|seen|found|spotted|included|in\s+(?:the|this)\s+(?:image|picture|photo|scene))"
_AFTER = re.compile(  # a denial of the object itself ("is not visible"), not of what it does ("is not running")
    r"^\s*(?:(?:is|are|was|were)\s+(?:not|n't|nowhere)\s+(?:to\s+be\s+)?" + _DENIED + r"|(?:isn't|aren't|wasn't|weren't)\s+"
    + _DENIED + r"|(?:is|are|was|were|seems?|appears?)\s+(?:to\s+be\s+)?(?:absent|missing|nowhere)"
    r"|(?:can|could)\s*(?:not|n't)\s+be\s+(?:seen|found|spotted)(?=\s*(?:$|in\b|anywhere|here|there)))",
    re.IGNORECASE,
)


def _is_cue(word: str) -> bool:
    w = word.lower()
    return w in _CUES or w.endswith("n't")


def _negated_at(text: str, start: int, end: int) -> bool:
    """Whether the mention at text[start:end] is negated (the module docstring's rule)."""
    before = _WORD.findall(text[:start])
    for distance, word in enumerate(reversed(before)):
        if not word[0].isalpha() or word.lower() in CLAUSE_BREAKS:
            break
        if distance >= WINDOW:
            break
        if _is_cue(word):
            return True
    after = re.split(r"[.,;:!?]", text[end:], maxsplit=1)[0]
    return bool(_AFTER.match(after))


def mention_spans(text: str, phrase: str) -> list[tuple[int, int]]:
    """Where `text` mentions `phrase`: as its COCO category (any synonym or plural) when it names one, else as
    the phrase's own words (singular or plural), case-insensitive."""
    category = category_of(phrase)
    if category is not None:
        return [(m.start, m.end) for m in find_mentions(text) if m.category == category]
    words = " ".join(phrase.lower().split())
    if not words:
        return []
    forms = sorted({words, plural(words)}, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(re.escape(f) for f in forms) + r")\b", re.IGNORECASE)
    return [(m.start(), m.end()) for m in pattern.finditer(text)]


def is_negated(text: str, phrase: str) -> bool:
    """True when `text` mentions `phrase` and every mention is negated ("there is no dog, only cats": dog)."""
    spans = mention_spans(text, phrase)
    return bool(spans) and all(_negated_at(text, s, e) for s, e in spans)
