"""The training-step benchmark (benchmarks/train_step) runs end to end at a tiny size and reports every
variant against TRL's step; nothing here asserts a timing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert re.search(r"^\| mfpo_online .*time (met|NOT met) \(<= 1.05 F\)", out, re.M), out
    assert re.search(r"^\| mfpo_precomputed .*time (met|NOT met) \(<= 0.8 F\)", out, re.M), out
    # the token floor from the collated batches: MFPO's LM tokens / TRL's, printed with both counts
    floor = re.search(r"token floor F = ([\d.]+) \(MFPO's LM tokens (\d+) / TRL's (\d+)\)", out)
    assert floor and float(floor.group(1)) == pytest.approx(int(floor.group(2)) / int(floor.group(3)), abs=1e-3), out
    assert 1.0 <= float(floor.group(1)) < 1.5  # y_w|m' adds answer tokens, the shared prompt is forwarded once
    per_f = {m.group(1): float(m.group(3)) for m in re.finditer(r"^\| (\w+)\s+\|\s+\d+ \|\s+([\d.]+) \[[^|]*\|\s+([\d.]+) \|",
                                                                 out, re.M)}  # fmt: skip
    assert per_f["mfpo_online"] == pytest.approx(float(rows["mfpo_online"]) / float(floor.group(1)), abs=0.011)
    assert "mfpo_online_reencode / mfpo_online = " in out
    assert "verdicts on CPU time (one process, 1 torch thread(s))" in out
