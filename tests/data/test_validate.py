"""`load_and_validate`: loads build folders, published folders, parquet files and Hub ids; one clear error on mismatch."""

from __future__ import annotations

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mfpo_data.errors import MfpoError, SchemaError
from mfpo_data.schema import features
from mfpo_data.validate import (
    DatasetLoadError,
    IncompleteBuildError,
    describe,
    features_problems,
    load_and_validate,
)
from tests.fixtures.fake_build import make_fake_build


@pytest.fixture
def build(tmp_path):
    return make_fake_build(tmp_path / "out", rows=8, tasks=2)


def test_build_folder_loads_with_exact_features(build):
    dd = load_and_validate(build.root)
    assert list(dd) == ["train"]
    assert dd["train"].features == features()
    assert dd["train"].num_rows == 8
    row = dd["train"][0]
    assert row["images"][0].size == (32, 24)  # decoded PIL images, embedded bytes
    assert row["prompt"][0]["content"][0] == {"type": "image", "text": None}


def test_split_argument_returns_a_dataset_and_unknown_split_is_named(build):
    ds = load_and_validate(build.root, split="train")
    assert isinstance(ds, datasets.Dataset)
    with pytest.raises(DatasetLoadError, match=r"no split 'test' \(it has: train\)"):
        load_and_validate(build.root, split="test")


def test_incomplete_build_names_missing_ranks(tmp_path):
    layout = make_fake_build(tmp_path / "out", rows=6, tasks=3, complete=False)
    with pytest.raises(IncompleteBuildError, match=r"rank\(s\) 2 of 3 did not finish"):
        load_and_validate(layout.root)
    layout.staging_shard(0).unlink()
    layout.final_shard(0, 3).unlink()  # rank 0's rows are now in neither its staging nor its final shard
    with pytest.raises(IncompleteBuildError, match=r"rank\(s\) 0, 2 of 3"):
        load_and_validate(layout.root)


def test_build_without_stats_is_incomplete(build):
    build.stats_file.unlink()
    with pytest.raises(IncompleteBuildError, match="no stats.json"):
        load_and_validate(build.root)


def _tamper(path, drop=("mask",), retype=("difficulty",)):
    """Rewrite a shard with raw pyarrow: columns dropped, float32 -> float64, no Hugging Face metadata."""
    table = pq.read_table(path).drop_columns(list(drop))
    for name in retype:
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, table.column(name).cast(pa.float64()))
    pq.write_table(table.replace_schema_metadata(None), path)


def test_tampered_shard_is_one_error_naming_the_file_and_columns(build):
    bad = build.final_shards()[1]
    _tamper(bad)
    with pytest.raises(SchemaError) as info:
        load_and_validate(build.root)
    msg = str(info.value)
    assert isinstance(info.value, MfpoError) and "\n" not in msg
    assert bad.name in msg
    assert "missing columns: mask" in msg
    assert "difficulty (expected float32, got float64)" in msg
    # Without the Hugging Face metadata the images read back as plain structs: named too, with both types.
    assert "images (expected List[Image], got List[{bytes: binary, path: string}])" in msg


def test_folder_of_parquet_files_is_checked_before_loading(build, tmp_path):
    folder = tmp_path / "pub"
    (folder / "data").mkdir(parents=True)
    for i, shard in enumerate(build.final_shards()):
        (folder / "data" / f"train-{i:05d}-of-00002.parquet").write_bytes(shard.read_bytes())
    assert load_and_validate(folder)["train"].num_rows == 8
    _tamper(folder / "data" / "train-00000-of-00002.parquet", drop=("rejected_images", "difficulty_bucket"), retype=())
    with pytest.raises(SchemaError, match="missing columns: rejected_images, difficulty_bucket"):
        load_and_validate(folder)


def test_extra_columns_pass_unless_strict(build, tmp_path):
    ds = load_and_validate(build.root, split="train").add_column("ref_chosen_logps", [0.0] * 8)
    path = tmp_path / "extra.parquet"
    ds.to_parquet(str(path))
    assert "ref_chosen_logps" in load_and_validate(path, split="train").column_names
    with pytest.raises(SchemaError, match="unexpected columns: ref_chosen_logps"):
        load_and_validate(path, strict=True)


def test_not_parquet_and_unknown_hub_id_are_clear_errors(tmp_path):
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(SchemaError, match="not a readable parquet file"):
        load_and_validate(junk)
    with pytest.raises(DatasetLoadError, match="cannot load mfpo-test-nobody/no-such-dataset"):
        load_and_validate("mfpo-test-nobody/no-such-dataset")  # HF_HUB_OFFLINE=1: fails fast, no network


def test_features_problems_lists_every_kind():
    got = dict(features())
    del got["images"]
    got["difficulty"] = datasets.Value("string")
    got["extra"] = datasets.Value("int64")
    assert features_problems(got) == [
        "missing columns: images",
        "mistyped columns: difficulty (expected float32, got string)",
    ]
    assert features_problems(got, strict=True)[-1] == "unexpected columns: extra"
    assert features_problems(features(), strict=True) == []
    assert describe(features()["mask"]) == "{size: List[int32, 2], counts: string}"


def test_revision_reaches_load_dataset_for_a_hub_id(monkeypatch):
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        empty = datasets.Dataset.from_dict({k: [] for k in features()}, features=features())
        return datasets.DatasetDict({"train": empty})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ds = load_and_validate("org/mfpo-coco", split="train", revision="0123abc")
    assert ds.features == features()
    assert calls == [(("org/mfpo-coco",), {"revision": "0123abc"})]
    load_and_validate("org/mfpo-coco")
    assert calls[-1][1] == {"revision": None}  # the default branch


def test_revision_with_a_local_path_is_refused(build):
    with pytest.raises(DatasetLoadError, match="local path: revision='v1' applies to Hub datasets only"):
        load_and_validate(build.root, revision="v1")


def test_a_dataset_built_before_the_later_columns_loads_with_their_old_meaning(tmp_path):
    """targets_key_object and image_reliance came later: without them a dataset still loads (and trains), a
    negative targets the key object unless its parameters say a random box, the whole image or a crop."""
    from mfpo_data.schema import LATER_COLUMNS
    from tests.fixtures.fake_build import fake_rows

    rows = fake_rows(6)
    negatives = [("diffusion_noise", "key_object"), ("diffusion_noise", "random"), ("diffusion_noise", "global"),
                 ("diffusion_noise", "whole_image"), ("sd_inpaint", "inserted"), ("random_crop", "global")]
    for row, (kind, region) in zip(rows, negatives, strict=True):
        row["perturbation_params"] = json.dumps({"kind": kind, "region": region, "seed": 1})
    old = datasets.Dataset.from_list(rows, features=features()).remove_columns(list(LATER_COLUMNS))
    path = tmp_path / "old.parquet"
    old.to_parquet(str(path))
    ds = load_and_validate(path, split="train")
    assert ds.features == features()
    assert ds["targets_key_object"] == [True, False, False, False, True, False]
    assert ds["image_reliance"] == [None] * 6
    assert ds["id"] == [r["id"] for r in rows]
    with pytest.raises(SchemaError, match="missing columns: targets_key_object, image_reliance$"):
        load_and_validate(path, strict=True)  # publish: the full schema
    rows[2]["perturbation_params"] = "not json"
    datasets.Dataset.from_list(rows, features=features()).remove_columns(list(LATER_COLUMNS)).to_parquet(str(path))
    with pytest.raises(SchemaError, match=r"old.parquet split 'train' row 2: perturbation_params is not a JSON object"):
        load_and_validate(path)
