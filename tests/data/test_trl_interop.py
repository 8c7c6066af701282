"""TRL interop: `DPOTrainer` trains on a published (dry-run) mfpo dataset exactly as `load_dataset` returns it.

No column is renamed or dropped by us: TRL reads `images`, `prompt`, `chosen`, `rejected` (typed
content parts, image parts as `{"type": "image", "text": None}`) and ignores the MFPO columns.
Tested with trl 1.16.0 and a tiny random LLaVA and Idefics3 (mfpo_train/tiny.py).
"""

from __future__ import annotations

import math

import pytest


trl = pytest.importorskip("trl")
torch = pytest.importorskip("torch")

from mfpo_data.publishing.publish import publish  # noqa: E402
from mfpo_data.schema import MFPO_COLUMNS, TRL_COLUMNS, features  # noqa: E402
from tests.fixtures.fake_build import make_real_build  # noqa: E402


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Build once with `build_dataset`, publish with --dry-run, load the folder as a user would."""
    import datasets

    root = tmp_path_factory.mktemp("trl")
    layout = make_real_build(root / "build")
    publish(layout.root, "mfpo-org/mfpo-trl", dry_run_dir=root / "upload", test_size=0.25)
    return datasets.load_dataset(str(root / "upload"))


@pytest.mark.parametrize("family", ["llava", "idefics3"])
def test_dpo_trainer_runs_two_steps_on_the_published_dataset(published, tmp_path, family):
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import DPOConfig, DPOTrainer

    from mfpo_train import tiny as tiny_vlm

    torch.manual_seed(0)
    path = getattr(tiny_vlm, f"make_tiny_{family}")(tmp_path / family)
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    train = published["train"]
    assert train.features == features()  # the dataset exactly as published: nothing renamed or removed

    args = DPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=2,
        max_steps=2,
        max_length=None,  # the card's advice for VLMs: never truncate image tokens
        learning_rate=1e-3,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        dataloader_num_workers=0,
    )
    # ref_model=None: TRL loads the reference from the model's folder, as it would from a Hub id.
    trainer = DPOTrainer(model=model, args=args, train_dataset=train, processing_class=processor)

    # The collator turns the typed parts into the model's own image tokens, one image per prompt.
    batch = trainer.data_collator([train[0], train[1]])
    image_token = model.config.image_token_id
    per_row = (batch["input_ids"] == image_token).sum(dim=1)
    assert batch["pixel_values"].shape[0] >= 2 and per_row.min() > 0 and len(set(per_row.tolist())) == 1
    # TRL keeps only its own columns; the MFPO ones are ignored, not required to be removed.
    trainer._set_signature_columns_if_needed()
    used = set(trainer._signature_columns)
    assert set(TRL_COLUMNS) <= used and not used & set(MFPO_COLUMNS)

    trainer.train()
    assert trainer.state.global_step == 2
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(math.isfinite(h["loss"]) for h in logs)
    assert all(math.isfinite(h["rewards/margins"]) for h in logs)
