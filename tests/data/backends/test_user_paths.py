"""`mfpo-data` on the paths a user takes after the first build: models that are not there, progress,
inspect on something that is not a build. Each asserts the exit code and the one line printed."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mfpo_data.cli import app


def _invoke(*args):
    result = CliRunner().invoke(app, list(args))
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    return result, errors


MISSING = ("error: model 'org/not-cached-detector' (grounding.model_id) is neither a local folder nor in the Hugging "
           "Face cache and the Hub is offline (HF_HUB_OFFLINE): download it (hf download org/not-cached-detector) or "
           "point grounding.model_id at a local folder")


def test_a_model_that_is_not_there_is_one_line_in_validate_and_build_and_claims_no_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    common = ("--recipe", "coco_grounded", "--set", "grounding.model_id=org/not-cached-detector")
    result, errors = _invoke("validate", *common)
    assert result.exit_code == 1 and errors == [MISSING]
    result, errors = _invoke("build", *common, "--output", str(tmp_path / "out"))
    assert result.exit_code == 1 and errors == [MISSING] and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_validate_notes_a_model_the_build_would_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # nothing is downloaded by validate: only the cache is looked at
    result, errors = _invoke("validate", "--recipe", "coco_grounded", "--set", "grounding.model_id=org/not-cached")
    assert result.exit_code == 0 and not errors
    assert "note: grounding.model_id: org/not-cached is not in the Hugging Face cache; the build will download it" \
        in result.output


def test_validate_finds_local_model_folders(tiny_gdino, tiny_sam, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result, errors = _invoke("validate", "--recipe", "coco_grounded",
                             "--set", f"grounding.model_id={tiny_gdino}",
                             "--set", f"segmentation.model_id={tiny_sam}")
    assert result.exit_code == 0, result.output
    assert "note:" not in result.output and not errors


@pytest.mark.parametrize("make,expected", [
    (lambda p: p / "nope", "error: no such file or folder: {p}"),
    (lambda p: (p / "staging").mkdir() or p, "error: {p} is a build that has not finished: it has no data/*.parquet yet "
                                              "(rerun the same mfpo-data build command to complete it)"),
    (lambda p: p, "error: {p} holds no parquet files: pass a build output folder (with data/*.parquet), a dataset "
                  "folder or a parquet file"),
    (lambda p: (p / "x.parquet").write_text("not parquet") and p / "x.parquet",
     "error: {p} is not a readable parquet file (ArrowInvalid)"),
])
def test_inspect_on_something_that_is_not_a_build_says_what_is_missing(tmp_path, make, expected):
    target = make(tmp_path)
    result, errors = _invoke("inspect", str(target), "--out", str(tmp_path / "grid.png"))
    assert result.exit_code == 1 and errors == [expected.format(p=target)]
    assert not (tmp_path / "grid.png").exists()


def test_inspect_on_a_trl_only_dataset_names_the_columns_it_lacks(tmp_path):
    import datasets

    trl = datasets.Dataset.from_dict({"prompt": ["q"], "chosen": ["a"], "rejected": ["b"]})
    trl.to_parquet(str(tmp_path / "t.parquet"))
    result, errors = _invoke("inspect", str(tmp_path / "t.parquet"), "--out", str(tmp_path / "grid.png"))
    assert result.exit_code == 1
    assert errors == [f"error: {tmp_path / 't.parquet'} is not an mfpo dataset: it lacks images, rejected_images, "
                      "which inspect draws"]


def test_the_progress_bar_counts_each_ranks_source_items_with_a_total(tmp_path):
    from mfpo_data.layout import OutputLayout
    from mfpo_data.stages.s7_writer import ShardWriter

    layout = OutputLayout(tmp_path)
    layout.staging_dir.mkdir(parents=True)
    layout.source_index.write_text("{}\n" * 15)  # 15 items: ranks of 2 get 8 and 7, ranks of 4 get 4, 4, 4, 3
    writer = ShardWriter(str(tmp_path))
    assert [writer._bar(layout, r, 2).total for r in range(2)] == [8, 7]
    assert [writer._bar(layout, r, 4).total for r in range(4)] == [4, 4, 4, 3]
    assert ShardWriter(str(tmp_path), progress=False)._bar(layout, 0, 1) is None


def test_datatrove_rank_stats_go_to_the_log_folder_not_the_console(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "mfpo_data.cli", "build", "--recipe", "coco", "--output", str(tmp_path),
                          "--set", "source.limit=3", "--set", "output.progress=false"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Stats: Task 0" not in out.stderr and "PIPELINE" not in out.stderr
    assert out.stderr.count("Stats: All 1 tasks") == 1  # the merged summary, once
    assert "Stats: Task 0" in (tmp_path / "logs" / "logs" / "task_00000.log").read_text()


def test_ctrl_c_in_build_says_how_to_resume(monkeypatch):
    import mfpo_data.pipeline.build as build

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "build_dataset", interrupted)
    result = CliRunner().invoke(app, ["build", "--recipe", "coco"])
    assert result.exit_code == 130
    assert result.output.strip().splitlines()[-1] == ("interrupted: finished ranks are kept; rerun the same command "
                                                      "to resume")


def test_staging_is_removed_after_a_finished_build_and_a_rerun_keeps_it_finished(tmp_path):
    from mfpo_data.pipeline.build import build_dataset
    from mfpo_data.validate import load_and_validate

    layout = build_dataset("coco", ["source.limit=3", "output.progress=false"], output_dir=tmp_path / "out")
    assert not layout.staging_dir.exists() and layout.final_shards()
    rows = load_and_validate(layout.root, split="train").num_rows
    before = {p: p.read_bytes() for p in layout.final_shards()}
    build_dataset("coco", ["source.limit=3", "output.progress=false"], output_dir=tmp_path / "out")  # nothing to redo
    assert not layout.staging_dir.exists()
    assert {p: p.read_bytes() for p in layout.final_shards()} == before
    assert load_and_validate(layout.root, split="train").num_rows == rows
    kept = build_dataset("coco", ["source.limit=3", "output.keep_staging=true"], output_dir=tmp_path / "kept")
    assert kept.staging_shard(0).is_file() and kept.source_index.is_file()
