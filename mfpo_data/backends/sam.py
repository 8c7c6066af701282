"""SAM (transformers `SamModel`) turns each grounded box into a mask; the image encoder runs batched.

The image embeddings of a batch are computed in one forward pass (SAM pads every image to the same
square, so batching does not change them); the light prompt encoder and mask decoder then run per
image with all of its boxes. Which of SAM's three candidate masks is kept is an explicit policy:
`best_iou` (SAM's own predicted IoU, the default), `largest`, or `first` (SAM's single-mask output).
The stage unions the masks of all boxes of the key objects.

`dtype: auto` (the default) is float16 on a GPU and float32 on the CPU; float16 rather than bfloat16,
whose 8-bit mantissa rounds a box prompt to steps of up to 0.4% of the image. Masks are
thresholded in float32 after the model, so only pixels on a mask's edge change with the precision.
`dtype: float32` gives full precision.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from mfpo_data.backends.loading import ModelBackend, device_turn, load_pretrained
from mfpo_data.imaging import resize_boxes
from mfpo_data.schema import Sample


class SamSegmenter(ModelBackend):
    backend = "sam"
    SECTION, EXTRA = "segmentation", "segment"
    HALF = "float16"

    def __init__(
        self,
        model_id: str = "facebook/sam-vit-base",
        revision: str | None = None,
        multimask_policy: Literal["best_iou", "first", "largest"] = "best_iou",
        mask_threshold: float = 0.0,
        device: str = "auto",
        dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto",
        trust_remote_code: bool = False,
    ):
        self.model_id, self.revision, self.multimask_policy = model_id, revision, multimask_policy
        self.mask_threshold, self.device, self.dtype, self.trust_remote_code = mask_threshold, device, dtype, trust_remote_code

    def _load(self):
        self.require()
        device, dtype = self.device_and_dtype()

        model, processor = load_pretrained(
            "SamModel", self.model_id, self.revision, device, dtype, self.trust_remote_code,
            key=self.model_key,
        )
        return model, processor, device, dtype

    def segment(self, samples: list[Sample]) -> list[list[np.ndarray]]:
        import torch
        from PIL import Image

        model, processor, device, dtype = self._load()
        inputs = processor(images=[Image.fromarray(s.image) for s in samples], return_tensors="pt")
        multimask = self.multimask_policy != "first"
        preds = {}  # sample index -> (low-resolution masks, IoU scores), on the CPU
        with device_turn(device), torch.inference_mode():
            embeddings, pred = model.get_image_embeddings(inputs["pixel_values"].to(device, dtype)), None
            for i, sample in enumerate(samples):
                if not sample.key_objects:
                    continue
                original = tuple(int(v) for v in inputs["original_sizes"][i])
                reshaped = tuple(int(v) for v in inputs["reshaped_input_sizes"][i])
                boxes = resize_boxes([o.box_xyxy for o in sample.key_objects], original, reshaped)
                pred = model(image_embeddings=embeddings[i : i + 1],
                             input_boxes=torch.as_tensor(boxes[None], dtype=dtype, device=device),
                             multimask_output=multimask)
                preds[i] = (pred.pred_masks.float().cpu(), pred.iou_scores[0].float().cpu().numpy())
            del embeddings, pred  # the device's memory is the next stage's when the turn ends
        out = []
        for i in range(len(samples)):
            if i not in preds:
                out.append([])
                continue
            low, iou = preds[i]
            masks = processor.image_processor.post_process_masks(
                low, inputs["original_sizes"][i : i + 1], inputs["reshaped_input_sizes"][i : i + 1],
                mask_threshold=self.mask_threshold, binarize=True)[0]  # (boxes, candidates, H, W)
            out.append(self._select(masks.numpy().astype(bool), iou))
        return out

    def _select(self, masks: np.ndarray, iou: np.ndarray) -> list[np.ndarray]:
        """One mask per box by the policy; ties go to the lower candidate index."""
        chosen = []
        for b in range(masks.shape[0]):
            if self.multimask_policy == "first" or masks.shape[1] == 1:
                k = 0
            elif self.multimask_policy == "largest":
                k = int(np.argmax(masks[b].reshape(masks.shape[1], -1).sum(axis=1)))
            else:
                k = int(np.argmax(iou[b]))
            chosen.append(masks[b, k])
        return chosen

