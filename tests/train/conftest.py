"""Fixtures for the training tests: tiny models saved to folders, a built and a synthetic dataset."""

from __future__ import annotations

import pytest

from tests.paths import DEBUG_TRAIN_RECIPE


@pytest.fixture(scope="session")
def tiny_idefics3(tmp_path_factory):
    from mfpo_train.tiny import make_tiny_idefics3

    return make_tiny_idefics3(tmp_path_factory.mktemp("tiny-idefics3"))


@pytest.fixture(scope="session")
def built_dataset(tmp_path_factory):
    """The default recipe built once from the bundled COCO sample by mfpo-data (about 10 s)."""
    from mfpo_data.pipeline.build import build_dataset

    return build_dataset("coco", output_dir=tmp_path_factory.mktemp("coco-build")).root


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


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Each test starts with no AcceleratorState (TRL's trainer and ours configure it differently)."""
    yield
    import sys

    if "accelerate" in sys.modules:
        from accelerate.state import AcceleratorState, PartialState

        AcceleratorState._reset_state(True)
        PartialState._reset_state()
