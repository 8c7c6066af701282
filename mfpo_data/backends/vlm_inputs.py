"""What `vlm.generate_batch` feeds the model, prepared off the generation thread, each image processed once.

- `encode(processor, items, cache)`: the processor's batch for `items` (chat template, one image each, left
  padding), as `processor(text=..., images=..., padding=True)` gives it. With an `ImageCache`, an image named
  by a path is decoded and processed once: its processed tensors are kept by path (least recently used first
  out past `max_bytes`) and the processor gets a 1x1 stand-in for it afterwards. POPE asks 6 questions about
  each of its 500 images in each of 3 splits: one decode and one resize instead of 18.
- `Prefetcher`: encodes batch k+1 in a background thread while the model generates batch k.

The cache is used only where it gives the processor's own output, bit for bit: per-image outputs are joined
along the batch axis (tensors concatenated, lists joined), and the first items of the first batch are encoded three ways
(plain; through the cache, decoding every image; through the cache with every image a stand-in) and compared. A
processor whose outputs differ (one that looks at the images outside its image processor, or batches them
differently) is logged once and encoded plainly; a batch whose images need padding to be joined (image
splitting with different crop counts) is encoded plainly too.
"""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mfpo_data.errors import MfpoError


class GenerationError(MfpoError):
    """Generation that cannot run as asked: no model, a folder that is not an adapter, a bad answers file."""


# -- prompts ------------------------------------------------------------------------------------------
def user_messages(prompt: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


def render_prompt(processor, prompt: str) -> str:
    """The model's chat template applied to one user turn [image, prompt], with the generation prompt."""
    renderer = processor if getattr(processor, "chat_template", None) else processor.tokenizer
    return renderer.apply_chat_template(user_messages(prompt), tokenize=False, add_generation_prompt=True)


logger = logging.getLogger(__name__)

CACHE_BYTES = 1 << 30  # processed images kept per benchmark (LLaVA-1.5's 336 px: ~1.35 MB each, POPE's 500 fit)
VERIFY_ITEMS = 4  # the first items of a cache's first batch, encoded three ways


class PreparedBatch(list):
    """The items of one batch (a list, as `generate_batch` takes it) with their encoding, made beforehand."""

    encoded: Any = None


class ImageCache:
    """Processed images by path, for the items of one model on one benchmark (used from one thread at a time)."""

    def __init__(self, max_bytes: int = CACHE_BYTES):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[dict, int]] = OrderedDict()
        self._bytes = 0
        self.processor_id: int | None = None
        self.verified: bool | None = None  # None: not yet checked against the plain encoding; False: not used
        self.hits = self.misses = 0

    def get(self, key: str) -> dict | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: str, value: dict) -> None:
        size = sum(v.numel() * v.element_size() for v in value.values() if hasattr(v, "element_size"))
        if key in self._entries or size > self.max_bytes:
            return
        self._entries[key] = (value, size)
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self._bytes -= dropped

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def bind(self, processor) -> bool:
        """Whether the cache may serve `processor` (a cache holds one processor's outputs)."""
        if self.processor_id != id(processor):
            self.clear()
            self.processor_id, self.verified = id(processor), None
        return self.verified is not False and getattr(processor, "image_processor", None) is not None


def load_image(item: dict):
    """The item's image as an RGB PIL image (a path is opened and decoded)."""
    from PIL import Image

    img = item["image"]
    if not isinstance(img, Image.Image):
        from mfpo_data.scorers.io import shown

        try:
            with Image.open(img) as f:
                img = f.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise GenerationError(f"item {item['key']!r}: cannot read its image {shown(img)} "
                                  f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})") from None
    return img.convert("RGB") if img.mode != "RGB" else img


def image_key(item: dict) -> str | None:
    """What the cache knows an item's image by: its path (an image given as pixels is not cached)."""
    img = item["image"]
    return str(img) if isinstance(img, str | Path) else None


def encode(processor, items: Sequence[dict], cache: ImageCache | None = None):
    """The processor's batch for `items` (a `BatchFeature` on the CPU); the module notes say how `cache` serves it."""
    texts = [render_prompt(processor, it["prompt"]) for it in items]
    if cache is not None and cache.bind(processor) and cache.verified is None:
        _verify(processor, texts[:VERIFY_ITEMS], items[:VERIFY_ITEMS], cache)
    if cache is None or not cache.verified:
        return _plain(processor, texts, [load_image(it) for it in items])
    keys = [image_key(it) for it in items]
    known = [None if k is None else cache.get(k) for k in keys]
    images = [load_image(it) if out is None else _stand_in() for it, out in zip(items, known, strict=True)]
    try:
        return _Served(processor, cache, keys, known)(texts, images)
    except _NotJoinable:
        return _plain(processor, texts, [load_image(it) for it in items])


def _plain(processor, texts: list[str], images: list):
    return processor(text=texts, images=[[im] for im in images], padding=True, padding_side="left", return_tensors="pt")


def _verify(processor, texts: list[str], items: Sequence[dict], cache: ImageCache) -> None:
    """The first items, encoded plainly and through the cache both ways (decoding every image; with every image a
    stand-in): the cache is used from now on only if all three are equal."""
    images = [load_image(it) for it in items]
    keys = [image_key(it) for it in items]
    plain = _plain(processor, texts, images)
    try:
        first = _Served(processor, cache, keys, [None] * len(items))
        decoded = first(texts, images)
        known = [out if k is not None else None for k, out in zip(keys, first.outputs, strict=True)]
        stand_ins = [im if out is None else _stand_in() for im, out in zip(images, known, strict=True)]
        served = _Served(processor, cache, keys, known)(texts, stand_ins)
    except _NotJoinable:
        cache.clear()
        return  # not decided: the next batch tries again
    cache.verified = _equal(plain, decoded) and _equal(plain, served)
    if not cache.verified:
        cache.clear()
        logger.info("%s: per-image processing differs from the batch's; images are processed with every batch",
                    type(processor).__name__)


class _Served:
    """`processor` with its image processor answering from the cache (a shallow copy: the caller's is untouched)."""

    def __init__(self, processor, cache: ImageCache, keys: list[str | None], known: list[dict | None]):
        self.image_processor = _CachedImageProcessor(processor.image_processor, cache, keys, known)
        self.processor = copy.copy(processor)
        self.processor.image_processor = self.image_processor

    @property
    def outputs(self) -> list[dict]:
        return self.image_processor.outputs

    def __call__(self, texts: list[str], images: list):
        return _plain(self.processor, texts, images)


class _NotJoinable(Exception):
    """Per-image outputs that only padding could join into a batch."""


class _CachedImageProcessor:
    """Stands in for an image processor: each sample's output as `known` (from the cache), or computed and kept."""

    def __init__(self, inner, cache: ImageCache, keys: list[str | None], known: list[dict | None]):
        self.inner, self.cache, self.keys, self.known = inner, cache, keys, known
        self.outputs: list[dict] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, images, **kwargs):
        from transformers import BatchFeature

        if len(images) != len(self.keys):
            raise _NotJoinable  # not one image per item: not ours to serve
        self.outputs = []
        for sample, key, out in zip(images, self.keys, self.known, strict=True):
            if out is None:
                out = dict(self.inner([sample], **kwargs))
                if key is not None:
                    self.cache.put(key, out)
                    self.cache.misses += 1
            else:
                self.cache.hits += 1
            self.outputs.append(out)
        return BatchFeature(_join(self.outputs))


def _join(outputs: list[dict]) -> dict:
    import torch

    joined = {}
    for key in outputs[0]:
        values = [o.get(key) for o in outputs]
        first = values[0]
        if torch.is_tensor(first):
            if not all(torch.is_tensor(v) and v.shape[1:] == first.shape[1:] and v.dtype == first.dtype for v in values):
                raise _NotJoinable
            joined[key] = torch.cat(values)
        elif isinstance(first, list):
            if not all(isinstance(v, list) for v in values):
                raise _NotJoinable
            joined[key] = [x for v in values for x in v]
        elif all(v == first for v in values):
            joined[key] = first
        else:
            raise _NotJoinable
    if any(set(o) != set(outputs[0]) for o in outputs):
        raise _NotJoinable
    return joined


def _equal(a, b) -> bool:
    import torch

    if set(a) != set(b):
        return False
    for key in a:
        x, y = a[key], b[key]
        if torch.is_tensor(x) or torch.is_tensor(y):
            if not (torch.is_tensor(x) and torch.is_tensor(y) and x.dtype == y.dtype and torch.equal(x, y)):
                return False
        elif x != y:
            return False
    return True


def _stand_in():
    from PIL import Image

    return Image.new("RGB", (1, 1))


class Prefetcher:
    """`for batch in Prefetcher(processor, batches, cache):` each batch as a `PreparedBatch`, the next one encoded
    in a background thread meanwhile. An error encoding a batch is raised where that batch is taken."""

    def __init__(self, processor, batches: Sequence[Sequence[dict]], cache: ImageCache | None = None):
        self.processor, self.batches, self.cache = processor, batches, cache

    def _prepare(self, items: Sequence[dict]) -> PreparedBatch:
        batch = PreparedBatch(items)
        batch.encoded = encode(self.processor, items, self.cache)
        return batch

    def __iter__(self):
        if not self.batches:
            return
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mfpo-prefetch")
        try:
            pending: Future = pool.submit(self._prepare, self.batches[0])
            for k in range(len(self.batches)):
                batch = pending.result()
                if k + 1 < len(self.batches):
                    pending = pool.submit(self._prepare, self.batches[k + 1])
                yield batch
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
