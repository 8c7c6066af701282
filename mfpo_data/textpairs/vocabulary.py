"""The COCO object vocabulary: the 80 categories, CHAIR-style synonyms, plurals, and word matching.

`find_mentions(text)` finds every COCO object a sentence talks about, with its character span, so a
caption can be matched to an image's annotations (the CHAIR metric's approach: "man" and "kids" are
`person`, "kitten" is `cat`, "motorbike" is `motorcycle`) and an object phrase can be swapped out
without touching the rest of the sentence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache


# (id, name, supercategory): the official COCO 2014/2017 instances categories.
COCO_CATEGORIES: tuple[tuple[int, str, str], ...] = (
    (1, "person", "person"), (2, "bicycle", "vehicle"), (3, "car", "vehicle"), (4, "motorcycle", "vehicle"),
    (5, "airplane", "vehicle"), (6, "bus", "vehicle"), (7, "train", "vehicle"), (8, "truck", "vehicle"),
    (9, "boat", "vehicle"), (10, "traffic light", "outdoor"), (11, "fire hydrant", "outdoor"),
    (13, "stop sign", "outdoor"), (14, "parking meter", "outdoor"), (15, "bench", "outdoor"),
    (16, "bird", "animal"), (17, "cat", "animal"), (18, "dog", "animal"), (19, "horse", "animal"),
    (20, "sheep", "animal"), (21, "cow", "animal"), (22, "elephant", "animal"), (23, "bear", "animal"),
    (24, "zebra", "animal"), (25, "giraffe", "animal"), (27, "backpack", "accessory"),
    (28, "umbrella", "accessory"), (31, "handbag", "accessory"), (32, "tie", "accessory"),
    (33, "suitcase", "accessory"), (34, "frisbee", "sports"), (35, "skis", "sports"), (36, "snowboard", "sports"),
    (37, "sports ball", "sports"), (38, "kite", "sports"), (39, "baseball bat", "sports"),
    (40, "baseball glove", "sports"), (41, "skateboard", "sports"), (42, "surfboard", "sports"),
    (43, "tennis racket", "sports"), (44, "bottle", "kitchen"), (46, "wine glass", "kitchen"),
    (47, "cup", "kitchen"), (48, "fork", "kitchen"), (49, "knife", "kitchen"), (50, "spoon", "kitchen"),
    (51, "bowl", "kitchen"), (52, "banana", "food"), (53, "apple", "food"), (54, "sandwich", "food"),
    (55, "orange", "food"), (56, "broccoli", "food"), (57, "carrot", "food"), (58, "hot dog", "food"),
    (59, "pizza", "food"), (60, "donut", "food"), (61, "cake", "food"), (62, "chair", "furniture"),
    (63, "couch", "furniture"), (64, "potted plant", "furniture"), (65, "bed", "furniture"),
    (67, "dining table", "furniture"), (70, "toilet", "furniture"), (72, "tv", "electronic"),
    (73, "laptop", "electronic"), (74, "mouse", "electronic"), (75, "remote", "electronic"),
    (76, "keyboard", "electronic"), (77, "cell phone", "electronic"), (78, "microwave", "appliance"),
    (79, "oven", "appliance"), (80, "toaster", "appliance"), (81, "sink", "appliance"),
    (82, "refrigerator", "appliance"), (84, "book", "indoor"), (85, "clock", "indoor"), (86, "vase", "indoor"),
    (87, "scissors", "indoor"), (88, "teddy bear", "indoor"), (89, "hair drier", "indoor"),
    (90, "toothbrush", "indoor"),
)  # fmt: skip

CATEGORY_NAMES = tuple(name for _, name, _ in COCO_CATEGORIES)
SUPERCATEGORY = {name: sup for _, name, sup in COCO_CATEGORIES}

# Words that name each category, in the style of the CHAIR metric's synonym list (singular forms;
# plurals are derived). The first entry is the surface form used when the object is written into text.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": ("person", "man", "woman", "boy", "girl", "child", "kid", "people", "lady", "guy", "adult",
               "baby", "toddler", "player", "rider", "skier", "surfer", "skateboarder", "snowboarder", "chef",
               "worker", "passenger", "pedestrian", "biker", "officer", "policeman", "soldier", "astronaut",
               "footballer", "athlete", "gentleman", "mother", "father", "bride", "groom", "photographer",
               "cameraman", "admiral", "officer", "teenager", "umpire", "batter", "catcher", "pitcher"),
    "bicycle": ("bicycle", "bike", "cycle"),
    "car": ("car", "automobile", "sedan", "suv", "van", "minivan", "taxi", "cab", "jeep", "hatchback"),
    "motorcycle": ("motorcycle", "motorbike", "motor bike", "scooter", "moped", "dirt bike"),
    "airplane": ("airplane", "plane", "jet", "aircraft", "jetliner", "airliner", "aeroplane"),
    "bus": ("bus", "minibus", "coach bus", "double decker"),
    "train": ("train", "locomotive", "tram", "subway"),
    "truck": ("truck", "lorry", "pickup truck", "firetruck", "fire truck"),
    "boat": ("boat", "ship", "sailboat", "yacht", "canoe", "kayak", "ferry", "vessel", "rowboat"),
    "traffic light": ("traffic light", "traffic signal", "stop light", "stoplight"),
    "fire hydrant": ("fire hydrant", "hydrant"),
    "stop sign": ("stop sign",),
    "parking meter": ("parking meter",),
    "bench": ("bench", "park bench", "pew"),
    "bird": ("bird", "robin", "sparrow", "pigeon", "seagull", "gull", "duck", "goose", "owl", "parrot", "swan",
             "finch", "crow", "eagle", "hawk", "heron", "songbird"),
    "cat": ("cat", "kitten", "kitty", "tabby", "feline"),
    "dog": ("dog", "puppy", "pup", "doggy", "canine", "terrier", "poodle", "retriever", "labrador", "bulldog",
            "pug", "beagle", "husky", "chihuahua"),
    "horse": ("horse", "pony", "foal", "stallion", "mare"),
    "sheep": ("sheep", "lamb", "ram", "ewe"),
    "cow": ("cow", "cattle", "calf", "bull", "ox"),
    "elephant": ("elephant",),
    "bear": ("bear", "grizzly", "polar bear"),
    "zebra": ("zebra",),
    "giraffe": ("giraffe",),
    "backpack": ("backpack", "knapsack", "rucksack"),
    "umbrella": ("umbrella", "parasol"),
    "handbag": ("handbag", "purse", "clutch bag"),
    "tie": ("tie", "necktie", "bow tie"),
    "suitcase": ("suitcase", "luggage"),
    "frisbee": ("frisbee",),
    "skis": ("skis", "ski"),
    "snowboard": ("snowboard",),
    "sports ball": ("ball", "soccer ball", "football", "basketball", "volleyball", "tennis ball", "sports ball"),
    "kite": ("kite",),
    "baseball bat": ("baseball bat", "bat"),
    "baseball glove": ("baseball glove", "mitt", "glove"),
    "skateboard": ("skateboard",),
    "surfboard": ("surfboard", "surf board"),
    "tennis racket": ("tennis racket", "racket", "racquet"),
    "bottle": ("bottle",),
    "wine glass": ("wine glass", "wineglass", "glass of wine"),
    "cup": ("cup", "mug", "teacup", "coffee cup", "espresso cup", "coffee mug"),
    "fork": ("fork",),
    "knife": ("knife",),
    "spoon": ("spoon", "teaspoon", "spoonful"),
    "bowl": ("bowl",),
    "banana": ("banana",),
    "apple": ("apple",),
    "sandwich": ("sandwich", "burger", "hamburger", "sub"),
    "orange": ("orange", "tangerine", "mandarin"),
    "broccoli": ("broccoli",),
    "carrot": ("carrot",),
    "hot dog": ("hot dog", "hotdog"),
    "pizza": ("pizza",),
    "donut": ("donut", "doughnut"),
    "cake": ("cake", "cupcake", "cheesecake"),
    "chair": ("chair", "stool", "armchair"),
    "couch": ("couch", "sofa", "loveseat"),
    "potted plant": ("potted plant", "plant", "houseplant", "flower pot", "flowerpot"),
    "bed": ("bed",),
    "dining table": ("table", "dining table", "desk", "tabletop"),
    "toilet": ("toilet", "urinal"),
    "tv": ("tv", "television", "tv screen"),
    "laptop": ("laptop", "notebook computer", "computer"),
    "mouse": ("mouse", "computer mouse"),
    "remote": ("remote", "remote control", "controller"),
    "keyboard": ("keyboard",),
    "cell phone": ("cell phone", "phone", "cellphone", "smartphone", "mobile phone"),
    "microwave": ("microwave",),
    "oven": ("oven", "stove"),
    "toaster": ("toaster",),
    "sink": ("sink",),
    "refrigerator": ("refrigerator", "fridge"),
    "book": ("book", "novel"),
    "clock": ("clock",),
    "vase": ("vase",),
    "scissors": ("scissors",),
    "teddy bear": ("teddy bear", "teddy", "stuffed bear"),
    "hair drier": ("hair drier", "hair dryer", "hairdryer", "blow dryer"),
    "toothbrush": ("toothbrush",),
}  # fmt: skip

# Frequent companions, for absent-object choices where the supercategory offers no plausible one
# (person is alone in its supercategory) and to rank plausible swaps (co-occurrence in COCO scenes).
COMPANIONS: dict[str, tuple[str, ...]] = {
    "person": ("dog", "horse", "cat", "bicycle", "umbrella", "teddy bear"),
    "sports ball": ("frisbee", "kite", "tennis racket", "baseball glove"),
    "dining table": ("chair", "couch", "bed"),
    "cup": ("bowl", "wine glass", "bottle", "fork", "knife"),
    "spoon": ("fork", "knife"),
    "tie": ("handbag", "backpack", "umbrella"),
    "potted plant": ("vase", "chair", "couch"),
    "motorcycle": ("bicycle", "car", "truck"),
    "car": ("truck", "bus", "motorcycle"),
    "cat": ("dog", "bird", "teddy bear"),
    "dog": ("cat", "horse", "sheep"),
    "bird": ("cat", "dog", "kite"),
    "orange": ("apple", "banana", "carrot"),
    "apple": ("orange", "banana", "donut"),
}

_IRREGULAR_PLURALS = {
    "person": "people", "man": "men", "woman": "women", "child": "children", "knife": "knives",
    "mouse": "mice", "sheep": "sheep", "skis": "skis", "scissors": "scissors", "people": "people",
    "cattle": "cattle", "broccoli": "broccoli", "luggage": "luggage", "fish": "fish", "ox": "oxen",
    "wine glass": "wine glasses", "glass of wine": "glasses of wine", "bus": "buses", "calf": "calves",
    "foal": "foals", "goose": "geese", "shelf": "shelves", "spoonful": "spoonfuls", "tv": "tvs",
}  # fmt: skip


def plural(word: str) -> str:
    """English plural of a (possibly multi-word) noun phrase: the last word is inflected."""
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    head, _, last = word.rpartition(" ")
    if last in _IRREGULAR_PLURALS:
        inflected = _IRREGULAR_PLURALS[last]
    elif re.search(r"(s|x|z|ch|sh)$", last):
        inflected = last + "es"
    elif re.search(r"[^aeiou]y$", last):
        inflected = last[:-1] + "ies"
    else:
        inflected = last + "s"
    return f"{head} {inflected}" if head else inflected


def article(word: str) -> str:
    """'a' or 'an' for a following word, by its first sound (approximated by spelling)."""
    w = word.lower()
    if w.startswith(("uni", "use", "eu", "one")):
        return "a"
    if w.startswith(("hour", "honest")):
        return "an"
    return "an" if w[:1] in "aeiou" else "a"


@dataclass(frozen=True)
class Mention:
    """A word or phrase in a text that names a COCO category."""

    category: str
    start: int  # character span of the noun phrase in the text
    end: int
    surface: str  # the words as written
    is_plural: bool


@lru_cache(maxsize=1)
def _surface_index() -> tuple[re.Pattern, dict[str, tuple[str, bool]]]:
    forms: dict[str, tuple[str, bool]] = {}
    for category, words in SYNONYMS.items():
        for w in words:
            forms.setdefault(w, (category, w in ("people", "cattle", "skis", "scissors")))
            p = plural(w)
            if p != w:
                forms.setdefault(p, (category, True))
    # Longest first so "teddy bear" wins over "bear" and "hot dog" over "dog".
    alternatives = sorted(forms, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(re.escape(a) for a in alternatives) + r")\b", re.IGNORECASE)
    return pattern, forms


# Words that, right before a match, show the match is not the object ("orange juice", "hot dog bun").
_NOT_OBJECT_AFTER = re.compile(r"^\s+(juice|peel|light|tree|trees|field|court|player|players|team|cap|hat)\b", re.I)
_NOT_OBJECT_BEFORE = re.compile(r"\b(color|colour|colored|coloured|shades? of)\s*$", re.I)


def find_mentions(text: str) -> list[Mention]:
    """Every COCO object named in `text`, left to right, with spans that do not overlap."""
    return list(_mentions(text))


@lru_cache(maxsize=4096)
def _mentions(text: str) -> tuple[Mention, ...]:
    """`find_mentions`, kept per text: a caption is searched once per candidate swap (`plausibility`), and a
    `Mention` cannot be changed, so the callers share the tuple."""
    pattern, forms = _surface_index()
    mentions = []
    for m in pattern.finditer(text):
        surface = m.group(0)
        category, is_plural = forms[surface.lower()]
        rest, before = text[m.end() :], text[: m.start()]
        if category == "orange" and (_NOT_OBJECT_BEFORE.search(before) or _is_adjective_use(text, m)):
            continue  # "an orange suit" is a colour, not the fruit
        if _NOT_OBJECT_AFTER.match(rest) and category not in ("person",):
            continue
        mentions.append(Mention(category, m.start(), m.end(), surface, is_plural))
    return tuple(mentions)


def _is_adjective_use(text: str, m: re.Match) -> bool:
    # "orange" directly followed by another noun-ish word ("orange suit", "orange cat") is a colour.
    nxt = re.match(r"\s+([a-z]+)", text[m.end() :], re.I)
    if not nxt:
        return False
    pattern, forms = _surface_index()
    word = nxt.group(1).lower()
    return word not in ("and", "or", "on", "in", "with", "is", "are", "sits", "sitting", "lying", "next", "of", "near", "slices", "slice")


def category_of(phrase: str) -> str | None:
    """The COCO category a phrase names ("kitten" -> "cat"), or None."""
    found = find_mentions(phrase)
    if found:
        return found[0].category
    return phrase if phrase in SUPERCATEGORY else None


def surface(category: str, plural_form: bool = False) -> str:
    """How a category is written in text ("sports ball" -> "ball", "dining table" -> "table")."""
    word = {"sports ball": "ball", "dining table": "table", "tv": "television", "hair drier": "hair dryer"}.get(
        category, category
    )
    return plural(word) if plural_form else word


def plausible_substitutes(category: str, present: set[str]) -> list[str]:
    """Absent categories that could plausibly stand in for `category`: same supercategory, then companions."""
    sup = SUPERCATEGORY[category]
    same = [c for c in CATEGORY_NAMES if SUPERCATEGORY[c] == sup and c != category]
    ordered = list(COMPANIONS.get(category, ())) + same
    seen, out = set(), []
    for c in ordered:
        if c not in present and c != category and c not in seen:
            seen.add(c)
            out.append(c)
    return out
