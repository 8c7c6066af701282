"""SAM 2 (transformers `Sam2Model`) turns each grounded box into a mask; the image encoder runs batched.

SAM 2 resizes every image to one square (1024 px for the released checkpoints; the model config's
`image_size`), so a batch's embeddings are those of each image alone. The prompt encoder and mask decoder
then run per image with all of its boxes, and the low-resolution masks are resized to the image and
thresholded in float32 (`mask_threshold`), as transformers' `Sam2ImageProcessor.post_process_masks` does.
The candidate mask is chosen by `multimask_policy`, as for SAM.

The preprocessing is transformers' `Sam2ImageProcessor`'s (resize to the square, bilinear; scale to [0, 1];
ImageNet mean and std; boxes scaled to the square), written here with PIL and torch: the processor class
needs torchvision, which the CPU installs of torch this project supports do not always have. Model ids are
the `facebook/sam2.1-hiera-*` checkpoints in transformers' format.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from mfpo_data.backends.sam import SamSegmenter
from mfpo_data.schema import Sample


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Sam2Segmenter(SamSegmenter):
    backend = "sam2"

    def __init__(
        self,
        model_id: str = "facebook/sam2.1-hiera-small",
        revision: str | None = None,
        multimask_policy: Literal["best_iou", "first", "largest"] = "best_iou",
        mask_threshold: float = 0.0,
        device: str = "auto",
        dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto",
        trust_remote_code: bool = False,
    ):
        super().__init__(model_id, revision, multimask_policy, mask_threshold, device, dtype, trust_remote_code)

    def _load(self):
        self.require()
        device, dtype = self.device_and_dtype()

        def load():
            import transformers

            from mfpo_data._deps import loading_model
            from mfpo_data.backends.loading import log_loaded

            with loading_model(self.model_id, self.model_key):
                model = transformers.Sam2Model.from_pretrained(self.model_id, revision=self.revision, dtype=dtype,
                                                               trust_remote_code=self.trust_remote_code)  # fmt: skip
            log_loaded(self.model_key, self.model_id, device, dtype)
            return model.to(device).eval()

        from mfpo_data.backends.loading import load_once

        model = load_once(("Sam2Model", self.model_id, self.revision, device, str(dtype)), load)
        return model, None, device, dtype

    def square(self, model) -> int:
        size = model.config.vision_config.backbone_config.image_size
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    def pixel_values(self, samples: list[Sample], side: int):
        """(B, 3, side, side) float32: each image resized to the square (bilinear), scaled and normalised."""
        import torch
        from PIL import Image

        arrays = [np.asarray(Image.fromarray(s.image).resize((side, side), Image.BILINEAR), np.float32) / 255.0 for s in samples]
        x = (np.stack(arrays) - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
        return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()

    def segment(self, samples: list[Sample]) -> list[list[np.ndarray]]:
        import torch
        import torch.nn.functional as F

        model, _, device, dtype = self._load()
        side = self.square(model)
        out = []
        from mfpo_data.backends.loading import device_turn

        with device_turn(device), torch.inference_mode():
            embeddings = model.get_image_embeddings(self.pixel_values(samples, side).to(device, dtype))
            for i, sample in enumerate(samples):
                if not sample.key_objects:
                    out.append([])
                    continue
                scale = np.asarray([side / sample.width, side / sample.height] * 2, np.float32)
                boxes = np.asarray([o.box_xyxy for o in sample.key_objects], np.float32) * scale
                pred = model(image_embeddings=[e[i : i + 1] for e in embeddings],
                             input_boxes=torch.as_tensor(boxes[None], dtype=dtype, device=device),
                             multimask_output=self.multimask_policy != "first")  # fmt: skip
                low = pred.pred_masks[0].float().cpu()  # (boxes, candidates, h, w)
                masks = F.interpolate(low, (sample.height, sample.width), mode="bilinear", align_corners=False) > self.mask_threshold
                out.append(self._select(masks.numpy(), pred.iou_scores[0].float().cpu().numpy()))
        return out


__all__ = ["Sam2Segmenter"]
