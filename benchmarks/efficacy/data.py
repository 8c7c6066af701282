"""Preference datasets of one seed, built with mfpo-data's code and scored by mfpo-train's reference.

One set of (scene, chosen, rejected) pairs per seed; one dataset per image-negative region (`shapes.REGIONS`)
over the same pairs, so the runs of a table differ only in what the table ablates:

  * rows: `Sample` -> `PerturbationStage` (the region's dispreferred image) -> `encode_png`, `rle_encode`,
    `to_row` -> `datasets.Dataset(features=schema.features())` -> `DIR/data/train-00000-of-00001.parquet`;
  * difficulty: `ScoringStage(EntropyDifficulty(<the seed's SFT model>))`, the build's entropy scorer (the
    reference model's mean next-token entropy over the chosen answer), cut into tertiles by the build's own
    `tertile_buckets`; every region's dataset carries the same buckets (the curriculum run reads them);
  * reference: `mfpo_train.precompute.precompute_reference` (`mfpo-train precompute-ref`) with the frozen SFT model.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.efficacy import shapes


def make_perturber(kind: str):
    """mfpo-data's light perturbation backends: the paper's diffusion noise (t=500) and the alternatives."""
    from mfpo_data.backends import perturbers as P

    return {"diffusion_noise": lambda: P.DiffusionNoisePerturber(t=500), "opencv_inpaint": P.OpenCVInpaintPerturber,
            "blur": lambda: P.BlurPerturber(sigma=3.0), "gaussian_noise": P.GaussianNoisePerturber}[kind]()


PERTURBATIONS = ("diffusion_noise", "opencv_inpaint", "blur", "gaussian_noise")


def difficulty(pairs, sft_dir: Path, seed: int) -> tuple[list[float], list[str]]:
    """The build's entropy scorer with the SFT model as reference, and the build's tertile buckets."""
    from mfpo_data.backends.entropy import EntropyDifficulty
    from mfpo_data.pipeline.finalize import tertile_buckets
    from mfpo_data.stages.s6_scoring import ScoringStage

    samples = [shapes.to_sample(s, c, r, "key", seed) for s, c, r in pairs]
    scorer = EntropyDifficulty(str(sft_dir), device="cpu", dtype="float32")
    scored = list(ScoringStage(scorer, batch_size=64).run(iter(samples)))
    dropped = [s.id for s in scored if s.dropped is not None]
    if dropped:
        raise RuntimeError(f"difficulty scoring dropped {len(dropped)} samples: {dropped[:3]}")
    buckets, _ = tertile_buckets([(s.id, s.difficulty) for s in scored])
    return [s.difficulty for s in scored], [buckets[s.id] for s in scored]


def build_dataset(pairs, out_dir: Path, seed: int, region: str, kind: str, scores: tuple[list, list]) -> Path:
    """mfpo-data rows (schema.features()) for `region`, written where a build writes them."""
    import datasets

    from mfpo_data.imaging import encode_png, rle_encode
    from mfpo_data.schema import features, to_row

    samples = [shapes.to_sample(s, c, r, region, seed) for s, c, r in pairs]
    if region == "blank":  # no image content to perturb: both images are the same grey
        for s in samples:
            s.rejected_image, s.perturbation, s.perturbation_params = s.image.copy(), "none", {"kind": "none"}
    else:
        samples = shapes.perturb(samples, make_perturber(kind), kind, seed)
    rows = []
    for s, value, bucket in zip(samples, *scores, strict=True):
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
