"""The collator: block layout, answer tokens, image tokens never truncated, too-long prompts dropped."""

from __future__ import annotations

import pytest
import torch

from mfpo_train.collator import MFPOCollator
from mfpo_train.synthetic import synthetic_rows


@pytest.fixture(scope="module", params=["llava", "idefics3"])
def processor(request):
    from transformers import AutoProcessor

    path = request.getfixturevalue(f"tiny_{request.param}")
    return AutoProcessor.from_pretrained(path)


def _image_token_count(processor, ids):
    return int((ids == processor.tokenizer.convert_tokens_to_ids("<image>")).sum())


def test_three_blocks_same_text_different_images(processor):
    rows = synthetic_rows(3)
    batch = MFPOCollator(processor, max_length=None)(rows)
    n = 3
    assert batch["num_pairs"] == n and batch["num_dropped"] == 0
    ids, cm = batch["input_ids"], batch["completion_mask"]
    assert ids.shape[0] == 3 * n and cm.shape == ids.shape
    tok = processor.tokenizer
    for i, row in enumerate(rows):
        chosen = tok.decode(ids[i][cm[i].bool()])
        rejected = tok.decode(ids[n + i][cm[n + i].bool()])
        assert row["chosen"][0]["content"][0]["text"] in chosen
        assert row["rejected"][0]["content"][0]["text"] in rejected
        # y_w | m and y_w | m' are the same tokens; only the pixels differ
        assert torch.equal(ids[i], ids[2 * n + i])
    pv = batch["pixel_values"]
    assert torch.equal(pv[0], pv[n]) and not torch.equal(pv[0], pv[2 * n])


def test_dpo_only_collates_two_blocks(processor):
    batch = MFPOCollator(processor, sequences=("chosen", "rejected"))(synthetic_rows(2))
    assert batch["input_ids"].shape[0] == 4 and batch["pixel_values"].shape[0] == 4


def test_truncation_cuts_answers_never_image_tokens(processor):
    rows = synthetic_rows(2)
    rows[1]["prompt"] = rows[0]["prompt"]  # equal prompt lengths, different answers
    full = MFPOCollator(processor, max_length=None)(rows)
    prompt_len = int((full["attention_mask"][0] - full["completion_mask"][0]).sum())
    max_length = prompt_len + 2
    batch = MFPOCollator(processor, max_length=max_length)(rows)
    assert batch["input_ids"].shape[1] <= max_length
    assert (batch["completion_mask"].sum(-1) == 2).all()  # answers cut to what fits
    for j in range(batch["input_ids"].shape[0]):
        assert _image_token_count(processor, batch["input_ids"][j]) == _image_token_count(processor, full["input_ids"][j])
        assert torch.equal(batch["input_ids"][j][:prompt_len], full["input_ids"][j][:prompt_len])


def test_prompt_longer_than_max_length_is_dropped_and_counted(processor):
    rows = synthetic_rows(3)
    rows[2]["prompt"] = rows[0]["prompt"]
    rows[1]["prompt"] = [{"role": "user", "content": [{"type": "image", "text": None},
                                                      {"type": "text", "text": "describe the image. " * 20}]}]
    full = MFPOCollator(processor, max_length=None)(rows)
    short_prompt = int((full["attention_mask"][0] - full["completion_mask"][0]).sum())
    batch = MFPOCollator(processor, max_length=short_prompt + 4)(rows)
    assert batch["num_dropped"] == 1 and batch["num_pairs"] == 2 and batch["kept"] == [0, 2]
    assert batch["input_ids"].shape[0] == 6
    assert all(_image_token_count(processor, r) > 0 for r in batch["input_ids"])
    everything = MFPOCollator(processor, max_length=8)(rows)
    assert everything == {"num_pairs": 0, "num_dropped": 3, "kept": []}


def test_precomputed_reference_values_follow_block_order(processor):
    rows = synthetic_rows(2)
    for i, r in enumerate(rows):
        r.update(ref_chosen_logps=-1.0 - i, ref_rejected_logps=-10.0 - i, ref_perturbed_logps=-100.0 - i)
    batch = MFPOCollator(processor)(rows)
    assert batch["ref_logps"].tolist() == [[-1.0, -2.0], [-10.0, -11.0], [-100.0, -101.0]]
    rows[1]["ref_chosen_logps"] = None  # a row without values: no reference tensor at all
    assert "ref_logps" not in MFPOCollator(processor)(rows)


def test_matches_trl_vision_collator_tokens(tiny_llava):
    """Our chosen/rejected rows hold the same tokens as TRL's DataCollatorForVisionPreference builds."""
    pytest.importorskip("trl")
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_llava)
    rows = synthetic_rows(2)
    trl_rows = [{"images": r["images"], "chosen": r["chosen"], "rejected": r["rejected"],
                 "prompt": [{"role": "user", "content": [{"type": "image"}, r["prompt"][0]["content"][1]]}]}
                for r in rows]
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    theirs = DataCollatorForVisionPreference(processor=processor)(trl_rows)
    ours = MFPOCollator(processor, sequences=("chosen", "rejected"))(rows)
    for j in range(4):
        a = ours["input_ids"][j][ours["attention_mask"][j].bool()]
        b = theirs["input_ids"][j][theirs["attention_mask"][j].bool()]
        assert a.tolist() == b.tolist()
        assert ours["completion_mask"][j].sum() == theirs["completion_mask"][j].sum()
