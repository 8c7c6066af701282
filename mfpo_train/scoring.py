"""Summed answer log-probs of a collated batch: the fast paths and today's path they must equal.

Two independent savings, each with a switch (`train.shared_prefix`, `train.logps_chunk_size`):

* **Chunked LM head.** The model's own forward gives the last layer's hidden states (a hook on the decoder's
  final norm, `logits_to_keep=1`, so its LM head runs on one position per row); only the
  hidden states that predict an answer token are gathered, and the LM head + log-softmax run on them
  `chunk_size` tokens at a time. Each chunk is checkpointed, so the backward recomputes its logits: no
  `[rows, seq, vocab]` tensor exists, for prompt/image positions or for answers. Going through the model's
  forward (not its backbone) keeps DDP, peft and accelerate hooks in place. A family whose logits are not
  `lm_head(last hidden state)` (soft-capping, logit scaling) is detected on the first batch and falls back to
  the logits path, logged once.
* **Shared prefix** (`mfpo_train.shared_prefix`): y_l|m continues from y_w|m's prompt (its key/value cache,
  or one packed row), so the image + prompt prefix is run once and the vision tower encodes each distinct
  image once. Families without it fall back to one row per sequence, logged once.

`logits_sequence_logps` is today's path, unchanged: the reference the fast paths are tested against.
"""

from __future__ import annotations

import inspect
import logging

import torch
from torch.utils.checkpoint import checkpoint

from mfpo_train.collator import NON_MODEL_KEYS


logger = logging.getLogger(__name__)

# Answer tokens per LM-head chunk: at a 32k vocabulary, 1024 tokens are 128 MiB of float32 logits.
DEFAULT_CHUNK_SIZE = 1024
_logged: set[tuple[str, str]] = set()
_no_hidden_path: set[type] = set()  # families whose logits are not lm_head(hidden_states[-1])


def model_inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k not in NON_MODEL_KEYS}


def log_once(family: str, message: str, *args) -> None:
    """Log `message` at INFO the first time it is said about `family` in this process."""
    if (family, message) not in _logged:
        _logged.add((family, message))
        logger.info("%s: " + message, family, *args)


def transformers_model(model):
    """The transformers model under DDP (`.module`) and peft (`get_base_model()`)."""
    base = getattr(model, "module", model)
    if callable(getattr(base, "get_base_model", None)):
        base = base.get_base_model()
    return base


def family(model) -> str:
    return type(transformers_model(model)).__name__


def accepts(model, name: str) -> bool:
    """Whether the underlying transformers model's forward takes `name` (looking through DDP and peft)."""
    return name in inspect.signature(transformers_model(model).forward).parameters


# -- token selection ----------------------------------------------------------------------------------
def answer_positions(completion_mask: torch.Tensor):
    """(rows, sources) of every answer token's predicting position (the position before it), row-major."""
    rows, targets = completion_mask[:, 1:].nonzero(as_tuple=True)
    return rows, targets  # targets index input_ids[:, 1:], i.e. they are the source positions


def sequence_logps(model, batch: dict, chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """Summed log-probs of the answer tokens (`completion_mask`) of every row: (rows,), float32.

    One row per sequence. `chunk_size` > 0: chunked LM head on the answer positions (module docstring);
    0: `logits_sequence_logps`. With `token_weights` in the batch ((rows, L), the collator's
    `token_weighting`), each token's log-prob is multiplied by its weight before the sum.
    """
    input_ids, completion_mask = batch["input_ids"], batch["completion_mask"]
    rows, sources = answer_positions(completion_mask)
    targets = input_ids[rows, sources + 1]
    weights = batch.get("token_weights")
    return score_positions(model, model_inputs(batch), rows, sources, targets, rows, input_ids.shape[0], chunk_size,
                           fallback=lambda: logits_sequence_logps(model, batch),
                           weights=None if weights is None else weights[rows, sources + 1])


def score_positions(model, inputs: dict, rows, sources, targets, out_index, out_size: int, chunk_size: int,
                    fallback, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Forward `inputs`; sum log p(targets[k] | position sources[k] of row rows[k]) into `out[out_index[k]]`
    (each times `weights[k]` when given).

    `fallback()` computes the same (out_size,) values another way, for families without the hidden-state path.
    """
    hidden, _ = final_hidden_states(model, inputs) if chunk_size > 0 else (None, None)
    if hidden is None:
        return fallback()
    return sum_token_logps(model, hidden[rows, sources], targets, out_index, out_size, chunk_size, weights)


def sum_token_logps(model, hidden: torch.Tensor, targets, out_index, out_size: int, chunk_size: int,
                    weights: torch.Tensor | None = None) -> torch.Tensor:
    """(out_size,) sums of log p(targets[k] | hidden[k]) (times `weights[k]`) over the k with out_index[k] = each output."""
    head = transformers_model(model).get_output_embeddings()
    token_logps = chunked_token_logps(head, hidden, targets, chunk_size)
    if weights is not None:
        token_logps = token_logps * weights.to(token_logps.dtype)
    return token_logps.new_zeros(out_size).index_add(0, out_index, token_logps)


def hidden_path_available(model) -> bool:
    base = transformers_model(model)
    head = base.get_output_embeddings()
    if head is not None and any(hasattr(p, "ds_id") for p in head.parameters()):
        # DeepSpeed ZeRO-3 partitions the head's weight; it is whole only inside the model's own forward
        log_once(type(base).__name__, "the LM head is partitioned (DeepSpeed ZeRO-3); scoring from full logits")
        return False
    return type(base) not in _no_hidden_path and accepts(model, "logits_to_keep") and head is not None


def final_hidden_states(model, inputs: dict, use_cache: bool = False):
    """(hidden, cache): the last layer's hidden states (rows, L, H) that the LM head reads, and the model's key/value
    cache when `use_cache`; hidden is None where the family cannot give them (the caller scores another way).

    Read by a forward hook on the decoder's final norm where there is one (nothing else is kept: without grad,
    `output_hidden_states` would hold every layer's states until the forward returns), else from
    `output_hidden_states`.
    """
    if not hidden_path_available(model):
        return None, None
    base = transformers_model(model)
    norm = getattr(base.get_decoder(), "norm", None) if callable(getattr(base, "get_decoder", None)) else None
    seen = []
    kwargs = dict(use_cache=use_cache, logits_to_keep=1)
    if isinstance(norm, torch.nn.Module):
        handle = norm.register_forward_hook(lambda module, args, output: seen.append(output))
        try:
            out = model(**inputs, **kwargs)
        finally:
            handle.remove()
        hidden = seen[-1] if len(seen) == 1 else None
    else:
        out = model(**inputs, output_hidden_states=True, **kwargs)
        hidden = out.hidden_states[-1] if out.hidden_states else None
    # The model's own logits at the last position must be the LM head of the last hidden state.
    ok = (torch.is_tensor(hidden) and hidden.shape[:2] == inputs["input_ids"].shape and out.logits.shape[1] == 1
          and torch.allclose(base.get_output_embeddings()(hidden[:, -1:].detach()).float(), out.logits.float(),
                             atol=1e-4, rtol=1e-3))
    if not ok:
        _no_hidden_path.add(type(base))
        log_once(type(base).__name__, "logits are not lm_head(last hidden state); scoring from full logits")
        return None, None
    cache = None
    if use_cache:
        cache = out.cache if getattr(out, "cache", None) is not None else getattr(out, "past_key_values", None)
    return hidden, cache


def chunked_token_logps(head, hidden: torch.Tensor, targets: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """log_softmax(head(hidden))[targets] for (T, H) hidden states, `chunk_size` tokens at a time: (T,) float32.

    With grad, each chunk is checkpointed: only its (chunk_size, vocab) logits exist at any time, in the forward
    and again in the backward (one extra LM-head matmul per answer token).
    """
    grad = torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in head.parameters()))
    parts = []
    for h, t in zip(hidden.split(chunk_size), targets.split(chunk_size), strict=True):
        parts.append(checkpoint(_head_logps, head, h, t, use_reentrant=False) if grad else _head_logps(head, h, t))
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


def _head_logps(head, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)


# -- today's path: logits from the first answer position of the batch -----------------------------------
def logits_sequence_logps(model, batch: dict) -> torch.Tensor:
    """Summed answer log-probs from the model's logits: (rows,), float32.

    Logits are computed only from the first answer position on (`logits_to_keep`) when the model
    supports it: with hundreds of image tokens in the prompt this saves most of the LM-head memory.
    """
    inputs = model_inputs(batch)
    input_ids, completion_mask = batch["input_ids"], batch["completion_mask"]
    length = input_ids.shape[1]
    first = int(completion_mask.float().argmax(-1).min())  # first answer position in the batch
    keep = length - first + 1  # logits at positions [first - 1, length - 1]
    if 0 < keep < length and accepts(model, "logits_to_keep"):
        inputs["logits_to_keep"] = keep
    logits = model(**inputs, use_cache=False).logits
    start = length - logits.shape[1]  # position of logits[:, 0]
    logits = logits[:, :-1]
    targets = input_ids[:, start + 1 :]
    mask = completion_mask[:, start + 1 :].to(logits.dtype if logits.is_floating_point() else torch.float32)
    if batch.get("token_weights") is not None:
        mask = mask * batch["token_weights"][:, start + 1 :].to(mask.dtype)
    token_logps = selective_log_softmax(logits, targets)
    return (token_logps * mask).sum(-1).float()


def selective_log_softmax(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits)[..., index] without materialising the full log-softmax in float32.

    float32/float64: gather minus logsumexp. Half precision: row by row in float32 (logsumexp in bf16
    loses too much precision, and a full float32 copy of the logits is the largest tensor of the step).
    """
    if logits.dtype in (torch.float32, torch.float64):
        picked = torch.gather(logits, -1, index.unsqueeze(-1)).squeeze(-1)
        return picked - torch.logsumexp(logits, dim=-1)
    rows = []
    for row_logits, row_index in zip(logits, index, strict=True):
        lp = torch.log_softmax(row_logits.float(), dim=-1)
        rows.append(lp.gather(-1, row_index.unsqueeze(-1)).squeeze(-1))
    return torch.stack(rows)
