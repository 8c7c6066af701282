"""Diffusion inpainting (diffusers `AutoPipelineForInpainting`) of the key region: the object is
repainted from `prompt` (by default, filled with background).

- The image is resized to a working size (longest side `resolution`, both sides multiples of the
  VAE factor x 8), inpainted, and the result resized back to the exact input size.
- Each sample has its own `torch.Generator` seeded from the stage's per-sample seed, so a sample's
  output does not depend on its batch. Samples of the same working size share one pipeline call.
- `strength` is the level knob (1.0 starts from pure noise inside the mask).
- **Pixels outside the mask**: 9-channel inpainting UNets decode the whole latent, so diffusers
  changes unmasked pixels too. The perturbation stage composites the result with the original
  outside `sample.mask`, which makes them bit-identical. `mask_dilate` grows only the region the
  model repaints (context for the object's edge); what lands outside `sample.mask` is discarded.
- **Feathering** (`feather` > 0) is done here, inward: the repainted pixels are blended with the
  original by a weight that is 0 at the mask's edge and reaches 1 at `feather` pixels inside it. So
  the feathered edge lies inside `sample.mask`, the recorded mask stays the exact changed region, and
  the stage's composite still guarantees bit-identical pixels outside it. (Feathering outward would
  change pixels outside the mask, which the recorded mask would then not describe.)
- The safety checker is off by default. An all-black model output (the safety checker's
  replacement, or NaNs in half precision) drops the sample with reason `black_output`.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np

from mfpo_data.backends.base import PerturbDrop, Perturbed
from mfpo_data.backends.loading import ModelBackend, load_once, require_extra
from mfpo_data.imaging import blend, dilate_mask, feather_alpha, resize_image, resize_mask
from mfpo_data.schema import Sample


DEFAULT_PROMPT = "empty background, nothing there, seamless continuation of the surroundings"
DEFAULT_NEGATIVE = "object, person, animal, text, watermark, blurry, distorted"


def working_size(width: int, height: int, resolution: int, multiple: int) -> tuple[int, int]:
    """(w, h) with the longest side about `resolution`, both rounded to a multiple of `multiple` (>= it)."""
    scale = resolution / max(width, height)
    return (max(multiple, int(round(width * scale / multiple)) * multiple),
            max(multiple, int(round(height * scale / multiple)) * multiple))


class SdInpaintPerturber(ModelBackend):
    backend = "sd_inpaint"

    def __init__(
        self,
        model_id: str = "stable-diffusion-v1-5/stable-diffusion-inpainting",
        revision: str | None = None,
        variant: str | None = None,
        prompt: str = DEFAULT_PROMPT,
        negative_prompt: str | None = DEFAULT_NEGATIVE,
        strength: float = 1.0,
        num_inference_steps: int = 30,
        guidance_scale: float = 7.5,
        resolution: int = 512,
        mask_dilate: int = 0,
        feather: int = 0,
        safety_checker: bool = False,
        black_level: int = 4,
        device: str = "auto",
        dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto",
        trust_remote_code: bool = False,
    ):
        if not 0.0 < strength <= 1.0:
            raise ValueError("perturbation.strength must be in (0, 1]")
        if mask_dilate < 0 or feather < 0:
            raise ValueError("perturbation.mask_dilate and perturbation.feather must be >= 0")
        self.model_id, self.revision, self.variant = model_id, revision, variant
        self.prompt, self.negative_prompt = prompt, negative_prompt
        self.strength, self.num_inference_steps, self.guidance_scale = strength, num_inference_steps, guidance_scale
        self.resolution, self.mask_dilate, self.feather = resolution, mask_dilate, feather
        self.safety_checker, self.black_level = safety_checker, black_level
        self.device, self.dtype, self.trust_remote_code = device, dtype, trust_remote_code

    def _load(self):
        require_extra("inpaint", "perturbation backend 'sd_inpaint'", "torch", "diffusers", "transformers")
        device, dtype = self.device_and_dtype(auto_on_cuda="float16")

        def load():
            from diffusers import AutoPipelineForInpainting

            kw: dict[str, Any] = dict(revision=self.revision, torch_dtype=dtype, trust_remote_code=self.trust_remote_code)
            if self.variant:
                kw["variant"] = self.variant
            if not self.safety_checker:
                kw.update(safety_checker=None, requires_safety_checker=False)
            with warnings.catch_warnings():  # diffusers >= 0.36 renames torch_dtype to dtype; both work before 1.0
                warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
                pipe = AutoPipelineForInpainting.from_pretrained(self.model_id, **kw).to(device)
            pipe.set_progress_bar_config(disable=True)
            return pipe

        pipe = load_once(("sd_inpaint", self.model_id, self.revision, self.variant, self.safety_checker, device, str(dtype)), load)
        return pipe, device

    def perturb(self, samples: list[Sample], seeds: list[int]) -> list[Perturbed | PerturbDrop]:
        pipe, device = self._load()
        multiple = int(getattr(pipe, "vae_scale_factor", 8)) * 8
        groups: dict[tuple[int, int], list[int]] = {}
        for i, s in enumerate(samples):
            groups.setdefault(working_size(s.width, s.height, self.resolution, multiple), []).append(i)
        out: list[Any] = [None] * len(samples)
        for size, idx in groups.items():
            for i, result in zip(idx, self._run(pipe, device, size, [samples[i] for i in idx], [seeds[i] for i in idx]), strict=True):
                out[i] = result
        return out

    def _run(self, pipe, device: str, size: tuple[int, int], samples: list[Sample], seeds: list[int]):
        import torch
        from PIL import Image

        w, h = size
        regions = [s.mask if s.mask is not None else np.ones((s.height, s.width), bool) for s in samples]
        images = [Image.fromarray(resize_image(s.image, w, h)) for s in samples]
        masks = [Image.fromarray(resize_mask(dilate_mask(r, self.mask_dilate), w, h).astype(np.uint8) * 255) for r in regions]
        gen_device = "cpu" if not str(device).startswith("cuda") else device
        generators = [torch.Generator(gen_device).manual_seed(int(seed)) for seed in seeds]
        n = len(samples)
        kwargs: dict[str, Any] = dict(
            prompt=[self.prompt] * n, image=images, mask_image=masks, height=h, width=w, strength=self.strength,
            num_inference_steps=self.num_inference_steps, guidance_scale=self.guidance_scale, generator=generators,
            output_type="np",
        )
        if self.negative_prompt:
            kwargs["negative_prompt"] = [self.negative_prompt] * n
        result = pipe(**kwargs)
        flagged = getattr(result, "nsfw_content_detected", None) or [False] * n
        outputs = []
        for s, region, seed, arr, nsfw in zip(samples, regions, seeds, result.images, flagged, strict=True):
            params = self._params(seed, (w, h))
            generated = np.clip(np.rint(np.nan_to_num(np.asarray(arr, np.float32)) * 255.0), 0, 255).astype(np.uint8)
            if nsfw or int(generated.max()) <= self.black_level:
                why = "safety checker flagged the output" if nsfw else f"every pixel <= {self.black_level}"
                outputs.append(PerturbDrop(f"black_output: {self.model_id} returned an all-black image ({why})", params))
                continue
            edited = resize_image(generated, s.width, s.height)
            if self.feather > 0 and s.mask is not None:
                edited = blend(s.image, edited, feather_alpha(region, self.feather))
            outputs.append(Perturbed(edited, params))
        return outputs

    def _params(self, seed: int, size: tuple[int, int]) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "revision": self.revision,
            "strength": self.strength,
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "working_size": list(size),
            "mask_dilate": self.mask_dilate,
            "feather": self.feather,
            "seed": seed,
        }

