"""The efficacy benchmark (benchmarks/efficacy): its --fast run produces every table with finite metrics, a
rerun on the same folder reuses what it finished, and its statistics match hand-computed values. Nothing here
asserts which method wins; that is what the benchmark itself reports."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.efficacy import efficacy, report, shapes, stats
from benchmarks.efficacy.evaluate import METRICS
from benchmarks.efficacy.runs import RUNS


def test_fast_run_has_every_table_with_finite_metrics_and_resumes(tmp_path):
    summary = efficacy.main(["--fast", "--out", str(tmp_path)])

    args = summary["args"]
    seeds = [str(s) for s in range(args["seed_start"], args["seed_start"] + args["seeds"])]
    per_epoch = math.ceil(args["pref_pairs"] / args["batch"])
    expected = {name for t in report.TABLES.values() for name in t.rows}
    assert set(summary["results"]) == expected
    for name, per_seed in summary["results"].items():
        assert sorted(per_seed) == seeds, name
        for run in per_seed.values():
            assert set(run["metrics"]) == set(METRICS), name
            assert all(math.isfinite(v) for v in run["metrics"].values()), (name, run["metrics"])
            assert all(0.0 <= v <= 1.0 for k, v in run["metrics"].items() if k != "grey_drop"), (name, run["metrics"])
            if RUNS[name].region is None:
                assert run["curve"] == [] and run["train"] == {}
                continue
            # one evaluation per epoch, the last one is the final metrics; every run went through mfpo_train.train
            steps = run["train"]["steps"]
            if not RUNS[name].curriculum:  # (the curriculum's thirds round up to whole batches each)
                assert steps == per_epoch * args["pref_epochs"], name
            assert [c["step"] for c in run["curve"]] == sorted({*range(per_epoch, steps + 1, per_epoch), steps}), name
            assert {k: v for k, v in run["curve"][-1].items() if k != "step"} == run["metrics"]
            assert math.isfinite(run["train"]["loss"]) and run["train"]["skipped"] == 0, name
            assert ("image_rewards/margins" in run["train"]) == (RUNS[name].weights[1] > 0), name
    assert summary["results"]["mfpo-curriculum"]["0"]["train"]["stages"] == ["easy", "hard", "medium"]

    text = (tmp_path / "report.md").read_text()
    assert text == summary["report"]
    body = text[text.index("## Verdict"):]
    for claim in report.CLAIMS:
        assert claim.text in body
    for table in report.TABLES.values():
        assert f"## {table.title}" in body
        for a, b in table.contrasts:
            assert f"| {a} − {b} |" in body
    assert "nan" not in body
    for seed in seeds:
        per_seed = json.loads((tmp_path / f"seed{seed}" / "results.json").read_text())
        assert set(per_seed) == expected
    assert json.loads((tmp_path / "results.json").read_text())["results"].keys() == summary["results"].keys()

    # a rerun on the same folder trains nothing (every run file stays as it was) and prints the same tables
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("seed*/runs/*.json")}
    again = efficacy.main(["--fast", "--out", str(tmp_path), "--jobs", "1"])
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("seed*/runs/*.json")} == stamps
    assert again["report"][again["report"].index("## Verdict"):] == body


def test_bad_arguments_are_one_line_errors(capsys):
    with pytest.raises(SystemExit) as err:
        efficacy.parse_args(["--tables", "4,9"])
    assert err.value.code == 2 and "--tables: unknown table 9" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        efficacy.parse_args(["--methods", "dpo,ppo"])
    assert "--methods: unknown method 'ppo'" in capsys.readouterr().err


def test_t_distribution_matches_closed_forms_and_critical_values():
    for t in (0.0, 0.3, 1.0, 2.5, 12.0):
        assert stats.t_two_sided_no_scipy(t, 1) == pytest.approx(1 - 2 / math.pi * math.atan(t), abs=1e-13)  # Cauchy
        assert stats.t_two_sided_no_scipy(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-13)
    # two-sided 5% critical values from printed t tables
    for t, df in ((12.706204736, 1), (2.776445105, 4), (2.228138852, 10), (2.042272456, 30)):
        assert stats.t_two_sided_no_scipy(t, df) == pytest.approx(0.05, abs=1e-9)
    assert stats.t_two_sided_no_scipy(4.604094871, 4) == pytest.approx(0.01, abs=1e-9)
    assert stats.t_two_sided_no_scipy(math.inf, 3) == 0.0


def test_t_distribution_agrees_with_scipy():
    scipy_t = pytest.importorskip("scipy.stats").t
    for df in (1, 2, 3, 4, 7, 19, 250):
        for t in (0.01, 0.5, 1.7, 3.0, 8.0, 40.0):
            assert stats.t_two_sided_no_scipy(t, df) == pytest.approx(2 * scipy_t.sf(t, df), rel=1e-9, abs=1e-15)


def test_paired_difference_by_hand():
    d = stats.paired([3.0, 5.0, 7.0], [2.0, 3.0, 4.0])  # differences 1, 2, 3: mean 2, sd 1, t = 2 sqrt(3), df 2
    assert (d.mean, d.std, d.up, d.down, d.n) == (2.0, 1.0, 3, 0, 3)
    t = 2 * math.sqrt(3)
    assert d.p == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-12)
    assert stats.paired([1.0, 2.0], [1.0, 2.0]).p == 1.0  # no difference at all
    assert stats.paired([2.0, 3.0], [1.0, 2.0]).p == 0.0  # the same non-zero difference in every seed
    assert math.isnan(stats.paired([1.0], [0.0]).p)
    with pytest.raises(ValueError):
        stats.paired([1.0], [1.0, 2.0])


def test_verdict_rule():
    up5 = stats.Paired(mean=0.1, std=0.02, up=5, down=0, n=5, p=0.001)
    assert report.decide(up5, higher_is_better=True) == "holds"
    assert report.decide(up5, higher_is_better=False) == "does not hold"
    up4 = stats.Paired(mean=0.1, std=0.05, up=4, down=1, n=5, p=0.02)  # significant but one seed against
    assert report.decide(up4, higher_is_better=True) == "inconclusive"
    weak = stats.Paired(mean=0.1, std=0.2, up=5, down=0, n=5, p=0.3)  # every seed, not significant
    assert report.decide(weak, higher_is_better=True) == "inconclusive"
    assert report.decide(None, higher_is_better=True) == "not run"


def test_random_region_covers_a_fifth_of_the_image():
    masks = [shapes.random_region(0, f"pref-0-{i:05d}") for i in range(50)]
    assert all(0.18 <= m.mean() <= 0.22 for m in masks)
    assert len({m.tobytes() for m in masks}) > 40  # placed at random per sample
    assert (shapes.random_region(0, "x") == shapes.random_region(0, "x")).all()


def test_shared_prompt_scoring_equals_sequence_logps():
    """The evaluation runs each prompt once for the four colours; it must give `sequence_logps`' sums."""
    import numpy as np
    import torch

    from benchmarks.efficacy.evaluate import VARIANTS, colour_logps, eval_set
    from benchmarks.efficacy.sft import build_model
    from mfpo_train.collator import MFPOCollator
    from mfpo_train.model import sequence_logps

    for task_tokens in (True, False):  # answers of 2 tokens ("red</s>") and of up to 4 ("gree", "n", "</s>")
        model, processor = build_model(hidden=32, layers=2, seed=3, task_tokens=task_tokens)
        model.eval()
        ev = eval_set(seed=1, n=9, p_prior=0.8, processor=processor)
        fast = colour_logps(model, ev)
        scenes = shapes.make_scenes(1, "eval", 9, 0.8, anti=True)
        collator = MFPOCollator(processor, sequences=("chosen",))
        twin = [shapes.render(s.twin())[0] for s in scenes]
        for v, images in (("orig", [shapes.render(s)[0] for s in scenes]), ("twin", twin)):
            rows = [shapes.chat_row(im, s.question, c) for im, s in zip(images, scenes, strict=True) for c in shapes.COLORS]
            with torch.no_grad():
                slow = sequence_logps(model, collator(rows)).numpy().reshape(len(scenes), len(shapes.COLORS))
            np.testing.assert_allclose(fast[VARIANTS.index(v)], slow, atol=1e-5)
