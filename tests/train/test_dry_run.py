"""`mfpo-train --dry-run`: the config and the dataset are checked (columns, reference, stages) and no model loads."""

from __future__ import annotations

import subprocess
import sys

from tests.paths import DEBUG_TRAIN_RECIPE


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mfpo_train.cli", *args], capture_output=True, text=True, timeout=120)


def test_dry_run_reports_rows_stages_and_reference_without_a_model(synthetic_data, tmp_path):
    # the model id names nothing that exists: a dry run that loaded it would fail
    args = ["--config", str(DEBUG_TRAIN_RECIPE), "--set", f"data.dataset={synthetic_data}",
            "--set", "model.name_or_path=no-such-org/no-such-model", "--set", f"train.output_dir={tmp_path / 'run'}"]
    out = _cli(*args, "--dry-run")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == (
        f"ok: {synthetic_data} split train: 12 rows with MFPO's columns; stages easy 4, medium 4, hard 4; "
        "reference no-such-org/no-such-model (forward)")
    assert not (tmp_path / "run").exists()  # nothing written
    flat = _cli(*args, "--set", "curriculum=none", "--set", "data.max_samples=5", "--dry-run")
    assert "5 rows" in flat.stdout and "stages all 5;" in flat.stdout


def test_dry_run_errors_are_one_line(synthetic_data, tmp_path):
    base = ["--config", str(DEBUG_TRAIN_RECIPE), "--dry-run"]
    precomputed = _cli(*base, "--set", f"data.dataset={synthetic_data}", "--set", "reference=precomputed")
    assert precomputed.returncode == 1 and "Traceback" not in precomputed.stderr
    assert [ln for ln in precomputed.stderr.splitlines() if ln.startswith("error:")][0].startswith(
        "error: reference: precomputed, but")
    missing = _cli(*base, "--set", f"data.dataset={tmp_path / 'nothing'}")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
