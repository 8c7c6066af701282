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
    {"id": 7, "type": "generative", "truth": ["cat"], "hallu": ["dog", "car"]},
    {"id": 8, "type": "discriminative-attribute-number", "truth": "yes"},
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
    {"id": 7, "response": "Two cats sleep on the floor."},  # floor: neither true nor a cat word: hallucinated
    {"id": 8, "response": "Yes"},
]
GENERATIVE = [ANSWERS[0], ANSWERS[1], ANSWERS[6]]
YES_NO = ANSWERS[2:6] + ANSWERS[7:]


@pytest.fixture
def data(tmp_path):
    (tmp_path / "relation.json").write_text(json.dumps(RELATION))
    (tmp_path / "annotations.json").write_text(json.dumps(ANNOTATIONS))
    (tmp_path / "safe_words.txt").write_text("light\norange")
    return amber.load_amber(tmp_path)


def test_generative_hand_computed(data):
    r = amber.score_amber(GENERATIVE, data, nouns="rules")
    g = r["generative"]
    # counters start at 0.001 (AMBER's metrics.txt). Hallucinated nouns: kitten (1), floor (7) of 4 + 2 + 2:
    # CHAIR 2 / 8.001; truth objects covered 2 + 1 + 1 of 4 (Cover 4 / 4.001); hallu objects named: cat (via
    # kitten) of 2 + 1 + 2 (Cog 1 / 5.001); responses without a hallucination: 1 of 3 (Hal 100 - 1 / 3.001).
    # Every number differs from the others and from its complement (Hal 66.7 vs 33.3).
    assert g == {"CHAIR": 25.0, "Cover": 100.0, "Hal": 66.7, "Cog": 20.0, "n": 3, "unparsed": 0}
    assert r["details"][0]["nouns"] == ["puppy", "ground", "kitten", "dog"]
    assert r["details"][0]["hallucinated"] == ["kitten"]
    # "Dog" is capitalised, so not in the vocabulary (as in the reference); man, woman -> person
    assert r["details"][1]["nouns"] == ["man", "woman"]
    assert r["details"][2]["nouns"] == ["cat", "floor"]  # WordNet's lemma of "cats"
    assert r["meta"]["settings"]["similarity"] == "exact"  # spaCy is not installed here
    assert r["meta"]["settings"]["nouns"] == "rules"


def test_discriminative_hand_computed(data):
    r = amber.score_amber(YES_NO, data)
    d = r["discriminative"]
    # "No" is the positive class. overall: correct ids 3, 8 of 5.001; answered No: ids 3, 6 (1 truly no);
    # truly no: ids 3, 5 (1 answered No) -> P = R = 1 / 2.001, F1 = 2 * .5 * .5 / (1 + 0.0001)
    assert d["overall"] == {"Accuracy": 40.0, "Precision": 50.0, "Recall": 50.0, "F1": 50.0, "n": 5, "unparsed": 1}
    # existence (ids 3, 4): 1 / 2.001 correct; P = R = 1 / 1.001 = 99.9; F1 with +0.001
    assert d["existence"] == {"Accuracy": 50.0, "Precision": 99.9, "Recall": 99.9, "F1": 99.9, "n": 2}
    assert d["state"] == {"Accuracy": 0.0, "Precision": 0.0, "Recall": 0.0, "F1": 0.0, "n": 1}
    assert d["number"]["Accuracy"] == 99.9  # 1 / 1.001
    # attribute sums the state, number and action counters as the reference does: 1 / (1.001 + 1.001 + 0.001)
    assert d["attribute"]["Accuracy"] == 49.9  # not 50.0, which a counter of its own (1 / 2.001) would give
    assert d["relation"]["Accuracy"] == 0.0
    assert "action" not in d and "generative" not in r


def test_nouns_are_wordnet_lemmas_of_tagged_nouns():
    vocab = {"people", "person", "dog", "sunglasses"}
    # WordNet keeps "people", reads "persons" as person and "sunglasses" as sunglass (not in the vocabulary)
    got = amber.amber_nouns("People and people, dogs and persons with sunglasses.", vocab, "rules")
    assert got == ["people", "dog", "person"]


def test_lenient_parser_reads_the_first_word(data):
    r = amber.score_amber(YES_NO, data, parser="lenient")
    assert r["discriminative"]["overall"]["Accuracy"] == 60.0  # "Yes." now counts: 3 / 5.001
    assert r["meta"]["settings"]["parser"] == "lenient"


def test_spacy_required_but_missing_is_one_line(data, monkeypatch):
    from mfpo_train.eval import tagging

    monkeypatch.setattr(tagging, "nltk_tagger_installed", lambda: False)
    with pytest.raises(MfpoError, match="similarity 'spacy' needs spaCy and its model 'not_a_model' installed"):
        amber.score_amber(ANSWERS, data, similarity="spacy", spacy_model="not_a_model")
    with pytest.raises(MfpoError, match="amber nouns 'nltk' needs NLTK's tagger data"):
        amber.score_amber(ANSWERS, data, nouns="nltk")


def test_answers_file_and_unknown_ids(data, tmp_path):
    path = tmp_path / "answers.json"
    path.write_text(json.dumps([{"id": 1, "response": "x"}, {"id": 99, "response": "y"}]))
    rows = amber.read_amber_answers(path)
    with pytest.raises(MfpoError, match="answer id 99"):
        amber.score_amber(rows, data)
    (tmp_path / "bad.jsonl").write_text('{"id": 1, "answer": "ok"}\n{"id": 2}\n')
    with pytest.raises(MfpoError, match="bad.jsonl:2: missing field 'response' or 'answer'"):
        amber.read_amber_answers(tmp_path / "bad.jsonl")


def _cli_root(tmp_path):
    root = tmp_path / "amber"
    root.mkdir()
    (root / "relation.json").write_text(json.dumps({"dog": ["puppy"], "grass": ["ground"], "cat": []}))
    items = [{"id": 1, "type": "generative", "truth": ["dog", "grass"], "hallu": ["cat"]},
             {"id": 2, "type": "generative", "truth": ["dog"], "hallu": ["cat"]},
             {"id": 3, "type": "discriminative-hallucination", "truth": "no"},
             {"id": 4, "type": "discriminative-relation", "truth": "yes"}]
    (root / "annotations.json").write_text(json.dumps(items))
    (root / "safe_words.txt").write_text("light\n")
    return root


@pytest.mark.parametrize("ids", [(1, 2, 3, 4), (1, 3, 4), (1, 2, 3)])
def test_the_command_labels_a_partial_answers_file_and_the_lenient_parser(tmp_path, ids):
    from typer.testing import CliRunner

    from mfpo_train.eval.cli import app

    answers = tmp_path / "answers.json"
    text = {1: "A puppy on the ground.", 2: "A dog.", 3: "No", 4: "yes, it is"}
    answers.write_text(json.dumps([{"id": i, "response": text[i]} for i in ids]))
    out = tmp_path / "amber.json"
    args = ["amber", "--amber-root", str(_cli_root(tmp_path)), "--answers", str(answers), "--out", str(out)]
    run = CliRunner().invoke(app, [*args, "--parser", "lenient"], terminal_width=400)
    assert run.exit_code == 0, run.output
    flat = " ".join(run.output.split())  # rich wraps a title to its table's width
    generative = "partial: n=1 of the 2 AMBER generative items: not comparable with published tables"
    discriminative = "partial: n=1 of the 2 AMBER discriminative items: not comparable with published tables"
    expected = {"generative": generative if 2 not in ids else "complete",
                "discriminative": discriminative if 4 not in ids else "complete"}
    assert json.loads(out.read_text())["meta"]["settings"]["coverage"] == expected
    for label in (generative, discriminative):
        assert (flat.count(label) >= 2) == (label in expected.values())  # the warning and each of its tables
        assert (f"warning: amber {label.split(' items')[0].split()[-1]}: {label}" in flat) == (
            label in expected.values())
    assert "AMBER discriminative: overall (parser lenient: the first word, not AMBER's exact 'Yes'/'No')" in flat
    plain = CliRunner().invoke(app, ["amber", "--amber-root", str(tmp_path / "amber"), "--answers", str(answers)],
                               terminal_width=400)
    assert plain.exit_code == 0 and "parser lenient" not in plain.output and "AMBER discriminative: overall" in plain.output
