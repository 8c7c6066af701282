"""CHAIR on hand-written answers about the bundled COCO sample, values computed by hand."""

import pytest

from mfpo_data.errors import MfpoError
from mfpo_data.scorers import chair, coco


@pytest.fixture(scope="module")
def sample():
    return coco.read_coco(None, "sample")


# Ground truth (instances + objects named in the 5 human captions) of the images used below:
# 2 coffee.jpg: cup, spoon (instances) + dining table ("on a wooden table", captions only)
# 3 chelsea.jpg: cat; 8 apple.jpg: apple; 9 orange.jpg: orange; 14 street.jpg: car, person;
# 15 basketball.jpg: chair, person, sports ball
ANSWERS = [
    # cat, couch*, cat: 3 mentions, 1 hallucinated
    {"image_id": 3, "answer": "Two kittens sleep on a sofa next to a cat."},
    # person, person, car, bus*
    {"image_id": 14, "answer": "A man and two women walk past parked cars and a bus."},
    # cup, spoon, dining table (named only in the captions)
    {"image_id": 2, "answer": "A cup of coffee with a spoon on a wooden table."},
    # person, sports ball, dog*, dog*
    {"image_id": 15, "answer": "A man holds a sports ball; a dog and another dog watch."},
    # dining table*
    {"image_id": 8, "answer": "A red fruit on a table."},
    # no object
    {"image_id": 9, "answer": "A bright picture."},
]


def test_ground_truth_includes_objects_named_only_in_captions(sample):
    vocab = chair.load_vocabulary()
    gt = coco.chair_ground_truth(sample, vocab, [2, 15])
    assert gt[2] == {"cup", "spoon", "dining table"}
    assert gt[15] == {"chair", "person", "sports ball"}


def test_chair_hand_computed(sample):
    vocab = chair.load_vocabulary("coco", "fixed")  # counts "a bus"; the reference below does not
    gt = coco.chair_ground_truth(sample, vocab, {a["image_id"] for a in ANSWERS})
    r = chair.score_chair(ANSWERS, gt, vocab)
    # 4 of 6 answers hallucinate; 5 of 15 mentions are hallucinated (the repeated dog counts twice)
    assert r["CHAIRs"] == 66.7
    assert r["CHAIRi"] == 33.3
    # ground-truth objects mentioned: cat 1/1, person+car 2/2, cup+spoon+table 3/3, person+ball 2/3, 0/1, 0/1 -> 8/11
    assert r["recall"] == 72.7
    assert r["len"] == 9.0  # (10 + 12 + 11 + 12 + 6 + 3) / 6 words
    assert r["CHAIRs_refine"] == 80.0  # 4 / the 5 answers that name an object
    assert r["n"] == 6
    assert r["counts"] == {"answers_hallucinated": 4, "answers_with_objects": 5, "mentions": 15, "mentions_hallucinated": 5,
                           "gt_objects": 11, "gt_objects_mentioned": 8, "words": 54}  # fmt: skip
    d = r["details"][0]
    assert d["mentioned"] == ["cat", "couch", "cat"] and d["hallucinated"] == [["sofa", "couch"]]
    assert r["details"][3]["hallucinated"] == [["dog", "dog"], ["dog", "dog"]]
    assert r["meta"]["scorer"] == "chair" and r["meta"]["n"] == 6 and len(r["meta"]["ids_sha256"]) == 64
    assert r["meta"]["settings"] == {"synonyms": "coco", "protocol": "fixed"}
    assert r["unparsed"] == 0


def test_the_default_is_the_reference_which_never_counts_a_singular_bus(sample):
    vocab = chair.load_vocabulary()
    gt = coco.chair_ground_truth(sample, vocab, {a["image_id"] for a in ANSWERS})
    r = chair.score_chair(ANSWERS, gt, vocab)
    # "a bus" -> pattern's "bu": answer 2 has no hallucination left, 14 mentions of which 4 hallucinated
    assert (r["CHAIRs"], r["CHAIRi"]) == (50.0, 28.6)
    assert r["meta"]["settings"] == {"synonyms": "coco", "protocol": "reference"}


def test_every_chair_metric_has_its_own_formula(sample):
    # CHAIRs counts answers, CHAIRi mentions (with repeats), CHAIRs_refine only answers naming an object,
    # recall distinct ground-truth objects: a slip between any two changes a number here.
    vocab = chair.load_vocabulary()
    rows = [{"image_id": 15, "answer": "A dog, a dog and a dog near a man."}, {"image_id": 3, "answer": "   "},
            {"image_id": 2, "answer": "A cup and a spoon."}]
    r = chair.score_chair(rows, coco.chair_ground_truth(sample, vocab, [15, 3, 2]), vocab)
    assert (r["CHAIRs"], r["CHAIRs_refine"], r["CHAIRi"], r["recall"]) == (33.3, 50.0, 50.0, 42.9)
    assert r["unparsed"] == 1 and r["len"] == round((10 + 1 + 5) / 3, 1)


def test_toilet_seat_is_not_a_chair():
    vocab = chair.load_vocabulary()
    assert [m.category for m in chair.find_mentions("The seat of the toilet is up.", vocab)] == ["toilet"]
    assert [m.category for m in chair.find_mentions("A seat by the window.", vocab)] == ["chair"]


def test_refine_vocabulary_adds_rlaifv_words():
    coco_vocab, refine = chair.load_vocabulary("coco"), chair.load_vocabulary("refine")
    text = "A pedestrian and a remote control on a coffee table."
    assert [m.category for m in chair.find_mentions(text, coco_vocab)] == ["remote", "dining table"]
    assert [m.category for m in chair.find_mentions(text, refine)] == ["person", "remote", "dining table"]


def test_unknown_image_is_one_clear_error(sample):
    vocab = chair.load_vocabulary()
    with pytest.raises(MfpoError, match="answer 1 is about image_id 999"):
        chair.score_chair([{"image_id": 999, "answer": "x"}], coco.chair_ground_truth(sample, vocab, [1]), vocab)
    with pytest.raises(MfpoError, match="not in COCO split"):
        coco.chair_ground_truth(sample, vocab, [999])
