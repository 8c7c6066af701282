"""The synthetic task: 32x32 images with one or two coloured shapes on a textured grey background.

"What color is the {shape}?" Each shape has a colour prior (circle -> red, square -> green,
triangle -> blue, each `p_prior` of the time); the other colours, white among them, share the rest.
A scene is a small parameter record, so the same scene can be rendered again with the asked shape
repainted (its *twin*), and the asked shape's exact pixel mask is known.

Preference samples are mfpo-data `Sample`s carrying the known mask and a `KeyObject`; their
dispreferred image comes from `PerturbationStage` (edit composited inside the mask only). The rows
and their datasets are written by `data.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np


SIZE = 32
SHAPES = ("circle", "square", "triangle")
COLORS = ("red", "green", "blue", "white")
PRIOR = {"circle": "red", "square": "green", "triangle": "blue"}
RGB = {"red": (215, 35, 35), "green": (35, 180, 45), "blue": (40, 70, 225), "white": (240, 240, 240)}
QUESTION = "What color is the {shape}?"
GREY = 128


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    cx: float
    cy: float
    r: float


@dataclass(frozen=True)
class Scene:
    id: str
    objects: tuple[Obj, ...]  # objects[0] is the one the question asks about
    bg_level: float
    bg_amp: float
    bg_angle: float
    bg_freq: float
    bg_seed: int

    @property
    def asked(self) -> Obj:
        return self.objects[0]

    @property
    def question(self) -> str:
        return QUESTION.format(shape=self.asked.shape)

    @property
    def prior(self) -> str:
        return PRIOR[self.asked.shape]

    def twin(self) -> Scene:
        """The same scene with the asked shape repainted in its prior colour."""
        return replace(self, id=self.id + "-twin", objects=(replace(self.asked, color=self.prior), *self.objects[1:]))


def _shape_mask(obj: Obj) -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    dx, dy = x - obj.cx, y - obj.cy
    if obj.shape == "circle":
        return dx**2 + dy**2 <= obj.r**2
    if obj.shape == "square":
        h = 0.85 * obj.r
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    # triangle, apex up: rows from cy - r to cy + r, half-width growing from 0 to r
    return (dy >= -obj.r) & (dy <= obj.r) & (np.abs(dx) <= (dy + obj.r) / 2)


def render(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 (32, 32, 3), bool mask of the asked shape)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    u = np.cos(scene.bg_angle) * x + np.sin(scene.bg_angle) * y
    bg = scene.bg_level + scene.bg_amp * np.sin(scene.bg_freq * u)
    bg = bg + np.random.default_rng(scene.bg_seed).normal(0.0, 6.0, (SIZE, SIZE))
    img = np.repeat(bg[..., None], 3, axis=-1)
    masks = []
    for obj in reversed(scene.objects):  # the asked object is drawn last: never occluded
        m = _shape_mask(obj)
        img[m] = RGB[obj.color]
        masks.append(m)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), masks[-1]


def _color(rng: np.random.Generator, shape: str, p_prior: float, anti: bool = False) -> str:
    if not anti and rng.random() < p_prior:
        return PRIOR[shape]
    others = [c for c in COLORS if c != PRIOR[shape]]
    return others[rng.integers(len(others))]


def make_scene(rng: np.random.Generator, sid: str, p_prior: float, anti: bool = False) -> Scene:
    """A scene from the biased distribution; `anti=True` forces the asked shape off its prior colour."""
    n = 1 + int(rng.random() < 0.5)
    shapes = [SHAPES[i] for i in rng.permutation(len(SHAPES))[:n]]
    objs: list[Obj] = []
    for k, shape in enumerate(shapes):
        r = float(rng.uniform(4.5, 6.5))
        for _ in range(200):
            cx, cy = (float(v) for v in rng.uniform(1.2 * r + 1, SIZE - 1.2 * r - 1, 2))
            if all((cx - o.cx) ** 2 + (cy - o.cy) ** 2 >= (1.25 * (r + o.r) + 1) ** 2 for o in objs):
                break
        else:  # no room for a second shape: keep the first only
            break
        objs.append(Obj(shape, _color(rng, shape, p_prior, anti=anti and k == 0), cx, cy, r))
    return Scene(sid, tuple(objs), bg_level=float(rng.uniform(80, 150)), bg_amp=float(rng.uniform(5, 20)),
                 bg_angle=float(rng.uniform(0, np.pi)), bg_freq=float(rng.uniform(0.3, 1.2)),
                 bg_seed=int(rng.integers(2**31)))


def make_scenes(seed: int, purpose: str, n: int, p_prior: float, anti: bool | float = False) -> list[Scene]:
    """`n` scenes; `anti` True (all anti-prior), False (the biased distribution) or a fraction of anti-prior."""
    rng = np.random.default_rng([seed, sum(map(ord, purpose)) * 7919 + len(purpose)])
    frac = float(anti)
    return [make_scene(rng, f"{purpose}-{seed}-{i:05d}", p_prior, anti=bool(rng.random() < frac)) for i in range(n)]


# -- rows for the SFT loop and the evaluation (MFPOCollator input, no perturbation needed) -------------
def chat_row(image, question: str, answer: str) -> dict[str, Any]:
    from PIL import Image

    from mfpo_data.schema import assistant_turn, user_turn

    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    return {"images": [pil], "rejected_images": [pil], "prompt": user_turn(question),
            "chosen": assistant_turn(answer), "rejected": assistant_turn(answer)}


# -- preference rows built by mfpo-data's code ------------------------------------------------------
# Where the dispreferred image is edited (the paper's Table 8): the asked shape's exact mask, a random
# rectangle covering RANDOM_REGION_AREA of the image, or the whole image. "blank" replaces both images by
# uniform grey: DPO trained on it can only learn which answer to prefer, never from the image.
REGIONS = ("key", "random20", "global", "blank")
RANDOM_REGION_AREA = 0.2


def random_region(seed: int, sample_id: str, area: float = RANDOM_REGION_AREA) -> np.ndarray:
    """A bool mask: an axis-aligned rectangle of `area` x the image (aspect 1:2 to 2:1) at a random place."""
    from mfpo_data.seeding import rng

    g = rng(seed, sample_id, "random-region")
    aspect = float(np.exp(g.uniform(np.log(0.5), np.log(2.0))))
    h = int(np.clip(round(np.sqrt(area * SIZE * SIZE / aspect)), 1, SIZE))
    w = int(np.clip(round(area * SIZE * SIZE / h), 1, SIZE))
    y0, x0 = int(g.integers(0, SIZE - h + 1)), int(g.integers(0, SIZE - w + 1))
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[y0 : y0 + h, x0 : x0 + w] = True
    return mask


def to_sample(scene: Scene, chosen: str, rejected: str, region: str = "key", seed: int = 0):
    """An mfpo-data `Sample` whose key object is the asked shape; `mask` is the region to perturb (`REGIONS`)."""
    from mfpo_data.schema import KeyObject, Sample

    if region not in REGIONS:
        raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
    image, shape_mask = render(scene)
    ys, xs = np.nonzero(shape_mask)
    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    key = KeyObject(phrase=scene.asked.shape, box_xyxy=box, score=1.0, category=scene.asked.shape, mask=shape_mask)
    mask = shape_mask if region == "key" else random_region(seed, scene.id) if region == "random20" else None
    if region == "blank":
        image = np.full_like(image, GREY)
    return Sample(id=scene.id, source="synthetic-shapes", image_id=scene.id, pair_type="external",
                  question=scene.question, chosen=chosen, rejected=rejected, image=image, target=scene.asked.shape,
                  keywords=[scene.asked.shape], key_objects=[key], mask=mask, difficulty=0.0,
                  metadata={"true_color": scene.asked.color, "prior_color": scene.prior,
                            "num_shapes": len(scene.objects), "region": region})


class GreyFillPerturber:
    """Paint the region uniform mid-grey (the stage composites it inside the mask). Evaluation only."""

    def perturb(self, samples, seeds):
        from mfpo_data.backends.base import Perturbed

        return [Perturbed(np.full_like(s.image, GREY), {"value": GREY, "seed": seed}) for s, seed in zip(samples, seeds, strict=True)]

    def describe(self) -> dict[str, Any]:
        return {"backend": "grey_fill", "value": GREY}


def perturb(samples: list, perturber, kind: str, seed: int) -> list:
    """Run mfpo-data's PerturbationStage over `samples` (in place); the edit lands inside `sample.mask` only
    (the whole image when the mask is None)."""
    from mfpo_data.stages.s5_perturbation import PerturbationStage

    out = list(PerturbationStage(perturber, kind=kind, seed=seed, batch_size=64).run(iter(samples)))
    dropped = [s.id for s in out if s.dropped is not None]
    if dropped:
        raise RuntimeError(f"perturbation dropped {len(dropped)} samples: {dropped[:3]}")
    return out


def preference_pairs(seed: int, n: int, p_prior: float, prior_fraction: float, rng_purpose: str = "pref"):
    """(scene, chosen, rejected) triples. A `prior_fraction` of pairs are anti-prior images whose rejected
    answer is the shape's prior colour (the "hallucination"); the rest are images from the biased
    distribution whose rejected answer is a wrong colour other than the prior."""
    scenes = make_scenes(seed, rng_purpose, n, p_prior, anti=prior_fraction)
    rng = np.random.default_rng([seed, 4242])
    pairs = []
    for s in scenes:
        true = s.asked.color
        if true != s.prior:
            wrong = [s.prior] if rng.random() < _p_prior_given_anti(p_prior, prior_fraction) else \
                [c for c in COLORS if c not in (true, s.prior)]
        else:
            wrong = [c for c in COLORS if c != true]
        pairs.append((s, true, wrong[rng.integers(len(wrong))]))
    return pairs


def _p_prior_given_anti(p_prior: float, prior_fraction: float) -> float:
    """P(rejected = prior | image is anti-prior), chosen so that P(rejected = prior) = prior_fraction overall.

    Scenes are anti-prior with probability a = f + (1 - f)(1 - p_prior) (forced, or drawn from the biased
    distribution); only anti-prior scenes can carry the prior colour as the wrong answer.
    """
    a = prior_fraction + (1 - prior_fraction) * (1 - p_prior)
    return min(1.0, prior_fraction / a) if a > 0 else 0.0
