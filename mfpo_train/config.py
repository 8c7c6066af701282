"""The training config: dataclasses, one per YAML section, loaded with the same strict rules as build recipes.

```yaml
model:    {name_or_path, revision, dtype, trust_remote_code, attn_implementation, gradient_checkpointing}
lora:     {enabled, r, alpha, dropout, target_modules, exclude_modules}
data:     {dataset, revision, split, max_length, max_samples, num_workers, eval_split, eval_max_samples}
loss:     {beta, text_weight, image_weight, margin_weight, eta}
reference: auto | model | precomputed
curriculum: [easy, medium, hard]     # or: none (one end-to-end stage over all rows)
refresh_reference: false             # reset the reference to the policy at each stage start
epochs_per_stage: 1
optim:    {lr, weight_decay, betas, scheduler, warmup_ratio, max_grad_norm}
train:    {batch_size, gradient_accumulation_steps, mixed_precision, seed, log_every, save_every, save_total_limit,
           max_nonfinite_steps, report_to, output_dir, max_steps, sequence_chunks, eval_steps, shared_prefix,
           logps_chunk_size}
```

Importing this module imports neither torch nor transformers, so `mfpo-train --help` and config
validation stay instant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mfpo_data.errors import ConfigError
from mfpo_data.schema import DIFFICULTY_BUCKETS


@dataclass
class ModelConfig:
    name_or_path: str = ""
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False  # never on unless the config asks
    attn_implementation: str | None = None
    gradient_checkpointing: bool = False

    def check(self, path: str) -> None:
        if not self.name_or_path:
            raise ConfigError(f"'{_join(path, 'name_or_path')}' is required (a Hub id or a local folder)")


@dataclass
class LoraConfig:
    enabled: bool = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    # Passed to peft as they are: "all-linear", a list of module names, or one regex string.
    target_modules: list[str] | str = "all-linear"
    exclude_modules: list[str] | str | None = None
    # peft's init_lora_weights: True starts at B = 0 (policy == reference at step 0).
    init_lora_weights: bool = True

    def check(self, path: str) -> None:
        if self.r <= 0:
            raise ConfigError(f"'{_join(path, 'r')}' must be > 0, got {self.r}")


@dataclass
class DataConfig:
    # A build output folder (OUT/data/*.parquet), a folder `datasets.load_dataset` reads, or a Hub id.
    dataset: str = ""
    revision: str | None = None  # a Hub dataset's branch, tag or commit sha (refused for a local folder)
    split: str = "train"
    # Longest sequence (prompt with image tokens + answer). Answers are truncated, image tokens never;
    # a row whose prompt alone leaves no room for an answer token is dropped and counted.
    max_length: int | None = 2048
    max_samples: int | None = None
    num_workers: int = 0
    # Rows for MFPO's probes (mfpo_train/eval/probes.py), run every `train.eval_steps` and at the end and logged
    # as eval/*: `auto` = the dataset's `test` split when it has one (`mfpo-data publish --test-size`), a split
    # name, or null for none.
    eval_split: str | None = "auto"
    eval_max_samples: int | None = None

    def check(self, path: str) -> None:
        if not self.dataset:
            raise ConfigError(f"'{_join(path, 'dataset')}' is required (a folder or a Hub id)")
        if self.max_length is not None and self.max_length < 2:
            raise ConfigError(f"'{_join(path, 'max_length')}' must be >= 2, got {self.max_length}")
        if self.eval_max_samples is not None and self.eval_max_samples < 1:
            raise ConfigError(f"'{_join(path, 'eval_max_samples')}' must be >= 1 or null, got {self.eval_max_samples}")


@dataclass
class LossConfig:
    """L = text_weight * L_text + image_weight * L_image + margin_weight * L_margin (paper Eq. 5-7).

    Plain DPO: image_weight = margin_weight = 0. mDPO and MFPO: all three at 1 (the paper's best, eta 0).
    `token_weighting: image_reliance` weights the chosen answer's tokens by the dataset's `image_reliance`
    column (`losses.reliance_weights`); `none` is the paper's uniform sum.
    """

    beta: float = 0.1
    text_weight: float = 1.0
    image_weight: float = 1.0
    margin_weight: float = 1.0
    eta: float = 0.0
    token_weighting: Literal["none", "image_reliance"] = "none"

    def check(self, path: str) -> None:
        if self.beta <= 0:
            raise ConfigError(f"'{_join(path, 'beta')}' must be > 0, got {self.beta}")
        for name in ("text_weight", "image_weight", "margin_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"'{_join(path, name)}' must be >= 0, got {getattr(self, name)}")
        if self.text_weight == self.image_weight == self.margin_weight == 0:
            raise ConfigError(f"'{path or 'loss'}': at least one of text/image/margin weight must be > 0")


@dataclass
class OptimConfig:
    lr: float = 5e-6
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    scheduler: Literal["constant", "linear", "cosine"] = "cosine"
    warmup_ratio: float = 0.0
    max_grad_norm: float | None = 1.0


@dataclass
class RunConfig:
    output_dir: str = "runs/mfpo"
    batch_size: int = 1  # per device, in preference pairs (each pair is 3 sequences)
    gradient_accumulation_steps: int = 1
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    seed: int = 0
    log_every: int = 1
    save_every: int | None = None  # optimizer steps; a checkpoint is also written at every stage end
    save_total_limit: int | None = None  # keep the newest N checkpoints (null: all)
    max_nonfinite_steps: int = 10  # a NaN/inf loss skips the step; more skips than this stop the run
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])  # [] for none; metrics.jsonl is always written
    max_steps: int | None = None  # stop after this many optimizer steps (the LR schedule still spans the whole run)
    # Policy forward (mfpo_train/gradcache.py). 1: one forward over the 3 sequences of every pair; fastest, but
    # activations of 3 sequences per pair are alive at once (benchmarks/train_step.py, tiny LLaVA at 224 px: step
    # peak ~1.4x TRL's DPO step). k > 1: gradient caching: log-probs of all rows without grad first, then the rows
    # are re-forwarded with grad in k chunks (3 = one sequence at a time: step peak ~0.45x TRL's). Same loss and
    # gradients (dropout allowed: masks are replayed), but one extra no-grad forward of every row: 1.2-1.4x the step
    # time of 1 (with LoRA, where the backward costs about a forward). Pick 1 when the step fits. When it does not,
    # first lower batch_size and raise gradient_accumulation_steps (same gradients, no extra compute); use 3 (or 2)
    # when batch_size 1 still does not fit (one pair's 3 long sequences), alone or with gradient_checkpointing.
    # Not with DeepSpeed.
    sequence_chunks: int = 1
    eval_steps: int | None = None  # probe the eval split every this many optimizer steps (and always at the end)
    # Scoring (mfpo_train/scoring.py, shared_prefix.py); both change speed and memory, not the values (tested
    # equal within float rounding). shared_prefix: y_l|m continues from y_w|m's prompt (its key/value cache; one
    # packed row under gradient checkpointing), so the image and prompt run once and each distinct image is
    # encoded once, where exact for the model family, else one row per sequence (logged).
    # logps_chunk_size: answer tokens per LM-head chunk; no [rows, seq, vocab] logits are held;
    # 0: score from the model's full logits.
    shared_prefix: bool = True
    logps_chunk_size: int = 1024

    def check(self, path: str) -> None:
        for name in ("batch_size", "gradient_accumulation_steps", "log_every", "sequence_chunks"):
            if getattr(self, name) < 1:
                raise ConfigError(f"'{_join(path, name)}' must be >= 1, got {getattr(self, name)}")
        if self.logps_chunk_size < 0:
            raise ConfigError(f"'{_join(path, 'logps_chunk_size')}' must be >= 0 (0: full logits), got "
                              f"{self.logps_chunk_size}")
        for name in ("save_every", "save_total_limit", "eval_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"'{_join(path, name)}' must be >= 1 or null, got {getattr(self, name)}")
        unknown = [t for t in self.report_to if t not in ("tensorboard", "wandb")]
        if unknown:
            raise ConfigError(f"'{_join(path, 'report_to')}': unknown tracker {unknown[0]!r} (tensorboard, wandb)")


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    # auto: precomputed reference columns when the dataset has them for this model, else a model forward.
    reference: Literal["auto", "model", "precomputed"] = "auto"
    curriculum: list[str] | Literal["none"] = field(default_factory=lambda: list(DIFFICULTY_BUCKETS))
    refresh_reference: bool = False
    epochs_per_stage: int = 1
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: RunConfig = field(default_factory=RunConfig)

    def check(self, path: str) -> None:
        # Sections left out of the YAML get defaults without their own check; required keys are checked here.
        self.model.check("model")
        self.data.check("data")
        if self.curriculum != "none":
            if not self.curriculum:
                raise ConfigError("'curriculum' must list stages (easy, medium, hard) or be none")
            for i, stage in enumerate(self.curriculum):
                if stage not in DIFFICULTY_BUCKETS:
                    raise ConfigError(f"'curriculum.{i}' must be one of easy, medium, hard, got {stage!r}")
            if len(set(self.curriculum)) != len(self.curriculum):
                raise ConfigError("'curriculum' lists a stage twice")
        if self.epochs_per_stage < 1:
            raise ConfigError(f"'epochs_per_stage' must be >= 1, got {self.epochs_per_stage}")
        if self.refresh_reference and self.reference == "precomputed":
            raise ConfigError("'refresh_reference' needs a model reference; it cannot be used with reference: precomputed")

    @property
    def stages(self) -> list[str]:
        """Stage names in training order; 'all' when the curriculum is off."""
        return ["all"] if self.curriculum == "none" else list(self.curriculum)

    @property
    def output_dir(self) -> Path:
        return Path(self.train.output_dir).expanduser()


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML config (a path, or the name of one in ./recipes/train/ or shipped with mfpo; defaults when
    `path` is None), apply `a.b=c` overrides, validate."""
    from mfpo_data.config import find_recipe
    from mfpo_data.strict import apply_overrides, from_dict, load_yaml

    data = load_yaml(find_recipe(path, subdir="train")) if path is not None else {}
    data = apply_overrides(data, list(overrides))
    return from_dict(TrainConfig, data)


def config_to_dict(cfg: TrainConfig) -> dict:
    from mfpo_data.strict import to_dict

    return to_dict(cfg)
