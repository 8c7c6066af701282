"""Tiny random detectors, segmenters and inpainting pipeline, built once per session into folders (the tiny
LLaVA is the root conftest's `tiny_llava`)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_gdino(tmp_path_factory):
    from mfpo_data.backends.tiny import make_tiny_grounding_dino

    return make_tiny_grounding_dino(tmp_path_factory.mktemp("tiny-gdino"))


@pytest.fixture(scope="session")
def tiny_sam(tmp_path_factory):
    from mfpo_data.backends.tiny import make_tiny_sam

    return make_tiny_sam(tmp_path_factory.mktemp("tiny-sam"))


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    from mfpo_data.backends.tiny import make_tiny_sd_inpaint

    return make_tiny_sd_inpaint(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="session")
def tiny_detector(tmp_path_factory):
    """A random YOLOS whose few labels are COCO names (one spelled as a synonym), so its boxes land on them."""
    from mfpo_data.backends.tiny import make_tiny_detector

    labels = ["person", "dog", "cat", "Motorbike", "apple", "orange", "bird", "N/A"]
    return make_tiny_detector(tmp_path_factory.mktemp("tiny-detector"), labels=labels)


@pytest.fixture(scope="session")
def tiny_sam2(tmp_path_factory):
    from mfpo_data.backends.tiny import make_tiny_sam2

    return make_tiny_sam2(tmp_path_factory.mktemp("tiny-sam2"))
