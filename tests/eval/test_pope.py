"""POPE questions from a hand-made COCO folder, and scores on given answers, computed by hand."""

import json

import pytest

from mfpo_data.errors import MfpoError
from mfpo_data.scorers import coco, pope
from tests.fixtures.eval_coco import IMAGES, make_pope_coco


@pytest.fixture
def pope_coco(tmp_path):
    return make_pope_coco(tmp_path)


def _questions(root, sampling, **kw):
    return pope.build_pope_questions(coco.read_coco(root, "val2014", captions=False), sampling, images=None, **kw)


def _by_image(questions):
    out = {}
    for q in questions:
        out.setdefault(q["image"], []).append((q["text"].split(" ")[3], q["label"]))
    return out


def test_popular_negatives_are_the_most_frequent_absent_categories(pope_coco):
    # images with >= 3 categories: 1, 2, 3, 4, 6. Images per category: person 4, car 3, dog 2, bus 2, chair 2, ...
    got = _by_image(_questions(pope_coco, "popular"))
    assert got["img1.jpg"] == [
        ("person", "yes"),
        ("bus", "no"),
        ("car", "yes"),
        ("chair", "no"),
        ("dog", "yes"),
        ("cat", "no"),
    ]
    assert "img5.jpg" not in got


def test_adversarial_negatives_co_occur_most_with_the_positive(pope_coco):
    # person co-occurs with car 2, dog 2, chair 2, bus 1, cat 1, cup 1; car with person 2, bus 2, dog 1, bottle 1;
    # dog with person 2, car 1, cat 1, chair 1 (ties keep the order of first appearance)
    got = _by_image(_questions(pope_coco, "adversarial"))
    assert got["img1.jpg"] == [
        ("person", "yes"),
        ("chair", "no"),
        ("car", "yes"),
        ("bus", "no"),
        ("dog", "yes"),
        ("cat", "no"),
    ]


@pytest.mark.parametrize("sampling", pope.SAMPLINGS)
def test_invariants_and_determinism(pope_coco, sampling):
    qs = _questions(pope_coco, sampling, seed=3)
    names = {f"img{i}.jpg": set(objs) for i, objs in IMAGES.items()}
    assert len(qs) == 5 * 6 and sum(q["label"] == "yes" for q in qs) == 15
    for q in qs:
        obj = q["text"].removeprefix("Is there a ").removeprefix("n ").removesuffix(" in the image?")
        assert (obj in names[q["image"]]) == (q["label"] == "yes"), q
    assert [q["question_id"] for q in qs] == list(range(1, 31))
    for image in {q["image"] for q in qs}:  # no category asked twice about one image
        asked = [q["text"] for q in qs if q["image"] == image]
        assert len(asked) == len(set(asked))
    assert qs == _questions(pope_coco, sampling, seed=3)


def test_image_sample_is_seeded_and_too_few_images_is_one_line(pope_coco):
    ann = coco.read_coco(pope_coco, "val2014", captions=False)
    a = pope.build_pope_questions(ann, "random", images=3, seed=1)
    assert a == pope.build_pope_questions(ann, "random", images=3, seed=1)
    assert len({q["image"] for q in a}) == 3
    with pytest.raises(MfpoError, match="only 5 images"):
        pope.build_pope_questions(ann, "random", images=6)


def test_articles_and_the_file_round_trip(pope_coco, tmp_path):
    assert pope.question_text("umbrella") == "Is there an umbrella in the image?"
    assert pope.question_text("dog") == "Is there a dog in the image?"
    qs = _questions(pope_coco, "random")
    path = pope.write_pope_questions(qs, tmp_path / "coco_pope_random.json")
    assert pope.read_pope_questions(path) == qs and pope.split_name(path) == "random"


ANSWERS = ["Yes, there is a person.", "No.", "There is no car in the image.", "Yes.", "I think so", "not really. Yes"]
LABELS = ["yes", "no", "yes", "no", "yes", "no"]


def _qa():
    qs = [{"question_id": i + 1, "image": "x.jpg", "text": "?", "label": lab} for i, lab in enumerate(LABELS)]
    return qs, [{"question_id": i + 1, "answer": a} for i, a in enumerate(ANSWERS)]


def test_pope_scores_hand_computed():
    qs, ans = _qa()
    r = pope.score_pope(qs, ans)
    # predictions: yes no no yes yes no -> TP 2 (q1, q5), FP 1 (q4), TN 2 (q2, q6), FN 1 (q3)
    assert (r["TP"], r["FP"], r["TN"], r["FN"]) == (2, 1, 2, 1)
    assert (r["accuracy"], r["precision"], r["recall"], r["f1"], r["yes_ratio"]) == (66.7, 66.7, 66.7, 66.7, 50.0)
    assert r["unparsed"] == 1  # "I think so": neither word, POPE's parser calls it yes


def test_exact_and_yorn_parsers_count_unclear_answers_wrong():
    qs, ans = _qa()
    r = pope.score_pope(qs, ans, parser="exact")
    # lmms-eval: nothing here is exactly "yes"/"no" after lower().strip() -> 6 unparsed, every rate 0
    assert (r["TP"], r["FP"], r["TN"], r["FN"], r["unparsed"]) == (0, 0, 0, 0, 6)
    assert (r["accuracy"], r["precision"], r["recall"], r["f1"], r["yes_ratio"]) == (0.0, 0.0, 0.0, 0.0, 0.0)
    r = pope.score_pope(qs, ans, parser="yorn")
    # VLMEvalKit: "yes" without "no" is yes, "no" without "yes" is no: q5 "I think so" is Unknown (wrong, and
    # "no" in precision/recall: FN), q6 "not really. Yes" is yes ("not" is not "no")
    assert [d["pred"] for d in r["details"]] == ["yes", "no", "no", "yes", None, "yes"]
    assert (r["TP"], r["FP"], r["TN"], r["FN"], r["unparsed"]) == (1, 2, 1, 2, 1)
    assert (r["accuracy"], r["precision"], r["recall"], r["f1"], r["yes_ratio"]) == (33.3, 33.3, 33.3, 33.3, 50.0)


def test_yes_ratio_is_the_models_not_the_labels():
    qs, _ = _qa()
    r = pope.score_pope(qs, [{"question_id": q["question_id"], "answer": "Yes"} for q in qs])
    # labels are half yes; the model says yes to all: yes-ratio 100, precision 50, recall 100, F1 66.7, accuracy 50
    assert (r["yes_ratio"], r["precision"], r["recall"], r["f1"], r["accuracy"]) == (100.0, 50.0, 100.0, 66.7, 50.0)


def test_official_files_ship_and_are_checked():
    for split in pope.SAMPLINGS:
        qs = pope.official_questions(split)
        assert len(qs) == 3000 and sum(q["label"] == "yes" for q in qs) == 1500
    assert pope.official_questions("random")[0] == {"question_id": 1, "image": "COCO_val2014_000000310196.jpg",
                                                    "text": "Is there a snowboard in the image?", "label": "yes"}
    images = {q["image"] for q in pope.official_questions("adversarial")}
    from mfpo_data.eval_ids import eval_image_ids

    assert {int(i[-16:-4]) for i in images} == eval_image_ids("pope_coco")  # the ids a build leaves out


def test_repope_files_must_be_the_official_questions(tmp_path):
    qs = pope.official_questions("popular")[:4]
    kept = [dict(qs[0], label="no"), qs[2]]
    path = tmp_path / "coco_repope_popular.json"
    path.write_text("".join(json.dumps(q) + "\n" for q in kept))
    assert pope.read_repope_questions(path, "popular") == kept
    path.write_text(json.dumps(dict(qs[1], text="Is there a unicorn in the image?")) + "\n")
    with pytest.raises(MfpoError, match="question_id 2 is not POPE's popular question of that id"):
        pope.read_repope_questions(path, "popular")


def test_reference_parser_quirks():
    assert pope.parse_yes_no("NO") == "yes"  # only "No", "no" and "not" are no-words
    assert pope.parse_yes_no("") == "yes"
    assert pope.parse_yes_no("Yes. There is no dog.") == "yes"  # only the first sentence counts
    assert pope.parse_yes_no("There is not, a dog") == "no"


def test_missing_or_repeated_answers_are_errors():
    qs, ans = _qa()
    with pytest.raises(MfpoError, match="question_id 6 has no answer"):
        pope.score_pope(qs, ans[:-1])
    with pytest.raises(MfpoError, match="answered twice"):
        pope.score_pope(qs, ans + ans[:1])


def test_mean_over_splits():
    assert pope.mean_over_splits({"random": {"f1": 90.0, "accuracy": 80.0}, "popular": {"f1": 85.0, "accuracy": 70.0},
                                  "adversarial": {"f1": 82.8, "accuracy": 60.0}})["f1"] == 85.9  # fmt: skip
    with pytest.raises(MfpoError, match="--pope-convention must be one of pope, llava, lmms-eval, vlmevalkit"):
        pope.convention("strict")


def _split(tp: int, fn: int, tn: int, fp: int) -> tuple[list[dict], list[dict]]:
    rows = [(lab, ans) for lab, ans, k in (("yes", "yes", tp), ("yes", "no", fn), ("no", "no", tn), ("no", "yes", fp))
            for _ in range(k)]
    return ([{"question_id": i, "image": f"{i}.jpg", "text": "Is there a dog in the image?", "label": lab}
             for i, (lab, _) in enumerate(rows)], [{"question_id": i, "answer": ans} for i, (_, ans) in enumerate(rows)])


@pytest.mark.parametrize("parser", ["pope", "exact", "yorn"])
def test_the_mean_over_splits_is_of_the_unrounded_rates(parser):
    # accuracy 1/2 and 1/3: printed 50.0 and 33.3, whose mean rounds to 41.6; the mean of the rates is 41.67
    results = {"random": pope.score_pope(*_split(1, 1, 1, 1), parser=parser),
               "popular": pope.score_pope(*_split(1, 1, 1, 3), parser=parser)}
    assert (results["random"]["accuracy"], results["popular"]["accuracy"]) == (50.0, 33.3)
    mean = pope.mean_over_splits(results)
    assert mean["accuracy"] == 41.7
    assert mean["yes_ratio"] == round(100 * (2 / 4 + 4 / 6) / 2, 1) == 58.3
    assert mean["f1"] == round(100 * (1 / 2 + 2 * (1 / 4) * (1 / 2) / (1 / 4 + 1 / 2)) / 2, 1) == 41.7


def test_reads_the_official_file_format(tmp_path):
    line = {
        "question_id": 1,
        "image": "COCO_val2014_000000310196.jpg",
        "text": "Is there a snowboard in the image?",
        "label": "yes",
    }
    (tmp_path / "coco_pope_adversarial.json").write_text(
        json.dumps(line) + "\n" + json.dumps({**line, "question_id": 2, "label": "maybe"}) + "\n"
    )
    with pytest.raises(MfpoError, match="coco_pope_adversarial.json:2: label must be yes or no"):
        pope.read_pope_questions(tmp_path / "coco_pope_adversarial.json")


@pytest.mark.parametrize(("parser", "f1"), [("pope", None), ("exact", 0.0), ("yorn", 0.0)])
def test_f1_when_no_answer_is_a_true_yes(parser, f1):
    """TP 0 beside FP and FN: precision and recall are 0 and POPE's evaluate.py divides by zero for F1 (no
    number: None); lmms-eval and VLMEvalKit give 0."""
    qs = [{"question_id": i, "image": "a.jpg", "text": "Is there a cat in the image?", "label": label}
          for i, label in enumerate(["yes", "no", "yes", "no"])]
    ans = [{"question_id": 0, "answer": "no"}, {"question_id": 1, "answer": "yes"},
           {"question_id": 2, "answer": "no"}, {"question_id": 3, "answer": "yes"}]
    r = pope.score_pope(qs, ans, parser=parser)
    assert (r["TP"], r["FP"], r["TN"], r["FN"]) == (0, 2, 0, 2)
    assert (r["precision"], r["recall"], r["f1"], r["accuracy"]) == (0.0, 0.0, f1, 0.0)


def test_a_metric_missing_in_one_split_has_no_mean():
    # popular: TP 0, FP 2, FN 1 -> POPE's F1 divides by zero; the mean F1 of random alone would pose as the mean
    results = {"random": pope.score_pope(*_split(1, 1, 1, 1)), "popular": pope.score_pope(*_split(0, 1, 1, 2))}
    assert results["popular"]["f1"] is None
    mean = pope.mean_over_splits(results)
    assert mean["f1"] is None and mean["accuracy"] == round(100 * (2 / 4 + 1 / 4) / 2, 1)
