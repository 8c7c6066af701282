"""Preference datasets of one seed, built with mfpo-data's code and scored by mfpo-train's reference.

One list of correction pairs per (seed, regime); one dataset per image-negative region (`pairs.REGIONS`) over
the same pairs, so the runs of a table differ only in what the table ablates:

  * rows: `Sample` -> `PerturbationStage(DiffusionNoisePerturber(t=500))` inside the region -> `encode_png`,
    `rle_encode`, `to_row` -> `datasets.Dataset(features=schema.features())` -> `DIR/data/train-*.parquet`;
  * difficulty: `ScoringStage(EntropyDifficulty(<the SFT model>))`, the build's entropy scorer (the reference
    model's mean next-token entropy over the chosen answer), cut into tertiles by the build's own
    `tertile_buckets`; every region's dataset carries the same buckets (the curriculum run reads them);
  * reference: `mfpo_train.precompute.precompute_reference` (`mfpo-train precompute-ref`) with the frozen SFT model.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.efficacy import pairs


def difficulty(samples: list, sft_dir: Path) -> tuple[list[float], list[str]]:
    """The build's entropy scorer with the SFT model as reference, and the build's tertile buckets."""
    from mfpo_data.backends.entropy import EntropyDifficulty
    from mfpo_data.pipeline.finalize import tertile_buckets
    from mfpo_data.stages.s6_scoring import ScoringStage

    scorer = EntropyDifficulty(str(sft_dir), device="cpu", dtype="float32")
    scored = list(ScoringStage(scorer, batch_size=64).run(iter(samples)))
    dropped = [s.id for s in scored if s.dropped is not None]
    if dropped:
        raise RuntimeError(f"difficulty scoring dropped {len(dropped)} samples: {dropped[:3]}")
    buckets, _ = tertile_buckets([(s.id, s.difficulty) for s in scored])
    return [s.difficulty for s in scored], [buckets[s.id] for s in scored]


def build_dataset(pair_list: list, out_dir: Path, seed: int, region: str, scores: tuple[list, list] | None) -> Path:
    """mfpo-data rows (schema.features()) for `region`, written where a build writes them."""
    import datasets

    from mfpo_data.backends.perturbers import DiffusionNoisePerturber
    from mfpo_data.imaging import encode_png, rle_encode
    from mfpo_data.schema import features, to_row

    samples = pairs.perturb([pairs.to_sample(p, region, seed) for p in pair_list], DiffusionNoisePerturber(t=500),
                            "diffusion_noise", seed)
    values, buckets = scores if scores is not None else ([0.0] * len(samples), ["medium"] * len(samples))
    rows = []
    for s, value, bucket in zip(samples, values, buckets, strict=True):
        s.difficulty = value
        row = to_row(s, {"bytes": encode_png(s.image), "path": None},
                     {"bytes": encode_png(s.rejected_image), "path": None},
                     rle_encode(s.mask) if s.mask is not None else None)
        row["difficulty_bucket"] = bucket
        rows.append(row)
    (out_dir / "data").mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows, features=features()).to_parquet(str(out_dir / "data" / "train-00000-of-00001.parquet"))
    return out_dir


def with_reference(cfg, out_dir: Path) -> Path:
    """A copy of `cfg.data.dataset` with the frozen SFT model's (`cfg.model`) log-probs as `ref_*_logps` columns."""
    from mfpo_train.precompute import precompute_reference

    return precompute_reference(cfg, out_dir, batch_size=64)
