"""Tiny random detectors, segmenters, inpainting pipeline and VLM, built once per session into folders."""

from __future__ import annotations

import os

import pytest


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_gdino(tmp_path_factory):
    from tests.fixtures.tiny_detectors import make_tiny_grounding_dino

    return make_tiny_grounding_dino(tmp_path_factory.mktemp("tiny-gdino"))


@pytest.fixture(scope="session")
def tiny_sam(tmp_path_factory):
    from tests.fixtures.tiny_detectors import make_tiny_sam

    return make_tiny_sam(tmp_path_factory.mktemp("tiny-sam"))


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    from tests.fixtures.tiny_detectors import make_tiny_sd_inpaint

    return make_tiny_sd_inpaint(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory):
    from tests.fixtures.tiny_vlm import make_tiny_llava

    return make_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))
