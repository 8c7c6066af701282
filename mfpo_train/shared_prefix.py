"""Score y_w|m and y_l|m from one packed row: the image + prompt prefix once, both answers continuing from it.

For pair i with prompt p (P tokens, image tokens included), chosen answer w (A tokens) and rejected answer l
(B tokens), the packed row is `[p, w, l]` with

    positions  0 .. P+A-1 for p and w,  P .. P+B-1 for l        (l continues from p, as in its own row)
    attention  causal, except that l does not see w             (a block mask, 4D)

so every token sees exactly the keys and positions it sees in its own row, and its log-prob is the same up
to float rounding; gradients flow into the shared prefix from both answers. The first token of l is
predicted from the prompt's last position, like the first token of w. The packed rows carry the pair's image
once, so the vision tower encodes m once (instead of twice) and, in the second forward over the y_w|m'
rows, m' once. Two forwards instead of one padded batch: a packed row is longer than a y_w|m' row by a whole
answer, and padding the y_w|m' rows to it would cost more than the prefix saves on long answers.

Exact for a family when its language model takes a custom 4D attention mask and 1D `position_ids` (plain
RoPE decoders with eager or SDPA attention) and its image inputs have one entry per row: `SUPPORTED`.
Qwen2-VL's 3D rope positions, Gemma 3's bidirectional image attention and flash-attention (which ignores a
4D mask) are not; those batches are scored one row per sequence (`scoring.sequence_logps`), logged once.
"""

from __future__ import annotations

import torch

from mfpo_train.scoring import (
    DEFAULT_CHUNK_SIZE,
    answer_positions,
    log_once,
    model_inputs,
    score_positions,
    transformers_model,
)


# model_type of the vision-language model -> model_types of its language model the packing is exact for
# (each pair covered by tests/train/test_shared_prefix.py).
SUPPORTED = {"llava": {"llama", "mistral", "qwen2"}, "idefics3": {"llama", "mistral"}}
_ATTENTION = ("sdpa", "eager")
_PER_TOKEN_SKIP = ("input_ids", "attention_mask", "completion_mask")


def unsupported_reason(model) -> str | None:
    """Why the model family cannot use packed rows (None: it can)."""
    config = transformers_model(model).config
    text = config.get_text_config()
    if config.model_type not in SUPPORTED:
        return f"model type {config.model_type!r} is not one the packed rows are exact for"
    if text.model_type not in SUPPORTED[config.model_type]:
        return f"language model type {text.model_type!r} is not one the packed rows are exact for"
    attn = getattr(text, "_attn_implementation", None) or getattr(config, "_attn_implementation", None)
    if attn not in _ATTENTION:
        return f"attention {attn!r} ignores a 4D mask (sdpa or eager needed)"
    if getattr(text, "sliding_window", None) and getattr(text, "use_sliding_window", True):
        return "a sliding window is not expressed in the packed mask"
    return None


def shared_prefix_logps(model, batch: dict, sequences: tuple[str, ...],
                        chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor | None:
    """(S*N,) summed answer log-probs in collator block order, or None when this batch cannot be packed."""
    name = type(transformers_model(model)).__name__
    if "chosen" not in sequences or "rejected" not in sequences:
        return None  # nothing shared
    reason = unsupported_reason(model) or _batch_reason(batch, len(sequences))
    if reason:
        log_once(name, "one row per sequence (%s)", reason)
        return None
    log_once(name, "shared prefix for y_w|m and y_l|m, one vision encoding per distinct image")
    n = batch["input_ids"].shape[0] // len(sequences)
    out = []
    packed, plan = pack_pairs(batch, n, _attention_kind(model), _mask_dtype(model))
    flat = score_positions(model, packed, *plan, out_size=2 * n, chunk_size=chunk_size,
                           fallback=lambda: _logits_at(model, packed, *plan, out_size=2 * n))
    out.append(flat)
    if "perturbed" in sequences:
        rows = slice(2 * n, 3 * n)
        perturbed = {k: (v[rows] if torch.is_tensor(v) and v.dim() > 0 else v) for k, v in batch.items()}
        r, s = answer_positions(perturbed["completion_mask"])
        t = perturbed["input_ids"][r, s + 1]
        inputs = model_inputs(perturbed)
        out.append(score_positions(model, inputs, r, s, t, r, n, chunk_size,
                                   fallback=lambda: _logits_at(model, inputs, r, s, t, r, out_size=n)))
    return torch.cat(out)


def _batch_reason(batch: dict, num_sequences: int) -> str | None:
    rows = batch["input_ids"].shape[0]
    shape = batch["input_ids"].shape
    if rows % num_sequences:
        return f"{rows} rows are not {num_sequences} blocks"
    for key, value in model_inputs(batch).items():
        if torch.is_tensor(value) and value.dim() > 0 and value.shape != shape and value.shape[0] != rows:
            return f"the batch's {key!r} is not one entry per row"
    n = rows // num_sequences
    prompt = batch["attention_mask"].bool() & ~batch["completion_mask"].bool()
    for i in range(n):
        w, r = i, n + i  # the chosen and the rejected row of pair i
        if not torch.equal(prompt[w], prompt[r]) or not torch.equal(batch["input_ids"][w][prompt[w]],
                                                                    batch["input_ids"][r][prompt[r]]):
            return "the chosen and rejected rows of a pair have different prompts"
    for key, value in model_inputs(batch).items():
        if torch.is_tensor(value) and value.dim() > 0 and value.shape != shape and not torch.equal(
                value[:n], value[n : 2 * n]):
            return f"the chosen and rejected rows of a pair have different {key!r}"
    return None


def pack_pairs(batch: dict, n: int, attention: str = "sdpa", mask_dtype=torch.float32):
    """The packed `[p, w, l]` rows of the first two blocks of a collated batch and their scoring plan.

    Returns (inputs, (rows, sources, targets, out_index)): model inputs for n packed rows, and for every answer
    token its packed row, the position predicting it, its id and its index in the (2n,) [chosen; rejected] output.
    """
    ids, am, cm = batch["input_ids"], batch["attention_mask"].bool(), batch["completion_mask"].bool()
    per_token = [k for k, v in model_inputs(batch).items()
                 if k not in _PER_TOKEN_SKIP and torch.is_tensor(v) and v.shape == ids.shape]
    prompt_lens = (am & ~cm).sum(-1).tolist()
    answer_lens = cm.sum(-1).tolist()
    lengths = [prompt_lens[i] + answer_lens[i] + answer_lens[n + i] for i in range(n)]
    length, device = max(lengths), ids.device
    out = {"input_ids": ids.new_zeros((n, length))}  # padding: never a key, never scored
    out.update({k: batch[k].new_zeros((n, length)) for k in per_token})
    position_ids = torch.zeros((n, length), dtype=torch.long, device=device)
    allowed = torch.zeros((n, length, length), dtype=torch.bool, device=device)
    causal = torch.ones((length, length), dtype=torch.bool, device=device).tril()
    rows, sources, target_pos, out_index = [], [], [], []
    for i in range(n):
        p, a, b = prompt_lens[i], answer_lens[i], answer_lens[n + i]
        out["input_ids"][i, : p + a] = ids[i, : p + a]
        out["input_ids"][i, p + a : p + a + b] = ids[n + i, p : p + b]
        for k in per_token:
            out[k][i, : p + a] = batch[k][i, : p + a]
            out[k][i, p + a : p + a + b] = batch[k][n + i, p : p + b]
        position_ids[i, : p + a] = torch.arange(p + a, device=device)
        position_ids[i, p + a : p + a + b] = torch.arange(p, p + b, device=device)
        position_ids[i, p + a + b :] = torch.arange(p + a + b, length, device=device)
        allowed[i] = causal
        allowed[i, p + a : p + a + b, p : p + a] = False  # l does not see w
        allowed[i, :, p + a + b :] = False  # padding is no key ...
        allowed[i].diagonal().fill_(True)  # ... but padding queries see themselves (no all-masked row, no NaN)
        # w's tokens are predicted from the position before each; l's first token from the prompt's last position
        src = torch.cat([torch.arange(p - 1, p + a - 1), torch.tensor([p - 1]), torch.arange(p + a, p + a + b - 1)])
        rows.append(torch.full((a + b,), i))
        sources.append(src[: a + b])
        target_pos.append(torch.arange(p, p + a + b))
        out_index.append(torch.cat([torch.full((a,), i), torch.full((b,), n + i)]))
    for key, value in model_inputs(batch).items():
        if key not in out and key not in _PER_TOKEN_SKIP and torch.is_tensor(value) and value.dim() > 0:
            out[key] = value[:n]  # image inputs: the chosen rows' (the rejected rows' are the same)
    out["position_ids"] = position_ids
    mask = allowed[:, None]
    if attention != "sdpa":  # eager adds the mask to the scores
        mask = torch.zeros(mask.shape, dtype=mask_dtype, device=device).masked_fill(~mask, torch.finfo(mask_dtype).min)
    out["attention_mask"] = mask
    rows, sources, target_pos, out_index = (torch.cat(x).to(device) for x in (rows, sources, target_pos, out_index))
    return out, (rows, sources, out["input_ids"][rows, target_pos], out_index)


def _logits_at(model, inputs, rows, sources, targets, out_index, out_size: int) -> torch.Tensor:
    """`score_positions` from the model's full logits (families whose logits are not lm_head(hidden))."""
    from mfpo_train.scoring import selective_log_softmax

    logits = model(**inputs, use_cache=False).logits
    lp = selective_log_softmax(logits[rows, sources][None], targets[None])[0].float()
    return lp.new_zeros(out_size).index_add(0, out_index, lp)


def _attention_kind(model) -> str:
    config = transformers_model(model).config
    return getattr(config.get_text_config(), "_attn_implementation", None) or config._attn_implementation


def _mask_dtype(model):
    return transformers_model(model).get_input_embeddings().weight.dtype
