"""`mfpo-eval run` end to end on tiny models and the bundled COCO sample: files, scores, base row, resume."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mfpo_data.backends import vlm
from mfpo_train.eval.cli import app


def _run(*args):
    result = CliRunner().invoke(app, ["run", *map(str, args)])
    return result


def _ok(*args):
    result = _run(*args)
    assert result.exit_code == 0, result.output[-3000:]
    return result


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _rescored(out, role="model"):
    """The scorers run by hand on the answers files the run wrote."""
    from mfpo_data.scorers import io
    from mfpo_data.scorers.coco import chair_ground_truth, read_coco
    from mfpo_data.scorers.results import details_path
    from mfpo_train.eval import objhal

    folder = out / role
    scores = {}
    for split in ("random", "popular", "adversarial"):  # `mfpo-eval pope` on the files the run wrote: the same result
        saved = out.parent / f"rescored-{role}-{split}.json"
        _pope = ["pope", "-q", out / "benchmarks" / f"coco_pope_{split}.json", "-a",
                 folder / f"pope-{split}.answers.jsonl", "--out", saved]
        assert CliRunner().invoke(app, list(map(str, _pope))).exit_code == 0
        scores[split] = json.loads(saved.read_text())
        saved.unlink()
        details_path(saved).unlink()
    vocab = objhal.objhal_vocabulary()  # the default Object HalBench scorer: RLAIF-V's rule path
    answers = io.read_answers(folder / "objhal.answers.jsonl", "image_id")
    truth = chair_ground_truth(read_coco(None, "sample"), vocab, [a["image_id"] for a in answers])
    scores["objhal"] = objhal.score_objhal(answers, truth, vocab)
    return {k: {m: v for m, v in r.items() if m != "details"} for k, r in scores.items()}


@pytest.mark.parametrize("family", ["llava", "idefics3"])
def test_run_writes_answers_results_and_table(tiny_models, fresh_build, tmp_path, family):
    out = tmp_path / "eval"
    result = _ok("--model", tiny_models[family], "--benchmarks", "objhal,pope,probes", "--probe-data", fresh_build,
                 "--probe-max-samples", 6, "--max-new-tokens", 4, "--out", out)
    report = json.loads((out / "results.json").read_text())
    [model] = report["models"]
    assert model["role"] == "model" and set(model["results"]) == {"objhal", "pope", "probes"}

    # every item answered once, in the benchmark's order
    for split in ("random", "popular", "adversarial"):
        questions = _lines(out / "benchmarks" / f"coco_pope_{split}.json")
        answers = _lines(out / "model" / f"pope-{split}.answers.jsonl")
        assert [a["question_id"] for a in answers] == [q["question_id"] for q in questions]
        assert all(a["prompt"] == q["text"] for a, q in zip(answers, questions, strict=True))
    objhal_answers = _lines(out / "model" / "objhal.answers.jsonl")
    assert len(objhal_answers) == 15 and len({a["image_id"] for a in objhal_answers}) == 15

    # the numbers in results.json are the scorers' on the written answers
    rescored = _rescored(out)
    for split in ("random", "popular", "adversarial"):
        assert model["results"]["pope"][split] == rescored[split]
    assert model["results"]["objhal"] == rescored["objhal"]
    assert model["results"]["pope"]["mean"]["f1"] == pytest.approx(
        sum(rescored[s]["f1"] for s in ("random", "popular", "adversarial")) / 3, abs=0.051)

    probes = model["results"]["probes"]
    assert probes["n"] == 6 and probes["split"] == "train" and 0 <= probes["preference_accuracy"] <= 1
    assert len(_lines(out / "model" / "probes.jsonl")) == 6

    table = (out / "results.md").read_text()
    # the bundled sample has no val2014 images: POPE's questions are seeded, and every POPE column says so
    assert ("| Model | ObjHal CHAIRs↓ (seeded) | ObjHal CHAIRi↓ (seeded) | POPE rand F1↑ (seeded) | pop F1↑ (seeded)"
            in table)
    assert table.startswith("- Answers limited to --max-new-tokens 4 (default 512); answers cut short change CHAIR")
    assert "Object HalBench: " in table and "seeded: 15 images of the bundled COCO sample, not the 300" in table
    assert "- Probes on " in table and " split 'train' (" in table and " n=6 (0 dropped)" in table
    assert "Pref acc↑" in table and "pooled" not in table.split("\n\n", 1)[1]
    assert table.count(f"| {tiny_models[family].name} |") == 1 and "difference" not in table
    assert "Object HalBench: RLAIF-V's rule path (WordNet lemmas)" in table
    assert "POPE: seeded questions built from COCO split sample (not POPE's files); convention 'pope'" in table
    # every answer and its unparsed count is in results.json and results.md
    assert model["unparsed"]["objhal"]["n"] == 15 and model["unparsed"]["pope-random"]["n"] == 30
    assert f"| objhal {model['unparsed']['objhal']['unparsed']}/15, pope-random " in table
    assert report["settings"]["benchmarks"]["pope"]["convention"] == "pope"
    assert report["settings"]["benchmarks"]["objhal"]["protocol"] == "rlaifv"
    assert table.split("\n\n", 1)[1] in result.output  # the table is printed too


def test_base_adds_the_base_row_and_the_difference_row(tiny_models, trained_adapter, fresh_build, tmp_path):
    from mfpo_train.eval.report import row_values

    out = tmp_path / "eval"
    _ok("--adapter", trained_adapter, "--base", tiny_models["llava"], "--benchmarks", "pope,probes",
        "--probe-data", fresh_build, "--probe-max-samples", 6, "--max-new-tokens", 4, "--out", out)
    report = json.loads((out / "results.json").read_text())
    trained, base = report["models"]
    assert (trained["role"], base["role"]) == ("model", "base")
    assert trained["model"] == str(tiny_models["llava"]) and trained["adapter"] == str(trained_adapter)
    assert trained["adapter_sha256"] and base["adapter"] is None
    assert trained["results"]["probes"] != base["results"]["probes"]  # the adapter changes the log-probs
    assert _rescored_pope_f1(out, "base") == base["results"]["pope"]["random"]["f1"]

    a, b = row_values(trained["results"]), row_values(base["results"])
    assert report["difference"] == {h: None if a[h] is None or b[h] is None else a[h] - b[h] for h in a}
    assert report["difference"]["Pref acc↑"] == pytest.approx(
        100 * (trained["results"]["probes"]["preference_accuracy"] - base["results"]["probes"]["preference_accuracy"]))
    rows = [line for line in (out / "results.md").read_text().splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[1:]] == [f"| {tiny_models['llava'].name} + final", f"| {tiny_models['llava'].name}",
                                                     "| difference"]


def _rescored_pope_f1(out, role):
    from mfpo_data.scorers import io, pope

    questions = pope.read_pope_questions(out / "benchmarks" / "coco_pope_random.json")
    return pope.score_pope(questions, io.read_answers(out / role / "pope-random.answers.jsonl", "question_id"))["f1"]


def test_scores_follow_the_answers(tiny_models, tmp_path, monkeypatch):
    """With answers that name objects and say yes/no, results.json holds the scorers' non-trivial numbers."""

    def fake_generate(model, processor, items, max_new_tokens):
        return ["A man sitting on a chair next to a dog." if "Is there" not in it["prompt"] else
                ("No." if int(it["key"]) % 3 == 0 else "Yes, there is.") for it in items]

    monkeypatch.setattr(vlm, "generate_batch", fake_generate)
    out = tmp_path / "eval"
    _ok("--model", tiny_models["llava"], "--benchmarks", "objhal,pope", "--out", out)
    results = json.loads((out / "results.json").read_text())["models"][0]["results"]
    rescored = _rescored(out)
    assert results["objhal"] == rescored["objhal"]
    # "man" (person), "chair" and "dog" mentioned in all 15 answers; the sample has 1 dog, 1 chair, 6 person images
    from mfpo_data.scorers.coco import chair_ground_truth, read_coco
    from mfpo_train.eval.objhal import objhal_vocabulary

    truth = chair_ground_truth(read_coco(None, "sample"), objhal_vocabulary())
    named = {"person", "chair", "dog"}  # "man" is a person
    hallucinated = [len(named - truth[i]) for i in truth]
    assert 0 < sum(hallucinated) < 45  # some of the three objects are in some images
    assert results["objhal"]["CHAIRi"] == round(100 * sum(hallucinated) / 45, 1)
    assert results["objhal"]["CHAIRs"] == round(100 * sum(h > 0 for h in hallucinated) / 15, 1)
    assert results["objhal"]["counts"]["mentions"] == 45
    for split in ("random", "popular", "adversarial"):
        assert results["pope"][split] == rescored[split]
        assert results["pope"][split]["yes_ratio"] == pytest.approx(100 * 20 / 30, abs=0.05)


def test_rerun_resumes_and_other_settings_are_refused(tiny_models, fresh_build, tmp_path, monkeypatch):
    out = tmp_path / "eval"
    args = ("--model", tiny_models["llava"], "--benchmarks", "pope", "--max-new-tokens", 4, "--out", out)
    _ok(*args)
    first = (out / "model" / "pope-random.answers.jsonl").read_bytes()
    calls = []
    real = vlm.generate_batch
    monkeypatch.setattr(vlm, "generate_batch", lambda *a, **k: calls.append(1) or real(*a, **k))
    _ok(*args, "--batch-size", 3)  # the batch size does not change greedy answers: a resume
    assert calls == [] and (out / "model" / "pope-random.answers.jsonl").read_bytes() == first
    _ok(*args[:3], "pope,probes", "--probe-data", fresh_build, "--probe-max-samples", 2, *args[4:])  # probes added
    assert calls == [] and "probes" in json.loads((out / "results.json").read_text())["models"][0]["results"]

    refused = _run(*args[:3], "pope,probes", "--probe-data", fresh_build, "--max-new-tokens", 5, "--out", out)
    assert refused.exit_code == 1
    assert "other settings (max_new_tokens: 4 there, 5 now; see" in refused.output and "Traceback" not in refused.output
    assert (out / "model" / "pope-random.answers.jsonl").read_bytes() == first


@pytest.mark.parametrize(("args", "message"), [
    (("--benchmarks", "amber"), "clone https://github.com/junyangwang0410/AMBER and pass --amber-root"),
    (("--benchmarks", "probes"), "probes need an mfpo dataset: --probe-data"),
    (("--benchmarks", "pope", "--pope-questions", "nowhere"), "download output/coco/coco_pope_random.json"),
    (("--benchmarks", "objhal", "--coco-root", "no-coco"), "COCO folder not found"),
    (("--benchmarks", "pope,chair"), "unknown 'chair'"),
])
def test_missing_data_is_one_line_before_any_model_loads(tmp_path, args, message):
    result = _run("--model", tmp_path / "no-such-model", *args, "--out", tmp_path / "eval")
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert not (tmp_path / "eval" / "model").exists()


def test_notebook_api_returns_the_results_of_the_run(tiny_models, fresh_build, tmp_path):
    from mfpo_train.eval import evaluate
    from mfpo_data.backends.vlm import load_vlm

    out = tmp_path / "eval"
    _ok("--model", tiny_models["idefics3"], "--benchmarks", "pope,probes", "--probe-data", fresh_build,
        "--probe-max-samples", 4, "--max-new-tokens", 4, "--out", out)
    from_cli = json.loads((out / "results.json").read_text())["models"][0]["results"]
    model, processor = load_vlm(tiny_models["idefics3"])
    results = evaluate(model, processor, benchmark=["pope", "probes"], probe_data=str(fresh_build), probe_max_samples=4,
                       max_new_tokens=4, progress=False)
    assert json.loads(json.dumps(results)) == from_cli


def test_the_object_halbench_sentence_names_the_singulars_its_protocol_used():
    """results.md's sentence for each Object HalBench protocol: the fixed vocabulary brings inflect's singulars, so
    it never says "WordNet lemmas" (the rlaifv path) or "pattern singulars" (the reference CHAIR) for it."""
    from mfpo_train.eval.suite import describe

    said = {key: describe("objhal", {"scorer": scorer, "protocol": protocol, "source": "seeded"})
            for key, (scorer, protocol) in {"rlaifv": ("rlaifv", "rlaifv"), "chair": ("chair", "reference"),
                                            "fixed": ("rlaifv", "fixed")}.items()}
    assert said["rlaifv"].startswith("Object HalBench: RLAIF-V's rule path (WordNet lemmas), RLAIF-V's refined synonyms;")
    assert said["chair"].startswith("Object HalBench: the reference CHAIR (pattern singulars), RLAIF-V's refined synonyms;")
    assert said["fixed"].startswith("Object HalBench: CHAIR with the fixed vocabulary (RLAIF-V's refined synonyms "
                                    "stripped and lower-cased, inflect singulars; not a reference's numbers);")
    assert "WordNet" not in said["fixed"] and "pattern" not in said["fixed"]


@pytest.mark.parametrize("convention", ["pope", "llava", "lmms-eval", "vlmevalkit"])
def test_the_pope_sentence_says_vlmevalkits_judge_is_not_run(convention):
    from mfpo_data.scorers import pope
    from mfpo_train.eval.suite import describe

    conv = pope.convention(convention)
    said = describe("pope", {"source": "official POPE files", "convention": conv.name, "parser": conv.parser,
                             "headline": conv.headline})
    assert said.startswith(f"POPE: official POPE files; convention {convention!r} (parser {conv.parser!r}, ")
    judged = "answers YOrN_Extraction cannot read count as 'no' (VLMEvalKit's exact matching: the LLM judge"
    assert (judged in said) == (convention == "vlmevalkit")
