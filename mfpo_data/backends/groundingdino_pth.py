"""IDEA's original Grounding DINO package (`groundingdino-py`, the `.pth` checkpoints that Grounded-SAM users
have) as the grounding backend `groundingdino`; batched over images of one size with the same prompt.

The model is built by the package itself from one of its bundled configs (`config`: `GroundingDINO_SwinT_OGC`
for groundingdino_swint_ogc.pth, `GroundingDINO_SwinB_cfg` for the Swin-B checkpoint) with its BERT text
encoder from `text_encoder` (a Hub id or a local folder), and loaded from the checkpoint file (`model_id`;
`revision`: optionally a prefix of its sha256 that it must match) with `torch.load(weights_only=True)`.
Images are resized as the package's `load_image` does (short side `image_size`, long side at most
`max_size`) and normalised with ImageNet's statistics. Phrases, prompts, thresholds, the phrase each box goes
to, NMS and "no box rather than the largest box" are those of the `grounding_dino` backend (transformers'
port of the same model), so the two backends differ only in where the weights come from. It runs in float32,
as the package's `predict` does, and it detects from pixels, so the removal check uses it.

It needs torchvision (and a matching torch) and transformers 4.x, on which the package's BERT wrapper runs:
`pip install -e ".[grounded-sam]"`.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Literal

from mfpo_data.backends.grounding_dino import GroundingDinoGrounder, grounding_dino_detections, merge_phrases, phrase_token_positions
from mfpo_data.backends.loading import device_turn, load_checkpoint_file, load_once, log_loaded
from mfpo_data.errors import MissingModelError
from mfpo_data.schema import KeyObject, Sample


logger = logging.getLogger(__name__)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class GroundingDinoPthGrounder(GroundingDinoGrounder):
    backend = "groundingdino"
    EXTRA = "grounded-sam"
    MODULES = ("torch", "torchvision", "transformers", "groundingdino")
    HALF = None

    def __init__(
        self,
        model_id: str = "groundingdino_swint_ogc.pth",
        config: Literal["GroundingDINO_SwinT_OGC", "GroundingDINO_SwinB_cfg"] = "GroundingDINO_SwinT_OGC",
        text_encoder: str = "bert-base-uncased",
        revision: str | None = None,
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        nms_iou: float = 0.7,
        max_boxes_per_phrase: int | None = None,
        image_size: int = 800,
        max_size: int = 1333,
        device: str = "auto",
        dtype: Literal["auto", "float32"] = "auto",
    ):
        self.model_id, self.config, self.text_encoder, self.revision = model_id, config, text_encoder, revision
        self.box_threshold, self.text_threshold = box_threshold, text_threshold
        self.nms_iou, self.max_boxes_per_phrase = nms_iou, max_boxes_per_phrase
        self.image_size, self.max_size, self.device, self.dtype = image_size, max_size, device, dtype

    def half_precision(self) -> str | None:
        return None

    def check_available(self) -> str | None:
        """The libraries import and the checkpoint file is there; the text encoder is checked when it loads."""
        from pathlib import Path

        self.require()
        if not Path(self.model_id).expanduser().is_file():
            raise MissingModelError(f"no checkpoint file at {self.model_id} ({self.model_key}): download the Grounding "
                                    f"DINO .pth file that matches grounding.config ({self.config}) and point {self.model_key} at it")
        return None

    def _load(self):
        self.require()
        device, dtype = self.device_and_dtype()

        def load():
            from pathlib import Path

            import groundingdino
            from groundingdino.models import build_model
            from groundingdino.util.misc import clean_state_dict
            from groundingdino.util.slconfig import SLConfig

            from mfpo_data._deps import loading_model

            args = SLConfig.fromfile(str(Path(groundingdino.__file__).parent / "config" / f"{self.config}.py"))
            args.device, args.text_encoder_type = device, self.text_encoder
            state = load_checkpoint_file(self.model_id, self.revision, self.model_key)
            with loading_model(self.text_encoder, "grounding.text_encoder"), contextlib.redirect_stdout(io.StringIO()):
                model = build_model(args)  # prints the text encoder it loads; kept off stdout
            weights = clean_state_dict(state.get("model", state))  # the package's checkpoints: {"model": ...}
            if not set(weights) & set(model.state_dict()):
                raise MissingModelError(f"{self.model_id} ({self.model_key}) holds no weight of a {self.config} model")
            try:
                result = model.load_state_dict(weights, strict=False)  # not strict, as the package's own loader
            except RuntimeError as e:  # a weight of another shape: another config's checkpoint
                first = (str(e).strip().splitlines() or [""])[-1].strip()
                raise MissingModelError(f"{self.model_id} ({self.model_key}) does not fit grounding.config {self.config}: "
                                        f"{first[:160]}") from None
            if result.missing_keys:  # say what stayed as initialised
                logger.warning("%s: %d weights are not in %s and stay as initialised (first: %s)", self.model_key,
                               len(result.missing_keys), self.model_id, result.missing_keys[0])
            log_loaded(self.model_key, self.model_id, device, dtype)
            return model.to(device).eval()

        key = ("groundingdino", self.model_id, self.revision, self.config, self.text_encoder, device)
        return load_once(key, load), device

    def _batch_key(self, sample: Sample, phrases: list[str]) -> tuple:
        """Images of one size with the same prompt: the package's forward is not independent across a batch whose
        prompts differ (one image's boxes move when another image's prompt changes), so only those share one."""
        return sample.image.shape[:2], merge_phrases(phrases)[0]

    def pixel_values(self, samples: list[Sample]):
        """(N, 3, H, W) float32: the package's `load_image` transform (short side `image_size`, long side at most
        `max_size`, ImageNet normalisation); images of one size stack without padding."""
        import groundingdino.datasets.transforms as T
        import torch
        from PIL import Image

        transform = T.Compose([T.RandomResize([self.image_size], max_size=self.max_size), T.ToTensor(),
                               T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])  # one size: not random
        return torch.stack([transform(Image.fromarray(s.image), None)[0] for s in samples])

    def _forward(self, samples: list[Sample], phrases: list[list[str]]) -> list[list[KeyObject]]:
        model, device = self._load()  # first: a missing library is the one-line error naming the extra
        import torch

        images = self.pixel_values(samples).to(device)
        prompts = [merge_phrases(p) for p in phrases]
        with device_turn(device), torch.inference_mode():
            outputs = model(images, captions=[text for text, _ in prompts])
            probs = outputs["pred_logits"].float().sigmoid().cpu().numpy()
            boxes = outputs["pred_boxes"].float().cpu().numpy()
            del outputs, images
        results = []
        for b, (sample, sample_phrases, (text, spans)) in enumerate(zip(samples, phrases, prompts, strict=True)):
            offsets = model.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
            tokens = phrase_token_positions(offsets, spans)
            dets = grounding_dino_detections(boxes[b], probs[b], tokens, sample.width, sample.height,
                                             self.box_threshold, self.text_threshold)
            results.append(self._to_objects(dets, sample_phrases))
        return results


__all__ = ["GroundingDinoPthGrounder"]
