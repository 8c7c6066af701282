"""Result metadata: what must match before two numbers are compared."""

from mfpo_data.scorers.results import comparable, ids_sha256, make_result
from mfpo_train.eval.objhal import objhal_prompts, objhal_questions


def test_ids_hash_ignores_order_and_repeats_but_not_content():
    assert ids_sha256([3, 1, 2]) == ids_sha256([1, 2, 3, 3])
    assert ids_sha256([1, 2, 3]) != ids_sha256([1, 2, 4])


def test_comparable_names_what_differs():
    a = make_result("pope", {"f1": 1.0}, ids=[1, 2], settings={"parser": "pope"})
    assert comparable(a, make_result("pope", {"f1": 2.0}, ids=[2, 1], settings={"parser": "pope"})) == []
    b = make_result("pope", {"f1": 2.0}, ids=[1, 3], settings={"parser": "strict"})
    assert comparable(a, b) == [
        f"ids_sha256: {a['meta']['ids_sha256']!r} != {b['meta']['ids_sha256']!r}",
        "settings differ",
    ]


def test_shipped_object_halbench_set():
    qs = objhal_questions()
    assert len(qs) == 300 and len(objhal_prompts()) == 8
    assert all(q["question"] == objhal_prompts()[i % 8] for i, q in enumerate(qs))
