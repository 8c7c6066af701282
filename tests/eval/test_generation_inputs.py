"""What generation feeds the model (`mfpo_data.backends.vlm_inputs`): images served from the cache give the
processor's own batch bit for bit, a processor they would not is never served from it, items go longest prompt
first and the answers file ends in item order, and several processes' answers files merge into it."""

from __future__ import annotations

import json

import pytest
import torch

from mfpo_data.backends import vlm, vlm_inputs
from mfpo_data.backends.vlm import GenerationError, generate_answers, order_answers
from mfpo_data.backends.vlm_inputs import ImageCache, encode
from tests.fixtures.eval_run import sample_items


@pytest.fixture(scope="module")
def models():
    from mfpo_train.tiny import build_tiny_idefics3, build_tiny_llava

    return {"llava": build_tiny_llava(), "idefics3": build_tiny_idefics3()}


def _items():
    """Two questions about each of 6 images, prompts of different lengths."""
    base = sample_items()[:6]
    return [dict(it, key=f"{it['key']}-{q}", prompt=prompt) for q, prompt in enumerate(
        ["Is there a dog in the image?", "Please describe this image in detail, naming every object you see."])
        for it in base]


@pytest.mark.parametrize("family", ["llava", "idefics3"])
def test_the_cache_serves_the_processors_own_batch(models, family):
    _, processor = models[family]
    items, cache = _items(), ImageCache()
    first = [encode(processor, items[i:i + 4], cache) for i in range(0, 12, 4)]  # the 2nd question hits the cache
    assert cache.verified is True and cache.hits >= 6 and cache.misses == 6
    plain = [encode(processor, items[i:i + 4]) for i in range(0, 12, 4)]
    for a, b in zip(first, plain, strict=True):
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert processor.tokenizer.padding_side == "right" and type(processor.image_processor).__name__ != (
        "_CachedImageProcessor")  # the caller's processor is untouched


def test_a_processor_whose_images_depend_on_the_batch_is_not_served(models):
    """An image processor that normalises by the batch's mean: per-image outputs differ, so the cache stays off."""
    import copy

    _, processor = models["llava"]
    odd = copy.copy(processor)
    inner = processor.image_processor

    class BatchMean:
        def __getattr__(self, name):
            return getattr(inner, name)

        def __call__(self, images, **kwargs):
            out = inner(images, **kwargs)
            out["pixel_values"] = out["pixel_values"] - out["pixel_values"].mean()
            return out

    odd.image_processor = BatchMean()
    items, cache = _items(), ImageCache()
    served = [encode(odd, items[:4], cache)]
    assert cache.verified is False
    checked = cache.hits + cache.misses  # the first items, encoded through the cache to compare
    served += [encode(odd, items[i:i + 4], cache) for i in range(4, 12, 4)]
    assert cache.hits + cache.misses == checked
    plain = [encode(odd, items[i:i + 4]) for i in range(0, 12, 4)]
    assert all(torch.equal(a["pixel_values"], b["pixel_values"]) for a, b in zip(served, plain, strict=True))


def test_longest_prompt_first_and_the_file_ends_in_item_order(models, tmp_path, monkeypatch):
    model, processor = models["llava"]
    items = _items()
    seen = []
    real = vlm.generate_batch
    monkeypatch.setattr(vlm, "generate_batch", lambda m, p, batch, n: seen.append([it["key"] for it in batch]) or
                        real(m, p, batch, n))
    path = tmp_path / "a.answers.jsonl"
    answers = generate_answers(model, processor, items, path, batch_size=5, max_new_tokens=3, progress=False)
    long_first = [it["key"] for it in items[6:]] + [it["key"] for it in items[:6]]
    assert seen == [long_first[:5], long_first[5:10], long_first[10:]]
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == [it["key"] for it in items]
    assert [a["key"] for a in answers] == [it["key"] for it in items]
    one = generate_answers(model, processor, items, batch_size=1, max_new_tokens=3, progress=False)
    assert [a["answer"] for a in one] == [a["answer"] for a in answers]


def test_an_image_that_does_not_decode_is_one_line(models, tmp_path):
    model, processor = models["llava"]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    items = [*_items()[:3], {"key": "b", "image": broken, "prompt": "Is there a dog?"}]
    with pytest.raises(GenerationError, match=f"item 'b': cannot read its image {broken} "):
        generate_answers(model, processor, items, tmp_path / "a.jsonl", batch_size=2, max_new_tokens=2, progress=False)


def test_answers_files_of_several_processes_merge_in_item_order(tmp_path):
    items = [{"key": k, "prompt": "p"} for k in "abcde"]
    main, r0, r1 = (tmp_path / n for n in ("x.answers.jsonl", "x.answers.rank0.jsonl", "x.answers.rank1.jsonl"))
    main.write_text('{"key": "d", "prompt": "p", "answer": "D"}\n')
    r0.write_text('{"key": "c", "prompt": "p", "answer": "C"}\n{"key": "a", "prompt": "p", "answer": "A"}\n')
    r1.write_text('{"key": "e", "prompt": "p", "answer": "E"}\n{"key": "d", "prompt": "p", "answer": "D"}\n{"key": "b", "ans')
    order_answers(items, main, [r0, r1])  # d twice, the same: a kill between the merge and the removal
    assert [json.loads(line)["answer"] for line in main.read_text().splitlines()] == ["A", "C", "D", "E"]
    assert not r0.exists() and not r1.exists()

    r1.write_text('{"key": "b", "prompt": "p", "answer": "other"}\n{"key": "c", "prompt": "p", "answer": "not C"}\n')
    before = main.read_bytes()
    with pytest.raises(GenerationError) as err:
        order_answers(items, main, [r1])
    assert str(err.value) == (f"{r1}:2: item 'c' is answered otherwise in {main}:2; delete one of the two lines and "
                              "rerun")
    assert main.read_bytes() == before and r1.exists()
