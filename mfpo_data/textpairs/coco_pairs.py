"""Text preference pairs from COCO annotations alone (no LLM, no network).

*Caption pairs*: the chosen answer is a human caption that names an annotated object; the rejected
answer is the same caption with that object phrase swapped for an absent but plausible COCO object
(same supercategory or a frequent companion) that fits the words around it (`plausibility.py`: no
animal in a uniform, no bed on a shelf), keeping the article and number right. The swapped object is
the key object.

*Presence pairs* (POPE style): "Is there a {object} in the image?" with the grounded answer chosen
over its negation; for an absent object, the key object is the present object it was drawn from,
and the pair names the absent object: "No, there is no dog" stays true whatever is done to the
present objects, so its image pair is not valid unless the perturbation inserts the dog.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from mfpo_data.textpairs.plausibility import ContextStats, why_implausible
from mfpo_data.textpairs.vocabulary import Mention, article, find_mentions, plausible_substitutes, surface


CAPTION_PROMPTS = (
    "Describe this image briefly.",
    "Write a short caption for this image.",
    "What is shown in this picture? Answer in one sentence.",
    "Give a one-sentence description of the image.",
)
PLURAL_ONLY = {"skis", "scissors"}


@dataclass
class TextPair:
    kind: str  # "caption" | "presence"
    key: str  # unique within the image, part of the sample id
    question: str
    chosen: str
    rejected: str
    target: str | None  # the key object's category
    metadata: dict[str, Any]
    absent: str | None = None  # the object the chosen answer says is absent: no region of m makes it true


def normalize_caption(text: str) -> str:
    text = " ".join(text.split())
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def replace_mention(text: str, mention: Mention, new_category: str) -> tuple[str, dict[str, Any]]:
    """Swap the object phrase of `mention` for `new_category`, fixing "a"/"an" and number.

    Returns the new text and what changed: `span` (start, end) of the old phrase in `text`, `old` and
    `new` phrases. Everything outside the span is untouched.
    """
    start, end = mention.start, mention.end
    new_word = surface(new_category, plural_form=mention.is_plural)
    # An article directly before a singular noun agrees with the new word: take it into the phrase.
    before = text[:start]
    art = re.search(r"\b(a|an|A|An)\s+$", before)
    if art and not mention.is_plural:
        start = art.start()
        art_word = article(new_word)
        if art.group(1)[0].isupper():
            art_word = art_word.capitalize()
        new_phrase = f"{art_word} {new_word}"
    else:
        new_phrase = new_word
        if mention.surface[:1].isupper():
            new_phrase = new_phrase[0].upper() + new_phrase[1:]
    old_phrase = text[start:end]
    return text[:start] + new_phrase + text[end:], {"span": [start, end], "old": old_phrase, "new": new_phrase}


def caption_pairs(captions: list[tuple[int, str]], present: set[str], rng: np.random.Generator, n: int,
                  stats: ContextStats | None = None, check_context: bool = True) -> list[TextPair]:
    """Up to `n` caption pairs from `(caption_id, text)` of one image whose annotated categories are `present`.

    A substitute must fit the words around the mention it replaces (`plausibility.why_implausible`,
    with the source's caption statistics `stats`); a caption with no fitting swap makes no pair.
    `check_context=False` skips that check (to measure what it does)."""
    candidates = []
    for caption_id, raw in captions:
        text = normalize_caption(raw)
        mentions = [m for m in find_mentions(text) if m.category in present]
        options = []
        for m in mentions:
            subs = [c for c in plausible_substitutes(m.category, present) if m.is_plural or c not in PLURAL_ONLY]
            if check_context:
                subs = [c for c in subs if why_implausible(text, m, c, stats) is None]
            if subs:
                options.append((m, subs[:4]))  # the most plausible few: companions first, then supercategory
        if len(options) > 1:  # people are swapped only when nothing else is named: "A dog riding..." reads oddly
            options = [o for o in options if o[0].category != "person"] or options
        if options:
            candidates.append((caption_id, text, options))
    order = rng.permutation(len(candidates))[:n]
    pairs = []
    for i in sorted(order):
        caption_id, text, options = candidates[i]
        mention, subs = options[int(rng.integers(len(options)))]
        substitute = subs[int(rng.integers(len(subs)))]
        rejected, change = replace_mention(text, mention, substitute)
        pairs.append(
            TextPair(
                kind="caption",
                key=f"caption:{caption_id}",
                question=CAPTION_PROMPTS[int(rng.integers(len(CAPTION_PROMPTS)))],
                chosen=text,
                rejected=rejected,
                target=mention.category,
                metadata={"caption_id": caption_id, "replaced": {**change, "category": mention.category, "substitute": substitute}},
            )
        )
    return pairs


def _there_is(category: str) -> str:
    word = surface(category)
    if category in PLURAL_ONLY:
        return f"there are {word}"
    return f"there is {article(word)} {word}"


def _question(category: str) -> str:
    word = surface(category)
    if category in PLURAL_ONLY:
        return f"Are there {word} in the image?"
    return f"Is there {article(word)} {word} in the image?"


def _no(category: str) -> str:
    word = surface(category)
    return f"No, there {'are' if category in PLURAL_ONLY else 'is'} no {word} in the image."


def presence_pairs(present: list[str], rng: np.random.Generator, n: int, absent_key: str = "nearest") -> list[TextPair]:
    """`ceil(n/2)` pairs about present objects ("yes" chosen) and `floor(n/2)` about absent ones ("no" chosen)."""
    present_set = set(present)
    pairs: list[TextPair] = []
    yes_n, no_n = (n + 1) // 2, n // 2
    for i in sorted(rng.permutation(len(present))[:yes_n]):
        category = present[i]
        pairs.append(
            TextPair("presence", f"presence:yes:{category}", _question(category),
                     f"Yes, {_there_is(category)} in the image.", _no(category), category, {"answer": "yes", "object": category})
        )  # fmt: skip
    # Absent objects that are plausible here: substitutes of present objects (POPE's "adversarial" setting).
    absent: dict[str, str] = {}
    for category in present:
        for sub in plausible_substitutes(category, present_set)[:4]:
            absent.setdefault(sub, category)
    names = sorted(absent)
    for i in sorted(rng.permutation(len(names))[:no_n]):
        category, nearest = names[i], absent[names[i]]
        pairs.append(
            TextPair("presence", f"presence:no:{category}", _question(category), _no(category),
                     f"Yes, {_there_is(category)} in the image.", nearest if absent_key == "nearest" else None,
                     {"answer": "no", "object": category, "nearest_present": nearest}, absent=category)
        )  # fmt: skip
    return pairs
