"""Model backends on batches of mixed image sizes (each sample's result is its result alone) and in half
precision (`dtype: auto` by card; every model runs in bfloat16 and float16), on tiny random models."""

import logging

import numpy as np
import pytest

from mfpo_data.backends.loading import resolve_dtype
from mfpo_data.schema import KeyObject, Sample


torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

SIZES = [(96, 128), (128, 72), (96, 128), (50, 61)]  # landscape, portrait, the first again, odd


def _sample(i: int, shape) -> Sample:
    rng = np.random.default_rng(i)
    s = Sample(f"s{i}", "test", str(i), "external", "what is on the table?", "a cat next to a cup." * (1 + i), "a dog.",
               image=rng.integers(0, 255, (*shape, 3), dtype=np.uint8))  # fmt: skip
    h, w = shape
    s.key_objects = [KeyObject("cat", (w * 0.1, h * 0.2, w * 0.6, h * 0.7), 0.9)]
    s.mask = np.zeros(shape, bool)
    s.mask[h // 4 : 3 * h // 4, w // 5 : 4 * w // 5] = True
    s.rejected_image = 255 - s.image
    return s


def _mixed():
    return [_sample(i, shape) for i, shape in enumerate(SIZES)]


# -- dtype auto ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("native_bf16", "device", "half", "expected"),
    [
        (True, "cuda:1", "bfloat16", "bfloat16"),  # a language model on Ampere and later
        (False, "cuda:0", "bfloat16", "float16"),  # on a T4 or V100: bfloat16 only emulated
        (True, "cuda:0", "float16", "float16"),  # a vision model on any card
        (True, "cuda:0", None, "float32"),  # a model that does not run in half precision
        (True, "cpu", "bfloat16", "float32"),
        (True, "mps", "float16", "float32"),
    ],
)
def test_dtype_auto_by_device(monkeypatch, native_bf16, device, half, expected):
    asked = []

    def is_bf16_supported(including_emulation=True):
        asked.append(including_emulation)
        return native_bf16 or including_emulation  # torch counts emulation unless told not to

    monkeypatch.setattr(torch.cuda, "is_available", lambda: device.startswith("cuda"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert resolve_dtype("auto", device, half=half) == getattr(torch, expected)
    assert asked in ([], [False])  # asked without emulation, and only for a GPU
    assert resolve_dtype("float32", device) == torch.float32 and resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_dtype("fp8", device)


def test_each_backend_states_its_half_precision(monkeypatch):
    from mfpo_data.backends.entropy import EntropyDifficulty
    from mfpo_data.backends.grounding_dino import GroundingDinoGrounder
    from mfpo_data.backends.sam import SamSegmenter
    from mfpo_data.backends.sd_inpaint import SdInpaintPerturber

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    backends = [GroundingDinoGrounder(device="cuda:0"), SamSegmenter(device="cuda:0"), SdInpaintPerturber(device="cuda:0"),
                EntropyDifficulty("m", device="cuda:0")]  # fmt: skip
    assert all(b.dtype == "auto" for b in backends)  # every model backend defaults to auto
    assert [b.device_and_dtype()[1] for b in backends] == [torch.float16, torch.float16, torch.float16, torch.bfloat16]


def test_dtype_auto_on_torch_before_emulation_was_counted(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)  # torch < 2.4: no argument
    assert resolve_dtype("auto", "cuda:0") == torch.float16


def test_grounding_dino_auto_is_float32_where_transformers_cannot_run_it_in_half(monkeypatch):
    from transformers.models.grounding_dino import modeling_grounding_dino as gd

    from mfpo_data.backends.grounding_dino import GroundingDinoGrounder

    g = GroundingDinoGrounder(device="cuda:0")
    assert g.half_precision() == "float16"  # the installed transformers has the fix
    monkeypatch.setattr(gd.GroundingDinoModel, "get_valid_ratio", lambda self, mask: None)  # as before the fix
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert g.half_precision() is None and g.device_and_dtype() == ("cuda:0", torch.float32)


def test_the_resolved_device_and_dtype_are_logged_at_load(tiny_sam, caplog, monkeypatch):
    from mfpo_data.backends import loading
    from mfpo_data.backends.sam import SamSegmenter

    monkeypatch.setattr(loading, "_LOADED", {})  # a fresh process: the model loads again
    with caplog.at_level(logging.INFO, logger="mfpo_data.backends.loading"):
        SamSegmenter(model_id=str(tiny_sam), device="cpu").segment([_sample(0, (32, 32))])
    assert f"segmentation.model_id: {tiny_sam} on cpu in float32" in caplog.text  # auto on the CPU


# -- each model in half precision (CPU) -----------------------------------------------------------------------
def _close_boxes(a, b, atol):
    return [o.phrase for o in a] == [o.phrase for o in b] and np.allclose([o.box_xyxy for o in a], [o.box_xyxy for o in b], atol=atol)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_every_model_runs_in_half_precision(tiny_gdino, tiny_sam, tiny_sd, tiny_llava, dtype):
    from mfpo_data.backends.entropy import EntropyDifficulty
    from mfpo_data.backends.grounding_dino import GroundingDinoGrounder
    from mfpo_data.backends.sam import SamSegmenter

    samples = _mixed()[:2]
    kw = dict(device="cpu", box_threshold=0.05, text_threshold=0.05)
    boxes = GroundingDinoGrounder(model_id=str(tiny_gdino), dtype=dtype, **kw).ground(samples, [["cat", "cup"], ["dog"]])
    full = GroundingDinoGrounder(model_id=str(tiny_gdino), dtype="float32", **kw).ground(samples, [["cat", "cup"], ["dog"]])
    assert all(boxes) and all(np.isfinite(o.box_xyxy).all() and 0 < o.score <= 1 for objs in boxes for o in objs)
    best = lambda objects: np.array(max(objects, key=lambda o: o.score).box_xyxy)  # noqa: E731
    assert all(np.abs(best(a) - best(b)).max() < 2.0 for a, b in zip(boxes, full, strict=True))  # pixels

    masks = SamSegmenter(model_id=str(tiny_sam), device="cpu", dtype=dtype).segment(samples)
    assert [len(m) for m in masks] == [1, 1]
    assert all(m.dtype == bool and m.shape == (s.height, s.width) for s, ms in zip(samples, masks, strict=True) for m in ms)

    out = _sd(tiny_sd, dtype=dtype).perturb(samples[:1], [3])[0]
    assert out.image.shape == samples[0].image.shape and out.image.max() > 4  # not the all-black output of NaNs

    h = EntropyDifficulty(model_id=str(tiny_llava), device="cpu", dtype=dtype).score(samples)
    h32 = EntropyDifficulty(model_id=str(tiny_llava), device="cpu", dtype="float32").score(samples)
    assert np.isfinite(h).all() and np.allclose(h, h32, rtol=1e-2)


# -- mixed image sizes in one batch ---------------------------------------------------------------------------
def test_grounding_dino_mixed_sizes_map_back(tiny_gdino):
    from mfpo_data.backends.grounding_dino import GroundingDinoGrounder

    g = GroundingDinoGrounder(model_id=str(tiny_gdino), device="cpu", box_threshold=0.05, text_threshold=0.05)
    samples, phrases = _mixed(), [["cat"], ["dog", "cup"], ["person"], ["cat", "car"]]
    batched = g.ground(samples, phrases)
    for s, p, objects in zip(samples, phrases, batched, strict=True):
        alone = g.ground([s], [p])[0]
        assert objects and _close_boxes(objects, alone, atol=1e-3)
        assert all(o.box_xyxy[2] <= s.width and o.box_xyxy[3] <= s.height for o in objects)


def test_sam_mixed_sizes_map_back(tiny_sam):
    from mfpo_data.backends.sam import SamSegmenter

    seg = SamSegmenter(model_id=str(tiny_sam), device="cpu")
    samples = _mixed()
    batched = seg.segment(samples)
    for s, masks in zip(samples, batched, strict=True):
        (alone,) = seg.segment([s])[0]
        assert masks[0].shape == (s.height, s.width) and (masks[0] != alone).mean() < 1e-3


def _sd(path, **kw):
    pytest.importorskip("diffusers")
    from mfpo_data.backends.sd_inpaint import SdInpaintPerturber

    return SdInpaintPerturber(model_id=str(path), device="cpu", resolution=64, num_inference_steps=2, guidance_scale=1.0, **kw)


def test_sd_inpaint_mixed_sizes_map_back(tiny_sd):
    sd = _sd(tiny_sd)
    samples = _mixed()
    batched = sd.perturb(samples, [5, 6, 7, 8])
    sizes = [tuple(r.params["working_size"]) for r in batched]
    assert sizes[0] == sizes[2] != sizes[1]  # the landscape pair shares a pipeline call, the portrait has its own
    for s, seed, result in zip(samples, [5, 6, 7, 8], batched, strict=True):
        alone = sd.perturb([s], [seed])[0]
        assert result.image.shape == s.image.shape and result.params == alone.params
        assert np.abs(result.image.astype(int) - alone.image.astype(int)).max() <= 2  # float rounding of the batch


def test_entropy_mixed_sizes_map_back(tiny_llava):
    from mfpo_data.backends.entropy import EntropyDifficulty

    samples = _mixed()
    for mode in ("entropy", "gap"):  # gap: the perturbed images too
        scorer = EntropyDifficulty(model_id=str(tiny_llava), device="cpu", mode=mode)
        batched = scorer.score(samples)
        assert np.allclose(batched, [scorer.score([s])[0] for s in samples], rtol=0, atol=1e-6)
        assert len({round(v, 6) for v in batched}) == len(samples)  # a random model: close values, but four

