"""Every scorer against its reference's own code, run once on the inputs in golden_protocols.json (see its `how`):
per-item readings and aggregates equal, in the reference mode of each scorer."""

import json
from pathlib import Path

import pytest

from mfpo_data.scorers import chair, coco, pope
from mfpo_train.eval import amber, mmhal, objhal


HERE = Path(__file__).parent
GOLDEN = json.loads((HERE / "golden_protocols.json").read_text())


@pytest.fixture(scope="module")
def sample():
    return coco.read_coco(None, "sample")


def _chair_rows(field_of):
    return [{"image_id": c["image_id"], field_of(c): c["answer"]} for c in GOLDEN["chair"]["captions"]]


@pytest.mark.parametrize("protocol", ["reference", "rlaifv"])
def test_chair_protocols_equal_the_reference_item_by_item(sample, protocol):
    gold = GOLDEN["chair"][protocol]
    if protocol == "reference":
        vocab = chair.load_vocabulary("coco")  # the default is the reference
        rows = _chair_rows(lambda c: "answer")
        truth = coco.chair_ground_truth(sample, vocab, {r["image_id"] for r in rows})
        result = chair.score_chair(rows, truth, vocab)
    else:
        vocab = objhal.objhal_vocabulary()  # the default Object HalBench scorer is RLAIF-V's rule path
        rows = _chair_rows(lambda c: "answer" if c.get("as_answer") else "text")  # RLAIF-V prefers `text`
        truth = coco.chair_ground_truth(sample, vocab, {r["image_id"] for r in rows})
        result = objhal.score_objhal(rows, truth, vocab)
    assert vocab.protocol == protocol
    for got, want in zip(result["details"], gold["items"], strict=True):
        assert (got["mentioned"], got["hallucinated"], got["ground_truth"]) == (
            want["generated"], want["hallucinated"], want["gt"]), got["image_id"]
    overall = gold["overall"]
    assert result["CHAIRs"] == round(100 * overall["CHAIRs"], 1)
    assert result["CHAIRi"] == round(100 * overall["CHAIRi"], 1)
    if protocol == "rlaifv":
        assert result["CHAIRs_refine"] == round(100 * overall["CHAIRs_refine"], 1)
        assert result["recall"] == round(100 * overall["obj_rec"], 1)
        assert result["len"] == round(overall["avg_word_len"], 1)
        assert result["n"] - result["counts"]["answers_with_objects"] == overall["sentence_num"] - overall[
            "coco_sentence_num"]


def test_protocols_differ_where_their_references_do(sample):
    # The same captions: RLAIF-V reads "buses", "ties", "motor bike", "cheesecake" and "Assistant:" (removed);
    # the reference chair.py reads none of them. Both numbers above are their references'; they differ here.
    ref = {d["image_id"]: d["generated"] for d in GOLDEN["chair"]["reference"]["items"]}
    rlaifv = {d["image_id"]: d["generated"] for d in GOLDEN["chair"]["rlaifv"]["items"]}
    assert ref[14] == ["person", "person", "car", "bus"] and rlaifv[14] == ["person", "person", "car", "bus", "bus"]
    fixed = chair.load_vocabulary("coco", "fixed")
    got = [m.category for m in chair.find_mentions("Two buses, three ties and a motor bike.", fixed)]
    assert got == ["bus", "tie", "motorcycle"]
    # the reference: pattern's "buses" -> "bus" counts, "ties" -> "ty" and the dead " motor bike" entry do not
    got = [m.category for m in chair.find_mentions("A bus, two buses, three ties and a motor bike.", chair.load_vocabulary())]
    assert got == ["bus"]


def _amber_data():
    return amber.load_amber(HERE / "data" / "amber")


def _amber_metrics(result):
    out = {"generative": {k: result["generative"][k] for k in ("CHAIR", "Cover", "Hal", "Cog")}}
    for section, m in result["discriminative"].items():
        out[section] = {k: m[k] for k in ("Accuracy", "Precision", "Recall", "F1")}
    return out


@pytest.mark.parametrize("mode", ["exact", "toy"])
def test_amber_equals_the_reference_with_the_same_tagger_and_similarity(monkeypatch, mode):
    gold = GOLDEN["amber"]
    if mode == "toy":  # a stand-in for spaCy's vectors, the same in both runs
        table = {frozenset((a, b)): s for a, b, s in gold["toy_similarity"]}
        monkeypatch.setattr(amber, "_spacy_similarity",
                            lambda model: lambda a, b: 1.0 if a == b else table.get(frozenset((a, b)), 0.0))
    result = amber.score_amber(gold["responses"], _amber_data(), similarity="exact" if mode == "exact" else "spacy",
                               nouns="aptagger")
    want = {s: {k.replace(":", ""): v for k, v in m.items()} for s, m in gold[mode].items()}
    assert _amber_metrics(result) == want
    assert result["meta"]["settings"]["nouns"] == "aptagger"
    vocab = _amber_data().vocabulary
    for d in result["details"]:
        if d["type"] == "generative":
            assert d["nouns"] == [n for n in gold["nouns"][str(d["id"])] if n in vocab]


def test_amber_rules_read_verbs_and_modals_as_the_tagger_does():
    vocab = _amber_data().vocabulary | {"can"}
    text = "In the image, I can see a man who is about to ski, and people watch the water; a can of soda sits on a rock."
    # "can" (modal), "ski" (after "to") and "watch" (after a plural, before a determiner) are not nouns
    assert amber.amber_nouns(text, vocab, "rules") == ["man", "people", "water", "can", "rock"]
    # the packaged tagger agrees on the verbs and modals, and reads "a can" as a modal too
    assert amber.amber_nouns(text, vocab, "aptagger") == ["man", "people", "water", "rock"]


def _pope_split(split):
    d = GOLDEN["pope"]["splits"][split]
    return d["questions"], d["answers"]


@pytest.mark.parametrize("split", ["random", "popular", "adversarial"])
def test_pope_conventions_equal_their_toolkits(split):
    qs, ans = _pope_split(split)
    gold = GOLDEN["pope"]
    r = pope.score_pope(qs, ans, parser=pope.convention("pope").parser)
    for name in ("pope", "llava"):  # LLaVA's eval_pope.py reads answers as POPE's evaluate.py does
        want = gold[name][split]
        assert (r["TP"], r["FP"], r["TN"], r["FN"]) == (want["TP"], want["FP"], want["TN"], want["FN"])
        assert [r[k] for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")] == [
            round(100 * want[k], 1) for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")]
    r = pope.score_pope(qs, ans, parser=pope.convention("lmms-eval").parser)
    want = gold["lmms-eval"][split]
    assert [r[k] for k in ("accuracy", "precision", "recall", "f1")] == [
        round(100 * want[k], 1) for k in ("accuracy", "precision", "recall", "f1_score")]
    r = pope.score_pope(qs, ans, parser=pope.convention("vlmevalkit").parser)
    want = next(row for row in gold["vlmevalkit"]["rating"] if row["split"] == split)
    assert [r[k] for k in ("f1", "accuracy", "precision", "recall")] == [
        round(want[k], 1) for k in ("Overall", "acc", "precision", "recall")]


def test_pope_vlmevalkit_extraction_and_pooled_overall():
    gold = GOLDEN["pope"]
    splits = ("random", "popular", "adversarial")
    answers = [a["answer"] for s in splits for a in _pope_split(s)[1]]
    assert [pope.parse_yes_no(a, "yorn") for a in answers] == [
        {"Yes": "yes", "No": "no"}.get(x) for x in gold["vlmevalkit"]["extracted"]]
    pooled = pope.pooled_over_splits({s: _pope_split(s)[0] for s in splits}, {s: _pope_split(s)[1] for s in splits},
                                     "yorn")
    overall = next(row for row in gold["vlmevalkit"]["rating"] if row["split"] == "Overall")
    assert (pooled["f1"], pooled["accuracy"]) == (round(overall["Overall"], 1), round(overall["acc"], 1))
    # the pooled F1 is not the mean of the split F1s (VLMEvalKit's headline vs LLaVA's)
    means = pope.mean_over_splits({s: pope.score_pope(*_pope_split(s), parser="yorn") for s in splits})
    assert means["f1"] != pooled["f1"]


def test_mmhal_scores_equal_the_reference_analysis():
    gold = GOLDEN["mmhal"]
    types = gold["types"]
    questions = [{"id": i, "question_type": types[i % 8], "question": "q", "gt_answer": "a", "image_content": ["x"]}
                 for i in range(96)]
    answers = [{"id": i, "answer": "an answer"} for i in range(96)]
    result = mmhal.score_mmhal(questions, answers, gold["reviews"], mmhal.judge_info("judge"))
    assert [0 if d["rating"] is None else d["rating"] for d in result["details"]] == gold["scores"]
    assert f"Average score: {result['score']:.2f}" == gold["printed"][0]
    assert result["hallucination_rate"] == round(100 * sum(gold["hallucination"]) / 96, 1)
    assert f"{result['hallucination_rate'] / 100:.2f}" == gold["printed"][1].split(": ")[1]
    per_type = ",".join(str(result["per_type"][t]) for t in types)
    assert gold["printed"][2].endswith(per_type)
    assert result["unparsed"] == sum(mmhal.parse_rating(r) is None for r in gold["reviews"]) > 0
