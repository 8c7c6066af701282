"""Per-token image reliance of the chosen answer under an image-text-to-text model (`reliance` section).

For a sample with question q, original image m, perturbed image m' and chosen answer y = (y_1..y_T):

    r_t = log p(y_t | q, m, y_<t) - log p(y_t | q, m', y_<t)        (nats, one value per answer token)

the signal that token-level methods compute from a corrupted image (TPO's visual-anchored reward, UE-DPO's
token weights): a token the image supports loses probability when the key object is perturbed. The stage
stores r_t, the answer's token ids and their sum (`image_reliance`); `mfpo-train` can weight the chosen
answer's tokens by it (`loss.token_weighting: image_reliance`).

The text is what the trainer sees: the prompt and answer are rendered by `mfpo_data.chat.split_answer` with
the model's chat template, the answer's tokens follow the prompt's (image tokens expanded by the processor),
so the values equal the trainer's own log-probs of those tokens for the same model. Any
`AutoModelForImageTextToText` with an `AutoProcessor` works, by Hub id or local folder; log-probs are taken
from the logits in float32. The m and m' rows of a sample run in one forward pass.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from mfpo_data.backends.base import Described
from mfpo_data.backends.loading import ModelBackend, device_turn, load_pretrained
from mfpo_data.chat import split_answer
from mfpo_data.schema import Sample, assistant_turn, user_turn


class NoReliance(Described):
    """`reliance.backend: none` (the default): the stage is left out and `image_reliance` stays null."""

    backend = "none"


class ImageRelianceScorer(ModelBackend):
    backend = "vlm"
    SECTION, EXTRA = "reliance", "score"

    def __init__(
        self,
        model_id: str,
        revision: str | None = None,
        device: str = "auto",
        dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto",
        trust_remote_code: bool = False,
    ):
        self.model_id, self.revision = model_id, revision
        self.device, self.dtype, self.trust_remote_code = device, dtype, trust_remote_code

    def _load(self):
        self.require()
        device, dtype = self.device_and_dtype()
        model, processor = load_pretrained("AutoModelForImageTextToText", self.model_id, self.revision, device, dtype,
                                           self.trust_remote_code, key=self.model_key)  # fmt: skip
        return model, processor, device

    def reliance(self, samples: list[Sample]) -> list[dict]:
        """`image_reliance` of each sample: model id, revision, the answer's token ids, r_t per token and their sum."""
        originals = self.token_logps(samples, [s.image for s in samples])
        perturbed = self.token_logps(samples, [s.rejected_image for s in samples])
        out = []
        for (ids, on_m), (_, on_m_prime) in zip(originals, perturbed, strict=True):
            values = (on_m - on_m_prime).astype(np.float32)
            out.append({"model_id": self.model_id, "revision": self.revision, "token_ids": ids,
                        "values": values.tolist(), "sum": float(values.astype(np.float64).sum())})  # fmt: skip
        return out

    def token_logps(self, samples: list[Sample], images: list[np.ndarray]) -> list[tuple[list[int], np.ndarray]]:
        """(answer token ids, log p of each) per sample with `images[i]` in place of its image: one forward."""
        import torch
        from PIL import Image

        model, processor, device = self._load()
        tokenizer = getattr(processor, "tokenizer", processor)
        texts = [split_answer(processor, user_turn(s.question), assistant_turn(s.chosen), s.id) for s in samples]
        enc = processor(text=[p for p, _ in texts], images=[[Image.fromarray(im)] for im in images], padding=True,
                        return_tensors="pt")  # fmt: skip
        prompt_mask = enc["attention_mask"].bool()
        answers = tokenizer([a for _, a in texts], add_special_tokens=False)["input_ids"]
        per_token = [k for k, v in enc.items() if k not in ("input_ids", "attention_mask") and torch.is_tensor(v)
                     and v.shape == prompt_mask.shape]  # fmt: skip
        prompts = [enc["input_ids"][i][prompt_mask[i]] for i in range(len(samples))]
        width = max(len(p) + len(a) for p, a in zip(prompts, answers, strict=True))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(samples), width), pad, dtype=enc["input_ids"].dtype)
        attention = torch.zeros((len(samples), width), dtype=torch.long)
        extras = {k: torch.zeros((len(samples), width), dtype=enc[k].dtype) for k in per_token}
        for i, (p, a) in enumerate(zip(prompts, answers, strict=True)):  # right padding, answers after their prompt
            input_ids[i, : len(p)] = p
            input_ids[i, len(p) : len(p) + len(a)] = torch.tensor(a, dtype=p.dtype)
            attention[i, : len(p) + len(a)] = 1
            for k in per_token:  # token types of the prompt; answer tokens are text (0)
                extras[k][i, : len(p)] = enc[k][i][prompt_mask[i]]
        inputs = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask") and k not in per_token}
        inputs.update(input_ids=input_ids, attention_mask=attention, **extras)
        inputs = {k: (v.to(device, model.dtype) if v.is_floating_point() else v.to(device)) if torch.is_tensor(v) else v
                  for k, v in inputs.items()}  # fmt: skip
        out = []
        with device_turn(device), torch.inference_mode():
            logits = model(**inputs, use_cache=False).logits
            for i, (p, a) in enumerate(zip(prompts, answers, strict=True)):
                step = logits[i, len(p) - 1 : len(p) - 1 + len(a)].float()  # position t predicts token t + 1
                logp = torch.log_softmax(step, dim=-1).gather(-1, torch.tensor(a, device=step.device)[:, None])[:, 0]
                out.append((list(a), logp.cpu().numpy().astype(np.float64)))
            del logits
        return out
