"""Negated mentions in external sources' chosen answers: a denied object is never the key object; a pair
whose answer asserts no object gets the rule of COCO's "no" presence rows, and the build counts both."""

import json

import pytest
from PIL import Image

from mfpo_data.backends.graph_keywords import GraphKeywords
from mfpo_data.backends.vocabulary import VocabularyKeywords
from mfpo_data.config import recipe_from_dict
from mfpo_data.pipeline.build import build_dataset
from mfpo_data.schema import Sample
from mfpo_data.stages.s1_keywords import KeywordStage
from mfpo_data.textpairs.negation import is_negated, mention_spans
from tests.fixtures.builds import rows_by_id


@pytest.mark.parametrize("text,phrase,negated", [
    ("There is no dog in the picture.", "dog", True),
    ("I don't see any cars.", "car", True),
    ("No, the image does not contain a laptop.", "laptop", True),
    ("There are no dogs or cats here.", "cat", True),
    ("The kitten isn't visible.", "cat", True),
    ("Dogs are not present in the image.", "dog", True),
    ("The man is not holding a cup.", "cup", True),
    ("A dog sits on the sofa.", "dog", False),
    ("There is no dog, but a cat sleeps on the couch.", "cat", False),
    ("A cat is visible, and there isn't a dog.", "cat", False),
    ("There is a dog on the left and no dog on the right.", "dog", False),  # asserted once: not denied
    ("The dog is not running; it sleeps.", "dog", False),  # denies what it does, not that it is there
    ("The person cannot be seen clearly.", "person", False),
    ("Without a doubt, the picture shows a horse.", "horse", False),
    ("A red shirt hangs there; no other clothes.", "red shirt", False),
    ("There is no red shirt.", "red shirt", True),
    ("A cup of coffee.", "dog", False),  # not mentioned
])  # fmt: skip
def test_negated_mentions(text, phrase, negated):
    assert is_negated(text, phrase) is negated


def test_mentions_are_found_by_category_or_by_words():
    assert mention_spans("Two puppies and a dog.", "dog") == [(4, 11), (18, 21)]
    assert mention_spans("red shirts and a Red Shirt", "red shirt") == [(0, 10), (17, 26)]


def _sample(chosen, target=None, sample_id="x"):
    return Sample(sample_id, "jsonl", "1", "external", "What is in the image?", chosen, "Something else.", target=target)


@pytest.mark.parametrize("extractor", [VocabularyKeywords(include_question=False), GraphKeywords()], ids=["vocabulary", "graph"])
def test_a_denied_top_keyword_gives_way_to_an_asserted_one_or_makes_the_object_absent(extractor):
    stage = KeywordStage(extractor, top_k=2)
    replaced, absent, plain, coco = stage.run([
        _sample("There is no dog in the picture, but a cat sleeps on the sofa.", sample_id="a"),
        _sample("There is no dog in the picture.", sample_id="b"),
        _sample("A dog sleeps on the sofa.", sample_id="c"),
        _sample("There is no dog in the picture.", target="cat", sample_id="d"),  # the source said what it is about
    ])  # fmt: skip
    assert "dog" not in replaced.keywords and replaced.keywords and replaced.absent_object is None
    ranked = extractor.extract([_sample(replaced.chosen)])[0]  # the extractor's own order: was the denied dog first?
    assert replaced.metadata == ({"negated_key_object": "dog"} if ranked[0] == "dog" else {})
    assert [p for p in ranked if p != "dog"][:2] == replaced.keywords
    assert absent.keywords == [] and absent.absent_object == "dog" and absent.metadata == {"negated_key_object": "dog"}
    assert plain.keywords[0] == "dog" and plain.metadata == {} and plain.absent_object is None
    assert coco.metadata == {} and coco.absent_object is None


def test_jsonl_build_marks_and_counts_negated_key_objects(tmp_path):
    Image.new("RGB", (32, 24), (120, 60, 30)).save(tmp_path / "a.png")
    answers = {"denies": "There is no dog in the picture.", "swaps": "I don't see any dogs; a cat sleeps on a sofa.",
               "asserts": "A dog sleeps on a sofa.", "nothing": "It is a brown picture."}  # fmt: skip
    lines = [json.dumps({"id": k, "question": "Is there a dog?", "chosen": v, "rejected": "Yes, a dog.", "image": "a.png"})
             for k, v in answers.items()]
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    recipe = recipe_from_dict({"source": {"kind": "jsonl", "path": str(tmp_path / "p.jsonl"), "image_root": str(tmp_path)},
                               "output": {"dir": str(tmp_path / "out"), "progress": False}})  # fmt: skip
    layout = build_dataset(recipe)
    rows = rows_by_id(layout)
    valid = {k: r["image_pair_valid"] for k, r in rows.items()}
    assert valid == {"denies": False, "swaps": True, "asserts": True, "nothing": True}
    assert json.loads(rows["denies"]["metadata"])["image_pair_invalid"].startswith("absent_object: there is no dog in the image")
    assert json.loads(rows["swaps"]["metadata"])["negated_key_object"] == "dog"
    stats = layout.read_stats()
    assert stats["negated_key_objects"] == {"no_asserted_object": 1, "replaced": 1}
    assert stats["invalid_image_pairs"] == {"absent_object": 1}
