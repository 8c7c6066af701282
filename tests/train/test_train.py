"""End-to-end training on tiny models: learning, reference modes, curriculum, resume, non-finite steps."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from mfpo_train.train import train


def _lora_and_base(model):
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    return lora, base


def test_tiny_llava_trains_on_built_dataset(tiny_llava, built_dataset, make_config):
    from transformers import AutoModelForImageTextToText

    cfg = make_config(tiny_llava, built_dataset, "train.max_steps=4", "train.batch_size=2")
    result = train(cfg)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    assert result.history[0]["loss"] == pytest.approx(3 * math.log(2), abs=1e-5)  # LoRA B = 0: policy == reference
    lora, base = _lora_and_base(result.model)
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in lora.items())  # adapters moved away from zero
    original = AutoModelForImageTextToText.from_pretrained(tiny_llava).state_dict()
    for name, p in base.items():  # base weights are untouched
        key = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(p, original[key]), name
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
                "logps/rejected", "image_rewards/chosen", "image_rewards/rejected", "image_rewards/margins",
                "image_rewards/accuracies", "loss/text", "loss/image", "loss/margin"):
        assert key in result.history[-1], key


def test_image_reward_margin_rises_on_a_fixed_batch(tiny_llava, built_dataset, make_config):
    cfg = make_config(tiny_llava, built_dataset, "data.max_samples=2", "train.batch_size=2", "curriculum=none",
                      "epochs_per_stage=20", "optim.lr=2.0e-3")
    history = train(cfg).history
    margins = [h["image_rewards/margins"] for h in history]
    assert len(margins) == 20 and margins[0] == pytest.approx(0.0, abs=1e-6)
    assert margins[-1] > 0.05, margins
    assert sum(margins[10:]) > sum(margins[:10])


def test_idefics3_trains(tiny_idefics3, synthetic_data, make_config):
    cfg = make_config(tiny_idefics3, synthetic_data, "train.max_steps=2", "curriculum=none")
    result = train(cfg)
    assert all(math.isfinite(h["loss"]) for h in result.history)
    lora, _ = _lora_and_base(result.model)
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in lora.items())


def test_precomputed_reference_gives_the_online_loss(tiny_llava, synthetic_data, make_config, tmp_path):
    from mfpo_train.precompute import precompute_reference

    # random adapters at step 0, so the policy differs from the reference and the loss is not 3 log 2
    common = ("lora.init_lora_weights=false", "train.max_steps=1", "curriculum=none")
    ref_dir = precompute_reference(make_config(tiny_llava, synthetic_data), tmp_path / "with-ref", batch_size=5)
    online = train(make_config(tiny_llava, ref_dir, "reference=model", *common, output_dir=tmp_path / "a"))
    pre = train(make_config(tiny_llava, ref_dir, "reference=precomputed", *common, output_dir=tmp_path / "b"))
    assert abs(online.history[0]["loss"] - 3 * math.log(2)) > 1e-4
    assert pre.history[0]["loss"] == pytest.approx(online.history[0]["loss"], abs=1e-5)
    assert pre.history[0]["image_rewards/margins"] == pytest.approx(online.history[0]["image_rewards/margins"], abs=1e-5)


def test_precomputed_reference_for_another_model_is_refused(tiny_llava, synthetic_data, make_config, tmp_path):
    from mfpo_train.errors import TrainingError
    from mfpo_train.precompute import precompute_reference

    ref_dir = precompute_reference(make_config(tiny_llava, synthetic_data), tmp_path / "with-ref")
    with pytest.raises(TrainingError, match="max_length=99"):
        train(make_config(tiny_llava, ref_dir, "reference=precomputed", "data.max_length=99"))


def _metrics(output_dir):
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def test_curriculum_order_and_exact_resume(tiny_llava, synthetic_data, make_config, tmp_path):
    # 12 rows, 4 per bucket, batch 2: steps 1-2 easy, 3-4 medium, 5-6 hard. Checkpoint at step 3 is mid-stage.
    opts = ("train.batch_size=2", "train.save_every=3", "lora.dropout=0.1")  # dropout: RNG state must resume too
    full = train(make_config(tiny_llava, synthetic_data, *opts, output_dir=tmp_path / "full"))
    stages = [m["stage"] for m in _metrics(tmp_path / "full")]
    assert stages == ["easy", "easy", "medium", "medium", "hard", "hard"]
    ckpt = tmp_path / "full" / "checkpoints" / "step-00000003"
    assert json.loads((ckpt / "trainer_state.json").read_text())["stage_index"] == 1  # medium, not finished

    resumed_dir = tmp_path / "resumed"
    shutil.copytree(ckpt, resumed_dir / "checkpoints" / ckpt.name)
    shutil.copy(tmp_path / "full" / "config.json", resumed_dir)  # a run folder: a checkpoint alone is not one
    resumed = train(make_config(tiny_llava, synthetic_data, *opts, output_dir=resumed_dir), resume=True)
    assert [h["step"] for h in resumed.history] == [4, 5, 6]
    assert [h["stage"] for h in resumed.history] == ["medium", "hard", "hard"]
    for a, b in zip(full.history[3:], resumed.history, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-6)
        assert b["rewards/margins"] == pytest.approx(a["rewards/margins"], abs=1e-6)


@pytest.mark.parametrize("lora", ["true", "false"])
def test_refresh_reference_resets_rewards_at_each_stage(tiny_llava, synthetic_data, make_config, lora, tmp_path):
    # lora true: the frozen "ref" adapter is reset; lora false: the full reference copy is reset
    opts = ("train.batch_size=4", f"lora.enabled={lora}", "optim.lr=1.0e-2")  # one step per stage
    plain = train(make_config(tiny_llava, synthetic_data, *opts, output_dir=tmp_path / "plain")).history
    refreshed = train(make_config(tiny_llava, synthetic_data, *opts, "refresh_reference=true",
                                  output_dir=tmp_path / "refreshed")).history
    assert [h["stage"] for h in refreshed] == ["easy", "medium", "hard"]
    for step in (1, 2):  # first step of medium and hard: the reference is the policy that finished the stage before
        assert refreshed[step]["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)
        assert refreshed[step]["loss/text"] == pytest.approx(math.log(2), abs=1e-6)
        assert abs(plain[step]["rewards/chosen"]) > 1e-5


def _with_reference_columns(src_rows, bad_rows, key):
    import datasets

    from mfpo_data.schema import features

    feats = features().copy()
    for col in ("ref_chosen_logps", "ref_rejected_logps", "ref_perturbed_logps"):
        feats[col] = datasets.Value("float32")
    feats["ref_logps_model"] = datasets.Value("string")
    rows = []
    for i, r in enumerate(src_rows):
        bad = float("nan") if i in bad_rows else -20.0
        rows.append(dict(r, ref_chosen_logps=bad, ref_rejected_logps=-20.0, ref_perturbed_logps=-20.0,
                         ref_logps_model=key))
    return datasets.Dataset.from_list(rows, features=feats)


def test_nonfinite_loss_skips_the_step_and_stops_past_the_limit(tiny_llava, make_config, tmp_path):
    from mfpo_train.data import reference_key
    from mfpo_train.errors import TrainingError
    from mfpo_train.synthetic import synthetic_rows

    key = reference_key(str(tiny_llava), None, 256)
    (tmp_path / "nan" / "data").mkdir(parents=True)
    # rows 0-3 (the easy stage) carry a NaN reference: with batch 4 and no shuffling effect, step 1 is non-finite
    _with_reference_columns(synthetic_rows(12), {0, 1, 2, 3}, key).to_parquet(
        str(tmp_path / "nan" / "data" / "train-00000-of-00001.parquet"))
    result = train(make_config(tiny_llava, tmp_path / "nan", "train.batch_size=4", "train.max_nonfinite_steps=1"))
    assert [h["skipped"] for h in result.history] == [1, 0, 0]
    assert result.state.nonfinite_steps == 1
    assert all(math.isfinite(h["loss"]) for h in result.history[1:])
    with pytest.raises(TrainingError, match="non-finite"):
        train(make_config(tiny_llava, tmp_path / "nan", "train.batch_size=4", "train.max_nonfinite_steps=0",
                          output_dir=tmp_path / "stop"))


def test_dataset_without_mfpo_columns_is_refused_before_loading_a_model(make_config, tmp_path):
    import datasets

    from mfpo_data.errors import SchemaError
    from mfpo_train.synthetic import synthetic_rows

    rows = [{k: r[k] for k in ("images", "prompt", "chosen", "rejected")} for r in synthetic_rows(2)]
    (tmp_path / "trl" / "data").mkdir(parents=True)
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "trl" / "data" / "train-00000-of-00001.parquet"))
    with pytest.raises(SchemaError) as err:
        train(make_config(tmp_path / "no-such-model", tmp_path / "trl"))
    message = str(err.value)
    assert "\n" not in message
    for column in ("rejected_images", "key_objects", "mask", "difficulty", "difficulty_bucket"):
        assert column in message


def test_a_dataset_built_before_targets_key_object_and_image_reliance_trains(tiny_llava, make_config, tmp_path):
    from mfpo_data.schema import LATER_COLUMNS
    from mfpo_train.errors import TrainingError
    from mfpo_train.synthetic import synthetic_dataset

    (tmp_path / "old" / "data").mkdir(parents=True)
    old = synthetic_dataset(4).remove_columns(list(LATER_COLUMNS))
    old.to_parquet(str(tmp_path / "old" / "data" / "train-00000-of-00001.parquet"))
    result = train(make_config(tiny_llava, tmp_path / "old", "train.max_steps=1", "curriculum=none"))
    assert result.state.global_step == 1 and math.isfinite(result.history[0]["loss/image"])
    with pytest.raises(TrainingError, match="4 rows of .* have no image_reliance .*the `reliance` stage"):
        train(make_config(tiny_llava, tmp_path / "old", "loss.token_weighting=image_reliance", output_dir=tmp_path / "w"))


def test_image_term_is_masked_for_rows_without_a_valid_image_pair(tiny_llava, built_dataset, make_config, monkeypatch):
    import mfpo_train.train as train_module
    from mfpo_data.validate import load_and_validate

    valid = load_and_validate(built_dataset, split="train")["image_pair_valid"]
    assert 0 < valid.count(False) < len(valid)  # the default build has "No, there is no X" rows
    seen = []
    real = train_module.mfpo_loss

    def recording(policy, ref, **kwargs):
        out = real(policy, ref, **kwargs)
        seen.append((kwargs["image_mask"].clone(), out.terms["image"].detach().clone()))
        return out

    monkeypatch.setattr(train_module, "mfpo_loss", recording)
    result = train(make_config(tiny_llava, built_dataset, "train.max_steps=3", "train.batch_size=8", "curriculum=none"))
    masked = 0
    for step, (mask, image_terms) in enumerate(seen):
        assert torch.all(image_terms[mask == 0] == 0)
        if step == 0:  # LoRA B = 0: policy == reference, so each unmasked row pays log 2
            torch.testing.assert_close(image_terms[mask == 1], torch.full_like(image_terms[mask == 1], math.log(2)))
        masked += int((mask == 0).sum())
    assert masked > 0
    assert sum(h["image_masked_rows"] for h in result.history) == masked
