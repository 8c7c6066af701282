"""Light perturbations that need no weights: forward-diffusion noise (the paper's), Gaussian noise,
blur, OpenCV inpainting, and the peers' negatives: mDPO's random crop and LPOI's box occlusion. Each returns the edited full image; the stage keeps pixels outside the
key-object mask bit-identical by compositing.

The noise perturbers work pixel by pixel, so they draw noise only for the bounding box of
`sample.mask` (the whole image when there is no mask): the same process inside the mask, at a
fraction of the cost. The noise is `default_rng(seed).standard_normal(box shape)`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from mfpo_data.backends.base import Described, Perturbed
from mfpo_data.imaging import mask_bbox
from mfpo_data.schema import Sample


def linear_alpha_bar(t: int, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> float:
    """abar_t = prod_{s<=t} (1 - beta_s) of DDPM's linear schedule, with diffusers' 0-based timestep index."""
    if not 0 <= t < num_train_timesteps:
        raise ValueError(f"t={t} must be in [0, {num_train_timesteps})")
    betas = np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)
    return float(np.prod(1.0 - betas[: t + 1]))


def _region(sample: Sample) -> tuple[np.ndarray, tuple[slice, slice]]:
    """A copy of the image to edit and the box to edit in it: the mask's bounding box, or everything."""
    box = mask_bbox(sample.mask) if sample.mask is not None else None
    return sample.image.copy(), box if box is not None else (slice(None), slice(None))


class DiffusionNoisePerturber(Described):
    """`x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps` in [-1, 1] pixel space (MFPO; t=500 works best)."""

    backend = "diffusion_noise"
    described = {"schedule": "linear"}

    def __init__(self, t: int = 500, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        self.t, self.num_train_timesteps, self.beta_start, self.beta_end = t, num_train_timesteps, beta_start, beta_end
        self.alpha_bar = linear_alpha_bar(t, num_train_timesteps, beta_start, beta_end)

    def perturb(self, samples: list[Sample], seeds: list[int]) -> list[Perturbed]:
        import cv2

        out = []
        a, b = np.float32(np.sqrt(self.alpha_bar)), np.float32(np.sqrt(1.0 - self.alpha_bar))
        # In 0..255 units: (x_t + 1) * 127.5 = lut[x] + 127.5 b eps, with lut[x] = (a (x / 127.5 - 1) + 1) * 127.5;
        # clipping x_t to [-1, 1] is clipping this to [0, 255].
        levels = np.arange(256, dtype=np.float32)
        lut = (a * (levels / np.float32(127.5) - np.float32(1.0)) + np.float32(1.0)) * np.float32(127.5)
        for sample, seed in zip(samples, seeds, strict=True):
            edited, box = _region(sample)
            y = np.random.default_rng(seed).standard_normal(edited[box].shape, dtype=np.float32)
            y *= b * np.float32(127.5)
            y += cv2.LUT(edited[box], lut)  # lut[edited[box]], in a quarter of numpy's time
            np.clip(y, 0.0, 255.0, out=y)
            edited[box] = np.rint(y, out=y).astype(np.uint8)
            out.append(Perturbed(edited, {"t": self.t, "alpha_bar": round(self.alpha_bar, 8), "seed": seed}))
        return out


class GaussianNoisePerturber(Described):
    """Additive Gaussian noise with standard deviation `sigma` in 0-255 pixel units, clipped to 0-255.

    The default 400 hides as much of the object's shape and shading as the paper's diffusion noise at t=500
    (`benchmarks/gaussian_strength.py`: the correlation of m and m' inside the key mask after a 1, 2 or
    4 px blur is within 0.011 of diffusion's on the bundled sample); about three quarters of the region's
    pixels end up clipped to 0 or 255. At a sigma like 50 the noise averages away over a few pixels and the
    object stays as it was to a detector (a weak negative)."""

    backend = "gaussian_noise"

    def __init__(self, sigma: float = 400.0):
        self.sigma = sigma

    def perturb(self, samples: list[Sample], seeds: list[int]) -> list[Perturbed]:
        out = []
        for sample, seed in zip(samples, seeds, strict=True):
            edited, box = _region(sample)
            noise = np.random.default_rng(seed).standard_normal(edited[box].shape, dtype=np.float32) * np.float32(self.sigma)
            edited[box] = np.clip(np.rint(edited[box].astype(np.float32) + noise), 0, 255).astype(np.uint8)
            out.append(Perturbed(edited, {"sigma": self.sigma, "seed": seed}))
        return out


class BlurPerturber(Described):
    """Gaussian blur with standard deviation `sigma` pixels (deterministic: the seed is recorded only)."""

    backend = "blur"

    def __init__(self, sigma: float = 15.0):
        self.sigma = sigma

    def perturb(self, samples: list[Sample], seeds: list[int]) -> list[Perturbed]:
        import cv2

        return [
            Perturbed(cv2.GaussianBlur(s.image, (0, 0), sigmaX=self.sigma, sigmaY=self.sigma), {"sigma": self.sigma, "seed": seed})
            for s, seed in zip(samples, seeds, strict=True)
        ]


class OpenCVInpaintPerturber(Described):
    """Remove the key object with OpenCV inpainting (Telea or Navier-Stokes): its mask grown by
    `dilate` pixels (so its edge goes too) is filled from the surroundings, and the grown mask is the
    row's new key region."""

    backend = "opencv_inpaint"
    removes = True  # a detecting grounder checks the object is gone (`filters.max_removal_score`)

    def __init__(self, radius: int = 5, method: Literal["telea", "ns"] = "telea", dilate: int = 3):
        if dilate < 0:
            raise ValueError("perturbation.dilate must be >= 0")
        self.radius, self.method, self.dilate = radius, method, dilate

    def perturb(self, samples: list[Sample], seeds: list[int]) -> list[Perturbed]:
        import cv2

        from mfpo_data.imaging import dilate_mask

        flag = cv2.INPAINT_TELEA if self.method == "telea" else cv2.INPAINT_NS
        out = []
        for sample, seed in zip(samples, seeds, strict=True):
            region = dilate_mask(sample.mask, self.dilate) if sample.mask is not None else None
            m = region if region is not None else np.ones(sample.image.shape[:2], dtype=bool)
            edited = cv2.inpaint(sample.image, m.astype(np.uint8) * 255, self.radius, flag)
            params = {"radius": self.radius, "method": self.method, "dilate": self.dilate, "seed": seed}
            out.append(Perturbed(edited, params, mask=region))
        return out


class RandomCropPerturber(Described):
    """mDPO's image negative: a random crop keeping `scale` (1-20%) of the image area at an aspect
    ratio in `ratio`, resized back to the full size (torchvision's `RandomResizedCrop` sampling, drawn
    from the sample's seed). It replaces the whole image, so the row has no mask."""

    backend = "random_crop"
    whole_image = True

    def __init__(self, scale: tuple[float, float] = (0.01, 0.2), ratio: tuple[float, float] = (3 / 4, 4 / 3)):
        if not 0.0 < scale[0] <= scale[1] <= 1.0 or not 0.0 < ratio[0] <= ratio[1]:
            raise ValueError("perturbation.scale must satisfy 0 < min <= max <= 1 and perturbation.ratio 0 < min <= max")
        self.scale, self.ratio = tuple(scale), tuple(ratio)

    def crop_box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1): up to 10 draws of area and log-ratio, then the centre crop, as torchvision does."""
        area = height * width
        log_ratio = (np.log(self.ratio[0]), np.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = np.exp(rng.uniform(*log_ratio))
            w, h = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                y0, x0 = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
                return x0, y0, x0 + w, y0 + h
        side = max(1, int(round(np.sqrt(area * self.scale[1]))))
        w, h = min(side, width), min(side, height)
        x0, y0 = (width - w) // 2, (height - h) // 2
        return x0, y0, x0 + w, y0 + h

    def perturb(self, samples: list[Sample], seeds: list[int]) -> list[Perturbed]:
        from mfpo_data.imaging import resize_image

        out = []
        for sample, seed in zip(samples, seeds, strict=True):
            x0, y0, x1, y1 = self.crop_box(sample.height, sample.width, np.random.default_rng(seed))
            edited = resize_image(np.ascontiguousarray(sample.image[y0:y1, x0:x1]), sample.width, sample.height)
            share = (x1 - x0) * (y1 - y0) / (sample.height * sample.width)
            out.append(Perturbed(edited, {"crop_box": [x0, y0, x1, y1], "crop_area": round(share, 6),
                                          "scale": list(self.scale), "ratio": list(self.ratio), "seed": seed}))
        return out


class BoxOcclusionPerturber(Described):
    """LPOI's image negative: a filled box over the key object (one box per connected part of its
    mask; the whole image without one). `fill`: `black`, the image's `mean` colour, or uniform `noise`.
    The boxes become the row's mask."""

    backend = "box_occlusion"

    def __init__(self, fill: Literal["black", "mean", "noise"] = "black"):
        self.fill = fill

    def perturb(self, samples: list[Sample], seeds: list[int]) -> list[Perturbed]:
        import cv2

        out = []
        for sample, seed in zip(samples, seeds, strict=True):
            h, w = sample.image.shape[:2]
            boxes = [[0, 0, w, h]]
            if sample.mask is not None:
                n, _, stats, _ = cv2.connectedComponentsWithStats(sample.mask.astype(np.uint8), connectivity=8)
                boxes = [[int(x), int(y), int(x + bw), int(y + bh)] for x, y, bw, bh, _ in stats[1:n]] or boxes
            region = np.zeros((h, w), bool)
            for x0, y0, x1, y1 in boxes:
                region[y0:y1, x0:x1] = True
            edited = sample.image.copy()
            if self.fill == "black":
                edited[region] = 0
            elif self.fill == "mean":
                edited[region] = np.rint(sample.image.reshape(-1, 3).mean(axis=0)).astype(np.uint8)
            else:
                edited[region] = np.random.default_rng(seed).integers(0, 256, (int(region.sum()), 3), dtype=np.uint8)
            out.append(Perturbed(edited, {"fill": self.fill, "boxes": boxes, "seed": seed}, mask=region))
        return out
