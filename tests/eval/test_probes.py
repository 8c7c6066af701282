"""MFPO's probes equal hand-made comparisons of `sequence_logps`, overall and per difficulty bucket."""

from __future__ import annotations

import numpy as np
import pytest

from mfpo_train.eval import probes


@pytest.fixture(scope="module")
def rows():
    from mfpo_train.synthetic import synthetic_rows

    return synthetic_rows(9, seed=3)  # 3 rows per bucket


def _logps(model, processor, rows, images):
    """log p(chosen), log p(rejected) of each row with `images` in place of its image, straight from the model."""
    from mfpo_train.collator import MFPOCollator
    from mfpo_train.model import sequence_logps

    collator = MFPOCollator(processor, sequences=("chosen", "rejected"))
    batch = collator([{**r, "images": [im]} for r, im in zip(rows, images, strict=True)])
    flat = sequence_logps(model, batch).tolist()
    return flat[: len(rows)], flat[len(rows):]


def test_probes_equal_hand_computed_comparisons(tiny_models, rows, tmp_path):
    from mfpo_data.backends.vlm import load_vlm

    model, processor = load_vlm(tiny_models["llava"])
    got = probes.run_probes(model, processor, rows, batch_size=4, records_file=tmp_path / "p.jsonl", progress=False)

    cw, cl = _logps(model, processor, rows, [r["images"][0] for r in rows])
    pw, pl = _logps(model, processor, rows, [r["rejected_images"][0] for r in rows])
    noise = [probes.noise_image(r["images"][0], r["id"], seed=0, t=999) for r in rows]
    nw, nl = _logps(model, processor, rows, noise)

    def expect(idx):
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        return {
            "preference_accuracy": mean([cw[i] > cl[i] for i in idx]),
            "preference_accuracy_perturbed": mean([pw[i] > pl[i] for i in idx]),
            "preference_accuracy_noise": mean([nw[i] > nl[i] for i in idx]),
            "image_reward_accuracy": mean([cw[i] > pw[i] for i in idx]),
            "image_reward_accuracy_noise": mean([cw[i] > nw[i] for i in idx]),
            "logp_drop_perturbed": mean([cw[i] - pw[i] for i in idx]),
            "logp_drop_noise": mean([cw[i] - nw[i] for i in idx]),
        }

    everything = expect(range(len(rows)))
    assert got["n"] == len(rows) and got["dropped"] == 0
    for name, value in everything.items():
        assert got[name] == pytest.approx(value, abs=1e-4), name
    assert 0 < got["preference_accuracy"] < 1  # a random model: neither all right nor all wrong on 9 rows
    assert sorted(got["by_bucket"]) == ["easy", "hard", "medium"]
    for bucket, values in got["by_bucket"].items():
        idx = [i for i, r in enumerate(rows) if r["difficulty_bucket"] == bucket]
        assert values["n"] == len(idx) == 3
        for name, value in expect(idx).items():
            assert values[name] == pytest.approx(value, abs=1e-4), (bucket, name)
    records = (tmp_path / "p.jsonl").read_text().splitlines()
    assert len(records) == len(rows)


def test_noise_image_is_mfpo_diffusion_noise_over_the_whole_image(rows):
    from mfpo_data.backends.perturbers import DiffusionNoisePerturber

    image = rows[0]["images"][0]
    a = np.asarray(probes.noise_image(image, "row-1", seed=0), dtype=np.float64)
    assert np.array_equal(a, np.asarray(probes.noise_image(image, "row-1", seed=0)))  # seeded by (seed, id)
    assert not np.array_equal(a, np.asarray(probes.noise_image(image, "row-2", seed=0)))
    x = np.asarray(image, dtype=np.float64)
    assert abs(np.corrcoef(a.ravel(), x.ravel())[0, 1]) < 0.1  # nothing of the image is left at t = 999
    assert DiffusionNoisePerturber(t=999).alpha_bar < 1e-4
    assert (np.abs(a - x) > 0).mean() > 0.95  # every region is noised, not only a key-object mask


def test_rows_that_do_not_fit_are_dropped_and_counted(tiny_models, rows):
    from mfpo_data.backends.vlm import load_vlm

    model, processor = load_vlm(tiny_models["llava"])
    got = probes.run_probes(model, processor, rows[:2], max_length=4, progress=False)
    assert got["n"] == 0 and got["dropped"] == 2 and got["preference_accuracy"] is None


def test_probe_split_defaults_to_test_then_train(tmp_path, caplog):
    from mfpo_train.synthetic import synthetic_dataset, write_build_output

    only_train = write_build_output(tmp_path / "a", n=3)
    ds, split = probes.load_probe_dataset(only_train)
    assert split == "train" and len(ds) == 3 and "no test split" in caplog.text
    synthetic_dataset(2, seed=1).to_parquet(str(only_train / "data" / "test-00000-of-00001.parquet"))
    ds, split = probes.load_probe_dataset(only_train)
    assert split == "test" and len(ds) == 2
    from mfpo_data.validate import DatasetLoadError

    with pytest.raises(DatasetLoadError, match="no split 'validation'"):
        probes.load_probe_dataset(only_train, split="validation")
