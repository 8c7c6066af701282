import numpy as np
import pytest

from mfpo_data.textpairs.coco_pairs import caption_pairs, normalize_caption, presence_pairs, replace_mention
from mfpo_data.textpairs.vocabulary import SUPERCATEGORY, category_of, find_mentions, plural


CAPTIONS = [
    (1, "a man riding a red motorbike past two parked cars"),
    (2, "An orange cat sleeping on a couch next to a laptop."),
    (3, "Three oranges and an apple on a wooden table."),
    (4, "A kitten plays with a teddy bear."),
    (5, "Nothing to see here."),
]
PRESENT = {"person", "motorcycle", "car", "cat", "couch", "laptop", "orange", "apple", "dining table", "teddy bear"}


@pytest.mark.parametrize(
    "text,expected",
    [
        ("A man riding a motorbike", ["person", "motorcycle"]),
        ("two kittens and a puppy", ["cat", "dog"]),
        ("a teddy bear, not a bear", ["teddy bear", "bear"]),
        ("a hot dog on a plate", ["hot dog"]),
        ("an astronaut in an orange suit", ["person"]),  # orange is a colour here
        ("three oranges in a bowl", ["orange", "bowl"]),
        ("people on a double decker", ["person", "bus"]),
    ],
)
def test_find_mentions_chair_synonyms(text, expected):
    assert [m.category for m in find_mentions(text)] == expected


def test_category_of_and_plural():
    assert category_of("kitten") == "cat" and category_of("dining table") == "dining table"
    assert plural("knife") == "knives" and plural("bench") == "benches" and plural("wine glass") == "wine glasses"


def test_rejected_caption_differs_only_in_the_replaced_phrase():
    rng = np.random.default_rng(0)
    pairs = caption_pairs(CAPTIONS, PRESENT, rng, n=4)
    assert len(pairs) == 4
    for p in pairs:
        change = p.metadata["replaced"]
        s, e = change["span"]
        assert p.chosen[:s] + change["new"] + p.chosen[e:] == p.rejected
        assert p.chosen[s:e] == change["old"] and change["old"] != change["new"]
        # the replaced object is present, the substitute is absent and plausible
        assert change["category"] in PRESENT and change["substitute"] not in PRESENT
        assert change["substitute"] in SUPERCATEGORY
        assert p.target == change["category"]
        assert [m.category for m in find_mentions(change["new"])] == [change["substitute"]]


@pytest.mark.parametrize(
    "text,category,new_category,expected",
    [
        ("A cat on a mat.", "cat", "orange", "An orange on a mat."),
        ("There is an apple here.", "apple", "banana", "There is a banana here."),
        ("Two cats sleep.", "cat", "dog", "Two dogs sleep."),
        ("A red motorbike parked.", "motorcycle", "bicycle", "A red bicycle parked."),
        ("Three oranges and a cup.", "orange", "apple", "Three apples and a cup."),
    ],
)
def test_replacement_keeps_grammar(text, category, new_category, expected):
    mention = next(m for m in find_mentions(text) if m.category == category)
    assert replace_mention(text, mention, new_category)[0] == expected


def test_caption_pairs_are_deterministic_per_seed():
    a = caption_pairs(CAPTIONS, PRESENT, np.random.default_rng(3), n=2)
    b = caption_pairs(CAPTIONS, PRESENT, np.random.default_rng(3), n=2)
    assert [(p.chosen, p.rejected) for p in a] == [(p.chosen, p.rejected) for p in b]


def test_captions_naming_no_present_object_make_no_pair():
    assert caption_pairs([(1, "A bird in the sky.")], {"cat"}, np.random.default_rng(0), n=3) == []
    assert normalize_caption("  a dog  running ") == "A dog running."


def test_presence_pairs_yes_and_no():
    pairs = presence_pairs(["cat", "couch"], np.random.default_rng(0), n=2)
    yes, no = pairs
    assert yes.question.startswith("Is there a") and yes.chosen.startswith("Yes") and yes.rejected.startswith("No")
    assert yes.target in {"cat", "couch"}
    absent = no.metadata["object"]
    assert absent not in {"cat", "couch"} and no.chosen.startswith("No") and no.rejected.startswith("Yes")
    assert no.target == no.metadata["nearest_present"] in {"cat", "couch"}
    assert presence_pairs(["cat"], np.random.default_rng(0), n=2, absent_key="none")[1].target is None
