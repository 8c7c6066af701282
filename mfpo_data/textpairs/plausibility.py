"""Whether a swapped-in object fits the sentence of a caption negative, so the rejected caption cannot
be rejected from its text alone ("An elderly dog in a dark military uniform" can; "A long haired cat
lies on a blue blanket" cannot).

A swap of object c for substitute s is checked against the words around c's mention (a few words on
each side, within the clause):

- **bound words**: words that only fit some objects, in the caption conventions of COCO. After a
  mention: what its subject does or has ("wearing", "in a uniform", "panting", "perched",
  "on its kickstand", "with a dimpled peel"); before it: how it is described or what is done to it
  ("tabby", "elderly", "ripe", "round", "passing a ..."). A bound word next to c allows only the
  objects it fits; `s` must be one of them.
- **colours and materials**: "a shiny red banana" and "a small silver wine glass" do not fit.
- **people**: a person is swapped only for an animal, only when no word binds the mention to people,
  and never when the caption names them by a role ("astronaut", "a woman astronaut", "officer").
- **statistics**: `ContextStats`, counted from the source's own captions (every caption of a COCO
  split), adds the bound words that the captions show (a word seen at least `min_count` times next to
  objects, with at most `max_categories` categories) and widens the lexicon's entries by the objects
  the captions do show with the word ("a dog wearing a hat" is common in COCO). On the small bundled
  sample it finds too little to change anything; on a COCO split it does.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from mfpo_data.textpairs.vocabulary import SUPERCATEGORY, SYNONYMS, Mention, find_mentions, plural


def _kind(*supercategories: str) -> frozenset[str]:
    return frozenset(c for c, sup in SUPERCATEGORY.items() if sup in supercategories)


PERSON = frozenset({"person"})
ANIMALS = _kind("animal")
FRUIT = frozenset({"banana", "apple", "orange"})
RIDDEN = frozenset({"horse", "elephant", "bicycle", "motorcycle", "skateboard", "surfboard", "snowboard", "skis",
                    "boat", "cow"})  # fmt: skip
BALLS = frozenset({"sports ball", "frisbee"})
ON_A_SHELF = frozenset({"book", "vase", "clock", "potted plant", "bottle", "cup", "bowl", "wine glass", "teddy bear",
                        "remote", "cell phone", "scissors", "toothbrush", "hair drier", "apple", "orange", "banana",
                        "donut", "cake", "microwave", "toaster", "laptop", "keyboard", "mouse", "tv"})  # fmt: skip

# Words after the clause's first mention, its subject: what it does or wears -> the objects they fit.
SUBJECT_AFTER: dict[str, frozenset[str]] = dict.fromkeys(
    ("wearing", "wears", "dressed", "uniform", "suit", "jacket", "shirt", "coat", "gloves", "smiling", "smiles",
     "poses", "posing", "using", "uses", "operates", "operating", "typing", "talking", "ribbons", "helmet", "glasses",
     "beard", "holding", "holds", "tripod", "reading", "swinging", "slicing", "cutting", "brushing", "hitting",
     "doing", "riding", "rides", "skiing", "surfing", "skating", "working", "cooking", "taking", "carrying",
     "throwing", "flying"), PERSON) | dict.fromkeys(
    ("sleeping", "sleeps", "eating", "eats", "catching", "catches", "running", "runs", "looking", "looks", "walking",
     "walks", "lying", "lies", "laying", "smiling", "panting"), PERSON | ANIMALS)  # fmt: skip
# A person becomes an animal only when what follows is something animals do too ("People walking on a sidewalk").
ANIMAL_DOINGS = frozenset({"standing", "stands", "sitting", "sits", "lying", "lies", "laying", "lays", "walking",
                           "walks", "running", "runs", "sleeping", "sleeps", "looking", "looks", "resting", "rests",
                           "waiting", "waits", "crossing", "jumping", "on", "in", "at", "near", "next", "by",
                           "beside", "and", "with", "under", "behind"})  # fmt: skip
SMALL_ANIMALS = frozenset({"bird", "cat", "dog"})
# Words after a mention (what it has, where it is) -> the objects they fit.
AFTER: dict[str, frozenset[str]] = {
    "whiskers": frozenset({"cat", "dog"}),
    "chest": ANIMALS | PERSON,
    "blanket": frozenset({"cat", "dog", "teddy bear", "person", "bird"}),
    **dict.fromkeys(("grip", "handle", "branch", "twig"), frozenset({"bird", "cat"})),
    "panting": frozenset({"dog"}),
    "barking": frozenset({"dog"}),
    "tongue": ANIMALS - {"bird"},
    "paws": frozenset({"cat", "dog", "bear", "teddy bear"}),
    **dict.fromkeys(("perched", "perches", "perching", "perch", "breast", "beak", "feathers", "wings"), frozenset({"bird"})),
    **dict.fromkeys(("parked", "garage", "workshop", "seat"), frozenset({"car", "bus", "truck", "motorcycle", "bicycle"})),
    **dict.fromkeys(("lights", "brake", "tail"), frozenset({"car", "bus", "truck", "motorcycle"})),
    "saucer": frozenset({"cup", "spoon", "fork", "knife"}),
    **dict.fromkeys(("pillow", "pillows", "sheets"), frozenset({"bed", "couch"})),
    **dict.fromkeys(("floating", "lake", "harbor", "shore", "river", "dock", "water"), frozenset({"boat", "bird"})),
    **dict.fromkeys(("leaning", "leans", "leaned"), frozenset({"bicycle", "motorcycle", "surfboard", "skateboard", "skis",
                                                              "snowboard", "person", "umbrella"})),  # fmt: skip
    **dict.fromkeys(("slice", "slices", "wedge", "wedges"), frozenset({"cake", "pizza", "apple", "orange", "banana", "carrot"})),
    "kickstand": frozenset({"motorcycle", "bicycle"}),
    "plate": frozenset({"car", "truck", "bus", "motorcycle"}),  # a license plate (a dinner plate comes before)
    "leaves": frozenset({"potted plant", "broccoli"}),
    "pot": frozenset({"potted plant"}),
    "peel": frozenset({"orange", "banana"}),
    "dimpled": frozenset({"orange"}),
    "mane": frozenset({"horse", "zebra"}),
    "grazing": frozenset({"horse", "sheep", "cow", "zebra", "giraffe", "elephant"}),
    **dict.fromkeys(("pepperoni", "cheese", "toppings", "crust", "mustard", "ketchup"), frozenset({"pizza", "sandwich", "hot dog"})),
    **dict.fromkeys(("driving", "street", "road", "highway", "traffic"), frozenset({"car", "bus", "truck", "motorcycle", "bicycle"})),
    **dict.fromkeys(("station", "platform", "tracks", "rails"), frozenset({"train", "bus"})),
}
# Heads of compounds: "a clock tower" is not a clock, "a laptop keyboard" not a laptop.
COMPOUND_HEADS = frozenset({"tower", "keyboard", "screen", "station", "stand", "shop", "store", "rack", "tray", "case",
                            "box", "holder", "stall", "cover", "lot", "sign", "pole", "park", "wagon", "dryer", "bag"})  # fmt: skip
# A verb anywhere in the sentence that needs its instrument: "slicing a cake with a large knife".
INSTRUMENTS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "knife": (frozenset({"slicing", "cutting", "cuts", "slices"}), frozenset({"knife", "scissors"})),
    "toothbrush": (frozenset({"brushing", "brushes", "teeth"}), frozenset({"toothbrush"})),
    "tennis racket": (frozenset({"tennis"}), frozenset({"tennis racket"})),
    "book": (frozenset({"reading", "reads"}), frozenset({"book", "cell phone", "laptop"})),
}
FRUIT_WORDS = frozenset({"fruit", "fruits", "lemon", "lemons", "lime", "limes", "kiwi", "kiwis", "grapes", "basket"})
TABLEWARE = frozenset({"plate", "plates", "dish", "dishes", "napkin", "food", "meal"})
LIQUIDS: dict[str, frozenset[str]] = {
    **dict.fromkeys(("coffee", "tea", "espresso", "cappuccino", "latte"), frozenset({"cup"})),
    "wine": frozenset({"wine glass", "bottle"}),
    **dict.fromkeys(("water", "milk", "juice", "beer", "soda"), frozenset({"cup", "bottle", "wine glass"})),
    **dict.fromkeys(("flowers", "roses", "tulips"), frozenset({"vase"})),
}
CONTAINERS = frozenset({"cup", "bowl", "bottle", "wine glass", "vase"})
SURFACES = frozenset({"dining table", "bed", "couch", "chair", "bench", "toilet", "sink", "laptop", "keyboard",
                      "skateboard", "surfboard", "snowboard", "motorcycle", "bicycle", "horse", "elephant", "boat",
                      "suitcase", "refrigerator", "oven", "microwave", "car", "truck", "bus", "train"})  # fmt: skip
# A room named anywhere in the caption keeps furniture, appliances and electronics to what is found there.
ROOMS: dict[str, frozenset[str]] = {
    "bathroom": frozenset({"toilet", "sink", "toothbrush", "hair drier", "bottle", "cup", "scissors", "potted plant",
                           "vase", "chair"}),
    "kitchen": _kind("appliance", "kitchen", "food") | frozenset({"dining table", "chair", "potted plant", "vase",
                                                                 "clock", "tv", "laptop", "cell phone", "book"}),
    "living": frozenset({"couch", "chair", "tv", "dining table", "potted plant", "vase", "clock", "book", "remote",
                         "laptop", "teddy bear"}),  # a living room
    "bedroom": frozenset({"bed", "chair", "couch", "tv", "laptop", "book", "clock", "lamp", "potted plant", "vase",
                          "teddy bear", "remote", "cell phone", "suitcase", "dining table"}),
}  # fmt: skip
ROOM_BOUND = _kind("furniture", "appliance", "electronic")
# Words before a mention (how it is described, what is done to it) -> the objects they fit.
BEFORE: dict[str, frozenset[str]] = {
    **dict.fromkeys(("elderly", "bearded", "female", "male", "smiling"), PERSON),
    "young": PERSON | ANIMALS,
    "tabby": frozenset({"cat"}),
    **dict.fromkeys(("shirt", "jacket", "suit", "collar", "blouse"), frozenset({"tie"})),  # "a white shirt and tie"
    **dict.fromkeys(("wearing", "wears", "glasses"), frozenset({"tie", "backpack", "handbag", "skis"})),
    **dict.fromkeys(("hat", "cap"), frozenset({"tie"})),  # "a cap and black tie": a list of clothes
    "happy": PERSON | frozenset({"dog", "cat"}),
    **dict.fromkeys(("plant", "plants", "flower", "flowers"), frozenset({"potted plant", "vase", "bowl", "cup", "bottle"})),
    "shaggy": ANIMALS | frozenset({"teddy bear"}),
    "haired": frozenset({"cat", "dog", "horse", "person"}),
    "ripe": FRUIT | frozenset({"broccoli", "carrot"}),
    "round": frozenset({"orange", "apple", "pizza", "donut", "cake", "sports ball", "clock", "bowl", "dining table",
                        "frisbee", "cup"}),  # fmt: skip
    **dict.fromkeys(("passing", "kicking", "throwing", "tossing", "catching", "catches", "dribbling", "bouncing", "bat", "hitting", "hits",
                     "racket"), BALLS),  # fmt: skip
    **dict.fromkeys(("swinging", "swings"), frozenset({"baseball bat", "tennis racket"})),
    **dict.fromkeys(("parked", "garage", "workshop"), frozenset({"car", "bus", "truck", "motorcycle", "bicycle"})),
    **dict.fromkeys(("slice", "slices", "cut", "sliced"), frozenset({"cake", "pizza", "apple", "orange", "banana", "carrot"})),
    "another": frozenset(),  # "facing another man": the same kind as one named before
    **dict.fromkeys(("espresso", "coffee", "tea"), frozenset({"cup"})),
    "furry": frozenset({"cat", "dog", "teddy bear", "sheep", "bear"}),
    **dict.fromkeys(("wave", "waves"), frozenset({"surfboard", "boat"})),
    **dict.fromkeys(("talking", "texting"), frozenset({"cell phone"})),
    **dict.fromkeys(("riding", "rides", "ride"), RIDDEN),
    **dict.fromkeys(("drinking", "sipping"), frozenset({"cup", "bottle", "wine glass"})),
    **dict.fromkeys(("eating", "eats"), _kind("food")),
}
COLOURS = frozenset({"red", "green", "yellow", "orange", "brown", "pink", "purple", "blue", "white", "black", "grey",
                     "gray", "golden"})  # fmt: skip
# The colours a food is in COCO photos; a colour word before a food outside its colours does not fit.
FOOD_COLOURS: dict[str, frozenset[str]] = {
    "banana": frozenset({"yellow", "green", "brown"}), "apple": frozenset({"red", "green", "yellow"}),
    "orange": frozenset({"orange"}), "broccoli": frozenset({"green"}), "carrot": frozenset({"orange"}),
    "donut": frozenset({"pink", "brown", "white", "chocolate"}), "cake": frozenset({"white", "pink", "brown"}),
    "sandwich": frozenset(), "hot dog": frozenset(), "pizza": frozenset(),
}  # fmt: skip
MATERIALS = frozenset({"silver", "metal", "metallic", "steel", "chrome"})
METAL_OK = _kind("vehicle", "appliance", "electronic") | frozenset({"fork", "knife", "spoon", "scissors", "clock",
                                                                    "parking meter", "fire hydrant", "bench", "chair",
                                                                    "vase", "baseball bat"})  # fmt: skip
# People named by what they do: swapping them for anything reads absurdly ("A cat in a flight suit").
PLAIN_PEOPLE = frozenset({"person", "people", "persons", "man", "men", "woman", "women", "boy", "boys", "girl", "girls",
                          "child", "children", "kid", "kids", "baby", "babies", "guy", "guys", "lady", "ladies",
                          "adult", "adults", "toddler", "toddlers"})  # fmt: skip
PERSON_WORDS = frozenset(w for s in SYNONYMS["person"] for w in (s, plural(s)))
# Names of objects: next to a mention they say what else is there (co-occurrence), not what fits.
OBJECT_WORDS = frozenset(w for names in SYNONYMS.values() for s in names for w in f"{s} {plural(s)}".split())
SHELF = re.compile(r"^\W*(?:\w+\s+){0,2}on\s+(?:a|the|some)?\s*(?:\w+\s+)?shel(?:f|ves)\b", re.I)
STOP = frozenset({"the", "and", "with", "that", "this", "its", "his", "her", "their", "from", "into", "onto", "are",
                  "for", "has", "have", "while", "some", "two", "three", "very", "there", "other", "one", "near",
                  "next", "off", "out", "over", "under", "down", "top", "front", "behind", "who", "which"})  # fmt: skip
WINDOW_BEFORE, WINDOW_AFTER = 2, 5  # content words


def _words(text: str) -> list[str]:
    """The content words: no articles, prepositions or other small words (they bind nothing)."""
    return [w for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 2 and w not in STOP]


def context(text: str, mention: Mention) -> tuple[list[str], list[str]]:
    """The words before and after a mention, within its clause (a comma, semicolon or full stop ends one)."""
    before = re.split(r"[,.;:!?]", text[: mention.start])[-1]
    after = re.split(r"[,.;:!?]", text[mention.end :])[0]
    return _words(before)[-WINDOW_BEFORE:], _words(after)[:WINDOW_AFTER]


@dataclass
class ContextStats:
    """How often each word stands next to a mention of each category, in the source's own captions."""

    counts: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    min_count: int = 20
    max_categories: int = 4
    share: float = 0.05  # a category counts as the word's when it has at least this share of its mentions

    def add(self, text: str, mentions: list[Mention]) -> None:
        for m in mentions:
            before, after = context(text, m)
            for word in set(before + after) - OBJECT_WORDS:
                self.counts[word][m.category] += 1

    def categories(self, word: str) -> frozenset[str] | None:
        """The categories a frequent word goes with; None when the word is rare here."""
        seen = self.counts.get(word)
        if not seen or sum(seen.values()) < self.min_count:
            return None
        total = sum(seen.values())
        return frozenset(c for c, n in seen.items() if n >= self.share * total)

    def to_dict(self) -> dict:
        """Only the words frequent enough to matter (what a build ships to its workers)."""
        return {w: dict(c) for w, c in sorted(self.counts.items()) if sum(c.values()) >= self.min_count}

    @classmethod
    def from_dict(cls, data: dict, **kw) -> ContextStats:
        stats = cls(**kw)
        for word, counts in data.items():
            stats.counts[word] = Counter(counts)
        return stats


def why_implausible(text: str, mention: Mention, substitute: str, stats: ContextStats | None = None) -> str | None:
    """Why putting `substitute` in place of `mention` does not fit the sentence; None when it fits."""
    before, after = context(text, mention)
    clause_start = re.split(r"[,.;:!?]", text[: mention.start])[-1]
    is_subject = not any(m.end <= mention.start for m in find_mentions(clause_start)) and not re.search(
        r"\b(on|in|at|with|by|near|beside)\s+(\w+\s+){0,3}$", clause_start.lower())
    raw_next = re.match(r"\W*([a-z']+)", text[mention.end :].lower())
    raw_next = raw_next.group(1) if raw_next else ""
    raw_before = re.findall(r"[a-z]+", clause_start.lower())
    if raw_next in COMPOUND_HEADS or _next_is_mention(text, mention) or _prev_is_mention(text, mention):
        return f"'{mention.surface}' is part of a compound"
    if mention.category == "person":
        if substitute not in ANIMALS:
            return f"a person swapped for a {substitute}"
        if mention.surface.lower() not in PLAIN_PEOPLE:
            return f"'{mention.surface}' names a person by a role"
        role = next((w for w in before + after if w in PERSON_WORDS and w not in PLAIN_PEOPLE), None)
        if role:
            return f"'{role}' beside it names a person by a role"
        seen = stats.categories(raw_next) if stats is not None and raw_next else None
        if raw_next and raw_next not in ANIMAL_DOINGS and not (seen and substitute in seen):
            return f"'{raw_next}' is something people do"
    if mention.category in ANIMALS and substitute in ANIMALS and (mention.category in SMALL_ANIMALS) != (substitute in SMALL_ANIMALS):
        return f"a {substitute} is not the size of a {mention.category}"
    tables = [(after, AFTER), (before, BEFORE)] + ([(after, SUBJECT_AFTER)] if is_subject else [])
    for words, table in tables:
        for word in words:
            allowed = _allowed(word, table, stats)
            if allowed is not None and substitute not in allowed:
                return f"'{word}' fits {mention.category} but not {substitute}"
    if mention.category in CONTAINERS and raw_next == "of":
        content = _words(text[mention.end :])[:1]
        fits = LIQUIDS.get(content[0], frozenset({"bowl"})) if content else frozenset({"bowl"})
        if substitute not in fits:
            return f"a {substitute} of {content[0] if content else 'it'}"
    if {"on", "onto", "atop"} & set(raw_before[-3:]):
        if substitute not in SURFACES:
            return f"something on a {substitute}"
    if "at" in raw_before[-3:]:
        if mention.category == "dining table" and substitute != "dining table":
            return f"sitting at a {substitute}"
    words = set(_words(text))
    if mention.category in INSTRUMENTS:
        verbs, fits = INSTRUMENTS[mention.category]
        if words & verbs and substitute not in fits:
            return f"'{sorted(words & verbs)[0]}' needs a {mention.category}, not a {substitute}"
    if mention.category in FRUIT | {"carrot", "broccoli"} and words & FRUIT_WORDS and substitute not in FRUIT:
        return f"a {substitute} among fruit"
    if mention.category == "dining table" and words & TABLEWARE:
        return f"the {sorted(words & TABLEWARE)[0]} stands on a table, not a {substitute}"
    if substitute in ROOM_BOUND:
        for room, allowed in ROOMS.items():
            if re.search(rf"\b{room}\b", text, re.I) and substitute not in allowed:
                return f"a {substitute} in a {room}"
    if SHELF.match(text[mention.end :]) and substitute not in ON_A_SHELF:
        return f"a {substitute} on a shelf"
    near = before[-2:]
    if substitute in FOOD_COLOURS:
        clash = [w for w in near if w in COLOURS and w not in FOOD_COLOURS[substitute]]
        if clash:
            return f"a {clash[0]} {substitute}"
    if substitute not in METAL_OK and any(w in MATERIALS for w in near):
        return f"a {next(w for w in near if w in MATERIALS)} {substitute}"
    return None


def _next_is_mention(text: str, mention: Mention) -> bool:
    return any(m.start > mention.end and not text[mention.end : m.start].strip() for m in find_mentions(text))


def _prev_is_mention(text: str, mention: Mention) -> bool:
    return any(m.end < mention.start and not text[m.end : mention.start].strip() for m in find_mentions(text))


def _allowed(word: str, table: dict[str, frozenset[str]], stats: ContextStats | None) -> frozenset[str] | None:
    """The objects `word` fits: the lexicon's, widened by the captions' statistics; or the statistics'
    alone for a frequent word that goes with few categories; None when the word binds nothing."""
    seen = stats.categories(word) if stats is not None else None
    if word in table:
        return table[word] | (seen or frozenset())
    if seen is not None and len(seen) <= stats.max_categories:
        return seen
    return None
