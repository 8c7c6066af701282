"""Shared test setup: everything runs offline (set before `huggingface_hub` or `datasets` is imported)."""

import os

import pytest


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# End to end (marked `e2e`): builds, training runs, generation, kills and subprocesses, a few seconds each or more.
# A module or folder (a prefix of the test id) or one test; `pytest -m quick` runs everything else.
E2E = (
    "tests/benchmarks/",
    "tests/test_readme_flow.py",
    "tests/test_without_torch.py",
    "tests/data/backends/test_grounded_build.py",
    "tests/data/backends/test_precision_and_sizes.py",
    "tests/data/test_build.py",
    "tests/data/test_crash_resume.py",
    "tests/data/test_default_build.py",
    "tests/data/test_executors.py",
    "tests/data/test_hostile_files.py",
    "tests/data/test_on_policy.py",
    "tests/data/test_output_folder.py",
    "tests/data/test_overlap.py",
    "tests/data/test_publish.py::test_end_to_end_on_a_real_build",
    "tests/data/test_sources_published.py",
    "tests/data/test_trl_interop.py",
    "tests/eval/test_hostile_answers.py::test_every_hostile_line_is_one_error_naming_file_line_and_field",
    "tests/eval/test_hostile_run.py",
    "tests/eval/test_run_cli.py",
    "tests/eval/test_run_mmhal.py",
    "tests/eval/test_run_ranks.py",
    "tests/train/test_config_cli.py",
    "tests/train/test_families.py",
    "tests/train/test_processes.py",
    "tests/train/test_sharded.py",
    "tests/train/test_dry_run.py",
    "tests/train/test_hostile_runs.py",
    "tests/train/test_run_safety.py",
    "tests/train/test_token_reliance.py",
    "tests/train/test_train.py",
    "tests/train/test_train_probes.py",
)


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Each test ends with no accelerate state, so the next starts with none, whatever folder it is in (TRL's
    trainer in tests/data and the efficacy benchmark's in-process training configure it differently)."""
    yield
    from tests.fixtures.accelerate_state import reset_accelerate

    reset_accelerate()


def pytest_collection_modifyitems(config, items):
    """`e2e` on the tests E2E names; `quick` on every test that is not e2e, slow or gpu (the unit tests)."""
    for item in items:
        if item.nodeid.startswith(E2E):
            item.add_marker(pytest.mark.e2e)
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
