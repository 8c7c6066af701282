"""Preference pairs as RLHF-V-style corrections, and the mfpo-data `Sample`s they become.

chosen = the scene's correct description; rejected = the same description with exactly one error
(`scenes.errors`). The shortcut knob `prior_fraction` is the share of pairs whose error is prior-driven
(the off-prior object said in its shape's usual colour, or the absent companion added). At 1.0 every
rejected answer is one a prior explains, so "never say the prior" satisfies every pair without looking:
the shortcut regime. With `prior_fraction=None` the error is drawn uniformly from all of the scene's single
errors, on scenes from the training distribution: the natural rate (about 0.12 here), the negative control.

The key region handed to `PerturbationStage` is what the keyword -> region pipeline would pick: the object
whose mention differs (a changed colour), or every object y_w names (an added object, which is not in the
image to ground). Table 8's alternatives are a random rectangle of 20% of the image and the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.efficacy import scenes


REGIONS = ("key", "random20", "global")
RANDOM_REGION_AREA = 0.2


@dataclass(frozen=True)
class Pair:
    scene: scenes.Scene
    error: scenes.Error

    @property
    def chosen(self) -> str:
        return scenes.description(self.scene)

    @property
    def rejected(self) -> str:
        return scenes.describe(self.error.rejected)


def preference_pairs(seed: int, n: int, p_prior: float, p_co: float, prior_fraction: float | None,
                     purpose: str = "pref") -> list[Pair]:
    """`n` pairs on scenes of the training distribution (see the module notes for `prior_fraction`)."""
    rng = np.random.default_rng([seed, sum(map(ord, purpose)) * 131 + 9])
    pool = scenes.iter_scenes(seed, purpose, p_prior, p_co)
    out = []
    while len(out) < n:
        scene = next(pool)
        options = scenes.errors(scene)
        if prior_fraction is not None:
            want_prior = rng.random() < prior_fraction
            options = [e for e in options if (e.kind != "other") == want_prior]
            while not options:  # this scene has no error of the wanted kind: the next scene that has one
                scene = next(pool)
                options = [e for e in scenes.errors(scene) if (e.kind != "other") == want_prior]
        out.append(Pair(scene, options[rng.integers(len(options))]))
    return out


def random_region(seed: int, sample_id: str, area: float = RANDOM_REGION_AREA) -> np.ndarray:
    """A bool mask: an axis-aligned rectangle of `area` x the image (aspect 1:2 to 2:1) at a random place."""
    from mfpo_data.seeding import rng

    g = rng(seed, sample_id, "random-region")
    size = scenes.SIZE
    aspect = float(np.exp(g.uniform(np.log(0.5), np.log(2.0))))
    h = int(np.clip(round(np.sqrt(area * size * size / aspect)), 1, size))
    w = int(np.clip(round(area * size * size / h), 1, size))
    y0, x0 = int(g.integers(0, size - h + 1)), int(g.integers(0, size - w + 1))
    mask = np.zeros((size, size), dtype=bool)
    mask[y0 : y0 + h, x0 : x0 + w] = True
    return mask


def key_region(scene: scenes.Scene, shapes: tuple[str, ...]) -> np.ndarray:
    by_shape = scenes.masks(scene)
    return np.logical_or.reduce([by_shape[s] for s in shapes])


def to_sample(pair: Pair, region: str = "key", seed: int = 0):
    """An mfpo-data `Sample`: one `KeyObject` per object of the key region; `mask` is where to perturb."""
    from mfpo_data.schema import KeyObject, Sample

    if region not in REGIONS:
        raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
    scene = pair.scene
    image = scenes.render(scene)
    by_shape = scenes.masks(scene)
    keys = []
    for shape in pair.error.region:
        ys, xs = np.nonzero(by_shape[shape])
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        keys.append(KeyObject(phrase=scene.obj(shape).phrase, box_xyxy=box, score=1.0, category=shape,
                              mask=by_shape[shape]))
    mask = {"key": lambda: key_region(scene, pair.error.region), "random20": lambda: random_region(seed, scene.id),
            "global": lambda: None}[region]()
    return Sample(id=scene.id, source="synthetic-scenes", image_id=scene.id, pair_type="correction",
                  question=scenes.DESCRIBE, chosen=pair.chosen, rejected=pair.rejected, image=image,
                  target=keys[0].phrase, keywords=[k.phrase for k in keys], key_objects=keys, mask=mask,
                  difficulty=0.0, metadata={"error": pair.error.kind, "objects": len(scene.objects), "region": region})


class GreyFillPerturber:
    """Paint the region uniform mid-grey (the stage composites it inside the mask): a held-out edit."""

    def perturb(self, samples, seeds):
        from mfpo_data.backends.base import Perturbed

        return [Perturbed(np.full_like(s.image, scenes.GREY), {"value": scenes.GREY, "seed": seed})
                for s, seed in zip(samples, seeds, strict=True)]

    def describe(self) -> dict:
        return {"backend": "grey_fill", "value": scenes.GREY}


def perturb(samples: list, perturber, kind: str, seed: int) -> list:
    """mfpo-data's PerturbationStage over `samples`; the edit lands inside `sample.mask` only (all of it when None)."""
    from mfpo_data.stages.s5_perturbation import PerturbationStage

    out = list(PerturbationStage(perturber, kind=kind, seed=seed, batch_size=64).run(iter(samples)))
    dropped = [s.id for s in out if s.dropped is not None]
    if dropped:
        raise RuntimeError(f"perturbation dropped {len(dropped)} samples: {dropped[:3]}")
    return out
