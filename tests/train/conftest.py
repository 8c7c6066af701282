"""Fixtures for the training tests: tiny models saved to folders, a built and a synthetic dataset."""

from __future__ import annotations

import pytest

from tests.paths import DEBUG_TRAIN_RECIPE


@pytest.fixture(scope="session")
def tiny_idefics3(tmp_path_factory):
    from mfpo_train.tiny import make_tiny_idefics3

    return make_tiny_idefics3(tmp_path_factory.mktemp("tiny-idefics3"))


@pytest.fixture(scope="session")
def tiny_qwen2_5_vl(tmp_path_factory):
    from mfpo_train.tiny import make_tiny_qwen2_5_vl

    return make_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny-qwen2_5_vl"))


@pytest.fixture(scope="session")
def tiny_gemma3(tmp_path_factory):
    from mfpo_train.tiny import make_tiny_gemma3

    return make_tiny_gemma3(tmp_path_factory.mktemp("tiny-gemma3"))


@pytest.fixture(scope="session")
def built_dataset(sample_build):
    """The default recipe built once from the bundled COCO sample by mfpo-data (the session's `sample_build`)."""
    return sample_build.root


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """12 rows with random 40x56 images, 4 per difficulty bucket, laid out like a build output."""
    from mfpo_train.synthetic import write_build_output

    return write_build_output(tmp_path_factory.mktemp("synthetic"), n=12)


@pytest.fixture
def make_config(tmp_path):
    """TrainConfig from recipes/train/debug.yaml with the given model, dataset and overrides."""
    from mfpo_train.config import load_config

    def make(model, dataset, *overrides, output_dir=None):
        out = output_dir or tmp_path / "run"
        return load_config(DEBUG_TRAIN_RECIPE, [f"model.name_or_path={model}", f"data.dataset={dataset}",
                                                         f"train.output_dir={out}", "train.report_to=[]",
                                                         "train.save_every=null", *overrides])

    return make


@pytest.fixture
def qwen2vl_batch():
    """A tiny random Qwen2-VL and a collator-layout batch (2 pairs x 3 sequences) built by hand.

    Qwen2VLProcessor cannot be built without torchvision (its video processor), so the batch is made from its
    parts: the image processor + the tokenizer, `<|image_pad|>` expanded, `mm_token_type_ids`.
    Images of different sizes give each row its own number of patches in the flattened `pixel_values`.
    """
    import numpy as np
    import torch
    from PIL import Image
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    try:
        from transformers import Qwen2VLImageProcessorPil as Qwen2VLImageProcessor
    except ImportError:
        from transformers import Qwen2VLImageProcessor
    from mfpo_train.tiny import _text_config, make_tokenizer

    tok = make_tokenizer(extra_special=("<|image_pad|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>"),
                         image_token="<|image_pad|>", video_token="<|video_pad|>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                                                     "<|vision_end|>")}
    cfg = Qwen2VLConfig(
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, in_chans=3),
        text_config=dict(_text_config(tok, 64, 2), rope_parameters={"rope_type": "default", "mrope_section": [2, 2, 4],
                                                                    "rope_theta": 10000.0}),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(cfg)
    ip = Qwen2VLImageProcessor(min_pixels=28 * 28 * 2, max_pixels=28 * 28 * 6, patch_size=14, merge_size=2,
                               temporal_patch_size=2)
    rng = np.random.default_rng(0)
    sizes = [(56, 56), (56, 84), (56, 56), (84, 56), (56, 56), (56, 84)]
    answers = ["the cat is black.", "yes, a dog.", "the cat is white.", "no.", "the cat is black.", "yes, a dog."]
    seqs, pixels, grids = [], [], []
    for (h, w), answer in zip(sizes, answers, strict=True):
        iv = ip(images=[Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))], return_tensors="pt")
        n_img = int(iv["image_grid_thw"].prod()) // 4
        prompt = tok("<|vision_start|>" + "<|image_pad|>" * n_img + "<|vision_end|>what color is the cat?\n")
        seqs.append((prompt["input_ids"], tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]))
        pixels.append(iv["pixel_values"])
        grids.append(iv["image_grid_thw"])
    length = max(len(p) + len(a) for p, a in seqs)
    batch = {k: torch.zeros(len(seqs), length, dtype=torch.long)
             for k in ("input_ids", "attention_mask", "completion_mask", "mm_token_type_ids")}
    for j, (p, a) in enumerate(seqs):
        batch["input_ids"][j, : len(p) + len(a)] = torch.tensor(p + a)
        batch["attention_mask"][j, : len(p) + len(a)] = 1
        batch["completion_mask"][j, len(p) : len(p) + len(a)] = 1
    batch["mm_token_type_ids"] = (batch["input_ids"] == ids["<|image_pad|>"]).long()
    batch.update(pixel_values=torch.cat(pixels), image_grid_thw=torch.cat(grids))
    return model, batch
