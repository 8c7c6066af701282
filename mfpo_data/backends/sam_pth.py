"""Meta's original SAM package (`segment-anything`, the `.pth` checkpoints that Grounded-SAM users have) as the
segmentation backend `segment_anything`; the image encoder runs batched.

The model is built by the package's own `sam_model_registry[model_type]` and loaded from the checkpoint file
(`model_id`: a path such as `sam_vit_h_4b8939.pth`; `revision`: optionally a prefix of its sha256 that it must
match) with `torch.load(weights_only=True)`. Each image goes through the package's own `ResizeLongestSide`
and `Sam.preprocess` (normalise, pad to the encoder's square), so a batch of images stacks without changing
any of them; the encoder embeds the batch in one pass, then the prompt encoder and mask decoder run per image
with all of its boxes, as `SamPredictor.predict_torch` does. Which of the three candidate masks is kept is
the policy of the `sam` backend (`multimask_policy`). It runs in float32, as Meta's predictor does.

It needs torchvision (and a matching torch): `pip install -e ".[grounded-sam]"`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from mfpo_data.backends.loading import device_turn, load_checkpoint_file, load_once, log_loaded
from mfpo_data.backends.sam import SamSegmenter
from mfpo_data.errors import MissingModelError
from mfpo_data.schema import Sample


class SegmentAnythingSegmenter(SamSegmenter):
    backend = "segment_anything"
    EXTRA = "grounded-sam"
    MODULES = ("torch", "torchvision", "segment_anything")
    HALF = None

    def __init__(
        self,
        model_id: str = "sam_vit_h_4b8939.pth",
        model_type: Literal["vit_h", "vit_l", "vit_b"] = "vit_h",
        revision: str | None = None,
        multimask_policy: Literal["best_iou", "first", "largest"] = "best_iou",
        device: str = "auto",
        dtype: Literal["auto", "float32"] = "auto",
    ):
        self.model_id, self.model_type, self.revision = model_id, model_type, revision
        self.multimask_policy, self.device, self.dtype = multimask_policy, device, dtype

    def check_available(self) -> str | None:
        """The libraries import and the checkpoint file is there (nothing is downloaded)."""
        from pathlib import Path

        self.require()
        if not Path(self.model_id).expanduser().is_file():
            raise MissingModelError(f"no checkpoint file at {self.model_id} ({self.model_key}): download Meta's "
                                    f"sam_{self.model_type}_*.pth and point {self.model_key} at it")
        return None

    def _load(self):
        self.require()
        device, dtype = self.device_and_dtype()

        def load():
            from segment_anything import sam_model_registry

            state = load_checkpoint_file(self.model_id, self.revision, self.model_key)
            model = sam_model_registry[self.model_type](checkpoint=None)
            try:
                model.load_state_dict(state)
            except RuntimeError as e:  # missing / unexpected keys, other shapes: another model_type's checkpoint
                first = (str(e).strip().splitlines() or [""])[0]
                raise MissingModelError(f"{self.model_id} ({self.model_key}) is not a segment-anything {self.model_type} "
                                        f"checkpoint (segmentation.model_type): {first[:160]}") from None
            log_loaded(self.model_key, self.model_id, device, dtype)
            return model.to(device).eval()

        return load_once(("segment_anything", self.model_id, self.revision, self.model_type, device), load), device

    def segment(self, samples: list[Sample]) -> list[list[np.ndarray]]:
        model, device = self._load()  # first: a missing library is the one-line error naming the extra
        import torch
        from segment_anything.utils.transforms import ResizeLongestSide

        transform = ResizeLongestSide(model.image_encoder.img_size)
        out: list[list[np.ndarray]] = [[] for _ in samples]
        todo = [i for i, s in enumerate(samples) if s.key_objects]
        if not todo:
            return out
        with device_turn(device), torch.inference_mode():
            inputs, sizes = [], []
            for i in todo:  # SamPredictor.set_image, one image at a time up to the encoder
                image = torch.as_tensor(transform.apply_image(samples[i].image), device=device).permute(2, 0, 1).contiguous()
                sizes.append(tuple(image.shape[-2:]))
                inputs.append(model.preprocess(image[None]))
            embeddings = model.image_encoder(torch.cat(inputs))
            for k, i in enumerate(todo):  # SamPredictor.predict_torch with every box of the image
                sample = samples[i]
                boxes = torch.as_tensor([o.box_xyxy for o in sample.key_objects], dtype=torch.float32, device=device)
                sparse, dense = model.prompt_encoder(points=None, boxes=transform.apply_boxes_torch(boxes, sample.image.shape[:2]),
                                                     masks=None)  # fmt: skip
                low_res, iou = model.mask_decoder(image_embeddings=embeddings[k : k + 1], image_pe=model.prompt_encoder.get_dense_pe(),
                                                  sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                                  multimask_output=self.multimask_policy != "first")  # fmt: skip
                masks = model.postprocess_masks(low_res, sizes[k], sample.image.shape[:2]) > model.mask_threshold
                out[i] = self._select(masks.cpu().numpy(), iou.float().cpu().numpy())
        return out


__all__ = ["SegmentAnythingSegmenter"]
