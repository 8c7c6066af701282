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
only flip a draw that falls within ~1e-7 of a token boundary). `generate_answers` takes the items longest
prompt first and encodes the next batch in a background thread, each image file decoded and processed once
(`vlm_inputs.py`). Each batch's answers are appended to the JSONL and flushed as soon as they exist
(`AnswersFile`); a rerun skips the items already written (a torn last line from a killed run is cut off;
any other damaged line, a key outside the items or an answer to another prompt is one line that says which
line to fix or delete: `read_answers`); once every item is answered the file holds them in item order
(`order_answers`, which also merges the answers files of several processes).

Nothing here imports torch at module level: a recipe that names a model is checked before any load.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mfpo_data._deps import loading_model
from mfpo_data.backends.vlm_inputs import GenerationError, render_prompt  # noqa: F401 (render_prompt: API)


logger = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")  # what PEFT's from_pretrained reads


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
        try:
            processor = AutoProcessor.from_pretrained(name_or_path, **common)
        except (ImportError, AttributeError, OSError) as e:  # a video processor without torchvision (Qwen2-VL, ...)
            processor = _processor_without_video(name_or_path, model.config.model_type, common, e)
    return model, processor


def image_only(processor_class):
    """`processor_class` without its video processor: a subclass of the same name whose only parts are the image
    processor and the tokenizer. Qwen2-VL's, Qwen2.5-VL's, InternVL's (...) video processors need torchvision, and
    transformers builds none of these processors without it; mfpo passes images only, which this processes as the
    full processor does. `mfpo_train.tiny` builds its Qwen2.5-VL and InternVL processors with it too."""
    parts = [a for a in processor_class.get_attributes() if a != "video_processor"]

    class ImageOnly(processor_class):
        @classmethod
        def get_attributes(cls):
            return list(parts)

    ImageOnly.__name__ = ImageOnly.__qualname__ = processor_class.__name__
    return ImageOnly


def _processor_without_video(name_or_path: str, model_type: str, common: dict, error: Exception):
    """The model's processor loaded without its video processor when that is what failed (torchvision missing)."""
    import importlib.util

    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    cls = getattr(transformers, PROCESSOR_MAPPING_NAMES.get(model_type) or "", None)
    if importlib.util.find_spec("torchvision") is not None or cls is None or "video_processor" not in cls.get_attributes():
        raise error
    logger.info("%s: %s without its video processor (it needs torchvision, which is not installed; mfpo passes "
                "images only)", name_or_path, cls.__name__)
    return image_only(cls).from_pretrained(name_or_path, **common)


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
        raise _load_error(model, e) from e
    if adapter is not None:
        from peft import PeftModel

        net = PeftModel.from_pretrained(net, str(adapter), is_trainable=False)
        if merge:
            net = net.merge_and_unload()
    net.to(device).eval().requires_grad_(False)
    return net, processor


def check_model(model: str | Path | None, adapter: str | Path | None = None, *, revision: str | None = None,
                trust_remote_code: bool = False, model_key: str = "--model", adapter_key: str = "--adapter") -> None:
    """Refuse, in one line and before any weights load, what `load_vlm` could not load: an adapter folder that is
    not one (`adapter_base_model`), a model whose config cannot be read (a folder that is not there, an id neither
    in the Hub cache nor on the Hub)."""
    from transformers import AutoConfig

    if adapter is not None:
        base = adapter_base_model(adapter, adapter_key)  # the adapter folder is checked with --model given too
        model = model or base
    if not model:
        raise GenerationError(f"{model_key} is required (a Hub id or a local folder)")
    try:
        with loading_model(str(model), model_key):
            AutoConfig.from_pretrained(str(model), revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise _load_error(model, e) from e


def _load_error(model, e: Exception) -> GenerationError:
    """One line for a model that cannot be loaded, saying "cannot load model" once (`loading_model`'s lines say it)."""
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return GenerationError(first if first.startswith("cannot load model") else f"cannot load model {model}: {first}")


def adapter_base_model(adapter: str | Path, key: str = "--adapter") -> str | None:
    """The base model an adapter folder names (`base_model_name_or_path` of its adapter_config.json), or None;
    a folder without a readable adapter config or without adapter weights is refused in one line."""
    from mfpo_data.scorers.io import RecordError, read_json, shown

    config = Path(adapter) / "adapter_config.json"
    if not config.is_file():
        raise GenerationError(f"{key} {shown(adapter)}: no adapter_config.json there (mfpo-train writes OUT/final/)")
    try:
        data = read_json(config, "adapter config")
    except RecordError as e:
        raise GenerationError(str(e)) from None
    base = data.get("base_model_name_or_path") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(base, str | None):
        raise GenerationError(f"{shown(config)}: not a PEFT adapter config (a JSON object with a text "
                              "base_model_name_or_path)")
    if not any((Path(adapter) / name).is_file() for name in ADAPTER_WEIGHTS):
        raise GenerationError(f"{key} {shown(adapter)}: no adapter weights there ({' or '.join(ADAPTER_WEIGHTS)}); "
                              "was the folder copied whole?")
    return base


def describe_model(model: str | Path | None, adapter: str | Path | None, revision: str | None = None) -> dict:
    """What identifies the weights: id or folder, revision, and the adapter file's sha256 (folders change)."""
    from mfpo_data.layout import sha256_file

    out: dict[str, Any] = {"model": str(model) if model else None, "revision": revision,
                           "adapter": str(adapter) if adapter else None}
    if adapter is not None:
        weights = Path(adapter) / "adapter_model.safetensors"
        out["adapter_sha256"] = sha256_file(weights) if weights.is_file() else None
    return out


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
    from transformers import (
        LogitsProcessor,
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,  # fmt: skip
    )

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
    """Answers for `items`, left-padded in one batch: greedy, or sampled with each item's `seed` (module notes).

    `items` encoded beforehand (a `vlm_inputs.PreparedBatch`, as `generate_answers` passes them) are not encoded again.
    """
    import torch

    from mfpo_data.backends.vlm_inputs import encode

    tokenizer = getattr(processor, "tokenizer", processor)
    enc = getattr(items, "encoded", None)
    enc = to_model(encode(processor, items) if enc is None else enc, model)
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
                     desc: str = "generate", progress: bool = True, image_cache=None) -> list[dict]:
    """Answer every item; with `answers_file`, append as produced and skip the items already there.

    Returns one record per item, in item order: the item's fields except `image`, plus `prompt` and `answer`.
    With `sampling`, every item needs an int `seed`. Items are generated longest prompt first (`by_prompt_length`:
    less padding per batch), the next batch encoded in a background thread meanwhile, each image path decoded
    and processed once (`image_cache`: a `vlm_inputs.ImageCache` to share between calls, e.g. the parts of one
    benchmark; by default one for this call). Once every item is answered, the file holds them in item order.
    """
    from tqdm.auto import tqdm

    from mfpo_data.backends.vlm_inputs import ImageCache, Prefetcher

    if batch_size < 1:
        raise GenerationError(f"batch_size must be >= 1, got {batch_size}")
    keys = [str(it["key"]) for it in items]
    if len(set(keys)) != len(keys):
        raise GenerationError(f"{desc}: item keys are not unique")
    with AnswersFile(answers_file, items=items) as sink:
        done = sink.done
        todo = by_prompt_length([it for it in items if str(it["key"]) not in done], processor)
        if done:
            logger.info("%s: %d of %d answers already in %s; generating the other %d", desc, len(done), len(items),
                        answers_file, len(todo))
        bar = tqdm(total=len(items), initial=len(done), unit="item", desc=desc, disable=not progress,
                   dynamic_ncols=True)
        batches = [todo[start:start + batch_size] for start in range(0, len(todo), batch_size)]
        try:
            for batch in Prefetcher(processor, batches, ImageCache() if image_cache is None else image_cache):
                sink.write([answer_record(item, answer) for item, answer in
                            zip(batch, answer_batch(model, processor, batch, max_new_tokens, sampling), strict=True)])
                bar.update(len(batch))
        finally:
            bar.close()
    if answers_file is not None:
        order_answers(items, Path(answers_file))
    return [done[k] for k in keys]


def by_prompt_length(items: Sequence[dict], processor) -> list[dict]:
    """`items` longest prompt (in tokens) first, ties in item order: batches of like lengths pad less, and a batch
    too long for the device's memory comes first, not hours into a run."""
    if len(items) < 2:
        return list(items)
    tokenizer = getattr(processor, "tokenizer", processor)
    lengths = [len(ids) for ids in tokenizer([str(it["prompt"]) for it in items], add_special_tokens=False)["input_ids"]]
    return [items[i] for i in sorted(range(len(items)), key=lambda i: -lengths[i])]


def answer_batch(model, processor, items: Sequence[dict], max_new_tokens: int,
                 sampling: Sampling | None = None) -> list[str]:
    """`generate_batch` (looked up when called, so tests can stand in for the model)."""
    if sampling is None:
        return generate_batch(model, processor, items, max_new_tokens)
    return generate_batch(model, processor, items, max_new_tokens, sampling=sampling)


def written_answers(items: Sequence[dict], answers_file: str | Path) -> dict[str, dict]:
    """The records of `items` that `answers_file` holds already, by key, rebuilt from the item and the written
    answer; a damaged file, a key outside `items` or an answer to another prompt is refused in one line
    (`read_answers`). `mfpo-eval run` calls it for every part before a model loads."""
    by_key = {str(it["key"]): it for it in items}
    written = read_answers(Path(answers_file), by_key, {k: it["prompt"] for k, it in by_key.items()})
    return {k: answer_record(by_key[k], r["answer"]) for k, r in written.items()}


def order_answers(items: Sequence[dict], answers_file: str | Path, shards: Sequence[Path] = ()) -> None:
    """`answers_file` holding its answers and those of `shards` (other processes' answers files of the same items)
    in item order, each line as it was written; rewritten at once (a temp file and a rename) only when that changes
    it, then the shards are removed. Every file is read as a resumed one is (`written_answers`); an item answered
    differently in two files is one line naming both."""
    from mfpo_data.layout import atomic_write
    from mfpo_data.scorers.io import read_objects, where

    path = Path(answers_file)
    rank = {str(it["key"]): i for i, it in enumerate(items)}
    lines: dict[str, tuple[str, Path, int]] = {}
    for file in (path, *shards):
        written_answers(items, file)  # one line for a damaged file; a torn last line is cut off
        if not file.exists():
            continue
        text = file.read_text(encoding="utf-8")
        raw = text.split("\n")
        for line, row in read_objects(file, "answers file"):
            key = str(row["key"])
            own = raw[line - 1].removesuffix("\r") if not text.lstrip().startswith("[") else json.dumps(
                row, ensure_ascii=False)
            if key in lines and json.loads(lines[key][0]) != row:
                raise GenerationError(f"{where(file, line)}: item {key!r} is answered otherwise in "
                                      f"{where(lines[key][1], lines[key][2])}; delete one of the two lines and rerun")
            lines.setdefault(key, (own, file, line))
    text = "".join(lines[k][0] + "\n" for k in sorted(lines, key=rank.__getitem__))
    if (lines or path.exists()) and (not path.exists() or path.read_text(encoding="utf-8") != text):
        atomic_write(path, text)
    for shard in shards:
        shard.unlink()


def answer_record(item: dict, answer: str) -> dict:
    """What the answers file holds for an item: its fields except `image`, its `key` as a string, the `answer`."""
    out = {k: v for k, v in item.items() if k != "image"}
    out["key"] = str(item["key"])
    out["answer"] = answer
    return out


class AnswersFile:
    """`with AnswersFile(path) as sink:` the records a previous run wrote (`sink.done`, by key; a torn last
    line is cut off) and `sink.write(records)`, which appends them, flushes and fsyncs: a kill loses at most
    the batch being written. `path=None` keeps the records in memory only.

    With `items`, only their keys may be written and each record is rebuilt from its item (`written_answers`)."""

    def __init__(self, path: str | Path | None, *, items: Sequence[dict] | None = None):
        self.path = Path(path) if path is not None else None
        self.done: dict[str, dict] = {}
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.done = read_answers(self.path) if items is None else written_answers(items, self.path)
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


def read_answers(path: Path, keys: Iterable[str] | None = None,
                 prompts: Mapping[str, str] | None = None) -> dict[str, dict]:
    """Answers already written to `path`, by key. A torn last line (a killed run) is cut off the file.

    The file is read by the one answers reader (`scorers.io.answer_records`): a damaged line, a key written
    twice or a key outside `keys` (the file belongs to another item set) is one line that says which line to
    fix or delete. With `prompts`, an answer written for another prompt than its item's now is refused too.
    """
    from mfpo_data.scorers.io import RecordError, answer_records, shown, where

    if not path.exists():
        return {}
    if not path.is_file():
        raise GenerationError(f"{shown(path)} is not a file; move it away to resume the run")
    with open(path, "rb") as f:
        data = f.read()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        logger.warning("%s: dropping a partly written last line (the previous run was interrupted)", shown(path))
        with open(path, "r+b") as f:
            f.truncate(len(complete))
    try:
        out = {}
        for line, row in answer_records(path, "key", ids=keys, text=("answer",),
                                        benchmark="this run's item set (use another output folder for other items)"):
            if prompts is not None and "prompt" in row and row["prompt"] != prompts[row["key"]]:
                raise RecordError(f"{where(path, line)}: item {row['key']!r} was answered for another prompt "
                                  f"({_short(row['prompt'])}, now {_short(prompts[row['key']])})", path, line)
            out[row["key"]] = row
        return out
    except RecordError as e:
        fix = f"fix line {e.line}, or delete it (its item is generated again), and rerun" if e.line else "move it away"
        raise GenerationError(f"{e}; this answers file is resumed by the run: {fix}") from None


def _short(text) -> str:
    text = str(text)
    return repr(text if len(text) <= 40 else text[:37] + "...")
