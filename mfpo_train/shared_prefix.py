"""Score y_w|m and y_l|m with their shared image + prompt prefix run once, each distinct image encoded once.

Two exact methods; both give every answer token exactly the keys and positions it has in its own row, so
the log-probs equal one-row-per-sequence scoring up to float rounding, and gradients reach the prefix from
both answers.

* **Key/value cache** (default): forward A runs the y_w|m and y_w|m' rows (2N image-text rows, the shape of
  DPO's batch: m and m' each encoded once) with the cache on; forward B runs only the N rejected answers, at
  positions P.., attending (4D mask) to the first P cached keys/values of their pair's y_w|m row (the prompt)
  and causally to themselves. y_l's first token is predicted from the prompt's last position in forward A.
  Cost: the DPO batch plus N answers, nothing padded to a longer row.
* **Packed rows** (when the cache cannot be used: gradient checkpointing recomputes layers, which would write
  the cache twice): pair i becomes one row `[p, w, l]` with positions 0..P+A-1, then P..P+B-1 for l, and a
  causal mask in which l does not see w; a second forward runs the y_w|m' rows. Attention runs over the
  longer packed row, so it costs more than the cache on long answers.

Exact for a family when its language model takes a custom 4D attention mask and explicit `position_ids` (plain
RoPE decoders with eager or SDPA attention) and its image inputs have one entry per row: `SUPPORTED`. The Qwen2-VL
family (Qwen2-VL, Qwen2.5-VL) places tokens with 3D rope positions (temporal, height, width) and flattens the
patches of all images into one `pixel_values`: each row's positions are the model's own `get_rope_index` of that
row (for y_l's tokens: of the rejected row, so they continue its prompt as they do there), and a row's patches are
found through `image_grid_thw` (one image per row). Gemma 3's bidirectional image attention, InternVL's tiles
(several per image) and flash-attention (which ignores a 4D mask) are not covered; those batches are scored one row
per sequence (`scoring.sequence_logps`), logged once.
Two forwards before one backward is fine for DDP with `find_unused_parameters=False` (accelerate's default).
"""

from __future__ import annotations

import torch

from mfpo_train.scoring import (
    DEFAULT_CHUNK_SIZE,
    accepts,
    answer_positions,
    final_hidden_states,
    hidden_path_available,
    log_once,
    model_inputs,
    score_positions,
    sum_token_logps,
    transformers_model,
)


# model_type of the vision-language model -> model_types of its language model the packing is exact for
# (each pair covered by tests/train/test_shared_prefix.py).
SUPPORTED = {"llava": {"llama", "mistral", "qwen2"}, "idefics3": {"llama", "mistral"},
             "qwen2_vl": {"qwen2_vl_text"}, "qwen2_5_vl": {"qwen2_5_vl_text"}}
MROPE = ("qwen2_vl", "qwen2_5_vl")  # 3D rope positions from the model's get_rope_index
_ATTENTION = ("sdpa", "eager")
# True: packed rows even where the cache could be used (benchmarks/train_step.py compares the two methods).
PREFER_PACKED = False
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
    n = batch["input_ids"].shape[0] // len(sequences)
    cache_reason = _cache_reason(model, chunk_size)
    if cache_reason is None:
        flat = cached_prefix_logps(model, batch, sequences, n, chunk_size)
        if flat is not None:
            log_once(name, "shared prefix: y_l|m continues from the key/value cache of y_w|m's prompt; one vision "
                           "encoding per distinct image")
            return flat
        cache_reason = "the model returned no per-layer key/value cache"
    log_once(name, "shared prefix: packed [prompt, y_w, y_l] rows (no cache: %s); one vision encoding per distinct "
                   "image", cache_reason)
    return packed_logps(model, batch, sequences, n, chunk_size)


def packed_logps(model, batch: dict, sequences: tuple[str, ...], n: int, chunk_size: int) -> torch.Tensor:
    """The packed-row method: a forward over the n `[p, w, l]` rows, one over the n y_w|m' rows."""
    out = []
    device = batch["input_ids"].device
    rope = rope_positions(model, batch, torch.arange(2 * n, device=device))  # y_w|m and y_l|m rows: (3, 2n, L)
    packed, plan = pack_pairs(batch, n, _attention_kind(model), _mask_dtype(model), rope=rope)
    flat = score_positions(model, packed, *plan, out_size=2 * n, chunk_size=chunk_size,
                           fallback=lambda: _logits_at(model, packed, *plan, out_size=2 * n))
    out.append(flat)
    if "perturbed" in sequences:
        inputs = take_rows(batch, torch.arange(2 * n, 3 * n, device=device))
        r, s = answer_positions(batch["completion_mask"][2 * n : 3 * n])
        t = inputs["input_ids"][r, s + 1]
        out.append(score_positions(model, inputs, r, s, t, r, n, chunk_size,
                                   fallback=lambda: _logits_at(model, inputs, r, s, t, r, out_size=n)))
    return torch.cat(out)


def _cache_reason(model, chunk_size: int) -> str | None:
    base = transformers_model(model)
    if PREFER_PACKED:
        return "packed rows preferred"
    if chunk_size <= 0 or not hidden_path_available(model):
        return "scoring from full logits"
    flag = "is_activation_checkpointing" if hasattr(type(base), "is_activation_checkpointing") else "is_gradient_checkpointing"
    if getattr(base, flag, False) and base.training:  # a recomputed layer would write its keys into the cache twice
        return "gradient checkpointing turns the cache off"
    if _cache_argument(model) is None:
        return "the forward takes no cache"
    return None


def _cache_argument(model) -> str | None:
    return next((a for a in ("cache", "past_key_values") if accepts(model, a)), None)


def cached_prefix_logps(model, batch: dict, sequences: tuple[str, ...], n: int, chunk_size: int):
    """The cache method: forward A over the y_w|m and y_w|m' rows (the image-text rows, 2n, like DPO's batch),
    then forward B over the n rejected answers alone, attending to the prompt's keys/values from forward A.

    Forward B's tokens see exactly their own row's keys (the prompt, then their answer so far) at their own
    positions; gradients flow into the prompt through the cached keys and values. None: no usable cache.
    """
    ids, am, cm = batch["input_ids"], batch["attention_mask"].bool(), batch["completion_mask"].bool()
    device = ids.device
    blocks = [slice(0, n)] + ([slice(2 * n, 3 * n)] if "perturbed" in sequences else [])
    length = int(torch.cat([am[b] for b in blocks]).sum(-1).max())
    prompt = (am & ~cm).sum(-1)[n : 2 * n]  # the rejected rows' prompt lengths (= the chosen rows')
    answer = cm.sum(-1)[n : 2 * n]
    p_max, b_max = int(prompt.max()), int(answer.max())
    has_answer = (answer > 0).nonzero(as_tuple=True)[0]
    # Without grad nothing is kept for a backward: one block per forward halves the transient memory.
    groups = [blocks] if torch.is_grad_enabled() else [[b] for b in blocks]
    hidden, targets, out_index, cache = [], [], [], None
    for g, group in enumerate(groups):  # forward A; the first group holds the y_w|m rows, whose cache y_l reuses
        inputs_a = _select_rows(batch, group, length)
        hidden_a, cache_a = final_hidden_states(model, inputs_a, use_cache=g == 0)
        if hidden_a is None:
            return None
        rows_a, src_a = answer_positions(torch.cat([cm[b][:, :length] for b in group]))
        starts = torch.tensor([b.start for b in group], device=device)  # block k's outputs start where its rows do
        hidden.append(hidden_a[rows_a, src_a])
        targets.append(inputs_a["input_ids"][rows_a, src_a + 1])
        out_index.append(starts[rows_a // n] + rows_a % n)
        if g == 0:  # y_l's first token is predicted from the prompt's last position
            cache = cache_a
            hidden.append(hidden_a[has_answer, prompt[has_answer] - 1])
            targets.append(ids[n + has_answer, prompt[has_answer]])
            out_index.append(n + has_answer)
    layers = getattr(cache, "layers", None)
    if not layers or any(getattr(la, "keys", None) is None for la in layers):
        return None
    if b_max > 1:  # forward B: the rejected answers after the prompt's cache
        for layer in layers:  # the chosen rows' prompt keys/values (views: no copy)
            layer.keys, layer.values = layer.keys[:n, :, :p_max], layer.values[:n, :, :p_max]
        steps = torch.arange(b_max, device=device)
        take = (prompt[:, None] + steps).clamp(max=ids.shape[1] - 1)
        valid = steps[None] < answer[:, None]
        rope = rope_positions(model, batch, torch.arange(n, 2 * n, device=device))  # the rejected rows' own
        positions = prompt[:, None] + steps if rope is None else rope.gather(2, take[None].expand(3, -1, -1))
        inputs_b = {"input_ids": torch.where(valid, ids[n:2 * n].gather(1, take), 0),
                    "position_ids": positions, _cache_argument(model): cache}
        for key, value in model_inputs(batch).items():  # per-token inputs (token types): the answer's
            if key not in _PER_TOKEN_SKIP and torch.is_tensor(value) and value.shape == ids.shape:
                inputs_b[key] = torch.where(valid, value[n:2 * n].gather(1, take), 0)
        own = steps[None, :, None] >= steps[None, None, :]  # causal within the answer
        keys_prefix = (torch.arange(p_max, device=device)[None] < prompt[:, None])[:, None, :].expand(n, b_max, p_max)
        keys_answer = (own & valid[:, None, :]) | torch.eye(b_max, dtype=torch.bool, device=device)[None]
        inputs_b["attention_mask"] = _as_mask(torch.cat([keys_prefix, keys_answer], -1)[:, None], model)
        hidden_b, _ = final_hidden_states(model, inputs_b, use_cache=True)
        if hidden_b is None:
            return None
        rows_b, src_b = answer_positions(valid.long())  # answer token j >= 1 is predicted from position j - 1
        hidden.append(hidden_b[rows_b, src_b])
        targets.append(inputs_b["input_ids"][rows_b, src_b + 1])
        out_index.append(n + rows_b)
    return sum_token_logps(model, torch.cat(hidden), torch.cat(targets), torch.cat(out_index), len(sequences) * n,
                           chunk_size)


def _select_rows(batch: dict, blocks: list[slice], length: int) -> dict:
    """Model inputs of the rows in `blocks`, per-token tensors cut to `length` positions."""
    ids = batch["input_ids"]
    index = torch.cat([torch.arange(b.start, b.stop, device=ids.device) for b in blocks])
    out = take_rows(batch, index)
    return {k: (v[:, :length] if torch.is_tensor(v) and v.dim() == 2 and v.shape[1:] == ids.shape[1:] else v)
            for k, v in out.items()}


def take_rows(batch: dict, index: torch.Tensor) -> dict:
    """The model inputs of rows `index`: row-shaped tensors indexed, and the flattened patches of the Qwen2-VL
    family (`pixel_values`, one image per row as `image_grid_thw` says) cut per row."""
    ids = batch["input_ids"]
    patches = _patch_slices(batch)
    out = {}
    for key, value in model_inputs(batch).items():
        if key == "pixel_values" and patches is not None:
            out[key] = torch.cat([value[patches[i]:patches[i + 1]] for i in index.tolist()])
        elif torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == ids.shape[0]:
            out[key] = value[index]
        else:
            out[key] = value
    return out


def _patch_slices(batch: dict) -> list[int] | None:
    """Row i's patches are pixel_values[s[i]:s[i + 1]] when the patches of all rows are flattened (one image per
    row, `image_grid_thw`); None for image inputs that have one entry per row."""
    grid, pixels = batch.get("image_grid_thw"), batch.get("pixel_values")
    if not torch.is_tensor(grid) or not torch.is_tensor(pixels) or grid.shape[0] != batch["input_ids"].shape[0]:
        return None
    counts = grid.prod(-1)
    if int(counts.sum()) != pixels.shape[0]:
        return None
    return [0, *torch.cumsum(counts, 0).tolist()]


def rope_positions(model, batch: dict, index: torch.Tensor) -> torch.Tensor | None:
    """(3, rows, L) 3D rope positions of rows `index` as the model computes them (the Qwen2-VL family), else None."""
    base = transformers_model(model)
    if base.config.model_type not in MROPE:
        return None
    rows = take_rows(batch, index)
    positions, _ = base.model.get_rope_index(rows["input_ids"], mm_token_type_ids=rows["mm_token_type_ids"],
                                             image_grid_thw=rows.get("image_grid_thw"),
                                             attention_mask=rows["attention_mask"])
    return positions.to(batch["input_ids"].device)


def _as_mask(allowed: torch.Tensor, model) -> torch.Tensor:
    """A boolean (rows, 1, q, k) mask in the attention implementation's format (eager adds it to the scores)."""
    if _attention_kind(model) == "sdpa":
        return allowed
    dtype = _mask_dtype(model)
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def _batch_reason(batch: dict, num_sequences: int) -> str | None:
    rows = batch["input_ids"].shape[0]
    shape = batch["input_ids"].shape
    if rows % num_sequences:
        return f"{rows} rows are not {num_sequences} blocks"
    patches = _patch_slices(batch)
    for key, value in model_inputs(batch).items():
        if torch.is_tensor(value) and value.dim() > 0 and value.shape != shape and value.shape[0] != rows and not (
                key == "pixel_values" and patches is not None):
            return f"the batch's {key!r} is not one entry per row"
    n = rows // num_sequences
    prompt = batch["attention_mask"].bool() & ~batch["completion_mask"].bool()
    for i in range(n):
        w, r = i, n + i  # the chosen and the rejected row of pair i
        if not torch.equal(prompt[w], prompt[r]) or not torch.equal(batch["input_ids"][w][prompt[w]],
                                                                    batch["input_ids"][r][prompt[r]]):
            return "the chosen and rejected rows of a pair have different prompts"
    chosen = take_rows(batch, torch.arange(n, device=batch["input_ids"].device))
    rejected = take_rows(batch, torch.arange(n, 2 * n, device=batch["input_ids"].device))
    for key, value in chosen.items():
        if torch.is_tensor(value) and value.dim() > 0 and value.shape[1:] != shape[1:] and not torch.equal(
                value, rejected[key]):
            return f"the chosen and rejected rows of a pair have different {key!r}"
    return None


def pack_pairs(batch: dict, n: int, attention: str = "sdpa", mask_dtype=torch.float32, rope=None):
    """The packed `[p, w, l]` rows of the first two blocks of a collated batch and their scoring plan.

    Returns (inputs, (rows, sources, targets, out_index)): model inputs for n packed rows, and for every answer
    token its packed row, the position predicting it, its id and its index in the (2n,) [chosen; rejected] output.
    `rope`: the (3, 2n, L) 3D positions of the chosen and rejected rows (the Qwen2-VL family), which the packed rows
    then take: w's from its row, l's from its own row.
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
    for key, value in take_rows(batch, torch.arange(n, device=device)).items():
        if key not in out and key not in _PER_TOKEN_SKIP and torch.is_tensor(value) and value.dim() > 0:
            out[key] = value  # image inputs: the chosen rows' (the rejected rows' are the same)
    if rope is not None:
        position_ids = position_ids[None].repeat(3, 1, 1)
        for i in range(n):
            p, a, b = prompt_lens[i], answer_lens[i], answer_lens[n + i]
            position_ids[:, i, : p + a] = rope[:, i, : p + a]
            position_ids[:, i, p + a : p + a + b] = rope[:, n + i, p : p + b]
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
