"""Turn mfpo rows into one model batch holding the three sequences of every preference pair.

Prompts go through the model's own processor and chat template (so image tokens are expanded the
way the model expects); answers are the chat template's rendering of the assistant turn, tokenised
without special tokens and appended to the prompt, as TRL's vision collator does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from mfpo_data.chat import split_answer
from mfpo_train.data import REF_COLUMNS
from mfpo_train.losses import reliance_weights


logger = logging.getLogger(__name__)

# Batch keys that are not model inputs.
NON_MODEL_KEYS = ("completion_mask", "ref_logps", "num_dropped", "num_pairs", "kept", "image_pair_mask", "token_weights")
SEQUENCES = ("chosen", "rejected", "perturbed")


@dataclass
class MFPOCollator:
    """Collate mfpo rows into `[chosen|m ; rejected|m ; chosen|m']` blocks along the batch axis.

    Input: rows with `images` (list with the original image), `rejected_images` (the perturbed image),
    `prompt`, `chosen`, `rejected` (TRL conversational format) and, optionally, the precomputed
    `ref_*_logps` columns.

    Output, for N kept rows and S = len(sequences) (3 for MFPO; 2 for plain DPO or mDPO without L_text):
      * `input_ids`, `attention_mask`, `completion_mask`: (S*N, L), right-padded. Rows [k*N, (k+1)*N)
        hold sequence `sequences[k]`: chosen answer on the original image, rejected answer on the
        original image, chosen answer on the perturbed image.
      * the processor's image inputs for those S*N rows (`pixel_values`, and per model `image_sizes`,
        `pixel_attention_mask`, `image_grid_thw`, `mm_token_type_ids`, ...);
      * `ref_logps`: (S, N) float32, only when every row carries precomputed reference log-probs;
      * `image_pair_mask`: (N,) float32, 1 where the row's image pair is valid for `L_image`, 0 where
        `image_pair_valid` is false (rows without the column count as valid);
      * with `token_weighting`, `token_weights`: (S*N, L) float32, each chosen-answer token's weight from the
        row's `image_reliance` column (`losses.reliance_weights`) in the chosen and perturbed blocks, 1 at the
        rejected answer's tokens; the column's token ids must be the ones the model's tokenizer gives here;
      * `kept`: the positions (in the input list) of the N rows kept;
      * `num_pairs` (N) and `num_dropped`: rows dropped because their prompt with its image tokens leaves
        no room for a single answer token within `max_length`.

    Truncation only ever cuts answer tokens (from the end), never prompt or image tokens.
    """

    processor: Any
    max_length: int | None = None
    sequences: tuple[str, ...] = SEQUENCES
    token_weighting: bool = False

    def __post_init__(self):
        unknown = [s for s in self.sequences if s not in SEQUENCES]
        if unknown or "chosen" not in self.sequences:
            raise ValueError(f"sequences must include 'chosen' and only use {SEQUENCES}, got {self.sequences}")
        self.sequences = tuple(s for s in SEQUENCES if s in self.sequences)  # fixed block order
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)

    # -- text rendering ------------------------------------------------------------------------
    def render(self, row: dict) -> tuple[str, dict[str, str]]:
        """The prompt text (with the generation prompt) and each answer's text as the template renders it."""
        answers = {}
        for col in ("chosen", "rejected"):
            prompt_text, answers[col] = split_answer(self.processor, row["prompt"], row[col], row.get("id"))
        return prompt_text, answers

    # -- collation -----------------------------------------------------------------------------
    def __call__(self, rows: list[dict]) -> dict[str, Any]:
        rendered = [self.render(r) for r in rows]
        enc = self._encode_prompts(rows, rendered)
        prompt_lens = enc["attention_mask"].sum(-1).view(len(self.sequences), len(rows)).amax(0)
        keep = [i for i, n in enumerate(prompt_lens.tolist()) if self.max_length is None or n < self.max_length]
        num_dropped = len(rows) - len(keep)
        if num_dropped:
            logger.warning(
                "dropped %d of %d rows: prompt with image tokens is >= max_length=%d (ids: %s)",
                num_dropped, len(rows), self.max_length, [rows[i].get("id") for i in range(len(rows)) if i not in keep],
            )
            rows, rendered = [rows[i] for i in keep], [rendered[i] for i in keep]
            if not rows:
                return {"num_pairs": 0, "num_dropped": num_dropped, "kept": []}
            enc = self._encode_prompts(rows, rendered)  # re-encode: per-image tensors cannot be sliced generically
        batch = self._append_answers(enc, rendered, rows)
        batch["num_pairs"] = len(rows)
        batch["kept"] = keep
        batch["num_dropped"] = num_dropped
        batch["image_pair_mask"] = torch.tensor([0.0 if r.get("image_pair_valid") is False else 1.0 for r in rows])
        ref = self._reference(rows)
        if ref is not None:
            batch["ref_logps"] = ref
        return batch

    def _encode_prompts(self, rows: list[dict], rendered: list[tuple[str, dict]]) -> dict[str, Any]:
        texts, images = [], []
        for seq in self.sequences:
            for row, (prompt_text, _) in zip(rows, rendered, strict=True):
                texts.append(prompt_text)
                imgs = row["rejected_images"] if seq == "perturbed" else row["images"]
                images.append([_rgb(im) for im in imgs])
        return self.processor(text=texts, images=images, padding=True, return_tensors="pt")

    def _append_answers(self, enc: dict[str, Any], rendered: list[tuple[str, dict]], rows: list[dict]) -> dict[str, Any]:
        answers = [rendered[i][1]["rejected" if seq == "rejected" else "chosen"]
                   for seq in self.sequences for i in range(len(rendered))]
        answer_ids = self.tokenizer(answers, add_special_tokens=False)["input_ids"]
        prompt_mask = enc["attention_mask"].bool()
        per_token = [k for k, v in enc.items()
                     if k not in ("input_ids", "attention_mask") and torch.is_tensor(v) and v.shape == prompt_mask.shape]
        seqs, extras = [], {k: [] for k in per_token}
        for j, answer in enumerate(answer_ids):
            prompt = enc["input_ids"][j][prompt_mask[j]]
            if self.max_length is not None:
                answer = answer[: self.max_length - len(prompt)]
            seqs.append((prompt, torch.tensor(answer, dtype=prompt.dtype)))
            for k in per_token:
                extras[k].append(enc[k][j][prompt_mask[j]])
        length = max(len(p) + len(a) for p, a in seqs)
        n = len(seqs)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((n, length), pad_id, dtype=enc["input_ids"].dtype)
        attention_mask = torch.zeros((n, length), dtype=torch.long)
        completion_mask = torch.zeros((n, length), dtype=torch.long)
        out_extras = {k: torch.zeros((n, length), dtype=enc[k].dtype) for k in per_token}
        for j, (p, a) in enumerate(seqs):
            input_ids[j, : len(p)] = p
            input_ids[j, len(p) : len(p) + len(a)] = a
            attention_mask[j, : len(p) + len(a)] = 1
            completion_mask[j, len(p) : len(p) + len(a)] = 1
            for k in per_token:  # e.g. token_type_ids / mm_token_type_ids: answer tokens are text (0)
                out_extras[k][j, : len(p)] = extras[k][j]
        batch = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask") and k not in per_token}
        batch.update(input_ids=input_ids, attention_mask=attention_mask, completion_mask=completion_mask, **out_extras)
        if self.token_weighting:
            batch["token_weights"] = self._token_weights(rows, seqs, length)
        return batch

    def _token_weights(self, rows: list[dict], seqs: list[tuple], length: int) -> torch.Tensor:
        """(S*N, L) weights: the chosen answer's reliance weights on its tokens in the chosen and perturbed blocks."""
        weights = torch.ones((len(seqs), length), dtype=torch.float32)
        n = len(rows)
        for k, seq in enumerate(self.sequences):
            if seq == "rejected":
                continue
            for i, row in enumerate(rows):
                prompt, answer = seqs[k * n + i]
                reliance = row.get("image_reliance")
                if not reliance or not reliance.get("values"):
                    raise ValueError(f"loss.token_weighting: image_reliance, but row {row.get('id')!r} has no image_reliance "
                                     "(build the data with the `reliance` stage)")
                tokens = list(reliance["token_ids"])[: len(answer)]
                if tokens != answer.tolist():
                    raise ValueError(f"row {row.get('id')!r}: image_reliance was computed with other tokens than this "
                                     f"model's ({reliance.get('model_id')}); rebuild it with the model you train")
                values = reliance_weights(reliance["values"][: len(answer)])
                weights[k * n + i, len(prompt) : len(prompt) + len(answer)] = torch.tensor(values, dtype=torch.float32)
        return weights

    def _reference(self, rows: list[dict]) -> torch.Tensor | None:
        cols = [REF_COLUMNS[s] for s in self.sequences]
        if not all(c in rows[0] for c in cols):
            return None
        values = [[row[c] for row in rows] for c in cols]
        if any(v is None for vs in values for v in vs):
            return None
        return torch.tensor(values, dtype=torch.float32)


def _rgb(image):
    return image.convert("RGB") if getattr(image, "mode", "RGB") != "RGB" else image
