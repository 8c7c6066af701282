"""Diffusion inpainting (diffusers `AutoPipelineForInpainting`) of the key region: the object is
removed, repainted from `prompt` (by default, filled with background), or, for an absent-object pair
with `presence_negative: insert`, an object is painted in from its name.

- **Removal that removes**: the key mask is grown by `mask_dilate` pixels (the object's edge and
  shadow go too), and the grown mask is the new key region stored with the row.
- **Context crop**: the region's box grown by `context` times its size on each side is cut out,
  resized to a working size (longest side `resolution`, both sides multiples of the VAE factor x 8),
  inpainted, resized back and pasted into place, so a small object in a large photo is inpainted at
  the model's resolution.
- Each sample has its own `torch.Generator` seeded from the stage's per-sample seed, so a sample's
  output does not depend on its batch. Samples of the same working size share one pipeline call.
- `strength` is the level knob (1.0 starts from pure noise inside the mask).
- **Pixels outside the mask**: 9-channel inpainting UNets decode the whole latent, so diffusers
  changes unmasked pixels too. The perturbation stage composites the result with the original
  outside the (grown) key region, which makes them bit-identical.
- **Feathering** (`feather` > 0) is done here, inward: the repainted pixels are blended with the
  original by a weight that is 0 at the mask's edge and reaches 1 at `feather` pixels inside it. So
  the feathered edge lies inside `sample.mask`, the recorded mask stays the exact changed region, and
  the stage's composite still guarantees bit-identical pixels outside it. (Feathering outward would
  change pixels outside the mask, which the recorded mask would then not describe.)
- The safety checker is off by default. An all-black model output (the safety checker's
  replacement, or NaNs in half precision) drops the sample with reason `black_output`.
- `dtype: auto` (the default) is float16 on a GPU, the precision Stable Diffusion is published in
  (`variant: fp16`), and float32 on the CPU, where half precision is slow.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np

from mfpo_data._deps import loading_model
from mfpo_data.backends.base import PerturbDrop, Perturbed
from mfpo_data.backends.loading import ModelBackend, device_turn, load_once, log_loaded
from mfpo_data.imaging import blend, dilate_mask, feather_alpha, mask_bbox, resize_image, resize_mask
from mfpo_data.schema import Sample


DEFAULT_PROMPT = "empty background, nothing there, seamless continuation of the surroundings"
DEFAULT_NEGATIVE = "object, person, animal, text, watermark, blurry, distorted"
INSERT_NEGATIVE = "text, watermark, blurry, distorted, deformed"


def working_size(width: int, height: int, resolution: int, multiple: int) -> tuple[int, int]:
    """(w, h) with the longest side about `resolution`, both rounded to a multiple of `multiple` (>= it)."""
    scale = resolution / max(width, height)
    return (max(multiple, int(round(width * scale / multiple)) * multiple),
            max(multiple, int(round(height * scale / multiple)) * multiple))


def context_crop(region: np.ndarray | None, height: int, width: int, context: float) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the region's bounding box grown by `context` times its size on each side, within
    the image; the whole image without a region. The model sees the object with its surroundings at its
    own resolution, however small the object is in a large photo."""
    box = mask_bbox(region) if region is not None else None
    if box is None:
        return 0, 0, width, height
    rows, cols = box
    dx, dy = int(round((cols.stop - cols.start) * context)), int(round((rows.stop - rows.start) * context))
    return max(0, cols.start - dx), max(0, rows.start - dy), min(width, cols.stop + dx), min(height, rows.stop + dy)


class SdInpaintPerturber(ModelBackend):
    backend = "sd_inpaint"
    SECTION, EXTRA = "perturbation", "inpaint"
    MODULES = ("torch", "diffusers", "transformers")
    HALF = "float16"
    removes = True  # a detecting grounder checks the object is gone (`filters.max_removal_score`)

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
        mask_dilate: int = 8,
        context: float = 0.5,
        feather: int = 0,
        safety_checker: bool = False,
        black_level: int = 4,
        device: str = "auto",
        dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto",
        trust_remote_code: bool = False,
    ):
        if not 0.0 < strength <= 1.0:
            raise ValueError("perturbation.strength must be in (0, 1]")
        if mask_dilate < 0 or feather < 0 or context < 0:
            raise ValueError("perturbation.mask_dilate, perturbation.context and perturbation.feather must be >= 0")
        self.model_id, self.revision, self.variant = model_id, revision, variant
        self.prompt, self.negative_prompt = prompt, negative_prompt
        self.strength, self.num_inference_steps, self.guidance_scale = strength, num_inference_steps, guidance_scale
        self.resolution, self.mask_dilate, self.context, self.feather = resolution, mask_dilate, context, feather
        self.safety_checker, self.black_level = safety_checker, black_level
        self.device, self.dtype, self.trust_remote_code = device, dtype, trust_remote_code

    def _load(self):
        self.require()
        device, dtype = self.device_and_dtype()

        def load():
            from diffusers import AutoPipelineForInpainting

            kw: dict[str, Any] = dict(revision=self.revision, torch_dtype=dtype, trust_remote_code=self.trust_remote_code)
            if self.variant:
                kw["variant"] = self.variant
            if not self.safety_checker:
                kw.update(safety_checker=None, requires_safety_checker=False)
            with warnings.catch_warnings():  # diffusers >= 0.36 renames torch_dtype to dtype; both work before 1.0
                warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
                with loading_model(self.model_id, self.model_key):
                    pipe = AutoPipelineForInpainting.from_pretrained(self.model_id, **kw).to(device)
            log_loaded(self.model_key, self.model_id, device, dtype)
            pipe.set_progress_bar_config(disable=True)
            return pipe

        pipe = load_once(("sd_inpaint", self.model_id, self.revision, self.variant, self.safety_checker, device, str(dtype)), load)
        return pipe, device

    def perturb(self, samples: list[Sample], seeds: list[int]) -> list[Perturbed | PerturbDrop]:
        """Remove the key object: repaint its mask grown by `mask_dilate` from `prompt`; the grown mask
        is returned as the new key region."""
        regions = [dilate_mask(s.mask, self.mask_dilate) if s.mask is not None else None for s in samples]
        return self._edit(samples, seeds, regions, [self.prompt] * len(samples), self.negative_prompt, removal=True)

    def insert(self, samples: list[Sample], seeds: list[int], prompts: list[str]) -> list[Perturbed | PerturbDrop]:
        """Paint the object each prompt names into `sample.mask` (a box where it plausibly stands)."""
        return self._edit(samples, seeds, [s.mask for s in samples], prompts, INSERT_NEGATIVE, removal=False)

    def _edit(self, samples, seeds, regions, prompts, negative, removal: bool) -> list[Perturbed | PerturbDrop]:
        pipe, device = self._load()
        multiple = int(getattr(pipe, "vae_scale_factor", 8)) * 8
        crops = [context_crop(r, s.height, s.width, self.context) for s, r in zip(samples, regions, strict=True)]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (x0, y0, x1, y1) in enumerate(crops):
            groups.setdefault(working_size(x1 - x0, y1 - y0, self.resolution, multiple), []).append(i)
        out: list[Any] = [None] * len(samples)
        for size, idx in groups.items():
            results = self._run(pipe, device, size, [samples[i] for i in idx], [seeds[i] for i in idx],
                                [regions[i] for i in idx], [crops[i] for i in idx], [prompts[i] for i in idx],
                                negative, removal)  # fmt: skip
            for i, result in zip(idx, results, strict=True):
                out[i] = result
        return out

    def _run(self, pipe, device: str, size, samples, seeds, regions, crops, prompts, negative, removal: bool):
        import torch
        from PIL import Image

        w, h = size
        full = [r if r is not None else np.ones((s.height, s.width), bool) for s, r in zip(samples, regions, strict=True)]
        images = [Image.fromarray(resize_image(np.ascontiguousarray(s.image[y0:y1, x0:x1]), w, h))
                  for s, (x0, y0, x1, y1) in zip(samples, crops, strict=True)]
        masks = [Image.fromarray(resize_mask(np.ascontiguousarray(r[y0:y1, x0:x1]), w, h).astype(np.uint8) * 255)
                 for r, (x0, y0, x1, y1) in zip(full, crops, strict=True)]
        gen_device = "cpu" if not str(device).startswith("cuda") else device
        generators = [torch.Generator(gen_device).manual_seed(int(seed)) for seed in seeds]
        n = len(samples)
        kwargs: dict[str, Any] = dict(
            prompt=list(prompts), image=images, mask_image=masks, height=h, width=w, strength=self.strength,
            num_inference_steps=self.num_inference_steps, guidance_scale=self.guidance_scale, generator=generators,
            output_type="np",
        )
        if negative:
            kwargs["negative_prompt"] = [negative] * n
        with device_turn(device):
            result = pipe(**kwargs)
        flagged = getattr(result, "nsfw_content_detected", None) or [False] * n
        outputs = []
        for s, region, crop, seed, prompt, arr, nsfw in zip(samples, full, crops, seeds, prompts, result.images, flagged,
                                                            strict=True):  # fmt: skip
            params = self._params(seed, (w, h), crop, prompt, negative)
            generated = np.clip(np.rint(np.nan_to_num(np.asarray(arr, np.float32)) * 255.0), 0, 255).astype(np.uint8)
            if nsfw or int(generated.max()) <= self.black_level:
                why = "safety checker flagged the output" if nsfw else f"every pixel <= {self.black_level}"
                outputs.append(PerturbDrop(f"black_output: {self.model_id} returned an all-black image ({why})", params))
                continue
            x0, y0, x1, y1 = crop
            edited = s.image.copy()
            edited[y0:y1, x0:x1] = resize_image(generated, x1 - x0, y1 - y0)  # pasted back; the stage keeps only the mask
            if self.feather > 0:
                edited = blend(s.image, edited, feather_alpha(region, self.feather))
            new_region = region if removal and self.mask_dilate > 0 and s.mask is not None else None
            outputs.append(Perturbed(edited, params, mask=new_region))
        return outputs

    def _params(self, seed: int, size: tuple[int, int], crop, prompt: str, negative: str | None) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "revision": self.revision,
            "strength": self.strength,
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "prompt": prompt,
            "negative_prompt": negative,
            "working_size": list(size),
            "crop_box": [int(v) for v in crop],
            "context": self.context,
            "mask_dilate": self.mask_dilate,
            "feather": self.feather,
            "seed": seed,
        }

