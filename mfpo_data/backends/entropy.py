"""Difficulty as the entropy of a reference VLM over the chosen answer (the paper ranks by entropy).

For a sample with question q, original image m and chosen answer y = (y_1..y_T):

    H_t = - sum_v p(v | q, m, y_<t) log p(v | q, m, y_<t)       (nats, full vocabulary)
    entropy(m) = (1/T) sum_t H_t                                  (mean over answer tokens)

`mode: entropy` (default) uses `entropy(m)`: the more uncertain the reference model is while
reading the chosen answer, the harder the sample. `mode: gap` uses `entropy(m) - entropy(m')`
with m' the perturbed image: when perturbing the key region barely changes (or lowers) the model's
uncertainty, the image contrast is subtle and the sample is hard; a large rise means easy.

The prompt is the processor's chat template applied to a user turn with the image and the question
(generation prompt added); the answer's tokens follow it, capped at `max_answer_tokens`. Any
`AutoModelForImageTextToText` with an `AutoProcessor` works, by Hub id or local folder.

`dtype: auto` (the default) is bfloat16 on a GPU that computes in it (Ampere and later; a language
model's activations can outgrow float16's range), float16 on older cards, and float32 on the CPU;
the entropy itself is computed from the logits in float32.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from mfpo_data.backends.loading import ModelBackend, device_turn, load_pretrained
from mfpo_data.schema import Sample


class EntropyDifficulty(ModelBackend):
    backend = "entropy"
    SECTION, EXTRA = "scoring", "score"

    def __init__(
        self,
        model_id: str,
        revision: str | None = None,
        mode: Literal["entropy", "gap"] = "entropy",
        max_answer_tokens: int = 256,
        device: str = "auto",
        dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto",
        trust_remote_code: bool = False,
    ):
        if max_answer_tokens < 1:
            raise ValueError("scoring.max_answer_tokens must be >= 1")
        self.model_id, self.revision, self.mode, self.max_answer_tokens = model_id, revision, mode, max_answer_tokens
        self.device, self.dtype, self.trust_remote_code = device, dtype, trust_remote_code

    def _load(self):
        self.require()
        device, dtype = self.device_and_dtype()

        model, processor = load_pretrained(
            "AutoModelForImageTextToText", self.model_id, self.revision, device, dtype, self.trust_remote_code,
            key=self.model_key,
        )
        return model, processor, device

    def score(self, samples: list[Sample]) -> list[float]:
        original = self.mean_entropy(samples, [s.image for s in samples])
        if self.mode == "entropy":
            return original
        perturbed = self.mean_entropy(samples, [s.rejected_image for s in samples])
        return [a - b for a, b in zip(original, perturbed, strict=True)]

    def mean_entropy(self, samples: list[Sample], images: list[np.ndarray]) -> list[float]:
        """Mean next-token entropy (nats) over each sample's chosen-answer tokens, one batch forward."""
        import torch
        from PIL import Image

        model, processor, device = self._load()
        tok = processor.tokenizer
        prompts = [
            processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": s.question}]}],
                add_generation_prompt=True, tokenize=False)
            for s in samples
        ]
        enc = processor(images=[Image.fromarray(im) for im in images], text=prompts, padding=True, return_tensors="pt")
        prompt_ids = [row[mask.bool()].tolist() for row, mask in zip(enc["input_ids"], enc["attention_mask"], strict=True)]
        answers = [tok(s.chosen, add_special_tokens=False)["input_ids"][: self.max_answer_tokens] for s in samples]
        if tok.eos_token_id is not None:
            answers = [a if len(a) == self.max_answer_tokens else a + [tok.eos_token_id] for a in answers]
        rows = [p + a for p, a in zip(prompt_ids, answers, strict=True)]
        width = max(len(r) for r in rows)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # right padding: the prompt keeps its positions, answers follow it
            input_ids[i, : len(r)] = torch.tensor(r)
            attention[i, : len(r)] = 1
        extra = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask", "token_type_ids")}
        extra = {k: (v.to(device, model.dtype) if torch.is_tensor(v) and v.is_floating_point() else v.to(device) if torch.is_tensor(v) else v)
                 for k, v in extra.items()}
        out = []
        with device_turn(device), torch.inference_mode():
            logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device), **extra).logits
            for i, (p, a) in enumerate(zip(prompt_ids, answers, strict=True)):
                if not a:
                    out.append(0.0)
                    continue
                step = logits[i, len(p) - 1 : len(p) - 1 + len(a)].float()  # position t predicts token t + 1
                logp = torch.log_softmax(step, dim=-1)
                out.append(float(-(logp.exp() * logp).sum(-1).mean()))
            del logits
        return out

