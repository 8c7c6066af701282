"""`source.kind: on_policy`: the model's own sampled answers, labelled by CHAIR (and POPE's parser), as pairs.

What it must show: sampling is deterministic for a seed and the same for 1 and 3 tasks; a kill and a rerun
give the same rows; the labels are the CHAIR scorer's output on the same answers (hand-checked cases);
every image and prompt without a valid pair is a counted reject.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from mfpo_data.backends import vlm
from mfpo_data.errors import ConfigError, MfpoError, MissingExtraError
from mfpo_data.layout import OutputLayout
from mfpo_data.pipeline.build import build_dataset
from mfpo_data.scorers import chair, coco
from mfpo_data.textpairs.policy_pairs import chair_label, choose_description_pair, choose_presence_pair, presence_label
from tests.fixtures.builds import rows_by_id
from tests.paths import REPO


SAMPLE_GT = None  # filled lazily: the bundled sample's CHAIR ground truth, as mfpo-eval chair computes it


def _truth() -> dict:
    global SAMPLE_GT
    if SAMPLE_GT is None:
        SAMPLE_GT = coco.chair_ground_truth(coco.read_coco(None, "sample"), chair.load_vocabulary())
    return SAMPLE_GT


def _sets(model, *more) -> list[str]:
    return [f"source.model={model}", "output.progress=false", *more]


# -- labels and the choice, by hand -----------------------------------------------------------------------
def test_labels_are_the_chair_scorers_details_and_the_choice_follows_them():
    vocab = chair.load_vocabulary()
    truth = {"person", "orange"}  # image 1 of the sample: its annotation and what its captions name
    answers = ["A man holding a dog and a cat.", "A man in an orange suit.", "A man with a dog.", ""]
    labels = [chair_label(a, 1, truth, vocab) for a in answers]
    # the scorer refuses an image answered twice: each answer stands for a copy of image 1 (same ground truth)
    together = chair.score_chair([{"image_id": i, "answer": a} for i, a in enumerate(answers)],
                                 dict.fromkeys(range(len(answers)), truth), vocab)["details"]
    assert [(lb["mentioned"], lb["hallucinated"]) for lb in labels] == [(d["mentioned"], d["hallucinated"]) for d in together]
    assert labels[0]["hallucinated"] == [["dog", "dog"], ["cat", "cat"]] and labels[0]["gt_objects_mentioned"] == 1
    assert labels[1]["hallucinated"] == [] and (labels[1]["gt_objects"], labels[1]["gt_objects_mentioned"]) == (2, 2)
    choice = choose_description_pair(labels, min_recall=0.5)
    assert (choice.chosen, choice.rejected, choice.reason) == (1, 0, None)  # clean and complete over 2 hallucinations
    # The empty answer hallucinates nothing but names nothing: with min_recall 0 it ties with answer 1 on
    # hallucinations and loses on recall; it never wins by saying less.
    assert choose_description_pair(labels, min_recall=0.0).chosen == 1


def test_labels_follow_the_reference_protocol():
    """The reference chair.py never counts a singular "bus" (pattern singularises it to "bu"); the fixed
    vocabulary does. The build labels with the protocol its recipe names, as mfpo-eval would score."""
    answers = ["A cat.", "A cat on a bus.", "A dog."]
    reference = [chair_label(a, 3, {"cat"}, chair.load_vocabulary()) for a in answers]
    fixed = [chair_label(a, 3, {"cat"}, chair.load_vocabulary("coco", "fixed")) for a in answers]
    assert reference[1]["hallucinated"] == [] and fixed[1]["hallucinated"] == [["bus", "bus"]]
    assert (choose_description_pair(reference).chosen, choose_description_pair(reference).rejected) == (0, 2)
    assert (choose_description_pair(fixed).chosen, choose_description_pair(fixed).rejected) == (0, 1)


@pytest.mark.parametrize(("answers", "truth", "kwargs", "reason"), [
    (["A cat.", "A cat on a sofa."], set(), {}, "no_ground_truth"),
    (["A cat.", "A cat on a bed."], {"cat", "bed"}, {}, "no_hallucination"),
    (["A cat and a dog.", "A dog."], {"cat"}, {}, "no_contrast"),  # one hallucinated object each
    (["A dog.", "A photo.", "It is dark."], {"person"}, {"min_recall": 0.5}, "low_recall"),
    (["A cat, a dog and a car.", "A cat and a dog."], {"cat"}, {"chosen": "clean"}, "no_clean_answer"),
])
def test_no_valid_pair_has_a_reason(answers, truth, kwargs, reason):
    labels = [chair_label(a, 7, truth, chair.load_vocabulary()) for a in answers]
    choice = choose_description_pair(labels, **kwargs)
    assert (choice.chosen, choice.rejected, choice.reason) == (None, None, reason)
    assert choice.message.startswith(f"{reason}: ")


def test_presence_labels_use_popes_parser():
    labels = [presence_label(a, "no") for a in ("Yes, there is a dog.", "No, there is not.", "I cannot tell.")]
    assert [lb["parsed"] for lb in labels] == ["yes", "no", "yes"]  # POPE's parser reads "I cannot tell" as yes
    assert (choose_presence_pair(labels).chosen, choose_presence_pair(labels).rejected) == (1, 0)
    exact = [presence_label(a, "yes", "exact") for a in ("Yes.", "no", "yes")]
    assert [lb["correct"] for lb in exact] == [None, False, True]  # lmms-eval's parser cannot read "Yes."
    assert choose_presence_pair([presence_label("No.", "yes")]).reason == "no_right_answer"
    assert choose_presence_pair([presence_label("Yes.", "yes")]).reason == "no_wrong_answer"


# -- sampling ---------------------------------------------------------------------------------------------
def test_sampling_is_seeded_per_item_whatever_the_batch(tiny_llava):
    model, processor = vlm.load_vlm(tiny_llava)
    image = REPO / "mfpo_data" / "assets" / "coco_sample" / "sample" / "chelsea.jpg"
    items = [{"key": str(i), "image": image, "prompt": "Please describe this image in detail.", "seed": 100 + i % 3}
             for i in range(6)]
    sampling = vlm.Sampling(temperature=1.0, top_p=0.9)
    one = vlm.generate_answers(model, processor, items, batch_size=1, max_new_tokens=10, sampling=sampling, progress=False)
    many = vlm.generate_answers(model, processor, items[::-1], batch_size=4, max_new_tokens=10, sampling=sampling,
                                progress=False)
    by_key = {a["key"]: a["answer"] for a in many}
    assert [a["answer"] for a in one] == [by_key[a["key"]] for a in one]  # batch and order do not matter
    assert one[0]["answer"] == one[3]["answer"] and one[1]["answer"] == one[4]["answer"]  # same seed, same answer
    assert len({a["answer"] for a in one[:3]}) == 3  # other seeds, other answers
    greedy = vlm.generate_answers(model, processor, items[:2], max_new_tokens=10, progress=False)
    assert greedy[0]["answer"] == greedy[1]["answer"] != one[0]["answer"]
    for bad, message in (({"temperature": 0}, "temperature must be > 0"), ({"top_p": 1.5}, "top_p must be in"),
                         ({"top_k": -1}, "top_k must be >= 0")):
        with pytest.raises(vlm.GenerationError, match=message):
            vlm.Sampling(**bad)


# -- the build, with scripted answers: exact rows and rejects ----------------------------------------------
SCRIPT = {  # (image id, unit) -> the K answers; the bundled sample's ground truth is in the comments
    "1:describe:0": ["A man holding a dog and a cat.", "A man in an orange suit.", "A man with a dog."],  # person, orange
    "2:describe:0": ["A cup of coffee.", "A cup and a spoon on a table.", "A cup."],  # cup, dining table, spoon
    "3:describe:0": ["A cat.", "A cat on a bus.", "A dog."],  # cat; "a bus" is not counted by the reference
    "4:describe:0": ["A motorcycle and a dog.", "A dog on a motorcycle.", "A dog."],  # chair, motorcycle
    "5:describe:0": ["A car.", "A photo.", "It is dark."],  # person
}
EXPECTED_ROWS = {"sample:1:describe:0": (1, 0, ["dog", "cat"]), "sample:3:describe:0": (0, 2, ["dog"])}
EXPECTED_REJECTS = {"sample:2:describe:0": "no_hallucination", "sample:4:describe:0": "no_contrast",
                    "sample:5:describe:0": "low_recall"}


def _scripted(model, processor, items, max_new_tokens, sampling=None):
    out = []
    for item in items:
        unit, k = item["key"].removeprefix("sample:").split("#")
        if ":presence:" in unit:  # yes-questions: the first answer is right; no-questions: the second
            out.append(["Yes, there is.", "No, there is not.", "No."][int(k)])
        else:
            out.append(SCRIPT[unit][int(k)])
    return out


@pytest.fixture(scope="module")
def scripted_build(tiny_llava, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(vlm, "generate_batch", _scripted)
    try:
        out = tmp_path_factory.mktemp("scripted")
        layout = build_dataset("coco_on_policy", _sets(tiny_llava, "source.limit=5", "source.samples=3",
                                                       "source.min_recall=0.5", "source.presence_questions=2"), out)
    finally:
        mp.undo()
    return layout


def test_scripted_answers_give_the_pairs_and_rejects_chair_says(scripted_build):
    rows = rows_by_id(scripted_build)
    described = {i: r for i, r in rows.items() if r["pair_type"] == "description"}
    assert sorted(described) == sorted(EXPECTED_ROWS)
    for row_id, (chosen, rejected, hallucinated) in EXPECTED_ROWS.items():
        row, unit = described[row_id], row_id.removeprefix("sample:")
        meta = json.loads(row["metadata"])
        assert (row["chosen_text"], row["rejected_text"]) == (SCRIPT[unit][chosen], SCRIPT[unit][rejected])
        assert (meta["chosen_sample"], meta["rejected_sample"], meta["hallucinated"]) == (chosen, rejected, hallucinated)
        assert meta["labeler"] == {"scorer": "chair", "version": "2", "protocol": "reference", "synonyms": "coco"}
        assert meta["sampling"]["samples"] == 3 and meta["policy"]["adapter"] is None
        assert row["source"] == "on_policy" and row["image_pair_valid"]
    rejects = [json.loads(line) for line in scripted_build.rejects_file.read_text().splitlines()]
    described_rejects = {r["id"]: r["reason"].split(":")[0] for r in rejects if ":describe:" in r["id"]}
    assert described_rejects == EXPECTED_REJECTS
    # Every image and prompt is a row or a counted reject: 5 images x (1 description + 2 presence questions).
    assert len(rows) + len(rejects) == 15
    assert scripted_build.read_stats()["dropped"] == dict(Counter(r["reason"].split(":")[0] for r in rejects))
    # POPE-style rows: the right answer over the wrong one; "No, there is no X" rows teach no image preference.
    presence = {i: r for i, r in rows.items() if r["pair_type"] == "presence"}
    assert presence and all(r["chosen_text"] != r["rejected_text"] for r in presence.values())
    assert all(r["image_pair_valid"] == (":presence:yes:" in i) for i, r in presence.items())


def test_labels_in_the_answers_file_equal_mfpo_eval_chair(scripted_build):
    """Scoring the build's answers with the CHAIR scorer mfpo-eval runs gives the labels the build wrote."""
    records = [json.loads(line) for line in scripted_build.answers_file.read_text().splitlines()]
    described = [r for r in records if ":describe:" in r["key"]]
    assert len(described) == 5 * 3 and [r["key"] for r in records] == sorted(r["key"] for r in records)
    truth = {str(i): objs for i, objs in _truth().items()}
    # each sample is scored as an image of its own (the scorer refuses an image answered twice), with its image's truth
    scored = chair.score_chair([{"image_id": r["key"], "answer": r["answer"]} for r in described],
                               {r["key"]: truth[r["image_id"]] for r in described})
    assert [(r["label"]["mentioned"], r["label"]["hallucinated"]) for r in described] == \
        [(d["mentioned"], d["hallucinated"]) for d in scored["details"]]
    assert scored["CHAIRs"] == round(100 * sum(bool(r["label"]["hallucinated"]) for r in described) / 15, 1)


def test_the_hallucinated_object_as_key_object_follows_the_validity_rule(tiny_llava, tmp_path, monkeypatch):
    monkeypatch.setattr(vlm, "generate_batch", _scripted)
    layout = build_dataset("coco_on_policy", _sets(tiny_llava, "source.limit=5", "source.samples=3",
                                                   "source.min_recall=0.5", "source.key_object=hallucinated"), tmp_path)
    row = rows_by_id(layout)["sample:1:describe:0"]
    params, meta = json.loads(row["perturbation_params"]), json.loads(row["metadata"])
    # The rejected answer hallucinated a dog: the pair is about the dog's absence, which no perturbation of
    # the image can teach without painting one in (presence_negative: insert); the region is the person.
    assert not row["image_pair_valid"] and meta["image_pair_invalid"].startswith("absent_object: there is no dog")
    assert [k["category"] for k in row["key_objects"]] == ["person"] and params["region"] == "key_object"


# -- the build, sampling the tiny model: 1 vs 3 tasks, kill and rerun --------------------------------------
SAMPLED = ("source.limit=8", "source.samples=4", "source.max_new_tokens=24", "source.presence_questions=0",
           "source.batch_size=8")


@pytest.fixture(scope="module")
def sampled_build(tiny_llava, tmp_path_factory):
    return build_dataset("coco_on_policy", _sets(tiny_llava, *SAMPLED), tmp_path_factory.mktemp("sampled"))


def _same_build(a: OutputLayout, b: OutputLayout) -> None:
    assert rows_by_id(a) == rows_by_id(b)
    assert a.answers_file.read_bytes() == b.answers_file.read_bytes()
    assert a.rejects_file.read_bytes() == b.rejects_file.read_bytes()


def test_one_and_three_tasks_sample_the_same_answers_and_rows(tiny_llava, sampled_build, tmp_path):
    rows = rows_by_id(sampled_build)
    assert any(r["pair_type"] == "description" for r in rows.values())
    answers = sampled_build.answers_file.read_text().splitlines()
    assert len(answers) == 8 * 4 and len({json.loads(a)["answer"] for a in answers}) > 20  # sampled, not greedy
    three = build_dataset("coco_on_policy", _sets(tiny_llava, *SAMPLED, "executor.tasks=3"), tmp_path / "three")
    _same_build(sampled_build, three)
    reseeded = build_dataset("coco_on_policy", _sets(tiny_llava, *SAMPLED, "seed=1"), tmp_path / "seed1")
    assert reseeded.answers_file.read_bytes() != sampled_build.answers_file.read_bytes()


def test_a_killed_build_resumes_its_answers_and_gives_the_same_rows(tiny_llava, sampled_build, tmp_path):
    out, mark = tmp_path / "killed", tmp_path / "fault.fired"
    env = {**os.environ, "PYTHONPATH": str(REPO), "MFPO_FAULT_INJECT": "0:a12", "MFPO_FAULT_MARK": str(mark),
           "OMP_NUM_THREADS": "1"}
    code = (f"from mfpo_data.pipeline.build import build_dataset; "
            f"build_dataset('coco_on_policy', {_sets(tiny_llava, *SAMPLED)!r}, {str(out)!r})")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=300)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert mark.exists() and proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    layout = OutputLayout(out)
    staged = layout.staging_answers(0)
    assert len(staged.read_text().splitlines()) == 16  # two batches of 8 were on disk when it died
    with open(staged, "a") as f:  # and it died half-way through writing the next line
        f.write('{"key": "sample:9:describe:0#0", "ans')
    calls = []
    real = vlm.generate_batch
    monkey = pytest.MonkeyPatch()
    monkey.setattr(vlm, "generate_batch", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    try:
        resumed = build_dataset("coco_on_policy", _sets(tiny_llava, *SAMPLED), out)
    finally:
        monkey.undo()
    assert sum(calls) == 8 * 4 - 16  # only the missing answers were sampled
    _same_build(sampled_build, resumed)


# -- policy: an adapter, another adapter in the same folder, merge, missing extra, bad options -------------
@pytest.fixture(scope="module")
def adapter(tiny_llava, tmp_path_factory):
    """A LoRA adapter with random (non-zero) weights on the tiny LLaVA, saved as mfpo-train saves one."""
    from peft import LoraConfig, get_peft_model

    model, _ = vlm.load_vlm(tiny_llava)
    peft = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    folder = tmp_path_factory.mktemp("adapter")
    peft.save_pretrained(folder)
    return folder


def test_build_from_an_adapter_records_it_and_refuses_another_in_the_same_folder(tiny_llava, adapter, sampled_build,
                                                                                 tmp_path):
    from mfpo_data.layout import sha256_file

    few = ("source.limit=3", "source.samples=4", "source.max_new_tokens=24", "source.presence_questions=0")
    out = tmp_path / "round2"
    layout = build_dataset("coco_on_policy", [f"source.adapter={adapter}", *_sets(tiny_llava, *few)], out)
    sha = sha256_file(adapter / "adapter_model.safetensors")
    stats = layout.read_stats()
    assert stats["policy"]["adapter_sha256"] == sha and stats["policy"]["model"] == str(tiny_llava)
    base = {json.loads(a)["key"]: json.loads(a)["answer"] for a in sampled_build.answers_file.read_text().splitlines()}
    tuned = [json.loads(a) for a in layout.answers_file.read_text().splitlines()]
    assert sum(base[a["key"]] != a["answer"] for a in tuned) > len(tuned) // 2  # the adapter changes the answers
    for row in rows_by_id(layout).values():
        assert json.loads(row["metadata"])["policy"]["adapter_sha256"] == sha
    (adapter / "adapter_model.safetensors").write_bytes((adapter / "adapter_model.safetensors").read_bytes()[:-4] + b"\0" * 4)
    with pytest.raises(MfpoError, match="inputs changed|another model, adapter or sampling"):
        build_dataset("coco_on_policy", [f"source.adapter={adapter}", *_sets(tiny_llava, *few)], out)


def test_merge_adapter_writes_the_policy_as_one_model(tiny_llava, tmp_path):
    from peft import LoraConfig, get_peft_model
    from typer.testing import CliRunner

    from mfpo_train.cli import app

    model, _ = vlm.load_vlm(tiny_llava)
    folder = tmp_path / "adapter"
    get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).save_pretrained(folder)
    result = CliRunner().invoke(app, ["merge-adapter", str(folder), str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    provenance = json.loads((tmp_path / "merged" / "mfpo_merged_from.json").read_text())
    assert provenance["model"] == str(tiny_llava) and provenance["adapter_sha256"]
    items = [{"key": "a", "image": REPO / "mfpo_data/assets/coco_sample/sample/robin.jpg", "prompt": "describe the image."}]
    merged = vlm.generate_answers(*vlm.load_vlm(tmp_path / "merged"), items, max_new_tokens=8, progress=False)
    unmerged = vlm.generate_answers(*vlm.load_vlm(None, folder), items, max_new_tokens=8, progress=False)
    assert merged[0]["answer"] == unmerged[0]["answer"]
    again = CliRunner().invoke(app, ["merge-adapter", str(folder), str(tmp_path / "merged")])
    assert again.exit_code == 1 and "is not an empty folder" in again.output


def test_missing_extra_and_bad_options_are_one_line_before_any_model_loads(tiny_llava, tmp_path, monkeypatch):
    import importlib

    from typer.testing import CliRunner

    from mfpo_data.cli import app

    real = importlib.import_module

    def no_torch(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("No module named 'torch'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr("mfpo_data._deps.importlib.import_module", no_torch)
    with pytest.raises(MissingExtraError, match=r"source kind 'on_policy' .* needs torch: pip install -e \"\.\[onpolicy\]\" in the mfpo checkout$"):
        build_dataset("coco_on_policy", _sets(tiny_llava), tmp_path / "no-torch")
    assert not (tmp_path / "no-torch").exists()
    monkeypatch.undo()
    for option, message in (("source.temperature=0", "'source': temperature must be > 0"),
                            ("source.min_recall=2", "'source.min_recall' must be in [0, 1]"),
                            ("source.samples=0", "'source.samples' must be >= 1"),
                            ("source.model=null", "'source.model' is required")):
        result = CliRunner().invoke(app, ["build", "--recipe", "coco_on_policy", "--output", str(tmp_path / "bad"),
                                          "--set", "output.progress=false", "--set", option])
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output, result.output
        assert not (tmp_path / "bad").exists()
    with pytest.raises(ConfigError, match="'source.presence_parser' must be one of"):
        build_dataset("coco_on_policy", _sets(tiny_llava, "source.presence_parser=llm"), tmp_path / "bad")


def test_the_card_says_whose_answers_the_pairs_are(scripted_build):
    from mfpo_data.publishing.card import SAMPLE_LICENCE, _on_policy_sentence, licence_for

    stats = scripted_build.read_stats()
    sentence = _on_policy_sentence(stats)
    assert sentence.startswith("**On-policy data.** The text pairs are the answers of `<local>/")
    assert "3 answers per prompt at temperature 1.0" in sentence and "`reference` protocol" in sentence
    assert "POPE's `pope` answer parser" in sentence and "on-policy for that model" in sentence
    assert "names at least 50% of the image's objects" in sentence  # the scripted build's min_recall: 0.5
    assert licence_for({}, stats) is SAMPLE_LICENCE
    assert _on_policy_sentence({"backends": {"source": {"kind": "coco"}}}) == ""


@pytest.mark.parametrize("name", ["coco_on_policy", "coco_on_policy_7b"])
def test_the_on_policy_recipes_load(name):
    from mfpo_data.config import load_recipe
    from mfpo_data.pipeline.assemble import make_source

    source = make_source(load_recipe(name))
    assert source.kind == "on_policy" and source.prompts == ["Please describe this image in detail."]
    assert Path(REPO / "scripts" / "on_policy_rounds.sh").stat().st_mode & 0o111


def test_the_7b_cost_calculation_adds_up_for_the_recipes_settings():
    """The header's cost per 1,000 images is arithmetic on stated assumptions; it must follow the recipe."""
    from mfpo_data.config import load_recipe

    text = " ".join((REPO / "recipes" / "coco_on_policy_7b.yaml").read_text().replace("#", " ").split())
    opts = load_recipe("coco_on_policy_7b").source.options
    answers, batch, steps, step_ms = 1000 * opts["samples"], opts["batch_size"], 210, 30  # steps, ms: assumptions
    kv_mb = 2 * 32 * 4096 * 2 / 2**20  # K and V, 32 layers, hidden 4096, bf16: per token, in MiB
    assert kv_mb == 0.5 and f"{batch} x ~730 tokens x 0.5 MB" in text and round(batch * 730 * kv_mb / 1000) == 12
    assert round((13.5 + batch * 730 * kv_mb / 1000) / 3.35) == 8 and "= ~8 ms at 3.35 TB/s" in text
    decode_s = answers // batch * steps * step_ms / 1000
    assert f"{answers:,} / {batch} = {answers // batch} batches x {steps} steps x {step_ms} ms = {decode_s:,.0f} s = " \
           f"{decode_s / 60:.0f} min" in text
    prefill_s = answers * 620 * 14e9 / 400e12
    assert f"{answers:,} x ~620 tokens" in text and f"= {answers * 620 * 14e9 / 1e15:.0f} PFLOP" in text
    assert f"= ~{prefill_s / 60:.0f} min" in text
    total_min = (decode_s + prefill_s) / 60
    assert round(total_min / 5) * 5 == 30 and "~30 min of one H100 per 1,000 images (~0.5 GPU-hour)" in text
    assert "118k images ~59 GPU-hours" in text and 118 * 0.5 == 59
    assert f"{batch} x (620 + {opts['max_new_tokens']}) tokens x 0.5 MB = 18 GB" in text
    assert round(batch * (620 + opts["max_new_tokens"]) * kv_mb / 1000) == 18
