"""POPE through `mfpo-eval run` on a COCO val2014 folder: the shipped official question files by default, RePOPE's
relabelled files with `--pope-labels repope`, scored on the labels of the file the run used (synthetic images
named as val2014's; the answers are scripted: this is about which questions and labels reach the scorer)."""

from __future__ import annotations

import gzip
import hashlib
import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from mfpo_data.backends import vlm, vlm_inputs
from mfpo_data.scorers import pope
from mfpo_train.eval.cli import app


def _says(items) -> list[str]:
    return ["Yes, there is." if int(it["key"]) % 3 else "No." for it in items]


@pytest.fixture
def val2014(tmp_path):
    """A COCO root whose val2014/ holds a tiny image under the name of each of POPE's 500 images."""
    folder = tmp_path / "coco" / "val2014"
    folder.mkdir(parents=True)
    for name in sorted({q["image"] for q in pope.official_questions("random")}):
        Image.new("RGB", (8, 6), (len(name) * 7 % 256, 90, 30)).save(folder / name)
    return folder.parent


@pytest.fixture
def scripted(monkeypatch):
    calls = []
    monkeypatch.setattr(vlm, "generate_batch", lambda m, p, items, n: calls.append(len(items)) or _says(items))
    monkeypatch.setattr(vlm_inputs, "encode", lambda processor, items, cache=None: None)  # no model reads them
    return calls


def _run(tiny_models, coco, out, *extra):
    result = CliRunner().invoke(app, ["run", "--model", str(tiny_models["llava"]), "--benchmarks", "pope", "--coco-root",
                                      str(coco), "--coco-split", "val2014", "--batch-size", "600", "--out", str(out),
                                      *map(str, extra)])
    assert result.exit_code == 0, result.output[-3000:]
    return json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


def test_official_files_are_the_default_on_val2014_and_repope_relabels(tiny_models, val2014, scripted, tmp_path):
    report, table = _run(tiny_models, val2014, tmp_path / "official")
    settings = report["settings"]["benchmarks"]["pope"]
    assert settings["source"] == "official POPE files" and settings["labels"] == "pope"
    assert {s: (f["sha256"], f["official"], f["questions"]) for s, f in settings["files"].items()} == {
        s: (pope.OFFICIAL_SHA256[s], True, 3000) for s in pope.SAMPLINGS}
    results = report["models"][0]["results"]["pope"]
    for split in pope.SAMPLINGS:
        questions = pope.official_questions(split)
        given = [{"question_id": q["question_id"], "answer": _says([{"key": q["question_id"]}])[0]} for q in questions]
        expected = {k: v for k, v in pope.score_pope(questions, given, split=split).items() if k != "details"}
        expected["meta"]["settings"].update(convention="pope", questions_sha256=pope.OFFICIAL_SHA256[split],
                                            official=True, answers_checked=True)  # as `mfpo-eval pope` records it
        assert results[split] == expected and results[split]["n"] == 3000
        saved = json.loads((tmp_path / "official" / "model" / f"pope-{split}.result.json").read_text())
        assert saved["meta"] == expected["meta"]
        written = [json.loads(line) for line in (tmp_path / "official" / "benchmarks" / f"coco_pope_{split}.json")
                   .read_text().splitlines()]
        assert written == questions
    assert sum(scripted) == 9000
    assert "POPE: official POPE files; convention 'pope'" in table and "(seeded)" not in table

    repope = tmp_path / "repope"
    repope.mkdir()
    relabelled = {}
    for split in pope.SAMPLINGS:
        kept = pope.official_questions(split)[:6]
        kept = [dict(q, label="no" if q["label"] == "yes" else "yes") if i == 0 else q for i, q in enumerate(kept)]
        relabelled[split] = kept
        (repope / f"coco_repope_{split}.json").write_text("".join(json.dumps(q) + "\n" for q in kept))
    report, table = _run(tiny_models, val2014, tmp_path / "eval-repope", "--pope-labels", "repope", "--repope-dir",
                         repope)
    settings = report["settings"]["benchmarks"]["pope"]
    assert settings["source"] == "RePOPE labels" and settings["labels"] == "repope"
    assert all(not f["published"] and f["questions"] == 6 for f in settings["files"].values())
    results = report["models"][0]["results"]["pope"]
    for split, kept in relabelled.items():
        given = [{"question_id": q["question_id"], "answer": _says([{"key": q["question_id"]}])[0]} for q in kept]
        expected = {k: v for k, v in pope.score_pope(kept, given, split=split).items() if k != "details"}
        expected["meta"]["settings"].update(convention="pope", official=False, answers_checked=True,
                                            questions_sha256=pope.file_sha256(repope / f"coco_repope_{split}.json"))
        official = pope.score_pope(pope.official_questions(split)[:6], given, split=split)
        assert results[split] == expected and results[split]["accuracy"] != official["accuracy"]  # RePOPE's labels
    assert "POPE: RePOPE's corrected labels, RePOPE labels; convention 'pope'" in table


def _refused(tmp_path, *args) -> str:
    from tests.fixtures.hostile import one_error_line

    result = CliRunner().invoke(app, ["run", "--model", str(tmp_path / "no-model"), "--benchmarks", "pope",
                                      "--out", str(tmp_path / "eval"), *map(str, args)])
    line = one_error_line(result)
    assert not (tmp_path / "eval").exists()
    return line


def test_official_questions_without_coco_root_are_one_line_before_a_model(tmp_path):
    """The bundled sample has no val2014 images: say so, not "image not found: .../COCO_val2014_...jpg"."""
    assert _refused(tmp_path, "--pope-source", "official") == (
        "error: --pope-source official: POPE's official files ask about COCO val2014 images: give --coco-root (a COCO "
        "folder holding val2014/); without it only the bundled 15-image sample is here (--pope-source build asks "
        "about it)")
    folder = tmp_path / "pope"
    folder.mkdir()
    for split in pope.SAMPLINGS:
        (folder / f"coco_pope_{split}.json").write_bytes(gzip.decompress(pope.official_file(split).read_bytes()))
    assert _refused(tmp_path, "--pope-questions", folder).startswith(
        "error: --pope-questions: POPE's official files ask about COCO val2014 images: give --coco-root")


def test_an_official_file_of_another_split_in_pope_questions_is_refused(tmp_path, val2014):
    folder = tmp_path / "pope"
    folder.mkdir()
    for split, real in zip(pope.SAMPLINGS, ("random", "adversarial", "popular"), strict=True):
        (folder / f"coco_pope_{split}.json").write_bytes(gzip.decompress(pope.official_file(real).read_bytes()))
    line = _refused(tmp_path, "--pope-questions", folder, "--coco-root", val2014)
    assert line == (f"error: {folder / 'coco_pope_popular.json'} is POPE's official adversarial file (sha256 420b…), "
                    "not popular: give the popular file under this name, or this file as coco_pope_adversarial.json")


def test_built_questions_record_the_sha256_of_the_file_written(tiny_models, scripted, tmp_path):
    out = tmp_path / "built"
    result = CliRunner().invoke(app, ["run", "--model", str(tiny_models["llava"]), "--benchmarks", "pope", "--out",
                                      str(out)])
    assert result.exit_code == 0, result.output[-3000:]
    hashes = {}
    for split in pope.SAMPLINGS:
        settings = json.loads((out / "model" / f"pope-{split}.result.json").read_text())["meta"]["settings"]
        written = (out / "benchmarks" / f"coco_pope_{split}.json").read_bytes()
        assert settings["questions_sha256"] == hashlib.sha256(written).hexdigest() and settings["official"] is False
        hashes[split] = settings["questions_sha256"]
    assert len(set(hashes.values())) == 3
