"""The training-step benchmark (benchmarks/train_step) runs end to end at a tiny size and reports every
variant against TRL's step; nothing here asserts a timing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from benchmarks.train_step import VARIANTS


REPO = Path(__file__).resolve().parents[2]


def test_a_tiny_run_reports_every_variant_with_a_ratio_and_a_target_verdict():
    args = ["--shapes", "short", "--rounds", "1", "--warmup", "0", "--skip-memory", "--batch", "1",
            "--image-size", "64", "--hidden", "64", "--layers", "1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "benchmarks.train_step", *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300, check=True).stdout  # fmt: skip
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| (\w+)\s+\|\s+\d+ \|\s+([\d.]+) \[", out, re.M)}
    assert set(rows) == {"trl_dpo_sigmoid", *VARIANTS}, out
    assert rows["trl_dpo_sigmoid"] == "1.00"
    assert all(float(v) > 0 for v in rows.values())
    assert re.search(r"^\| mfpo_online .*time (met|NOT met)", out, re.M), out
    assert re.search(r"^\| mfpo_precomputed .*time (met|NOT met)", out, re.M), out
