"""The output folder: a user's files are never touched, one build at a time, any spelling of the path is the
same build, a build that fails early claims nothing, changed inputs are never resumed, logs elsewhere."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mfpo_data.cli import app
from mfpo_data.config import load_recipe, recipe_from_dict
from mfpo_data.errors import ConfigError, MfpoError
from mfpo_data.pipeline.build import EmptyBuildError, build_dataset
from mfpo_data.pipeline.outdir import BuildLockedError, InputsChangedError, OutputFolderError
from tests.fixtures.builds import rows_by_id
from tests.fixtures.coco_folder import make_coco_folder


def _coco(tmp_path: Path, n_images: int = 4) -> Path:
    return make_coco_folder(tmp_path / "coco", n_images=n_images)


def _recipe(coco: Path, out, *extra: str):
    return load_recipe("coco", [f"source.root={coco}", "source.split=val2017", "output.progress=false",
                                f"output.dir={out}", "executor.tasks=2", *extra])  # fmt: skip


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _user_folder(root: Path) -> dict[str, str]:
    """A folder of someone's own files, named like a build's."""
    (root / "data").mkdir(parents=True)
    (root / "data/train-00000-of-00002.parquet").write_bytes(os.urandom(300))
    (root / "stats.json").write_text('{"mine": true}')
    (root / "rejects.jsonl").write_text("my notes\n")
    (root / "thesis.tex").write_text("\\chapter{One}")
    return _tree(root)


# ----------------------------------------------------------------------------------------------- refusals


def test_a_folder_of_someone_elses_files_is_refused_untouched(tmp_path):
    coco = _coco(tmp_path)
    cases = {"build files": _user_folder, "one file": lambda r: (r.mkdir(), (r / "a.txt").write_text("x"), _tree(r))[-1],
             "hidden file": lambda r: (r.mkdir(), (r / ".keep").write_text(""), _tree(r))[-1]}  # fmt: skip
    for name, make in cases.items():
        root = tmp_path / name.replace(" ", "_")
        before = make(root)
        with pytest.raises(OutputFolderError, match="not empty and holds no mfpo build") as info:
            build_dataset(_recipe(coco, root))
        assert str(root) in str(info.value) and "\n" not in str(info.value)
        assert _tree(root) == before, name


def test_root_home_and_files_are_refused(tmp_path, monkeypatch):
    coco = _coco(tmp_path)
    home = tmp_path / "home" / "me"
    home.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "afile").write_text("x")
    for out in ("/", "~/", str(home), str(home.parent), str(tmp_path / "afile")):
        with pytest.raises(OutputFolderError):
            build_dataset(_recipe(coco, out))
    assert list(home.iterdir()) == [] and (tmp_path / "afile").read_text() == "x"


def test_tilde_is_expanded_in_the_recipe_and_the_cli(tmp_path, monkeypatch):
    coco = _coco(tmp_path, n_images=2)
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    layout = build_dataset(_recipe(coco, "~/built", "executor.logging_dir=~/logs"))
    assert layout.root == home / "built" and (home / "logs" / "completions").is_dir()
    result = CliRunner().invoke(app, ["build", "--set", f"source.root={coco}", "--set", "source.split=val2017",
                                      "--set", "output.progress=false", "--output", "~/viacli"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (home / "viacli" / "manifest.json").is_file()
    assert list(cwd.iterdir()) == []  # no ./~ folder


def test_a_second_build_into_a_locked_folder_names_the_holder(tmp_path):
    coco = _coco(tmp_path, n_images=2)
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from mfpo_data.pipeline.outdir import BuildLock\n"
        f"with BuildLock(Path({str(out)!r})):\n    print('held', flush=True); time.sleep(60)"
    )], stdout=subprocess.PIPE, text=True, env={**os.environ})  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BuildLockedError, match=f"another build \\(pid {holder.pid}\\) is writing to {out}"):
            build_dataset(_recipe(coco, out))
        assert not (out / "data").exists()
    finally:
        holder.kill()
        holder.wait()
    assert rows_by_id(build_dataset(_recipe(coco, out)))  # the lock went with the holder


def test_a_build_that_fails_before_its_ranks_claims_nothing(tmp_path):
    coco = _coco(tmp_path, n_images=2)
    out = tmp_path / "out"
    with pytest.raises(MfpoError, match="the folder has split\\(s\\): val2017") as info:
        build_dataset(_recipe(coco, out, "source.split=train2017"))
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="'perturbation' \\(diffusion_noise\\): t=5000"):
        build_dataset(_recipe(coco, out, "perturbation.t=5000"))
    with pytest.raises(MfpoError, match="COCO folder not found"):
        build_dataset(_recipe(tmp_path / "nope", out))
    assert not out.exists()
    # a source file that fails while indexing: the folder is ours now, but holds no recipe
    (coco / "annotations/instances_val2017.json").write_text("{broken")
    with pytest.raises(MfpoError, match="not valid JSON"):
        build_dataset(_recipe(coco, out))
    make_coco_folder(coco, n_images=2)
    assert rows_by_id(build_dataset(_recipe(coco, out)))  # the corrected command runs


# ----------------------------------------------------------------------------------------------- same build


def test_path_spellings_and_a_moved_folder_are_the_same_build(tmp_path, monkeypatch):
    coco = _coco(tmp_path)
    monkeypatch.chdir(tmp_path)
    first = build_dataset(_recipe(coco, tmp_path / "out"))
    rows = rows_by_id(first)
    for spelling in ("out", "out/", "./out//", str(tmp_path / "out") + "/"):
        assert rows_by_id(build_dataset(_recipe(coco, spelling))) == rows, spelling
    shutil.move(tmp_path / "out", tmp_path / "moved")
    assert rows_by_id(build_dataset(_recipe(coco, "moved"))) == rows
    with pytest.raises(MfpoError, match="different recipe.*--restart"):
        build_dataset(_recipe(coco, "moved", "seed=7"))


# ----------------------------------------------------------------------------------------------- resume


def _interrupt(layout) -> None:
    """What a crash after rank 0 leaves: rank 1 unfinished, no final files."""
    layout.completion_marker(1).unlink()
    layout.staging_shard(1).unlink()
    for name in json.loads(layout.manifest_file.read_text())["files"]:
        (layout.root / name).unlink()
    manifest = json.loads(layout.manifest_file.read_text())
    layout.manifest_file.write_text(json.dumps({**manifest, "files": {}}))


def _add_image(coco: Path) -> None:
    path = coco / "annotations/instances_val2017.json"
    data = json.loads(path.read_text())
    img = data["images"][0]
    shutil.copy(coco / "val2017" / img["file_name"], coco / "val2017" / "copy.jpg")
    data["images"].append({**img, "id": 77, "file_name": "copy.jpg"})
    data["annotations"] += [{**a, "id": 7700 + k, "image_id": 77} for k, a in enumerate(data["annotations"]) if a["image_id"] == img["id"]]
    path.write_text(json.dumps(data))


def _break_an_annotation(coco: Path) -> None:
    path = coco / "annotations/instances_val2017.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["bbox"] = "broken"
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("change", [_add_image, _break_an_annotation], ids=["images_added", "record_broken"])
def test_changed_inputs_are_never_resumed(tmp_path, change):
    coco = _coco(tmp_path)
    layout = build_dataset(_recipe(coco, tmp_path / "out", "output.keep_staging=true"))  # staging to interrupt
    _interrupt(layout)
    change(coco)
    with pytest.raises(InputsChangedError, match="inputs changed.*--restart") as info:
        build_dataset(_recipe(coco, tmp_path / "out"))
    assert "\n" not in str(info.value)
    (layout.root / "my-notes.txt").write_text("keep me")
    restarted = build_dataset(_recipe(coco, tmp_path / "out"), restart=True)
    fresh = build_dataset(_recipe(coco, tmp_path / "fresh"))
    assert rows_by_id(restarted) == rows_by_id(fresh)  # nothing lost, nothing from the old inputs
    assert restarted.rejects_file.read_text() == fresh.rejects_file.read_text()
    assert (layout.root / "my-notes.txt").read_text() == "keep me"  # --restart removes only what the build wrote


def test_finished_build_files_not_listed_are_never_deleted(tmp_path):
    coco = _coco(tmp_path)
    layout = build_dataset(_recipe(coco, tmp_path / "out"))
    foreign = layout.data_dir / "train-00007-of-00009.parquet"
    foreign.write_bytes(b"someone's")
    build_dataset(_recipe(coco, tmp_path / "out"))  # finalize again
    assert foreign.read_bytes() == b"someone's"


# ----------------------------------------------------------------------------------------------- opening a build


def test_a_build_with_its_logs_elsewhere_is_complete_everywhere(tmp_path):
    from mfpo_data.publishing.publish import publish
    from mfpo_data.validate import load_and_validate

    coco = _coco(tmp_path)
    layout = build_dataset(_recipe(coco, tmp_path / "out", f"executor.logging_dir={tmp_path / 'logs'}"))
    assert not (layout.root / "logs").exists()
    assert len(load_and_validate(layout.root, split="train")) == len(rows_by_id(layout))
    result = publish(layout.root, "org/name", dry_run_dir=tmp_path / "up", test_size=1)
    assert sum(result.splits.values()) == len(rows_by_id(layout))


def _jsonl_recipe(tmp_path: Path, path: Path) -> Path:
    recipe = tmp_path / "pairs.yaml"
    recipe.write_text(f"source: {{kind: jsonl, path: {path}}}\noutput: {{progress: false}}\n")
    return recipe


def test_a_build_of_no_rows_exits_non_zero_with_the_reasons(tmp_path):
    (tmp_path / "data").mkdir()
    lines = [{"id": f"r{i}", "question": "Q?", "chosen": "A.", "rejected": "A.", "image": "x.jpg"} for i in range(3)]
    lines.append({"id": "m", "question": "Q?", "chosen": "A.", "rejected": "B.", "image": "missing.jpg"})
    path = tmp_path / "data" / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    recipe = recipe_from_dict({"source": {"kind": "jsonl", "path": str(path)}, "output": {"dir": str(tmp_path / "out"), "progress": False}})
    with pytest.raises(EmptyBuildError, match="0 rows: 4 inputs dropped \\(same_answers 3, missing_file 1\\)"):
        build_dataset(recipe)
    result = CliRunner().invoke(app, ["build", "--recipe", str(_jsonl_recipe(tmp_path, path)), "--output", str(tmp_path / "out")])
    assert result.exit_code == 1 and "same_answers 3" in result.output


def test_validate_reports_the_record_checks_and_value_checks(tmp_path):
    path = tmp_path / "pairs.jsonl"
    lines = [{"id": "a", "question": "Q?", "chosen": "A.", "rejected": "B.", "image": "x.jpg"},
             {"id": "b", "question": "Q\udcff?", "chosen": "A.", "rejected": "B.", "image": "x.jpg"},
             {"id": "c", "question": "Q?", "chosen": "A.", "rejected": "A.", "image": "x.jpg"}]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    source = ["--recipe", str(_jsonl_recipe(tmp_path, path))]
    runner = CliRunner()
    result = runner.invoke(app, ["validate", *source])
    assert result.exit_code == 0 and "3 input items checked, 2 records would be rejected (bad_text 1, same_answers 1)" in result.output
    result = runner.invoke(app, ["validate", *source, "--sample", "1"])
    assert "1 input items checked, 0 records" in result.output
    result = runner.invoke(app, ["validate", *source, "--set", "perturbation.t=5000"])
    assert result.exit_code == 1 and "t=5000 must be in [0, 1000)" in result.output


def test_a_killed_launcher_leaves_no_manager_process(tmp_path):
    script = ("import time, multiprocess\n"
              "from mfpo_data.pipeline.executors import children_die_with_launcher\n"
              "children_die_with_launcher()\n"
              "mg = multiprocess.get_context('fork').Manager()\n"
              "print(mg._process.pid, flush=True)\n"
              "time.sleep(60)\n")  # fmt: skip
    launcher = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    manager = int(launcher.stdout.readline())
    launcher.kill()
    launcher.wait()
    for _ in range(100):
        try:
            os.kill(manager, 0)
        except ProcessLookupError:
            break
        state = Path(f"/proc/{manager}/stat").read_text().rsplit(")", 1)[1].split()[0] if Path(f"/proc/{manager}").exists() else "X"
        if state in ("Z", "X"):
            break
        time.sleep(0.1)
    else:
        os.kill(manager, 9)
        pytest.fail("the Manager process outlived its launcher")
