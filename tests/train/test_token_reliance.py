"""Per-token image reliance: the build's `image_reliance` column equals the training code's own log-prob
differences, and `loss.token_weighting: image_reliance` gives the loss a hand computation gives."""

from __future__ import annotations

import math

import pytest
import torch

from mfpo_train.losses import SequenceLogps, mfpo_loss, reliance_weights


pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def reliance_build(tmp_path_factory, tiny_llava):
    """The bundled sample (a few items) with the reliance stage on the tiny LLaVA."""
    from mfpo_data.pipeline.build import build_dataset

    overrides = [f"reliance={{backend: vlm, model_id: {tiny_llava}, device: cpu, batch_size: 3}}", "source.limit=2",
                 "output.progress=false"]  # fmt: skip
    return build_dataset("coco", overrides, tmp_path_factory.mktemp("reliance-build")).root


def _rows_and_batch(build, model_path, token_weighting=False, n=4):
    from transformers import AutoProcessor

    from mfpo_train.collator import MFPOCollator
    from mfpo_train.data import load_preference_dataset

    ds = load_preference_dataset(build)
    rows = [ds[i] for i in range(min(n, len(ds)))]
    processor = AutoProcessor.from_pretrained(model_path)
    return rows, MFPOCollator(processor, token_weighting=token_weighting)(rows)


def _per_token_logps(model, batch):
    """(rows, L) log-probs of every answer token, from the training scorer: its weighted sum with one-hot weights."""
    from mfpo_train.scoring import sequence_logps

    mask = batch["completion_mask"]
    out = torch.zeros(mask.shape, dtype=torch.float32)
    rows, cols = mask.nonzero(as_tuple=True)
    with torch.no_grad():
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            onehot = torch.zeros(mask.shape, dtype=torch.float32)
            onehot[r, c] = 1.0
            out[r, c] = sequence_logps(model, {**batch, "token_weights": onehot})[r]
    return out


def test_reliance_column_equals_the_training_scorers_log_prob_differences(reliance_build, tiny_llava):
    from transformers import AutoModelForImageTextToText

    from mfpo_train.scoring import sequence_logps

    rows, batch = _rows_and_batch(reliance_build, tiny_llava)
    model = AutoModelForImageTextToText.from_pretrained(tiny_llava).eval()
    n = len(rows)
    per_token = _per_token_logps(model, batch)
    mask = batch["completion_mask"].bool()
    with torch.no_grad():
        sums = sequence_logps(model, batch)
    for i, row in enumerate(rows):
        reliance = row["image_reliance"]
        assert reliance["model_id"] == str(tiny_llava) and reliance["revision"] is None
        on_m, on_m_prime = per_token[i][mask[i]], per_token[2 * n + i][mask[2 * n + i]]
        answer = batch["input_ids"][i][mask[i]].tolist()
        assert reliance["token_ids"] == answer
        torch.testing.assert_close(torch.tensor(reliance["values"]), on_m - on_m_prime, atol=2e-4, rtol=0)
        assert reliance["sum"] == pytest.approx(float(sums[i] - sums[2 * n + i]), abs=1e-3)
        assert reliance["sum"] == pytest.approx(sum(reliance["values"]), abs=1e-4)


def test_reliance_weights_are_normalised_per_answer():
    assert reliance_weights([0.5, -1.0, 1.5]) == pytest.approx([0.75, 0.0, 2.25])  # 3 * (0.5, 0, 1.5) / 2
    assert reliance_weights([-0.1, 0.0]) == [1.0, 1.0]  # no token relies on the image: uniform
    assert reliance_weights([float("nan"), 1.0]) == [1.0, 1.0]
    assert reliance_weights([]) == []


def test_token_weighted_loss_equals_a_hand_computation(reliance_build, tiny_llava):
    from transformers import AutoModelForImageTextToText

    from mfpo_train.model import split_logps
    from mfpo_train.scoring import sequence_logps

    rows, batch = _rows_and_batch(reliance_build, tiny_llava, token_weighting=True)
    n = len(rows)
    model = AutoModelForImageTextToText.from_pretrained(tiny_llava).eval()
    per_token = _per_token_logps(model, batch)
    mask = batch["completion_mask"].bool()
    expected = []
    for block in range(3):  # chosen | rejected | perturbed
        for i, row in enumerate(rows):
            lp = per_token[block * n + i][mask[block * n + i]].double()
            w = torch.ones_like(lp) if block == 1 else torch.tensor(reliance_weights(row["image_reliance"]["values"])).double()
            expected.append(float((w * lp).sum()))
    with torch.no_grad():
        got = sequence_logps(model, batch)
    torch.testing.assert_close(got.double(), torch.tensor(expected, dtype=torch.float64), atol=1e-3, rtol=0)
    assert not torch.allclose(got, sequence_logps(model, {k: v for k, v in batch.items() if k != "token_weights"}))

    policy = split_logps(got, ("chosen", "rejected", "perturbed"))
    ref = SequenceLogps(policy.chosen + 0.3, policy.rejected - 0.2, policy.perturbed + 0.1)  # a reference that differs
    out = mfpo_loss(policy, ref, beta=0.5)
    hand = 0.0
    for i in range(n):
        w, l, p = expected[i], expected[n + i], expected[2 * n + i]
        rw, rl, rp = w + 0.3, l - 0.2, p + 0.1
        sp = lambda x: math.log1p(math.exp(-x))  # noqa: E731  -log sigmoid(x)
        hand += sp(0.5 * ((w - rw) - (l - rl))) + sp(0.5 * ((w - rw) - (p - rp))) + sp(0.5 * (w - rw))
    assert out.loss.item() == pytest.approx(hand / n, abs=1e-4)


def test_the_collator_refuses_rows_without_the_column_or_with_other_tokens(reliance_build, tiny_llava):
    from transformers import AutoProcessor

    from mfpo_train.collator import MFPOCollator
    from mfpo_train.data import load_preference_dataset

    ds = load_preference_dataset(reliance_build)
    row = dict(ds[0])
    collate = MFPOCollator(AutoProcessor.from_pretrained(tiny_llava), token_weighting=True)
    with pytest.raises(ValueError, match=f"row '{row['id']}' has no image_reliance"):
        collate([{**row, "image_reliance": None}])
    other = {**row["image_reliance"], "token_ids": [t + 1 for t in row["image_reliance"]["token_ids"]]}
    with pytest.raises(ValueError, match="computed with other tokens"):
        collate([{**row, "image_reliance": other}])


def test_training_with_token_weighting_runs_and_refuses_what_it_cannot_weight(reliance_build, tiny_llava, make_config,
                                                                              synthetic_data, tmp_path):
    from mfpo_train.errors import TrainingError
    from mfpo_train.train import train

    result = train(make_config(tiny_llava, reliance_build, "loss.token_weighting=image_reliance", "train.max_steps=1",
                               "data.max_samples=4"))  # fmt: skip
    assert result.state.global_step == 1 and math.isfinite(result.history[0]["loss"])
    with pytest.raises(TrainingError, match="precomputed reference holds unweighted sums"):
        train(make_config(tiny_llava, reliance_build, "loss.token_weighting=image_reliance", "reference=precomputed",
                          output_dir=tmp_path / "pre"))  # fmt: skip
    with pytest.raises(TrainingError, match="have no image_reliance"):
        train(make_config(tiny_llava, synthetic_data, "loss.token_weighting=image_reliance", output_dir=tmp_path / "syn"))
