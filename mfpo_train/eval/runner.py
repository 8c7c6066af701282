"""Generate answers with any image-text-to-text model (+ a LoRA adapter): batched greedy, resumable.

    model, processor = load_for_eval("llava-hf/llava-1.5-7b-hf", adapter="runs/mfpo/final")
    answers = generate_answers(model, processor, items, "OUT/model/pope-random.answers.jsonl",
                               settings=settings, batch_size=8, max_new_tokens=16)

An item is `{"key": str, "image": PIL image | path, "prompt": str}` plus any fields to carry into the
answers file (`image_id`, `question_id`, ...). Prompts go through the model's chat template as one
user turn `[image, text]`; decoding is greedy with the tokenizer padded on the left, so a batch gives
the answers batch size 1 gives. Each batch's answers are appended to the JSONL and flushed as soon as
they exist; a rerun skips the items already written (a torn last line from a killed run is cut off).
The settings that decide the answers (model, adapter, decoding, prompts) are written beside the file
on the first run; a rerun with other settings into the same folder is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mfpo_data.folders import sha256_file
from mfpo_train.eval.outdir import SETTINGS_FILE, EvalError, check_settings  # noqa: F401 (the runner's API)


logger = logging.getLogger(__name__)

# -- loading ------------------------------------------------------------------------------------------
def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_for_eval(model: str | Path | None, adapter: str | Path | None = None, *, merge: bool = False,
                  dtype: str = "auto", device: str = "auto", revision: str | None = None,
                  trust_remote_code: bool = False, attn_implementation: str | None = None):
    """(model, processor) in eval mode on `device`, with a PEFT adapter folder applied (unmerged unless `merge`).

    `model` may be left out when `adapter` is given: the adapter's `base_model_name_or_path` is used.
    `dtype="auto"`: the checkpoint's dtype on GPU, float32 on CPU (half precision is slow or missing there).
    """
    from mfpo_train.config import ModelConfig
    from mfpo_train.model import load_model_and_processor

    if adapter is not None:
        adapter = Path(adapter)
        base = adapter_base_model(adapter)  # also checks the folder before any model is loaded
        model = model or base
    if not model:
        raise EvalError("--model is required (a Hub id or a local folder)")
    device = resolve_device(device)
    if dtype == "auto" and device == "cpu":
        dtype = "float32"
    cfg = ModelConfig(name_or_path=str(model), revision=revision, dtype=dtype, trust_remote_code=trust_remote_code,
                      attn_implementation=attn_implementation)
    try:
        net, processor = load_model_and_processor(cfg)
    except (OSError, ValueError) as e:  # missing folder / unknown Hub id / not an image-text-to-text model
        raise EvalError(f"cannot load model {model}: {str(e).strip().splitlines()[0]}") from e
    if adapter is not None:
        from peft import PeftModel

        net = PeftModel.from_pretrained(net, str(adapter), is_trainable=False)
        if merge:
            net = net.merge_and_unload()
    net.to(device).eval().requires_grad_(False)
    return net, processor


def adapter_base_model(adapter: str | Path) -> str | None:
    """The base model an adapter folder names (`base_model_name_or_path` of its adapter_config.json), or None."""
    from mfpo_train.eval.io import read_json, shown

    config = Path(adapter) / "adapter_config.json"
    if not config.is_file():
        raise EvalError(f"--adapter {shown(adapter)}: no adapter_config.json there (mfpo-train writes OUT/final/)")
    data = read_json(config, "adapter config")
    base = data.get("base_model_name_or_path") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(base, str | None):
        raise EvalError(f"{shown(config)}: not a PEFT adapter config (a JSON object with a text "
                        "base_model_name_or_path)")
    return base


def describe_model(model: str | Path | None, adapter: str | Path | None, revision: str | None = None) -> dict:
    """What identifies the weights: id or folder, revision, and the adapter file's sha256 (folders change)."""
    out: dict[str, Any] = {"model": str(model) if model else None, "revision": revision,
                           "adapter": str(adapter) if adapter else None}
    if adapter is not None:
        weights = Path(adapter) / "adapter_model.safetensors"
        out["adapter_sha256"] = sha256_file(weights) if weights.is_file() else None
    return out


# -- prompts ------------------------------------------------------------------------------------------
def user_messages(prompt: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


def render_prompt(processor, prompt: str) -> str:
    """The model's chat template applied to one user turn [image, prompt], with the generation prompt."""
    renderer = processor if getattr(processor, "chat_template", None) else processor.tokenizer
    return renderer.apply_chat_template(user_messages(prompt), tokenize=False, add_generation_prompt=True)


def _image(item: dict):
    from PIL import Image

    img = item["image"]
    if not isinstance(img, Image.Image):
        with Image.open(img) as f:
            img = f.convert("RGB")
    return img.convert("RGB") if img.mode != "RGB" else img


# -- generation ---------------------------------------------------------------------------------------
def to_model(batch: dict, model) -> dict:
    """Tensors moved to the model's device; pixel values in the model's dtype."""
    import torch

    param = next(model.parameters())
    out = {k: v.to(param.device) if torch.is_tensor(v) else v for k, v in batch.items()}
    if torch.is_tensor(out.get("pixel_values")) and out["pixel_values"].is_floating_point():
        out["pixel_values"] = out["pixel_values"].to(param.dtype)
    return out


def generate_batch(model, processor, items: Sequence[dict], max_new_tokens: int) -> list[str]:
    """Greedy answers for `items`, left-padded in one batch."""
    import torch

    tokenizer = getattr(processor, "tokenizer", processor)
    texts = [render_prompt(processor, it["prompt"]) for it in items]
    images = [[_image(it)] for it in items]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = processor(text=texts, images=images, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = side
    enc = to_model(enc, model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, pad_token_id=pad_id,
                             temperature=None, top_p=None, top_k=None)
    new = out[:, enc["input_ids"].shape[1]:]
    return [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]


def generate_answers(model, processor, items: Sequence[dict], answers_file: str | Path | None = None, *,
                     batch_size: int = 8, max_new_tokens: int = 512, desc: str = "generate",
                     progress: bool = True) -> list[dict]:
    """Answer every item; with `answers_file`, append as produced and skip the items already there.

    Returns one record per item, in item order: the item's fields except `image`, plus `prompt` and `answer`.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise EvalError(f"batch_size must be >= 1, got {batch_size}")
    keys = [str(it["key"]) for it in items]
    if len(set(keys)) != len(keys):
        raise EvalError(f"{desc}: item keys are not unique")
    done: dict[str, dict] = {}
    if answers_file is not None:
        answers_file = Path(answers_file)
        answers_file.parent.mkdir(parents=True, exist_ok=True)
        done = written_answers(items, answers_file)
    todo = [it for it in items if str(it["key"]) not in done]
    if done:
        logger.info("%s: %d of %d answers already in %s; generating the other %d", desc, len(done), len(items),
                    answers_file, len(todo))
    bar = tqdm(total=len(items), initial=len(done), unit="item", desc=desc, disable=not progress, dynamic_ncols=True)
    sink = open(answers_file, "a", encoding="utf-8") if answers_file is not None else None  # noqa: SIM115
    try:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            for item, answer in zip(batch, generate_batch(model, processor, batch, max_new_tokens), strict=True):
                record = _record(item, answer)
                done[record["key"]] = record
                if sink is not None:
                    sink.write(json.dumps(record, ensure_ascii=False) + "\n")
            if sink is not None:
                sink.flush()
                os.fsync(sink.fileno())
            bar.update(len(batch))
    finally:
        bar.close()
        if sink is not None:
            sink.close()
    return [done[k] for k in keys]


def written_answers(items: Sequence[dict], answers_file: Path) -> dict[str, dict]:
    """The records of `items` that `answers_file` holds already, by key, rebuilt from the item and the written
    answer; a damaged file is refused in one line (`read_answers`). `mfpo-eval run` calls it for every part
    before a model loads."""
    by_key = {str(it["key"]): it for it in items}
    written = read_answers(Path(answers_file), by_key, {k: it["prompt"] for k, it in by_key.items()})
    return {k: _record(by_key[k], r["answer"]) for k, r in written.items()}


def _record(item: dict, answer: str) -> dict:
    out = {k: v for k, v in item.items() if k != "image"}
    out["key"] = str(item["key"])
    out["answer"] = answer
    return out


def read_answers(path: Path, keys: Iterable[str] | None = None,
                 prompts: Mapping[str, str] | None = None) -> dict[str, dict]:
    """Answers already written to `path`, by key. A torn last line (a killed run) is cut off the file.

    The file is read by the one answers reader (`io.read_answers`): a damaged line, a key written twice or
    a key outside `keys` (the file belongs to another item set) is one line that says which line to fix or
    delete. With `prompts`, an answer written for another prompt than its item's now is refused too.
    """
    from mfpo_train.eval.io import RecordError, answer_records, shown, where

    if not path.exists():
        return {}
    if not path.is_file():
        raise EvalError(f"{shown(path)} is not a file; move it away to resume the run")
    with open(path, "rb") as f:
        data = f.read()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        logger.warning("%s: dropping a partly written last line (the previous run was interrupted)", path)
        with open(path, "r+b") as f:
            f.truncate(len(complete))
    try:
        out = {}
        for line, row in answer_records(path, "key", ids=keys, text=("answer",),
                                        benchmark="this benchmark's item set (use another --out folder for other items)"):
            if prompts is not None and "prompt" in row and row["prompt"] != prompts[row["key"]]:
                raise RecordError(f"{where(path, line)}: item {row['key']!r} was answered for another prompt "
                                  f"({_short(row['prompt'])}, now {_short(prompts[row['key']])})", path, line)
            out[row["key"]] = row
        return out
    except RecordError as e:
        fix = f"fix line {e.line}, or delete it (its item is generated again), and rerun" if e.line else "move it away"
        raise EvalError(f"{e}; this answers file is resumed by the run: {fix}") from None


def _short(text) -> str:
    text = str(text)
    return repr(text if len(text) <= 40 else text[:37] + "...")


# -- settings guard: `outdir.check_settings` ------------------------------------------------------------
def items_hash(items: Sequence[dict]) -> str:
    """sha256 over the items' keys and prompts (the images are named by the keys)."""
    h = hashlib.sha256()
    for it in items:
        h.update(f"{it['key']}\t{it['prompt']}\n".encode())
    return h.hexdigest()
