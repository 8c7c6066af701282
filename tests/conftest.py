"""Shared test setup: everything runs offline (set before `huggingface_hub` or `datasets` is imported)."""

import os

import pytest


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    """`-m quick`: every test that is not marked e2e, slow or gpu (the unit tests, about a minute)."""
    for item in items:
        if not any(item.get_closest_marker(m) for m in ("e2e", "slow", "gpu")):
            item.add_marker(pytest.mark.quick)


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory):
    """A tiny random LLaVA with its processor, saved to a folder and loaded like a model id."""
    from mfpo_train.tiny import make_tiny_llava

    return make_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="session")
def sample_build(tmp_path_factory):
    """`mfpo-data build --recipe coco` on the bundled sample, built once per session (about 10 s); read it only.

    The training and evaluation tests train and probe on it; tests/test_stated_numbers.py checks the counts the
    documentation states about it."""
    from mfpo_data.pipeline.build import build_dataset

    return build_dataset("coco", output_dir=tmp_path_factory.mktemp("coco-build"))
