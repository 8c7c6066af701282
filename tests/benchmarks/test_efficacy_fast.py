"""The efficacy benchmark (benchmarks/efficacy): its --fast run produces every table, gate and claim; the verdict
rule, the gates and the toy's CHAIR are checked on hand-made cases. Nothing here asserts which method wins;
that is what the benchmark itself reports."""

from __future__ import annotations

import json
import math
import random
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks.efficacy import efficacy, evaluate, gates, pairs, report, rule, scenes, stats
from benchmarks.efficacy.runs import RUNS


# -- the --fast run ------------------------------------------------------------------------------------------
def test_fast_run_has_every_table_gate_and_claim_and_resumes(tmp_path, capsys):
    summary = efficacy.main(["--fast", "--tables", "4,5,7,8", "--out", str(tmp_path)])

    args = summary["args"]
    seeds = [str(s) for s in range(args["seed_start"], args["seed_start"] + args["seeds"])]
    expected = {"sft", *gates.GATE_RUNS, *(n for t in report.TABLES.values() for n in t.rows)}
    assert set(summary["runs"]) == expected
    for name, per_seed in summary["runs"].items():
        assert sorted(per_seed) == seeds, name
        for values in per_seed.values():
            assert set(evaluate.METRICS) <= set(values), name
            assert all(math.isfinite(v) for v in values.values()), (name, values)
        for curve in summary["checkpoints"][name].values():  # the SFT model once; a trained run at its last saves
            steps = [c["step"] for c in curve]
            assert steps == ([0] if RUNS[name].region is None else [2, 4, 6]), name
        for seed, logs in summary["train"][name].items():
            if RUNS[name].region is not None:
                assert logs["steps"] == args["steps"] == 6 and logs["skipped"] == 0, (name, seed)
                assert ("image_rewards/margins" in logs) == (RUNS[name].weights[1] > 0), name
    assert summary["train"]["mfpo-curriculum"]["0"]["stages"] == ["easy", "hard", "medium"]
    assert [c["id"] for c in summary["claims"]] == [c.id for c in report.CLAIMS]
    assert [g["name"] for g in summary["gates"]] == ["SFT model capable but biased", "DPO shows the shortcut",
                                                      "negative control (natural rate)",
                                                      "determinism across thread counts"]
    assert summary["determinism"]["same_threads_identical"]  # one thread twice: bit-identical
    shortcut = summary["data"]["data:0:('shortcut', 'key')"]
    assert shortcut["prior_driven"] == 1.0 and shortcut["pairs"] == 12
    for claim in summary["claims"]:
        d = claim["decision"]
        assert d["n"] == 2 and d["k"] == len(report.CLAIMS) and d["delta"] == 2.0
        assert d["verdict"] in (rule.HOLDS, rule.NOT_HOLDS, rule.INCONCLUSIVE)
        failed = [g["reason"] for g in summary["gates"] if not g["passed"]]
        assert claim["verdict"] == ("no verdict, because " + "; ".join(failed) if failed else d["verdict"])
    assert summary["run"]["cpu_s"] > 0 and set(summary["run"]["task_cpu_s"]) == {"sft", "data", "run", "determinism"}

    text = (tmp_path / "report.md").read_text()
    assert text == summary["report"] == report.report(json.loads((tmp_path / "results.json").read_text()))
    assert "CPU-seconds" in text and " s wall" in text
    for row in report.verdict_rows(summary):
        assert row in text
    for table in report.TABLES.values():
        assert f"## {table.title}" in text
    assert "nan" not in text
    out = capsys.readouterr().out
    assert "CPU-s" in out

    # a rerun on the same folder trains nothing (every run file stays as it was) and reports the same verdicts
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("seed*/runs/*.json")}
    again = efficacy.main(["--fast", "--tables", "4,5,7,8", "--out", str(tmp_path), "--jobs", "1"])
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("seed*/runs/*.json")} == stamps
    assert again["claims"] == summary["claims"] and again["gates"] == summary["gates"]
    # ... and counts what the reused tasks recorded into the table's CPU seconds (the determinism gate is rerun)
    assert summary["run"]["reused_tasks"] == 0 and summary["run"]["table_cpu_s"] == summary["run"]["cpu_s"]
    assert again["run"]["reused_tasks"] == len(efficacy.plan(efficacy.parse_args(["--fast", "--tables", "4,5,7,8"]))) - 1
    fresh = sum(v for k, v in summary["run"]["task_cpu_s"].items() if k != "determinism")
    assert 0 < again["run"]["reused_cpu_s"] <= fresh  # a task records its own work, not its worker's imports
    assert again["run"]["table_cpu_s"] == again["run"]["cpu_s"] + again["run"]["reused_cpu_s"]
    assert f"recorded by the {again['run']['reused_tasks']} tasks it reused" in again["report"]


def test_bad_arguments_are_one_line_errors(capsys):
    with pytest.raises(SystemExit) as err:
        efficacy.parse_args(["--tables", "4,9"])
    assert err.value.code == 2 and "--tables: unknown table 9" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        efficacy.parse_args(["--pref-pairs", "100", "--batch", "32"])
    assert "--pref-pairs (100) must be a multiple of 3 x --batch (96)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        efficacy.parse_args(["--delta", "0"])
    assert "--delta must be > 0" in capsys.readouterr().err


# -- the rule --------------------------------------------------------------------------------------------------
def test_t_quantiles_are_the_printed_ones():
    for p, df, t in ((0.975, 1, 12.706204736), (0.975, 4, 2.776445105), (0.995, 30, 2.749995654)):
        assert stats.t_quantile(p, df) == pytest.approx(t, abs=1e-8)
    with pytest.raises(ValueError):
        stats.t_quantile(0.3, 4)


def test_rule_on_synthetic_paired_differences():
    rng = random.Random(7)
    k, delta = 8, 2.0
    large = [rng.gauss(6.0, 1.0) for _ in range(8)]  # a large true effect
    assert rule.decide(large, delta, k).verdict == rule.HOLDS
    null = [rng.gauss(0.0, 0.3) for _ in range(8)]  # no effect, small spread: below delta
    d = rule.decide(null, delta, k)
    assert d.verdict == rule.NOT_HOLDS and d.hi < delta and d.seeds_to_decide is None
    noisy = [rng.gauss(1.0, 4.0) for _ in range(8)]  # noisy: the interval holds 0 and delta
    d = rule.decide(noisy, delta, k)
    assert d.verdict == rule.INCONCLUSIVE and d.lo <= 0 < delta <= d.hi
    assert d.seeds_to_decide > 8 and d.decided_as in (rule.HOLDS, rule.NOT_HOLDS)
    # at that seed count, the same mean and spread decide it
    h = rule.half_width(d.std, d.seeds_to_decide, k)
    assert rule.classify(d.mean - h, d.mean + h, delta) == d.decided_as
    h = rule.half_width(d.std, d.seeds_to_decide - 1, k)
    assert rule.classify(d.mean - h, d.mean + h, delta) == rule.INCONCLUSIVE
    reversed_ = [-x for x in large]
    assert rule.decide(reversed_, delta, k).verdict == rule.NOT_HOLDS
    small_but_real = [0.5 + 0.01 * i for i in range(10)]  # above 0, but surely below delta: not an effect of interest
    assert rule.decide(small_but_real, delta, k).verdict == rule.NOT_HOLDS


def test_rule_by_hand():
    # differences 2, 3, 4: mean 3, sd 1, n 3; k = 1: the 95% interval is 3 +- t(0.975, 2) / sqrt(3) = [0.52, 5.48]
    d = rule.decide([2.0, 3.0, 4.0], delta=0.5, k=1)
    t = 4.302652730  # t(0.975, 2), printed tables
    assert (d.mean, d.std, d.up, d.down, d.n) == (3.0, 1.0, 3, 0, 3)
    assert d.lo == pytest.approx(3 - t / math.sqrt(3), abs=1e-8) and d.hi == pytest.approx(3 + t / math.sqrt(3), abs=1e-8)
    assert d.verdict == rule.HOLDS and d.level == 0.95
    # Bonferroni: with k = 8 the same numbers give the 99.375% interval, t(0.996875, 2) = 12.7: it holds 0
    wide = rule.decide([2.0, 3.0, 4.0], delta=0.5, k=8)
    assert wide.level == pytest.approx(0.99375) and wide.verdict == rule.INCONCLUSIVE and wide.lo < 0 < 0.5 < wide.hi
    assert rule.decide([3.0], delta=1.0, k=8).verdict == rule.INCONCLUSIVE  # one seed decides nothing
    assert rule.decide([0.5, 0.5], delta=1.0, k=8).verdict == rule.NOT_HOLDS  # no spread: the mean is the interval
    with pytest.raises(ValueError):
        rule.decide([], 1.0, 8)


# -- the gates -------------------------------------------------------------------------------------------------
def _sft(**over):
    base = {"recall_in_dist": 85.0, "CHAIRi_in_dist": 15.0, "colour_acc_off_in_dist": 70.0, "prior_said": 20.0,
            "co_added": 30.0}
    return {**base, **over}


def test_gates_pass_and_fail_with_a_reason():
    assert gates.sft_gate([_sft(), _sft()]).passed
    g = gates.sft_gate([_sft(recall_in_dist=30.0), _sft(recall_in_dist=40.0)])  # mean 35: not capable
    assert not g.passed and "recall_in_dist 35.0 outside [75, 100]" in g.reason
    assert not gates.sft_gate([_sft(prior_said=1.0)]).passed  # not biased
    assert gates.shortcut_gate([8.0, 9.0, 10.0, 9.5, 8.5, 9.0], k=8).passed
    g = gates.shortcut_gate([8.0, -6.0, 1.0, 5.0, -3.0, 2.0], k=8)
    assert not g.passed and "no shortcut" in g.reason
    holds = rule.decide([6.0, 6.5, 5.5, 6.2, 5.8, 6.1], 2.0, 8)
    assert holds.verdict == rule.HOLDS and not gates.control_gate(holds).passed
    assert gates.control_gate(rule.decide([0.1, -0.2, 0.0, 0.1, -0.1, 0.05], 2.0, 8)).passed
    det = {"answers": 10, "same_threads_identical": True, "thread_counts_identical": False, "answers_differing": 2,
           "max_weight_diff": 1e-6}
    g = gates.determinism_gate(det)
    assert not g.passed and "2 differ" in g.value and "thread count" in g.reason


def _fake_results(effect: float, control: float, sft_recall: float = 85.0, seeds=range(6)) -> dict:
    """Run results with given per-seed CHAIR_i: mfpo at 10, every ablation `effect` above it."""
    rng = random.Random(3)

    def run(chair, over=5.0, recall=85.0):
        m = {k: 50.0 for k in evaluate.METRICS}
        m.update(CHAIRi=chair, overcorrect=over, recall_in_dist=recall, CHAIRi_in_dist=15.0, colour_acc_off_in_dist=70.0,
                 prior_said=20.0, co_added=30.0)
        return {"checkpoints": [m, m, m], "train": {}}

    out = {}
    for s in seeds:
        noise = rng.gauss(0, 0.1)
        out.setdefault("sft", {})[s] = run(20.0, over=2.0, recall=sft_recall)
        out.setdefault("dpo", {})[s] = run(15.0, over=12.0 + noise)
        out.setdefault("mfpo@natural", {})[s] = run(10.0)
        out.setdefault("mfpo-no-image@natural", {})[s] = run(10.0 + control + noise)
        for name in ("mfpo", "mfpo-curriculum"):
            out.setdefault(name, {})[s] = run(10.0 + noise / 2)
        for c in report.CLAIMS:
            if c.worse not in ("mfpo",):
                out.setdefault(c.worse, {})[s] = run(10.0 + effect + noise)
    return out


def _args(**over):
    base = dict(tables=["4", "5", "7", "8"], delta=2.0, gates_first=True, out="x")
    return SimpleNamespace(**{**base, **over})


DET_OK = {"answers": 10, "same_threads_identical": True, "thread_counts_identical": True, "answers_differing": 0,
          "max_weight_diff": 0.0}


def test_claims_are_decided_only_when_every_gate_passes():
    s = report.summarize(_args(), _fake_results(effect=5.0, control=0.0), DET_OK, {}, {})
    assert all(g["passed"] for g in s["gates"])
    by_id = {c["id"]: c for c in s["claims"]}
    assert by_id["4a"]["verdict"] == rule.HOLDS and by_id["4a"]["decision"]["mean"] == pytest.approx(5.0, abs=0.2)
    assert by_id["7"]["verdict"] == rule.NOT_HOLDS  # curriculum and end-to-end equal here: no effect of size delta
    # the negative control holds: no claim gets a verdict, each says why
    s = report.summarize(_args(), _fake_results(effect=5.0, control=5.0), DET_OK, {}, {})
    assert [g["passed"] for g in s["gates"]] == [True, True, False, True]
    assert all(c["verdict"].startswith("no verdict, because the image-term claim also holds") for c in s["claims"])
    assert s["claims"][0]["decision"]["verdict"] == rule.HOLDS  # the rule's own outcome stays on record
    s = report.summarize(_args(), _fake_results(effect=5.0, control=0.0, sft_recall=20.0), DET_OK, {}, {})
    assert all("the SFT model is outside its band" in c["verdict"] for c in s["claims"])
    s = report.summarize(_args(tables=["8"]), _fake_results(effect=5.0, control=0.0), DET_OK, {}, {})
    assert [c["id"] for c in s["claims"]] == ["8a", "8b"] and s["claims"][0]["decision"]["k"] == 2  # its own claims


# -- the toy and its CHAIR -------------------------------------------------------------------------------------
def _scene(*objs) -> scenes.Scene:
    placed = [scenes.Obj(shape, colour, 6.0 + 10.0 * i, 8.0 + 8.0 * i, 4.5) for i, (colour, shape) in enumerate(objs)]
    return scenes.Scene("t", tuple(sorted(placed, key=lambda o: scenes.SHAPES.index(o.shape))), 110.0, 10.0, 0.3,
                        0.6, 1)


def test_toy_chair_against_hand_counts():
    truth = [("red circle", "green square"), ("blue triangle",), ("yellow cross", "red circle"), ("green square",)]
    answers = [
        "red circle, blue square.",  # 2 mentions, 1 hallucinated (blue square); red circle found
        "blue triangle, yellow cross.",  # 2 mentions, 1 hallucinated (the companion)
        "red circle, yellow cross.",  # 2 mentions, none hallucinated, both found
        "a green square and some text.",  # 1 mention, found
    ]
    result = evaluate.chair(answers, truth)
    c = result["counts"]
    assert (c["mentions"], c["mentions_hallucinated"], c["answers_hallucinated"]) == (7, 2, 2)
    assert (c["gt_objects"], c["gt_objects_mentioned"]) == (6, 5)
    points = evaluate.chair_points(result)
    assert points == pytest.approx({"CHAIRi": 100 * 2 / 7, "CHAIRs": 50.0, "recall": 100 * 5 / 6})
    assert result["details"][0]["hallucinated"] == [["blue square", "blue square"]]
    # repeats count, as in CHAIR: the same hallucinated phrase twice is two hallucinated mentions
    twice = evaluate.chair(["green circle, green circle."], [("red circle",)])["counts"]
    assert (twice["mentions"], twice["mentions_hallucinated"], twice["gt_objects_mentioned"]) == (2, 2, 0)


def test_shortcut_rates_by_hand():
    held = [_scene(("red", "circle"), ("green", "square")),  # both prior-coloured, companions both there
            _scene(("green", "circle")),  # off-prior, its companion (square) absent
            _scene(("blue", "triangle"), ("green", "cross"))]  # prior / off-prior; companions there
    answers = ["blue circle.",  # circle over-corrected (blue), square left out
               "red circle, green square.",  # the prior colour said, the companion added
               "blue triangle, green cross."]  # right
    r = evaluate.shortcut_rates(answers, held)
    # prior-coloured objects: red circle (said blue), green square (left out), blue triangle (right): 2 of 3 not
    # named as they are; present companions: circle, square, triangle, cross: square left out = 1 of 4
    assert r["overcorrect"] == pytest.approx(0.5 * (200 / 3 + 100 / 4))
    assert r["prior_said"] == pytest.approx(100 / 2)  # off-prior: green circle (said red), green cross (right)
    assert r["co_added"] == pytest.approx(100.0)  # the one absent companion was named
    assert r["malformed"] == 0.0 and r["shape_recall"] == pytest.approx(100 * 4 / 5)
    assert evaluate.shortcut_rates(["circle red"], held[1:2])["malformed"] == 100.0
    # the other prior direction: a green circle named by its colour's usual shape (an absent square)
    assert evaluate.shortcut_rates(["green square."], held[1:2])["prior_said"] == 100.0
    assert evaluate.shortcut_rates(["green cross."], held[1:2])["prior_said"] == 0.0


def test_errors_are_every_single_error_with_its_kind_and_region():
    scene = _scene(("green", "circle"), ("blue", "triangle"))  # off-prior circle; prior triangle; no companions
    errs = scenes.errors(scene)
    # 3 recolourings and 2 reshapings (to the absent square, cross) each; the two absent companions once each
    assert len(errs) == (3 + 2) * 2 + 2
    attr = [e for e in errs if e.kind == "attr"]  # the off-prior circle given its shape's colour or its colour's shape
    assert [e.rejected for e in attr] == [("red circle", "blue triangle"), ("green square", "blue triangle")]
    assert all(e.region == ("circle",) for e in attr)
    co = {e.rejected for e in errs if e.kind == "co"}
    assert co == {("green circle", "green square", "blue triangle"), ("green circle", "blue triangle", "yellow cross")}
    assert all(e.region == ("circle", "triangle") for e in errs if e.kind == "co")
    full = _scene(("red", "circle"), ("green", "square"))  # companions present: the absent pair may be added freely
    kinds = [e.kind for e in scenes.errors(full)]
    assert kinds.count("attr") == 0 and kinds.count("co") == 0 and kinds.count("other") == 6 + 4 + 8


def test_pairs_follow_the_shortcut_knob_and_the_key_region():
    shortcut = pairs.preference_pairs(0, 60, 0.8, 0.8, prior_fraction=1.0)
    assert all(p.error.kind != "other" for p in shortcut) and len({p.scene.id for p in shortcut}) == 60
    assert {p.error.kind for p in shortcut} == {"attr", "co"}
    natural = pairs.preference_pairs(0, 400, 0.8, 0.8, prior_fraction=None)
    rate = sum(p.error.kind != "other" for p in natural) / len(natural)
    assert 0.05 < rate < 0.25  # uniform over single errors: about 0.12
    for p in shortcut[:10]:
        sample = pairs.to_sample(p, "key")
        assert sample.chosen == scenes.description(p.scene) and sample.rejected != sample.chosen
        by_shape = scenes.masks(p.scene)
        expected = np.logical_or.reduce([by_shape[s] for s in p.error.region])
        assert (sample.mask == expected).all()
        if p.error.kind == "attr":
            assert len(p.error.region) == 1 and p.error.region[0] in p.scene.shapes
        else:
            assert p.error.region == p.scene.shapes
    assert pairs.to_sample(shortcut[0], "global").mask is None


def test_random_region_covers_a_fifth_of_the_image():
    masks = [pairs.random_region(0, f"pref-0-{i:05d}") for i in range(50)]
    assert all(0.18 <= m.mean() <= 0.22 for m in masks)
    assert len({m.tobytes() for m in masks}) > 40  # placed at random per sample
    assert (pairs.random_region(0, "x") == pairs.random_region(0, "x")).all()


def test_held_out_set_is_balanced_and_pope_questions_are_adversarial():
    held = scenes.make_scenes(0, "eval", 600, evaluate.EVAL_P, evaluate.EVAL_P)
    objs = [o for s in held for o in s.objects]
    assert 0.45 < np.mean([o.color == scenes.PRIOR[o.shape] for o in objs]) < 0.55
    with_pair = [scenes.COMPANION[o.shape] in s.shapes for s in held for o in s.objects]
    assert 0.4 < np.mean(with_pair) < 0.6
    qs = evaluate.pope_questions(0, held[:50])
    assert [q["label"] for q in qs] == ["yes", "no"] * 50
    for i, s in enumerate(held[:50]):
        yes, no = qs[2 * i]["text"], qs[2 * i + 1]["text"]
        assert any(f" {p} " in yes for p in s.phrases) and not any(f" {p} " in no for p in s.phrases)


# -- the README quotes real default runs -------------------------------------------------------------------------
def test_readme_verdicts_are_the_committed_runs():
    """Each table's committed `verdict.json` came from an invocation with the default settings, its decisions are
    what the rule gives on its paired differences and its gates, it kept to the CPU budget, and the README shows
    its size, cost, gates and verdicts."""
    from pathlib import Path

    folder = Path(efficacy.__file__).parent
    readme = (folder / "README.md").read_text()
    files = sorted((folder / "results").glob("table*.json"))
    assert [f.stem for f in files] == ["table4", "table5", "table7", "table8"]
    for f in files:
        s = json.loads(f.read_text())
        table = f.stem.removeprefix("table")
        defaults = vars(efficacy.parse_args(["--tables", table]))
        free = ("out", "jobs")  # where it ran and on how many processes: neither changes a number
        assert {k: v for k, v in s["args"].items() if k not in free} == {k: v for k, v in defaults.items() if k not in free}
        assert s["k"] == len(s["claims"]) == sum(c.table == table for c in report.CLAIMS)
        for claim in s["claims"]:
            again = rule.decide(claim["diffs"], s["delta"], s["k"])
            assert again.verdict == claim["decision"]["verdict"]
            assert again.lo == pytest.approx(claim["decision"]["lo"]) and again.hi == pytest.approx(claim["decision"]["hi"])
            failed = [g["reason"] for g in s["gates"] if not g["passed"]]
            assert claim["verdict"] == ("no verdict, because " + "; ".join(failed) if failed else again.verdict)
        assert s["run"]["table_cpu_s"] <= report.BUDGET_CPU_S, f.name
        block = "\n".join(report.readme_block(s, efficacy.DEFAULT_SEEDS[table]))
        assert block in readme, f.name
        for claim in s["claims"]:
            assert report.summary_row(claim) in readme, (f.name, claim["id"])
    assert "every gate passed in every invocation" not in readme or all(
        g["passed"] for f in files for g in json.loads(f.read_text())["gates"])
