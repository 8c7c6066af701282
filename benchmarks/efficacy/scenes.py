"""The generative toy: "Describe the scene." over one to three coloured shapes on a textured grey background.

Each object is a small glyph (radius about 3 px) in its own cell of the 8-pixel grid the vision tower cuts
into patches, its colour washed out towards grey by a random 0-70%; there is no outline, so a faint glyph's
shape is harder to make out than its colour. A scene is a small parameter record (so the same scene renders
again, and every object's exact pixel mask is known). Its description is a canonical list in shape order, greedy-decodable and scorable by CHAIR:
"red circle, blue triangle." The training distribution carries two priors a model can lean on instead of
looking:

* **attribute prior**: each shape has a usual colour (`PRIOR`: circle red, square green, triangle blue, cross
  yellow), taken with probability `p_prior`; otherwise one of the three other colours;
* **co-occurrence prior**: shapes come in companion pairs (circle + square, triangle + cross); a scene's lead
  shape brings its companion with probability `p_co`, and half of the scenes add one more shape from the
  other pair on its own.

A hallucination is "prior-driven" when a prior explains it (`attr`): an off-prior object described with one of
its two attributes swapped for its prior partner: its shape's usual colour ("red circle" for a green circle),
or its colour's usual shape ("green square" for a green circle, an absent object; the tiny model reads colour
far more easily than shape, so this is the error its SFT makes); or (`co`) an absent companion added next to
the shape it usually comes with. Every other single error (another wrong colour or shape, an added shape that is
no present shape's companion) is `other`. `errors(scene)` lists all of them; the preference pairs (`pairs.py`) are
RLHF-V-style corrections built from them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np


SIZE = 32
CELL = 8  # objects sit in distinct cells of this grid: the vision tower's 8x8 patches, so one patch sees a whole glyph
RADIUS = (2.8, 3.4)  # of an object, pixels
JITTER = 0.4  # of an object's centre within its cell, pixels
SHAPES = ("circle", "square", "triangle", "cross")  # also the order of a description
COLORS = ("red", "green", "blue", "yellow")
PRIOR = {"circle": "red", "square": "green", "triangle": "blue", "cross": "yellow"}
SHAPE_OF = {colour: shape for shape, colour in PRIOR.items()}  # the shape a colour usually comes on
COMPANION = {"circle": "square", "square": "circle", "triangle": "cross", "cross": "triangle"}
RGB = {"red": (215, 35, 35), "green": (35, 180, 45), "blue": (40, 70, 225), "yellow": (235, 205, 30)}
DESCRIBE = "Describe the scene."
YES_NO = "Is there a {phrase} in the image?"
GREY = 128
SATURATION = (0.3, 1.0)  # an object's colour is washed out towards its own grey by a random amount
P_EXTRA = 0.5  # a second, unrelated shape (without its companion)


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    cx: float
    cy: float
    r: float
    saturation: float = 1.0  # 1: the full colour; lower: washed out towards its own grey (harder to read)

    @property
    def phrase(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    id: str
    objects: tuple[Obj, ...]  # in description order (SHAPES), each shape at most once
    bg_level: float
    bg_amp: float
    bg_angle: float
    bg_freq: float
    bg_seed: int

    @property
    def shapes(self) -> tuple[str, ...]:
        return tuple(o.shape for o in self.objects)

    @property
    def phrases(self) -> tuple[str, ...]:
        return tuple(o.phrase for o in self.objects)

    def obj(self, shape: str) -> Obj:
        return next(o for o in self.objects if o.shape == shape)


def ordered(phrases) -> tuple[str, ...]:
    """Colour-shape phrases in description order (SHAPES)."""
    return tuple(sorted(phrases, key=lambda p: SHAPES.index(p.split(" ")[1])))


def describe(phrases) -> str:
    """The canonical answer: phrases in shape order, comma-separated, a full stop at the end."""
    return ", ".join(ordered(phrases)) + "."


def description(scene: Scene) -> str:
    return describe(scene.phrases)


def phrases_of(text: str) -> list[str]:
    """The colour-shape phrases a description names, in order (anything else is ignored)."""
    words = text.replace(",", " ").replace(".", " ").split()
    return [f"{a} {b}" for a, b in zip(words, words[1:], strict=False) if a in COLORS and b in SHAPES]


# -- rendering -----------------------------------------------------------------------------------------------
def shape_mask(obj: Obj) -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    dx, dy = x - obj.cx, y - obj.cy
    if obj.shape == "circle":
        return dx**2 + dy**2 <= obj.r**2
    if obj.shape == "square":
        h = 0.85 * obj.r
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if obj.shape == "triangle":  # apex up: half-width grows from 0 to r over rows cy - r .. cy + r
        return (dy >= -obj.r) & (dy <= obj.r) & (np.abs(dx) <= (dy + obj.r) / 2)
    w = 0.38 * obj.r  # cross: two bars
    return ((np.abs(dx) <= w) & (np.abs(dy) <= obj.r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= obj.r))


def render(scene: Scene) -> np.ndarray:
    """RGB uint8 (SIZE, SIZE, 3). Objects never overlap, so each mask is its object's pixels exactly."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    u = np.cos(scene.bg_angle) * x + np.sin(scene.bg_angle) * y
    bg = scene.bg_level + scene.bg_amp * np.sin(scene.bg_freq * u)
    bg = bg + np.random.default_rng(scene.bg_seed).normal(0.0, 6.0, (SIZE, SIZE))
    img = np.repeat(bg[..., None], 3, axis=-1)
    for obj in scene.objects:
        mask = shape_mask(obj)
        rgb = np.array(RGB[obj.color], dtype=np.float64)
        grey = rgb @ np.array([0.299, 0.587, 0.114])
        img[mask] = grey + obj.saturation * (rgb - grey)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def masks(scene: Scene) -> dict[str, np.ndarray]:
    """Each object's bool mask, by shape."""
    return {o.shape: shape_mask(o) for o in scene.objects}


# -- sampling ------------------------------------------------------------------------------------------------
def _color(rng: np.random.Generator, shape: str, p_prior: float) -> str:
    if rng.random() < p_prior:
        return PRIOR[shape]
    others = [c for c in COLORS if c != PRIOR[shape]]
    return others[rng.integers(len(others))]


def scene_shapes(rng: np.random.Generator, p_co: float) -> list[str]:
    """A lead shape, its companion with probability `p_co`, and with P_EXTRA one shape of the other pair."""
    lead = SHAPES[rng.integers(len(SHAPES))]
    shapes = [lead]
    if rng.random() < p_co:
        shapes.append(COMPANION[lead])
    if rng.random() < P_EXTRA:
        other = [s for s in SHAPES if s not in (lead, COMPANION[lead])]
        shapes.append(other[rng.integers(len(other))])
    return shapes


def make_scene(rng: np.random.Generator, sid: str, p_prior: float, p_co: float) -> Scene:
    """Objects sit in distinct cells of a CELL-pixel grid (the vision tower's patches), one glyph per cell."""
    shapes = scene_shapes(rng, p_co)
    per_row = SIZE // CELL
    cells = rng.permutation(per_row * per_row)[: len(shapes)]
    objs = []
    for shape, cell in zip(shapes, cells, strict=True):
        r = float(rng.uniform(*RADIUS))
        cx, cy = (float(CELL * v + CELL / 2 + rng.uniform(-JITTER, JITTER)) for v in (cell % per_row, cell // per_row))
        objs.append(Obj(shape, _color(rng, shape, p_prior), cx, cy, r, float(rng.uniform(*SATURATION))))
    objs.sort(key=lambda o: SHAPES.index(o.shape))
    return Scene(sid, tuple(objs), bg_level=float(rng.uniform(80, 150)), bg_amp=float(rng.uniform(5, 20)),
                 bg_angle=float(rng.uniform(0, np.pi)), bg_freq=float(rng.uniform(0.3, 1.2)),
                 bg_seed=int(rng.integers(2**31)))


def iter_scenes(seed: int, purpose: str, p_prior: float, p_co: float):
    """Scenes without end, reproducible from (seed, purpose)."""
    rng = np.random.default_rng([seed, sum(map(ord, purpose)) * 7919 + len(purpose)])
    i = 0
    while True:
        yield make_scene(rng, f"{purpose}-{seed}-{i:05d}", p_prior, p_co)
        i += 1


def make_scenes(seed: int, purpose: str, n: int, p_prior: float, p_co: float) -> list[Scene]:
    """The first `n` scenes of `iter_scenes`."""
    return list(itertools.islice(iter_scenes(seed, purpose, p_prior, p_co), n))


# -- single errors: what a correction pair's rejected answer can get wrong -----------------------------------
@dataclass(frozen=True)
class Error:
    kind: str  # "attr" (the prior colour of an off-prior object), "co" (an absent companion), "other"
    rejected: tuple[str, ...]  # the phrases the rejected answer names
    region: tuple[str, ...]  # shapes whose masks make the key region (the mention that differs, or y_w's objects)


def errors(scene: Scene) -> list[Error]:
    """Every description with exactly one error: one object's colour or shape changed, or one absent shape added.

    A change is "attr" when it gives an off-prior object its prior partner (see the module notes). An added
    shape is a companion (kind "co") in its prior colour when a present shape's companion is missing; other
    added shapes are "other" in any colour. The key region of a changed object is that object; of an added
    object, every object the correct answer names (what a keyword -> region pipeline grounds from y_w, since
    the added object is not in the image).
    """
    out: list[Error] = []
    phrases = list(scene.phrases)
    present = set(scene.shapes)
    for i, o in enumerate(scene.objects):
        rest = phrases[:i] + phrases[i + 1:]
        off = o.color != PRIOR[o.shape]
        for c in COLORS:
            if c != o.color:
                kind = "attr" if off and c == PRIOR[o.shape] else "other"
                out.append(Error(kind, ordered([*rest, f"{c} {o.shape}"]), (o.shape,)))
        for s in SHAPES:
            if s not in present:
                kind = "attr" if off and s == SHAPE_OF[o.color] else "other"
                out.append(Error(kind, ordered([*rest, f"{o.color} {s}"]), (o.shape,)))
    companions = {COMPANION[s] for s in present} - present
    for s in SHAPES:
        if s in present:
            continue
        colours = (PRIOR[s],) if s in companions else COLORS
        for c in colours:
            kind = "co" if s in companions else "other"
            out.append(Error(kind, ordered([*phrases, f"{c} {s}"]), scene.shapes))
    return out


def prior_driven(scene: Scene) -> list[Error]:
    return [e for e in errors(scene) if e.kind != "other"]


def off_prior(scene: Scene) -> Scene:
    """The same scene with every object repainted away from its prior (for tests and probes)."""
    objs = tuple(replace(o, color=next(c for c in COLORS if c != PRIOR[o.shape])) if o.color == PRIOR[o.shape]
                 else o for o in scene.objects)
    return replace(scene, objects=objs)
