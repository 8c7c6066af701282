"""AMBER scorers on a tiny hand-made data folder in AMBER's format, values computed by hand."""

import json

import pytest

from mfpo_data.errors import MfpoError
from mfpo_train.eval import amber


RELATION = {
    "dog": ["puppy"],
    "cat": ["kitten"],
    "grass": ["ground"],
    "ground": ["floor"],
    "car": [],
    "person": ["man", "woman"],
}
ANNOTATIONS = [
    {"id": 1, "type": "generative", "truth": ["dog", "grass"], "hallu": ["cat", "car"]},
    {"id": 2, "type": "generative", "truth": ["person"], "hallu": ["car"]},
    {"id": 3, "type": "discriminative-hallucination", "truth": "no"},
    {"id": 4, "type": "discriminative-hallucination", "truth": "yes"},
    {"id": 5, "type": "discriminative-attribute-state", "truth": "no"},
    {"id": 6, "type": "discriminative-relation", "truth": "yes"},
]
ANSWERS = [
    # nouns in the vocabulary: puppy (-> dog), ground (-> grass), kitten (not true: hallucinated; -> cat for Cog), dog
    {"id": 1, "response": "A puppy plays on the ground near a kitten and a dog."},
    # "Dog" is capitalised, so not in the vocabulary (as in the reference); man, woman -> person
    {"id": 2, "response": "Dog near a man and a woman."},
    {"id": 3, "response": "No"},
    {"id": 4, "response": "Yes."},  # not exactly "Yes": wrong
    {"id": 5, "response": "Yes"},
    {"id": 6, "response": "No"},
]


@pytest.fixture
def data(tmp_path):
    (tmp_path / "relation.json").write_text(json.dumps(RELATION))
    (tmp_path / "annotations.json").write_text(json.dumps(ANNOTATIONS))
    (tmp_path / "safe_words.txt").write_text("light\norange")
    return amber.load_amber(tmp_path)


def test_generative_hand_computed(data):
    r = amber.score_amber(ANSWERS[:2], data)
    g = r["generative"]
    # counters start at 0.001 (AMBER's metrics.txt): CHAIR 1 / 6.001, Cover 3 / 3.001, Cog 1 / 3.001,
    # Hal 100 - 1 / 2.001 (answer 2 has no hallucination)
    assert g == {"CHAIR": 16.7, "Cover": 100.0, "Hal": 50.0, "Cog": 33.3, "n": 2}
    assert r["details"][0]["nouns"] == ["puppy", "ground", "kitten", "dog"]
    assert r["details"][0]["hallucinated"] == ["kitten"]
    assert r["details"][1]["nouns"] == ["man", "woman"]
    assert r["meta"]["settings"]["similarity"] == "exact"  # spaCy is not installed here


def test_discriminative_hand_computed(data):
    r = amber.score_amber(ANSWERS[2:], data)
    d = r["discriminative"]
    # "No" is the positive class. overall: correct 1 (id 3) / 4.001; answered No: ids 3, 6 (1 truly no);
    # truly no: ids 3, 5 (1 answered No) -> P = R = 50.0, F1 = 2 * .5 * .5 / (1 + 0.0001)
    assert d["overall"] == {"Accuracy": 25.0, "Precision": 50.0, "Recall": 50.0, "F1": 50.0, "n": 4}
    # existence (ids 3, 4): 1 / 2.001 correct; P = R = 1 / 1.001 = 99.9; F1 with +0.001
    assert d["existence"] == {"Accuracy": 50.0, "Precision": 99.9, "Recall": 99.9, "F1": 99.9, "n": 2}
    assert d["state"] == d["attribute"] == {"Accuracy": 0.0, "Precision": 0.0, "Recall": 0.0, "F1": 0.0, "n": 1}
    assert d["relation"]["Accuracy"] == 0.0
    assert "number" not in d and "generative" not in r


def test_vocabulary_words_are_kept_as_written():
    vocab = {"people", "person", "dog"}
    assert amber.amber_nouns("People and people, dogs and persons.", vocab) == ["people", "dog", "person"]


def test_lenient_parser_reads_the_first_word(data):
    r = amber.score_amber(ANSWERS[2:], data, parser="lenient")
    assert r["discriminative"]["overall"]["Accuracy"] == 50.0  # "Yes." now counts: 2 / 4.001


def test_spacy_required_but_missing_is_one_line(data):
    with pytest.raises(MfpoError, match="needs spaCy"):
        amber.score_amber(ANSWERS, data, similarity="spacy", spacy_model="not_a_model")


def test_answers_file_and_unknown_ids(data, tmp_path):
    path = tmp_path / "answers.json"
    path.write_text(json.dumps([{"id": 1, "response": "x"}, {"id": 99, "response": "y"}]))
    rows = amber.read_amber_answers(path)
    with pytest.raises(MfpoError, match="answer id 99"):
        amber.score_amber(rows, data)
    (tmp_path / "bad.jsonl").write_text('{"id": 1, "answer": "ok"}\n{"id": 2}\n')
    with pytest.raises(MfpoError, match="bad.jsonl:2: missing field 'response' or 'answer'"):
        amber.read_amber_answers(tmp_path / "bad.jsonl")
