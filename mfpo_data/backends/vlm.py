"""Generate answers with any image-text-to-text model (+ a LoRA adapter): batched, resumable.

    model, processor = load_vlm("llava-hf/llava-1.5-7b-hf", adapter="runs/mfpo/final")
    answers = generate_answers(model, processor, items, "OUT/model/pope-random.answers.jsonl",
                               batch_size=8, max_new_tokens=16)

`mfpo-eval run` and the build's on-policy source (`sources/on_policy.py`) generate with this module.
An item is `{"key": str, "image": PIL image | path, "prompt": str}` plus any fields to carry into the
answers file (`image_id`, `question_id`, ...). Prompts go through the model's chat template as one
user turn `[image, text]`, with the tokenizer padded on the left. Decoding is greedy, or with
`sampling=Sampling(temperature, top_p, top_k)` each item is sampled with a random stream of its own,
seeded by the item's `seed`: token t of an item is drawn from its t-th uniform, so an item gets the
same answer whatever batch it is in (up to the floating-point noise of other batch shapes, which can
only flip a draw that falls within ~1e-7 of a token boundary). Each batch's answers are appended to
the JSONL and flushed as soon as they exist (`AnswersFile`); a rerun skips the items already written
(a torn last line from a killed run is cut off).

Nothing here imports torch at module level: a recipe that names a model is checked before any load.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mfpo_data._deps import loading_model
from mfpo_data.errors import MfpoError


logger = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")


class GenerationError(MfpoError):
    """Generation that cannot run as asked: no model, a folder that is not an adapter, a bad answers file."""


# -- loading ------------------------------------------------------------------------------------------
def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def from_pretrained(name_or_path: str, *, revision: str | None = None, dtype: str = "auto",
                    trust_remote_code: bool = False, attn_implementation: str | None = None,
                    key: str = "model"):
    """`AutoModelForImageTextToText` + `AutoProcessor` from a Hub id or folder; `key` names the setting in errors.

    `dtype` is "auto" (the checkpoint's) or a torch dtype name.
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if dtype not in DTYPES:
        raise GenerationError(f"{key}: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    common = dict(revision=revision, trust_remote_code=trust_remote_code)
    kwargs: dict[str, Any] = dict(common, dtype="auto" if dtype == "auto" else getattr(torch, dtype))
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    with loading_model(name_or_path, key):
        model = AutoModelForImageTextToText.from_pretrained(name_or_path, **kwargs)
        processor = AutoProcessor.from_pretrained(name_or_path, **common)
    return model, processor


def load_vlm(model: str | Path | None, adapter: str | Path | None = None, *, merge: bool = False,
             dtype: str = "auto", device: str = "auto", revision: str | None = None,
             trust_remote_code: bool = False, attn_implementation: str | None = None,
             model_key: str = "--model", adapter_key: str = "--adapter"):
    """(model, processor) in eval mode on `device`, with a PEFT adapter folder applied (unmerged unless `merge`).

    `model` may be left out when `adapter` is given: the adapter's `base_model_name_or_path` is used.
    `dtype="auto"`: the checkpoint's dtype on GPU, float32 on CPU (half precision is slow or missing there).
    `model_key` and `adapter_key` name the settings in error lines (a CLI flag or a recipe key).
    """
    if adapter is not None:
        adapter = Path(adapter)
        base = adapter_base_model(adapter, adapter_key)  # also checks the folder before any model is loaded
        model = model or base
    if not model:
        raise GenerationError(f"{model_key} is required (a Hub id or a local folder)")
    device = resolve_device(device)
    if dtype == "auto" and device == "cpu":
        dtype = "float32"
    try:
        net, processor = from_pretrained(str(model), revision=revision, dtype=dtype, trust_remote_code=trust_remote_code,
                                         attn_implementation=attn_implementation, key=model_key)
    except (OSError, ValueError) as e:  # missing folder / unknown Hub id / not an image-text-to-text model
        raise GenerationError(f"cannot load model {model}: {str(e).strip().splitlines()[0]}") from e
    if adapter is not None:
        from peft import PeftModel

        net = PeftModel.from_pretrained(net, str(adapter), is_trainable=False)
        if merge:
            net = net.merge_and_unload()
    net.to(device).eval().requires_grad_(False)
    return net, processor


def adapter_base_model(adapter: str | Path, key: str = "--adapter") -> str | None:
    """The base model an adapter folder names (`base_model_name_or_path` of its adapter_config.json), or None."""
    config = Path(adapter) / "adapter_config.json"
    if not config.is_file():
        raise GenerationError(f"{key} {adapter}: no adapter_config.json there (mfpo-train writes OUT/final/)")
    try:
        return json.loads(config.read_text()).get("base_model_name_or_path")
    except (json.JSONDecodeError, AttributeError):
        raise GenerationError(f"{config}: not a PEFT adapter config (JSON object)") from None


def describe_model(model: str | Path | None, adapter: str | Path | None, revision: str | None = None) -> dict:
    """What identifies the weights: id or folder, revision, and the adapter file's sha256 (folders change)."""
    from mfpo_data.layout import sha256_file

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
@dataclass(frozen=True)
class Sampling:
    """Sampling instead of greedy decoding: `temperature` > 0, nucleus `top_p` in (0, 1] (1: off), `top_k` (0: off).

    Applied in transformers' order (temperature, then top-k, then top-p), as `do_sample=True` would."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0

    def __post_init__(self):
        if not self.temperature > 0:
            raise GenerationError(f"temperature must be > 0 (greedy decoding is sampling: null), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise GenerationError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise GenerationError(f"top_k must be >= 0 (0: off), got {self.top_k}")

    def to_dict(self) -> dict:
        return asdict(self)


def seeded_sampler(sampling: Sampling, seeds: Sequence[int]):
    """A `LogitsProcessor` that draws each row's next token from its own seeded stream and leaves only that
    token possible, so that `generate(do_sample=False)` takes it: one uniform per row and step, inverted
    through the row's distribution after the warpers."""
    import torch
    from transformers import (LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper,
                              TopPLogitsWarper)  # fmt: skip

    warpers = LogitsProcessorList([TemperatureLogitsWarper(sampling.temperature)])
    if sampling.top_k:
        warpers.append(TopKLogitsWarper(sampling.top_k))
    if sampling.top_p < 1:
        warpers.append(TopPLogitsWarper(sampling.top_p))

    class SeededSampler(LogitsProcessor):
        def __init__(self):
            self.streams = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]

        def __call__(self, input_ids, scores):
            probs = torch.softmax(warpers(input_ids, scores).double(), dim=-1)
            uniform = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in self.streams])
            cdf = probs.cumsum(dim=-1)
            target = (uniform.to(cdf.device) * cdf[:, -1]).unsqueeze(-1)
            tokens = torch.searchsorted(cdf, target, right=True).clamp_(max=scores.shape[-1] - 1)
            chosen = torch.full_like(scores, float("-inf"))
            return chosen.scatter_(1, tokens, 0.0)

    return SeededSampler()


def to_model(batch: dict, model) -> dict:
    """Tensors moved to the model's device; pixel values in the model's dtype."""
    import torch

    param = next(model.parameters())
    out = {k: v.to(param.device) if torch.is_tensor(v) else v for k, v in batch.items()}
    if torch.is_tensor(out.get("pixel_values")) and out["pixel_values"].is_floating_point():
        out["pixel_values"] = out["pixel_values"].to(param.dtype)
    return out


def generate_batch(model, processor, items: Sequence[dict], max_new_tokens: int,
                   sampling: Sampling | None = None) -> list[str]:
    """Answers for `items`, left-padded in one batch: greedy, or sampled with each item's `seed` (module notes)."""
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
    extra = {}
    if sampling is not None:
        extra["logits_processor"] = [seeded_sampler(sampling, [it["seed"] for it in items])]
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, pad_token_id=pad_id,
                             temperature=None, top_p=None, top_k=None, **extra)
    new = out[:, enc["input_ids"].shape[1]:]
    return [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]


def generate_answers(model, processor, items: Sequence[dict], answers_file: str | Path | None = None, *,
                     batch_size: int = 8, max_new_tokens: int = 512, sampling: Sampling | None = None,
                     desc: str = "generate", progress: bool = True) -> list[dict]:
    """Answer every item; with `answers_file`, append as produced and skip the items already there.

    Returns one record per item, in item order: the item's fields except `image`, plus `prompt` and `answer`.
    With `sampling`, every item needs an int `seed`.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise GenerationError(f"batch_size must be >= 1, got {batch_size}")
    keys = [str(it["key"]) for it in items]
    if len(set(keys)) != len(keys):
        raise GenerationError(f"{desc}: item keys are not unique")
    with AnswersFile(answers_file, keys) as sink:
        done = sink.done
        todo = [it for it in items if str(it["key"]) not in done]
        if done:
            logger.info("%s: %d of %d answers already in %s; generating the other %d", desc, len(done), len(items),
                        answers_file, len(todo))
        bar = tqdm(total=len(items), initial=len(done), unit="item", desc=desc, disable=not progress,
                   dynamic_ncols=True)
        try:
            for start in range(0, len(todo), batch_size):
                batch = todo[start:start + batch_size]
                sink.write([answer_record(item, answer) for item, answer in
                            zip(batch, answer_batch(model, processor, batch, max_new_tokens, sampling), strict=True)])
                bar.update(len(batch))
        finally:
            bar.close()
    return [done[k] for k in keys]


def answer_batch(model, processor, items: Sequence[dict], max_new_tokens: int,
                 sampling: Sampling | None = None) -> list[str]:
    """`generate_batch` (looked up when called, so tests can stand in for the model)."""
    if sampling is None:
        return generate_batch(model, processor, items, max_new_tokens)
    return generate_batch(model, processor, items, max_new_tokens, sampling=sampling)


def answer_record(item: dict, answer: str) -> dict:
    """What the answers file holds for an item: its fields except `image`, its `key` as a string, the `answer`."""
    out = {k: v for k, v in item.items() if k != "image"}
    out["key"] = str(item["key"])
    out["answer"] = answer
    return out


class AnswersFile:
    """`with AnswersFile(path, keys) as sink:` the records a previous run wrote (`sink.done`, by key; a torn last
    line is cut off) and `sink.write(records)`, which appends them, flushes and fsyncs: a kill loses at most
    the batch being written. `path=None` keeps the records in memory only."""

    def __init__(self, path: str | Path | None, keys: Iterable[str] | None = None):
        self.path = Path(path) if path is not None else None
        self.done: dict[str, dict] = {}
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.done = read_answers(self.path, keys)
        self._sink = None

    def __enter__(self) -> AnswersFile:
        if self.path is not None:
            self._sink = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        return self

    def write(self, records: Iterable[dict]) -> None:
        records = list(records)
        for record in records:
            self.done[record["key"]] = record
        if self._sink is not None:
            self._sink.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            self._sink.flush()
            os.fsync(self._sink.fileno())

    def __exit__(self, *exc) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None


def read_answers(path: Path, keys: Iterable[str] | None = None) -> dict[str, dict]:
    """Answers already written to `path`, by key. A torn last line (a killed run) is cut off the file.

    With `keys`, a written key that is not among them means the file belongs to another item set: refused.
    """
    if not path.is_file():
        return {}
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        logger.warning("%s: dropping a partly written last line (the previous run was interrupted)", path)
        with open(path, "r+b") as f:
            f.truncate(len(complete))
    allowed = set(keys) if keys is not None else None
    out: dict[str, dict] = {}
    for lineno, line in enumerate(complete.decode("utf-8").splitlines(), 1):
        try:
            record = json.loads(line)
            key = str(record["key"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise GenerationError(f"{path}:{lineno}: not an answer record (a JSON object with 'key' and 'answer')") from None
        if allowed is not None and key not in allowed:
            raise GenerationError(f"{path}:{lineno}: item {key!r} is not in this run's item set; "
                                  "use another output folder")
        if key in out:
            raise GenerationError(f"{path}:{lineno}: item {key!r} is written twice")
        out[key] = record
    return out
