"""Light perturbations that need no weights: forward-diffusion noise (the paper's), Gaussian noise,
blur and OpenCV inpainting. Each returns the edited full image; the stage keeps pixels outside the
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
            y += lut[edited[box]]
            np.clip(y, 0.0, 255.0, out=y)
            edited[box] = np.rint(y, out=y).astype(np.uint8)
            out.append(Perturbed(edited, {"t": self.t, "alpha_bar": round(self.alpha_bar, 8), "seed": seed}))
        return out


class GaussianNoisePerturber(Described):
    """Additive Gaussian noise with standard deviation `sigma` in 0-255 pixel units."""

    backend = "gaussian_noise"

    def __init__(self, sigma: float = 50.0):
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
    """Fill the key region from its surroundings with OpenCV inpainting (Telea or Navier-Stokes)."""

    backend = "opencv_inpaint"

    def __init__(self, radius: int = 5, method: Literal["telea", "ns"] = "telea", dilate: int = 3):
        self.radius, self.method, self.dilate = radius, method, dilate

    def perturb(self, samples: list[Sample], seeds: list[int]) -> list[Perturbed]:
        import cv2

        flag = cv2.INPAINT_TELEA if self.method == "telea" else cv2.INPAINT_NS
        out = []
        for sample, seed in zip(samples, seeds, strict=True):
            mask = sample.mask if sample.mask is not None else np.ones(sample.image.shape[:2], dtype=bool)
            m = mask.astype(np.uint8) * 255
            if self.dilate > 0:  # fill from outside the object's edge; the stage still keeps outside pixels
                m = cv2.dilate(m, np.ones((2 * self.dilate + 1,) * 2, np.uint8))
            edited = cv2.inpaint(sample.image, m, self.radius, flag)
            out.append(Perturbed(edited, {"radius": self.radius, "method": self.method, "dilate": self.dilate, "seed": seed}))
        return out

