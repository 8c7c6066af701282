"""The paper's text-preference sources read as published: RLHF-V (`text` as a JSON string) and
VLFeedback (rated completions -> pairs by Silkie's rule), from every kind of local copy, and the HF
stream sharded by its files. Datasets are built here in the published schemas, with images from the
bundled COCO sample."""

import json
import shutil

import datasets
import pytest
from datasets import Features, Image, Sequence, Value

from mfpo_data.config import recipe_from_dict
from mfpo_data.errors import ConfigError
from mfpo_data.pipeline.build import build_dataset
from mfpo_data.sources.base import read_image
from mfpo_data.sources.coco import BUNDLED_COCO
from mfpo_data.sources.hf import HfSource
from mfpo_data.sources.jsonl import JsonlSource
from mfpo_data.sources.presets import RECORD_PRESETS
from mfpo_data.sources.presets.vlfeedback import VlFeedback
from mfpo_data.sources.records import PRESETS, PresetName
from tests.fixtures.builds import rows_by_id


PHOTOS = ["apple.jpg", "chelsea.jpg", "coffee.jpg", "motorcycle.jpg", "street.jpg", "plant.jpg"]


def _photo(name: str) -> bytes:
    return (BUNDLED_COCO / "sample" / name).read_bytes()


def _build(source: dict, out, tasks: int = 2):
    recipe = recipe_from_dict({"source": source, "output": {"dir": str(out), "progress": False}, "executor": {"tasks": tasks}})
    return build_dataset(recipe)


def _rejects(layout) -> dict[str, str]:
    return {r["id"]: r["reason"] for r in map(json.loads, layout.rejects_file.read_text().splitlines())}


def _pairs(rows: dict) -> dict:
    """What must not depend on the copy or the task count: texts, image bytes, metadata (less the position)."""
    out = {}
    for i, r in rows.items():
        meta = {k: v for k, v in json.loads(r["metadata"]).items() if k not in ("row", "line")}
        out[i] = (r["question"], r["chosen_text"], r["rejected_text"], r["images"][0]["bytes"], meta)
    return out


# -- RLHF-V -----------------------------------------------------------------------------------------

RLHF_V_TEXTS = [  # question, chosen, rejected (whitespace kept: the texts must come out unchanged)
    ("Describe this image in detail.", "A red apple sits on a wooden table. Its skin is glossy and a short stem points up.",
     "A red apple and a banana sit on a wooden table next to a knife."),
    ("What is the animal doing?", "The cat is lying on a pink blanket and looking at the camera.",
     "The cat is chasing a mouse across the kitchen floor."),
    ("Provide a thorough description of the given picture.", "A cup of coffee on a saucer, with a spoon beside it. \n",
     "A cup of tea on a saucer next to a plate of cookies."),
    ("Is there a motorcycle in the image?", "Yes, a motorcycle is parked on a paved road.", "No, there is a bicycle."),
]


BROKEN = '{"question": "Describe the image.", "chosen": "A plant'  # cut short: not valid JSON
BROKEN_AT = BROKEN.index('"A plant')  # where json.loads finds the unterminated string


@pytest.fixture(scope="module")
def rlhf_v(tmp_path_factory):
    """RLHF-V-Dataset's card schema: ds_name, image, text (a JSON string), origin_dataset, origin_split,
    idx (int64), image_path; 4 good rows and 2 whose `text` is broken. Saved folder, parquet file, JSONL export."""
    root = tmp_path_factory.mktemp("rlhf_v")
    texts = [json.dumps({"question": q, "chosen": c, "rejected": r}) for q, c, r in RLHF_V_TEXTS]
    texts += [BROKEN, json.dumps({"question": "What is it?", "chosen": "A bus."})]
    n = len(texts)
    table = {
        "ds_name": ["RLHF-V-Dataset"] * n,
        "image": [{"bytes": _photo(p), "path": None} for p in PHOTOS],
        "text": texts,
        "origin_dataset": ["RLHF-V-Dataset-1401"] * n,
        "origin_split": [json.dumps({"model": "muffin", "type": "detailed_description"})] * n,
        "idx": list(range(n)),
        "image_path": [f"rlhf-v/{p}" for p in PHOTOS],
    }
    features = Features({"ds_name": Value("string"), "image": Image(), "text": Value("string"),
                         "origin_dataset": Value("string"), "origin_split": Value("string"), "idx": Value("int64"),
                         "image_path": Value("string")})  # fmt: skip
    ds = datasets.Dataset.from_dict(table, features=features)
    ds.save_to_disk(str(root / "saved"))
    (root / "parquet").mkdir()
    ds.to_parquet(str(root / "parquet" / "RLHF-V-Dataset.parquet"))
    (root / "images" / "rlhf-v").mkdir(parents=True)
    for p in PHOTOS:
        shutil.copy(BUNDLED_COCO / "sample" / p, root / "images" / "rlhf-v" / p)
    with open(root / "export.jsonl", "w") as f:  # a JSON export without the image bytes: images by image_path
        for row in ds.remove_columns("image").to_list():
            f.write(json.dumps(row) + "\n")
    return root


def test_rlhf_v_builds_every_pair_with_texts_unchanged_and_stable_ids(rlhf_v):
    one = _build({"kind": "hf", "path": str(rlhf_v / "saved"), "preset": "rlhf_v"}, rlhf_v / "out1", tasks=1)
    three = _build({"kind": "hf", "path": str(rlhf_v / "saved"), "preset": "rlhf_v"}, rlhf_v / "out3", tasks=3)
    rows = rows_by_id(one)
    assert sorted(rows) == [f"RLHF-V-Dataset:{i}" for i in range(4)]
    assert rows_by_id(three) == rows  # byte-identical rows for 1 and 3 tasks
    for i, (question, chosen, rejected) in enumerate(RLHF_V_TEXTS):
        row = rows[f"RLHF-V-Dataset:{i}"]
        assert (row["question"], row["chosen_text"], row["rejected_text"]) == (question, chosen, rejected)
        assert row["images"][0]["bytes"] == _photo(PHOTOS[i])  # JPEG embedded as published
    assert json.loads(rows["RLHF-V-Dataset:2"]["metadata"]) == {
        "row": 2, "ds_name": "RLHF-V-Dataset", "idx": 2, "origin_dataset": "RLHF-V-Dataset-1401",
        "origin_split": json.dumps({"model": "muffin", "type": "detailed_description"}), "image_path": "rlhf-v/coffee.jpg"}  # fmt: skip
    assert _rejects(one) == _rejects(three) == {
        "RLHF-V-Dataset:4": f"bad_json: 'text' is not valid JSON (Unterminated string starting at, char {BROKEN_AT}) (row 4)",
        "RLHF-V-Dataset:5": "missing_field: 'text' has no 'rejected' (row 5)",
    }


def test_rlhf_v_parquet_file_and_jsonl_export_give_the_same_pairs(rlhf_v):
    saved = rows_by_id(_build({"kind": "hf", "path": str(rlhf_v / "saved"), "preset": "rlhf_v"}, rlhf_v / "a"))
    parquet = _build({"kind": "hf", "path": "parquet", "data_files": str(rlhf_v / "parquet" / "RLHF-V-Dataset.parquet"),
                      "preset": "rlhf_v"}, rlhf_v / "b")  # fmt: skip
    export = _build({"kind": "jsonl", "path": str(rlhf_v / "export.jsonl"), "image_root": str(rlhf_v / "images"),
                     "preset": "rlhf_v"}, rlhf_v / "c")  # fmt: skip
    as_hf = _build({"kind": "hf", "path": "json", "data_files": str(rlhf_v / "export.jsonl"), "image_root": str(rlhf_v / "images"),
                    "preset": "rlhf_v"}, rlhf_v / "d")  # fmt: skip  # the hf source on the export: images by image_path too
    assert _pairs(saved) == _pairs(rows_by_id(parquet)) == _pairs(rows_by_id(export)) == _pairs(rows_by_id(as_hf))
    assert set(_rejects(export)) == {"RLHF-V-Dataset:4", "RLHF-V-Dataset:5"}


def test_rlhf_v_text_forms_and_errors(tmp_path):
    (tmp_path / "a.jpg").write_bytes(_photo("apple.jpg"))
    base = {"ds_name": "d", "image_path": "a.jpg"}
    lines = [
        {**base, "idx": 0, "text": json.dumps(["Q?", "Yes.", "No."])},  # RLHF-V's converter writes a list
        {**base, "idx": 1, "text": json.dumps("just a string")},
        {**base, "idx": 2, "text": json.dumps({"question": "Q?", "chosen": 3, "rejected": "No."})},
        {**base, "idx": 3},
        {"ds_name": "d", "idx": 4, "text": json.dumps({"question": "Q?", "chosen": "Yes.", "rejected": "No."})},
    ]
    (tmp_path / "x.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    source = JsonlSource(str(tmp_path / "x.jsonl"), preset="rlhf_v")
    source.prepare(tmp_path / "index.jsonl")
    samples = {s.id: s for s in source.run()}
    assert (samples["d:0"].question, samples["d:0"].chosen, samples["d:0"].rejected, samples["d:0"].dropped) == ("Q?", "Yes.", "No.", None)
    assert {i: s.dropped[1] for i, s in samples.items() if s.dropped} == {
        "d:1": "bad_json: 'text' holds a str, not an object with question, chosen, rejected (line 2)",
        "d:2": "bad_field: 'text.chosen' is int, not text (line 3)",
        "d:3": "missing_field: no 'text' (line 4)",
        "d:4": "missing_field: no 'image' or 'image_path' (line 5)",
    }
    with pytest.raises(ConfigError, match="'source.columns.chosen' cannot be set with preset rlhf_v"):
        JsonlSource(str(tmp_path / "x.jsonl"), preset="rlhf_v", columns={"chosen": "answer"})


# -- VLFeedback -------------------------------------------------------------------------------------

ASPECTS = ("Helpfulness", "Ethical Considerations", "Visual Faithfulness")


def _completion(model: str, response: str, ratings) -> dict:
    return {"annotations": {a: {"Rating": r, "Rationale": "..."} for a, r in zip(ASPECTS, ratings, strict=True)},
            "model": model, "response": response}  # fmt: skip


VLF_ROWS = [
    # means 5, 4, 4, 2: Silkie's all pairs 0>1, 0>2, 0>3, 1>3, 2>3; 1-2 tie
    {"id": "p0", "prompt": "Describe the fruit.", "img_path": "vlf/apple.jpg", "completions": [
        _completion("gpt-4v", "A single red apple.", ["5", "5", "5"]),
        _completion("llava-v1.5-7b", "A red apple with a stem.", ["3", "4", "5"]),
        _completion("qwen-vl-chat", "An apple on a table.", ["4", "4", "4"]),
        _completion("fuyu-8b", "Two oranges and a pear.", ["1", "2", "3"])]},
    # c0 has no number for one aspect; means -, 2, 3, 3: 2>1, 3>1; 2-3 tie; 0-x missing
    {"id": "p1", "prompt": "What animal is this?", "img_path": "vlf/chelsea.jpg", "completions": [
        _completion("gpt-4v", "A cat.", ["5", "N/A", "5"]),
        _completion("idefics-9b", "A dog.", ["2", "2", "2"]),
        _completion("instructblip-7b", "A tabby cat.", ["3", "3", "3"]),
        _completion("visualglm-6b", "A small cat lying down.", ["3", "3", "3"])]},
    {"id": "p2", "prompt": "What is in the cup?", "img_path": "vlf/coffee.jpg", "completions": [
        _completion("gpt-4v", "Coffee.", ["5", "4", "4"]),
        _completion("mmicl-13b", "Orange juice.", ["3", "3", "3"])]},
]


@pytest.fixture(scope="module")
def vlfeedback(tmp_path_factory):
    """VLFeedback's card schema (id, prompt, models, completions, img_path) as a saved folder (completions
    come back as datasets' dict of lists) and as JSON lines (a list of dicts); images under images/vlf/."""
    root = tmp_path_factory.mktemp("vlf")
    (root / "images" / "vlf").mkdir(parents=True)
    for p in ("apple.jpg", "chelsea.jpg", "coffee.jpg"):
        shutil.copy(BUNDLED_COCO / "sample" / p, root / "images" / "vlf" / p)
    rows = [{**r, "models": [c["model"] for c in r["completions"]]} for r in VLF_ROWS]
    (root / "vlf.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    aspect = {"Rating": Value("string"), "Rationale": Value("string")}
    features = Features({"id": Value("string"), "prompt": Value("string"), "models": Sequence(Value("string")),
                         "completions": Sequence({"annotations": {a: aspect for a in ASPECTS}, "model": Value("string"),
                                                  "response": Value("string")}),
                         "img_path": Value("string")})  # fmt: skip
    columns = {k: [r[k] for r in rows] for k in ("id", "prompt", "models", "img_path")}
    columns["completions"] = [{k: [c[k] for c in r["completions"]] for k in ("annotations", "model", "response")} for r in rows]
    datasets.Dataset.from_dict(columns, features=features).save_to_disk(str(root / "saved"))
    return root


def test_vlfeedback_silkie_pairs_ties_and_missing_ratings(vlfeedback):
    source = {"kind": "hf", "path": str(vlfeedback / "saved"), "preset": "vlfeedback", "image_root": str(vlfeedback / "images")}
    one, two = _build(source, vlfeedback / "o1", tasks=1), _build(source, vlfeedback / "o2", tasks=2)
    rows = rows_by_id(one)
    assert rows_by_id(two) == rows
    chosen_rejected = {i: (r["chosen_text"], r["rejected_text"]) for i, r in rows.items()}
    assert chosen_rejected == {
        "p0:0-1": ("A single red apple.", "A red apple with a stem."),
        "p0:0-2": ("A single red apple.", "An apple on a table."),
        "p0:0-3": ("A single red apple.", "Two oranges and a pear."),
        "p0:1-3": ("A red apple with a stem.", "Two oranges and a pear."),
        "p0:2-3": ("An apple on a table.", "Two oranges and a pear."),
        "p1:1-2": ("A tabby cat.", "A dog."),
        "p1:1-3": ("A small cat lying down.", "A dog."),
        "p2:0-1": ("Coffee.", "Orange juice."),
    }
    assert rows["p1:1-2"]["question"] == "What animal is this?"
    assert rows["p0:0-3"]["images"][0]["bytes"] == _photo("apple.jpg")
    assert {k: v for k, v in json.loads(rows["p2:0-1"]["metadata"]).items() if k != "row"} == {
        "chosen_model": "gpt-4v", "rejected_model": "mmicl-13b", "chosen_rating": 4.3333, "rejected_rating": 3.0, "completions": [0, 1]}  # fmt: skip
    missing = "missing_rating: completion 0 (gpt-4v): 'Ethical Considerations' rating is 'N/A', not a number (row 1)"
    assert _rejects(one) == _rejects(two) == {
        "p0:1-2": "tied_ratings: completions 1 and 2 both have mean rating 4 (row 0)",
        "p1:0-1": missing, "p1:0-2": missing, "p1:0-3": missing,
        "p1:2-3": "tied_ratings: completions 2 and 3 both have mean rating 3 (row 1)",
    }
    export = rows_by_id(_build({**source, "kind": "jsonl", "path": str(vlfeedback / "vlf.jsonl")}, vlfeedback / "o3"))
    assert _pairs(export) == _pairs(rows)  # a list of dicts reads as datasets' dict of lists


def test_vlfeedback_best_worst_and_aspects(tmp_path):
    def pairs(**options):
        return [(r.get("_pair"), r.get("_reject", "").split(":")[0] or None)
                for row in VLF_ROWS for r in VlFeedback(options).expand(row)]  # fmt: skip

    assert pairs(selection="best_worst") == [("0-3", None), ("2-3", "tied_ratings"), ("0-1", None)]
    # Visual Faithfulness alone: p0 means 5, 5, 4, 3 (0-1 tie); p1's c0 is rated there
    only = pairs(aspects=["Visual Faithfulness"])
    assert only[:6] == [("0-1", "tied_ratings"), ("0-2", None), ("0-3", None), ("1-2", None), ("1-3", None), ("2-3", None)]
    assert [r for r in only[6:12] if r[1]] == [("2-3", "tied_ratings")]
    best = next(VlFeedback({"selection": "best_worst"}).expand(VLF_ROWS[1]))
    assert best["_reject"] == "tied_ratings: completions 2, 3 share the best mean rating 3"
    with pytest.raises(ConfigError, match="source.preset_options.selection"):
        VlFeedback({"selection": "random"})
    with pytest.raises(ConfigError, match="unknown key 'source.preset_options.rule'"):
        VlFeedback({"rule": "x"})
    with pytest.raises(ConfigError, match="source.image_root"):
        HfSource("MMInstruction/VLFeedback", preset="vlfeedback").check()


def test_every_preset_is_a_choice_of_both_sources():
    import typing

    assert set(typing.get_args(PresetName)) == set(PRESETS) | set(RECORD_PRESETS)


# -- the HF stream, sharded by its files ----------------------------------------------------------

def test_streaming_ranks_read_only_their_own_files(rlhf_v, tmp_path):
    """Three parquet files, two ranks: rank r reads files r, r + 2; a file that breaks after prepare()
    fails only the rank that reads it. The rows equal the saved folder's."""
    ds = datasets.load_from_disk(str(rlhf_v / "saved")).select(range(4))
    folder = tmp_path / "three"
    folder.mkdir()
    for k, rows in enumerate([[0, 1], [2], [3]]):
        ds.select(rows).to_parquet(str(folder / f"train-{k:05d}-of-00003.parquet"))
    source = HfSource(str(folder), preset="rlhf_v", streaming=True)
    assert source.prepare(tmp_path / "index.jsonl") == 4
    entries = [json.loads(line) for line in (tmp_path / "index.jsonl").read_text().splitlines()]
    assert [e["shard"] for e in entries] == [[0, 0], [0, 1], [1, 0], [2, 0]]
    (folder / "train-00001-of-00003.parquet").write_bytes(b"not parquet")  # rank 1's file only
    rank0 = list(source.run(None, 0, 2))
    assert [s.id for s in rank0] == ["RLHF-V-Dataset:0", "RLHF-V-Dataset:1", "RLHF-V-Dataset:3"]
    assert all(s.dropped is None for s in rank0)
    expected = read_image({"bytes": _photo(PHOTOS[3])}, None, 10**8)[0]
    assert (rank0[2].image == expected).all()
    with pytest.raises(Exception):  # noqa: B017 - whatever the parquet reader raises on a broken file
        list(source.run(None, 1, 2))
