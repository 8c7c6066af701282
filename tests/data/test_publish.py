"""`mfpo-data publish`: checks, splits, the dry-run folder, the card, and the push through an intercepted HfApi."""

from __future__ import annotations

import json
import logging
import re
import sys
import types
from collections import Counter
from pathlib import Path

import datasets
import pytest
import yaml
from huggingface_hub import DatasetCard, HfApi
from huggingface_hub.errors import HfHubHTTPError

import mfpo_data.publishing.publish as publish_mod
from mfpo_data.errors import MfpoError, SchemaError
from mfpo_data.publishing.card import REQUIRED_TAGS, validate_card
from mfpo_data.publishing.publish import PublishError, publish, push_to_hub, split_by_image
from mfpo_data.schema import features
from mfpo_data.secrets import public_recipe
from mfpo_data.validate import IncompleteBuildError, describe, load_and_validate
from tests.fixtures.fake_build import make_fake_build, make_real_build


ROOT = Path(__file__).resolve().parents[2]
FAKE_TOKEN = "hf_FAKEtok3nNeverToBeSeen0123456789"
ROWS = 16


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def preview_calls(monkeypatch):
    """`mfpo_data.inspect.render_grid` as the publish code sees it: the real one once it exists, else a stub
    that writes a small PNG. Either way the calls are recorded."""
    calls = []
    try:
        import mfpo_data.inspect as inspect_mod

        real = inspect_mod.render_grid
    except ImportError:
        inspect_mod = types.ModuleType("mfpo_data.inspect")
        monkeypatch.setitem(sys.modules, "mfpo_data.inspect", inspect_mod)

        def real(rows, out_path, n=8):
            from PIL import Image

            rows = list(rows)
            Image.new("RGB", (8 * len(rows), 8)).save(out_path)
            return Path(out_path)

    def render_grid(rows, out_path, n=8):
        rows = list(rows)
        calls.append({"rows": rows, "n": n})
        return real(rows, out_path, n=n)

    monkeypatch.setattr(inspect_mod, "render_grid", render_grid, raising=False)
    return calls


@pytest.fixture
def build(tmp_path):
    return make_fake_build(tmp_path / "build", rows=ROWS, tasks=2)


@pytest.fixture
def dry_run(build, tmp_path, preview_calls):
    folder = tmp_path / "upload"
    result = publish(build.root, "mfpo-org/mfpo-test", dry_run_dir=folder, test_size=0.25, seed=0)
    return folder, result


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


class FakeHub:
    """Records the HfApi calls publish makes; each method can be given errors to raise first."""

    def __init__(self, monkeypatch, existing=(".gitattributes",)):
        self.calls: list[tuple[str, dict]] = []
        self.tokens: list[str | None] = []
        self.errors: dict[str, list[Exception]] = {}
        self.commits: list[dict] = []
        self.sleeps: list[float] = []
        self.existing = list(existing)
        monkeypatch.setattr(publish_mod, "_sleep", self.sleeps.append)
        for name in ("create_repo", "create_branch", "list_repo_files", "create_commit"):
            monkeypatch.setattr(HfApi, name, self._method(name))

    def _method(self, name):
        hub = self

        def method(api, repo_id, **kwargs):
            hub.calls.append((name, {"repo_id": repo_id, **kwargs}))
            hub.tokens.append(api.token)
            if hub.errors.get(name):
                raise hub.errors[name].pop(0)
            if name == "list_repo_files":
                return list(hub.existing)
            if name == "create_commit":
                adds, deletes = {}, []
                for op in kwargs["operations"]:
                    if type(op).__name__ == "CommitOperationAdd":
                        adds[op.path_in_repo] = Path(op.path_or_fileobj).read_bytes()
                    else:
                        deletes.append(op.path_in_repo)
                hub.commits.append({"adds": adds, "deletes": deletes, **kwargs})
                return types.SimpleNamespace(commit_url=f"https://huggingface.co/datasets/{repo_id}/commit/abc123")
            return None

        return method

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def http_error(status: int, message: str = "") -> HfHubHTTPError:
    response = types.SimpleNamespace(status_code=status, headers={}, request=None)
    return HfHubHTTPError(
        message or f"{status} Client Error for url https://huggingface.co/api/datasets", response=response
    )


# --------------------------------------------------------------------------------------------- the dry-run folder


def test_dry_run_folder_loads_into_train_and_test_with_exact_features(dry_run, build, preview_calls):
    folder, result = dry_run
    assert (
        files_under(folder)
        == result.files
        == [
            "README.md",
            "data/test-00000-of-00001.parquet",
            "data/train-00000-of-00001.parquet",
            "preview.png",
        ]
    )
    dd = datasets.load_dataset(str(folder))
    assert sorted(dd) == ["test", "train"]
    for split in dd.values():
        assert split.features == features()
    # Every row exactly once, split by image, and the same rows as the build.
    built = load_and_validate(build.root, split="train")
    assert sorted([*dd["train"]["id"], *dd["test"]["id"]]) == sorted(built["id"])
    assert not set(dd["train"]["image_id"]) & set(dd["test"]["image_id"])
    assert result.splits == {"train": dd["train"].num_rows, "test": dd["test"].num_rows}
    assert dd["test"].num_rows >= 0.25 * ROWS
    row = dd["train"][0]
    original = next(r for r in built if r["id"] == row["id"])
    assert row["images"][0].tobytes() == original["images"][0].tobytes()
    assert row["rejected_images"][0].tobytes() == original["rejected_images"][0].tobytes()
    assert load_and_validate(folder, strict=True)["test"].num_rows == dd["test"].num_rows
    # The preview got decoded rows of the train split.
    (call,) = preview_calls
    assert 1 <= len(call["rows"]) <= call["n"] <= 8
    assert all(r["id"] in list(dd["train"]["id"]) and hasattr(r["images"][0], "size") for r in call["rows"])


def test_card_parses_and_its_metadata_validates(dry_run):
    folder, result = dry_run
    card = DatasetCard.load(folder / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "other" and data["license_name"] == "coco-terms-of-use"  # built from a COCO folder
    assert data["license_link"] == "https://cocodataset.org/#termsofuse"
    assert set(REQUIRED_TAGS) <= set(data["tags"])
    assert data["task_categories"] and data["size_categories"] == ["n<1K"]
    assert data["configs"] == [
        {
            "config_name": "default",
            "data_files": [{"split": "train", "path": "data/train-*"}, {"split": "test", "path": "data/test-*"}],
        }
    ]
    info = datasets.DatasetInfo._from_yaml_dict(data["dataset_info"])
    assert info.features == features()
    assert {k: v.num_examples for k, v in info.splits.items()} == result.splits
    assert validate_card(folder / "README.md", splits=["train", "test"]) is not None


def test_dataset_info_gives_each_splits_own_bytes(dry_run):
    """Not the whole dataset's bytes for every split (a selection keeps its parent's table): the total is the build's."""
    folder, _ = dry_run
    info = datasets.DatasetInfo._from_yaml_dict(DatasetCard.load(folder / "README.md").data.to_dict()["dataset_info"])
    dd = datasets.load_dataset(str(folder))
    assert {s: info.splits[s].num_bytes for s in dd} == {s: dd[s].data.nbytes for s in dd}
    assert info.dataset_size == sum(dd[s].data.nbytes for s in dd) and all(dd[s].data.nbytes > 0 for s in dd)


def test_card_says_where_the_categories_fall_and_how_to_train_from_a_checkout(dry_run):
    folder, _ = dry_run
    body = (folder / "README.md").read_text().split("\n---\n", 1)[1]
    dd = datasets.load_dataset(str(folder))
    rows = {s: Counter(o["category"] for objs in dd[s]["key_objects"] for o in {x["category"]: x for x in objs}.values())
            for s in dd}
    only = {s: [f"{c} ({n})" for c, n in sorted(rows[s].items(), key=lambda kv: (-kv[1], kv[0]))
                if c not in rows["test" if s == "train" else "train"]] for s in ("train", "test")}
    if only["train"] or only["test"]:
        parts = "; ".join(f"only in `{s}`: {', '.join(cats)}" for s, cats in only.items() if cats)
        assert f"a category can fall in one split only (rows): {parts}." in body
    else:
        assert "Every category is in every split." in body
    how = body.split("## How to use", 1)[1].split("### With TRL", 1)[0]
    assert 'pip install -e ".[train]"   # in the mfpo checkout' in how and "--config llava15_7b_lora " in how
    assert "mfpo-train configs" in how and "recipes/train" not in how


def test_card_says_how_the_build_was_made(dry_run, build):
    folder, result = dry_run
    text = (folder / "README.md").read_text()
    body = text.split("\n---\n", 1)[1]
    stats = build.read_stats()
    # counts per split, pair type, difficulty bucket and category
    assert f"| train | {result.splits['train']} | 1 |" in body and f"| test | {result.splits['test']} | 1 |" in body
    dd = datasets.load_dataset(str(folder))
    for split in ("train", "test"):
        assert list(dd[split]["pair_type"]).count("caption") == int(
            re.search(r"\| caption \| (\d+) \| (\d+) \|", body).group(1 if split == "train" else 2)
        )
    assert re.search(r"\| easy \| \d+ \| \d+ \|", body) and re.search(r"\| hard \| \d+ \| \d+ \|", body)
    assert re.search(r"\| cat \| \d+ \| \d+ \|", body)
    # drops per reason, backends with model ids / revisions, perturbation parameters, the recipe
    for reason, n in stats["dropped"].items():
        assert f"| {reason} | {n} |" in body
    assert "| grounding | `coco_gt` | none (no weights) |" in body
    assert "| t | `500` |" in body
    public = public_recipe(yaml.safe_load(build.recipe_file.read_text()))  # what decides the rows, no executor/output
    assert yaml.safe_dump(public, sort_keys=False, allow_unicode=True).strip() in body
    assert set(public) == {"seed", "source", "keywords", "grounding", "segmentation", "perturbation", "scoring",
                           "filters", "versions"} and public["source"]["root"] == "<local>/coco"  # fmt: skip
    assert "/data/coco" not in body and "workers: 1" not in body
    # preview, how to train (mfpo-train and TRL), the datasheet, no template leftovers
    assert "![Preview" in body and "(preview.png)" in body
    assert "mfpo-train" in body and "DPOTrainer(" in body and "max_length=None" in body
    assert 'load_dataset("mfpo-org/mfpo-test")' in body
    for section in ("Motivation", "Composition", "Collection process", "Uses", "Distribution", "Maintenance"):
        assert re.search(rf"^### {section}", body, re.M), section
    assert "{{" not in body and "](mfpo_data/" not in body  # relative repo links would break on the Hub


def test_datasheet_fields_table_lists_every_column_with_its_type():
    text = (ROOT / "DATASHEET.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \| .+ \|$", text, re.M)
    assert [name for name, _ in rows] == list(features()), "the table must follow schema.features() in order"
    for name, type_ in rows:
        assert type_.strip() == describe(features()[name]), name
    for section in (
        "Motivation",
        "Composition",
        "Collection process",
        "Preprocessing",
        "Uses",
        "Distribution",
        "Maintenance",
    ):
        assert re.search(rf"^## {section}", text, re.M), section


def test_dry_run_is_deterministic_and_seed_changes_the_split(build, tmp_path, preview_calls):
    a = publish(build.root, "o/n", dry_run_dir=tmp_path / "a", test_size=0.25, seed=0)
    publish(build.root, "o/n", dry_run_dir=tmp_path / "b", test_size=0.25, seed=0)
    for f in a.files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    ids = lambda d: set(datasets.load_dataset(str(d), split="test")["image_id"])  # noqa: E731
    others = [ids(tmp_path / "a")] + [
        (publish(build.root, "o/n", dry_run_dir=tmp_path / f"s{s}", test_size=0.25, seed=s), ids(tmp_path / f"s{s}"))[
            1
        ]
        for s in (1, 2, 3)
    ]
    assert len({frozenset(x) for x in others}) > 1


def test_split_by_image_counts_and_limits():
    image_ids = [str(i // 2) for i in range(20)]  # 10 images, 2 rows each
    train, test = split_by_image(image_ids, 0.2, seed=0)
    assert len(test) == 4 and sorted(train + test) == list(range(20))
    assert not {image_ids[i] for i in train} & {image_ids[i] for i in test}
    assert split_by_image(image_ids, 0.2, seed=0) == (train, test)
    assert len(split_by_image(image_ids, 5, seed=0)[1]) == 6  # a count, rounded up to whole images
    for bad in (0.0, 1.0, 0, -3, "0.1"):
        with pytest.raises(PublishError, match="--test-size"):
            split_by_image(image_ids, bad, seed=0)
    with pytest.raises(PublishError, match="cannot split 2 rows from 1 image"):
        split_by_image(["7", "7"], 0.5, seed=0)


def test_preview_is_skipped_with_a_warning_when_inspect_is_missing(build, tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "mfpo_data.inspect", None)  # import fails
    with caplog.at_level(logging.WARNING, logger="mfpo_data.publishing.publish"):
        result = publish(build.root, "o/n", dry_run_dir=tmp_path / "up")
    assert "preview.png" not in result.files and not (tmp_path / "up" / "preview.png").exists()
    assert "no preview image" in caplog.text
    assert "preview.png" not in (tmp_path / "up" / "README.md").read_text()


@pytest.fixture(scope="module")
def real_build(tmp_path_factory):
    """One real `build_dataset` run for this module (the bundled sample, or a synthetic COCO folder until it ships)."""
    return make_real_build(tmp_path_factory.mktemp("real") / "build", tasks=2)


def test_end_to_end_on_a_real_build(real_build, tmp_path):
    stats = real_build.read_stats()
    result = publish(real_build.root, "mfpo-org/mfpo-coco", dry_run_dir=tmp_path / "up")
    assert "preview.png" in result.files and (tmp_path / "up" / "preview.png").stat().st_size > 1000
    dd = datasets.load_dataset(str(tmp_path / "up"))
    assert sorted(dd) == ["test", "train"] and all(split.features == features() for split in dd.values())
    assert sum(split.num_rows for split in dd.values()) == stats["rows"]
    for pair_type, n in stats["pair_types"].items():
        assert sum(list(split["pair_type"]).count(pair_type) for split in dd.values()) == n
    card = validate_card(tmp_path / "up" / "README.md", splits=["train", "test"])
    body = (tmp_path / "up" / "README.md").read_text()
    # The bundled sample is not COCO: its card must not claim COCO's terms, and says where the licences are.
    assert card.data.license_name == "mfpo-coco-sample" and "license_link" not in card.data.to_dict()
    assert "scikit-image" in body.split("### Licence", 1)[1]
    assert "| perturbation | `diffusion_noise` |" in body and "| t | `500` |" in body


# --------------------------------------------------------------------------------------------- refusals


def test_incomplete_build_is_refused_naming_the_ranks(tmp_path, preview_calls):
    layout = make_fake_build(tmp_path / "build", rows=12, tasks=4)
    layout.completion_marker(1).unlink()
    layout.staging_shard(3).unlink()
    layout.final_shard(3, 4).unlink()  # rank 3's rows are in neither its staging nor its final shard
    with pytest.raises(IncompleteBuildError, match=r"rank\(s\) 1, 3 of 4 did not finish") as info:
        publish(layout.root, "o/n", dry_run_dir=tmp_path / "up")
    assert isinstance(info.value, MfpoError)
    assert not (tmp_path / "up").exists()


def test_tampered_shard_is_refused_naming_the_columns(build, tmp_path, preview_calls):
    import pyarrow as pa
    import pyarrow.parquet as pq

    shard = build.final_shards()[0]
    table = pq.read_table(shard)
    table = table.set_column(table.schema.get_field_index("mask_area_ratio"), "mask_area_ratio",
                             table.column("mask_area_ratio").cast(pa.float64()))  # fmt: skip
    table = table.append_column("secret_column", pa.array([1] * table.num_rows))
    pq.write_table(table.drop_columns(["key_objects"]), shard)
    with pytest.raises(SchemaError) as info:
        publish(build.root, "o/n", dry_run_dir=tmp_path / "up")
    msg = str(info.value)
    assert shard.name in msg and "\n" not in msg
    assert "missing columns: key_objects" in msg
    assert "mask_area_ratio (expected float32, got float64)" in msg
    assert "unexpected columns: secret_column" in msg
    assert not (tmp_path / "up").exists()


def test_other_inconsistent_builds_are_refused(build, tmp_path, preview_calls):
    stats = build.read_stats()
    build.stats_file.write_text(json.dumps({**stats, "rows": ROWS + 1}))
    with pytest.raises(PublishError, match=f"stats.json counts {ROWS + 1} rows but the shards .* hold {ROWS}"):
        publish(build.root, "o/n", dry_run_dir=tmp_path / "a")
    build.stats_file.write_text(json.dumps(stats))
    build.recipe_file.unlink()
    with pytest.raises(PublishError, match="recipe.resolved.yaml is missing"):
        publish(build.root, "o/n", dry_run_dir=tmp_path / "b")
    with pytest.raises(PublishError, match="not a valid Hub repo id"):
        publish(build.root, "not a repo id!", dry_run_dir=tmp_path / "c")
    with pytest.raises(PublishError, match="no such build folder"):
        publish(tmp_path / "nope", "o/n", dry_run_dir=tmp_path / "d")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "keep.txt").write_text("mine")
    build.recipe_file.write_text("seed: 0\n")
    with pytest.raises(PublishError, match="not an empty folder"):
        publish(build.root, "o/n", dry_run_dir=tmp_path / "e")
    assert (tmp_path / "e" / "keep.txt").read_text() == "mine"


# --------------------------------------------------------------------------------------------- the push


def test_push_makes_exactly_one_commit_with_the_dry_run_files(build, tmp_path, monkeypatch, preview_calls):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    old = ["data/train-00000-of-00003.parquet", "data/train-00002-of-00003.parquet", "notes.md", ".gitattributes"]
    hub = FakeHub(monkeypatch, existing=old)
    dry = publish(build.root, "mfpo-org/mfpo-test", dry_run_dir=tmp_path / "dry", test_size=0.25, revision="v1")
    result = publish(build.root, "mfpo-org/mfpo-test", private=True, revision="v1", test_size=0.25)

    assert hub.names() == ["create_repo", "create_branch", "list_repo_files", "create_commit"]
    assert all(kw["repo_type"] == "dataset" and kw["repo_id"] == "mfpo-org/mfpo-test" for _, kw in hub.calls)
    assert hub.calls[0][1]["private"] is True and hub.calls[0][1]["exist_ok"] is True
    assert hub.calls[1][1]["branch"] == "v1"
    (commit,) = hub.commits
    assert commit["revision"] == "v1"
    assert sorted(commit["adds"]) == dry.files == result.files
    assert {"README.md", "preview.png"} <= set(commit["adds"]) and any(f.endswith(".parquet") for f in commit["adds"])
    for f, data in commit["adds"].items():
        assert data == (tmp_path / "dry" / f).read_bytes(), f  # exactly the dry-run folder
    assert commit["deletes"] == old[:2]  # stale shards of an earlier push go, other files stay
    assert result.commit_url.endswith("/commit/abc123") and result.deleted == old[:2]
    assert set(hub.tokens) == {FAKE_TOKEN}  # the token from HF_TOKEN reached HfApi


def test_push_to_hub_from_python_takes_a_layout(build, monkeypatch, preview_calls):
    hub = FakeHub(monkeypatch)
    result = push_to_hub(build, "mfpo-org/nb", token=FAKE_TOKEN)
    assert hub.names() == ["create_repo", "list_repo_files", "create_commit"]
    assert hub.calls[0][1]["private"] is None  # not asked: the Hub's (or the org's) default
    assert result.folder is None and sum(result.splits.values()) == ROWS


@pytest.mark.parametrize(
    "error",
    [http_error(503), http_error(500), http_error(429), ConnectionError("connection reset"), TimeoutError("read")],
    ids=["503", "500", "429", "connection", "timeout"],
)
def test_transient_errors_are_retried_with_backoff(build, monkeypatch, preview_calls, error):
    hub = FakeHub(monkeypatch)
    hub.errors["create_commit"] = [error, error]
    hub.errors["create_repo"] = [error]
    publish(build.root, "o/n", token=FAKE_TOKEN)
    assert hub.names().count("create_commit") == 3 and len(hub.commits) == 1
    assert hub.sleeps == [2.0, 2.0, 4.0]  # create_repo once, then create_commit twice: 2 s, 4 s


def test_transient_errors_give_up_after_the_last_attempt(build, monkeypatch, preview_calls):
    hub = FakeHub(monkeypatch)
    hub.errors["create_commit"] = [http_error(502) for _ in range(5)]
    with pytest.raises(PublishError, match="create_commit failed after 5 attempts: HTTP 502"):
        publish(build.root, "o/n", token=FAKE_TOKEN)
    assert hub.sleeps == [2.0, 4.0, 8.0, 16.0] and not hub.commits


@pytest.mark.parametrize("status", [401, 403])
def test_permission_errors_are_not_retried(build, monkeypatch, preview_calls, status):
    hub = FakeHub(monkeypatch)
    hub.errors["create_repo"] = [http_error(status, f"{status} Forbidden: token {FAKE_TOKEN} cannot write")]
    with pytest.raises(PublishError, match=f"refused the token \\(HTTP {status}\\)") as info:
        publish(build.root, "o/n", token=FAKE_TOKEN)
    assert hub.names() == ["create_repo"] and hub.sleeps == []
    assert FAKE_TOKEN not in str(info.value)


def test_other_hub_errors_are_one_line_without_the_token(build, monkeypatch, preview_calls):
    hub = FakeHub(monkeypatch)
    hub.errors["create_commit"] = [http_error(400, f"400 Bad Request: bad header Bearer {FAKE_TOKEN}\nmore")]
    with pytest.raises(PublishError) as info:
        publish(build.root, "o/n", token=FAKE_TOKEN)
    assert str(info.value) == "create_commit failed: HTTP 400: 400 Bad Request: bad header Bearer <redacted>"
    assert hub.sleeps == []


def test_offline_mode_is_not_retried(build, monkeypatch, preview_calls):
    from huggingface_hub.errors import OfflineModeIsEnabled

    hub = FakeHub(monkeypatch)
    hub.errors["create_repo"] = [OfflineModeIsEnabled("offline mode is enabled")]
    with pytest.raises(PublishError, match="HF_HUB_OFFLINE is set"):
        publish(build.root, "o/n", token=FAKE_TOKEN)
    assert hub.names() == ["create_repo"] and hub.sleeps == []


def test_no_token_is_a_clear_error_before_any_work(build, monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    hub = FakeHub(monkeypatch)
    with pytest.raises(PublishError, match="no Hugging Face token"):
        publish(build.root, "o/n")
    assert hub.calls == []


# --------------------------------------------------------------------------------------------- the CLI


def _app():
    import typer

    from mfpo_data.publishing.cli import publish_command

    app = typer.Typer()
    app.command("publish")(publish_command)
    app.command("noop")(lambda: None)  # two commands, so `publish` is a subcommand as in mfpo-data
    return app


def test_cli_pushes_and_the_token_never_appears(build, tmp_path, monkeypatch, caplog, capfd, preview_calls):
    from typer.testing import CliRunner

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    hub = FakeHub(monkeypatch)
    hub.errors["create_commit"] = [http_error(503, f"503 upstream said {FAKE_TOKEN}")]
    runner = CliRunner()
    with caplog.at_level(logging.DEBUG):
        out = runner.invoke(_app(), ["publish", "--from", str(build.root), "--repo-id", "o/n", "--private",
                                     "--test-size", "4", "--seed", "3"])  # fmt: skip
        dry = runner.invoke(_app(), ["publish", "--from", str(build.root), "--repo-id", "o/n",
                                     "--dry-run", str(tmp_path / "dry")])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert dry.exit_code == 0, dry.output
    assert "pushed 4 files" in out.output and "/commit/abc123" in out.output
    assert len(hub.commits) == 1 and hub.calls[0][1]["private"] is True and set(hub.tokens) == {FAKE_TOKEN}
    assert sum(1 for r in datasets.load_dataset(str(tmp_path / "dry"), split="test")) >= 1
    captured = capfd.readouterr()
    for text in (out.output, dry.output, caplog.text, captured.out, captured.err):
        assert FAKE_TOKEN not in text
    assert "retry 1/4" in caplog.text  # the transient error was logged, scrubbed
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path


def test_cli_maps_known_errors_to_one_line_and_exit_code_1(tmp_path, preview_calls):
    from typer.testing import CliRunner

    layout = make_fake_build(tmp_path / "build", rows=6, tasks=2, complete=False)
    result = CliRunner().invoke(_app(), ["publish", "--from", str(layout.root), "--repo-id", "o/n",
                                         "--dry-run", str(tmp_path / "up")])  # fmt: skip
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: incomplete build in {layout.root}: rank(s) 1 of 2 did not finish; rerun the build to complete them"
    ]
    assert "Traceback" not in result.output


def test_cli_help_lists_the_options_and_imports_nothing_heavy():
    import subprocess

    code = (
        "import sys; import mfpo_data.publishing.cli; "
        "heavy = [m for m in ('datasets', 'huggingface_hub', 'pyarrow', 'torch', 'PIL') if m in sys.modules]; "
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert "HEAVY []" in out
    from typer.testing import CliRunner

    help_text = CliRunner().invoke(_app(), ["publish", "--help"], env={"COLUMNS": "200"}).output
    for option in ("--from", "--repo-id", "--private", "--revision", "--dry-run", "--test-size", "--seed"):
        assert option in help_text
    assert "--token" not in help_text  # the token comes from HF_TOKEN or the login, never the command line
