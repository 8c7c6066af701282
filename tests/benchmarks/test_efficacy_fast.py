"""The efficacy benchmark's --fast variant (benchmarks/efficacy): the whole pipeline runs and the metrics are
finite. It asserts nothing about which method wins; that is what the benchmark itself reports."""

from __future__ import annotations

import json
import math


def test_efficacy_fast_runs_end_to_end(tmp_path):
    from benchmarks.efficacy import efficacy

    summary = efficacy.main(["--fast", "--out", str(tmp_path)])

    (run,) = summary["runs"]
    assert set(run["metrics"]) == {"sft", *efficacy.METHODS}
    for name, metrics in run["metrics"].items():
        assert set(metrics) == set(efficacy.METRICS), name
        assert all(math.isfinite(v) for v in metrics.values()), (name, metrics)
        assert all(0.0 <= v <= 1.0 for k, v in metrics.items() if k != "grey_drop"), (name, metrics)
    for name, log in run["train"].items():  # every method went through mfpo_train.train for its steps
        assert log["steps"] >= 1 and math.isfinite(log["loss"]), (name, log)
    assert "image_rewards/margins" in run["train"]["mfpo"] and "image_rewards/margins" not in run["train"]["dpo"]
    assert json.loads((tmp_path / "results.json").read_text())["runs"][0]["seed"] == 0
    assert "| mfpo − dpo |" in (tmp_path / "table.md").read_text()
