"""Load the policy (with LoRA) and its processor; score sequences; run the frozen reference.

The reference is, in order of preference:
  * the policy itself with its LoRA adapters disabled (no second copy in memory);
  * with `refresh_reference`, a frozen second adapter named "ref" that is reset to the policy's adapter
    at each stage start (adapter-sized memory);
  * without LoRA, a frozen full copy of the model;
  * or no model at all: log-probs precomputed into the dataset (`mfpo-train precompute-ref`).
"""

from __future__ import annotations

import contextlib
import copy
import logging

import torch

from mfpo_data.backends.vlm import from_pretrained
from mfpo_train.config import LoraConfig, ModelConfig
from mfpo_train.losses import SequenceLogps
from mfpo_train.scoring import DEFAULT_CHUNK_SIZE, sequence_logps
from mfpo_train.shared_prefix import shared_prefix_logps


logger = logging.getLogger(__name__)

REF_ADAPTER = "ref"


def load_model_and_processor(cfg: ModelConfig):
    """`AutoModelForImageTextToText` + `AutoProcessor` from a Hub id or folder, with the config's options."""
    model, processor = from_pretrained(cfg.name_or_path, revision=cfg.revision, dtype=cfg.dtype,
                                       trust_remote_code=cfg.trust_remote_code,
                                       attn_implementation=cfg.attn_implementation, key="model.name_or_path")
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    return model, processor


def add_lora(model, cfg: LoraConfig, with_ref_adapter: bool = False):
    """Wrap `model` with trainable LoRA adapters ("default"); optionally a frozen copy named "ref"."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_cfg = PeftLoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=cfg.target_modules,
        exclude_modules=cfg.exclude_modules, init_lora_weights=cfg.init_lora_weights, task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, peft_cfg)
    if with_ref_adapter:
        model.add_adapter(REF_ADAPTER, peft_cfg)
        copy_adapter(model, "default", REF_ADAPTER)
        model.set_adapter("default")
        _freeze_adapter(model, REF_ADAPTER)
    return model


def copy_adapter(model, src: str, dst: str) -> None:
    """Copy adapter `src`'s weights into adapter `dst` (same shapes), in place."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in params.items():
            if f".{dst}." in name:
                p.copy_(params[name.replace(f".{dst}.", f".{src}.")])


def _freeze_adapter(model, name: str) -> None:
    for pname, p in model.named_parameters():
        if f".{name}." in pname:
            p.requires_grad_(False)


def is_peft(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


class Reference:
    """Reference log-probs for a batch, from whichever source the run uses (see the module docstring)."""

    def __init__(self, policy, ref_model=None, precomputed: bool = False, shared_prefix: bool = True,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, share_image_features: bool = True):
        self.policy = policy  # the unwrapped policy (a PeftModel when LoRA is on)
        self.ref_model = ref_model
        self.precomputed = precomputed
        self.scoring = dict(shared_prefix=shared_prefix, chunk_size=chunk_size)  # batch_logps options
        self.share_image_features = share_image_features  # see `sharing_image_features`
        self._shared = None  # the open SharedImageFeatures of this batch
        self._features_exact: bool | None = None  # whether this model's vision path allows it (decided once)
        if ref_model is not None:
            ref_model.eval().requires_grad_(False)

    @property
    def kind(self) -> str:
        if self.precomputed:
            return "precomputed"
        if self.ref_model is not None:
            return "copy"
        return "ref_adapter" if REF_ADAPTER in getattr(self.policy, "peft_config", {}) else "disabled_adapters"

    @torch.no_grad()
    def logps(self, forward_model, batch: dict, sequences: tuple[str, ...]) -> SequenceLogps:
        if self.precomputed:
            if "ref_logps" not in batch:
                raise ValueError("reference: precomputed, but the batch has no ref_*_logps values")
            return split_logps(batch["ref_logps"].reshape(-1).to(_device(forward_model)), sequences)
        if self.ref_model is not None:
            return split_logps(batch_logps(self.ref_model, batch, sequences, **self.scoring), sequences)
        serve = self._shared.serve() if self._shared is not None else contextlib.nullcontext()
        with _eval_mode(forward_model), self._adapter_context(), serve:
            return split_logps(batch_logps(forward_model, batch, sequences, **self.scoring), sequences)

    @contextlib.contextmanager
    def sharing_image_features(self, forward_model):
        """Around one batch's policy forward and then `logps` of the same batch: the reference takes the image
        features the policy forward computed instead of encoding the images again (`mfpo_train.image_features`:
        exact, and only where no adapter, trainable parameter or training-mode dropout is on the vision path).
        Nothing changes for a precomputed reference or a separate reference model."""
        if not self.share_image_features or self.kind not in ("disabled_adapters", "ref_adapter") or self._features_exact is False:
            yield
            return
        from mfpo_train.image_features import SharedImageFeatures

        shared = SharedImageFeatures(forward_model, exact=self._features_exact)
        self._shared = shared
        try:
            yield
        finally:
            self._features_exact = shared.exact
            self._shared = None
            shared.close()

    def _adapter_context(self):
        if REF_ADAPTER in self.policy.peft_config:
            return _use_adapter(self.policy, REF_ADAPTER)
        return self.policy.disable_adapter()

    def refresh(self) -> None:
        """Make the reference equal to the current policy (curriculum with `refresh_reference: true`)."""
        if self.precomputed:
            raise ValueError("a precomputed reference cannot be refreshed")
        if self.ref_model is not None:
            self.ref_model.load_state_dict(self.policy.state_dict())
        elif REF_ADAPTER in self.policy.peft_config:
            copy_adapter(self.policy, "default", REF_ADAPTER)
        else:
            raise ValueError("refresh_reference with LoRA needs the 'ref' adapter (add_lora(with_ref_adapter=True))")


def make_reference_copy(model):
    return copy.deepcopy(model).eval().requires_grad_(False)


@contextlib.contextmanager
def _use_adapter(model, name: str):
    previous = model.active_adapter
    model.set_adapter(name, inference_mode=True)
    try:
        yield
    finally:
        model.set_adapter(previous)  # makes `previous` trainable again, `name` frozen


@contextlib.contextmanager
def _eval_mode(model):
    was_training = model.training
    model.eval()  # no dropout in the reference forward
    try:
        yield
    finally:
        model.train(was_training)


def _device(model) -> torch.device:
    return next(model.parameters()).device


def split_logps(flat: torch.Tensor, sequences: tuple[str, ...]) -> SequenceLogps:
    """(S*N,) log-probs in collator block order -> SequenceLogps."""
    parts = dict(zip(sequences, flat.chunk(len(sequences)), strict=True))
    return SequenceLogps(chosen=parts["chosen"], rejected=parts.get("rejected"), perturbed=parts.get("perturbed"))


def batch_logps(model, batch: dict, sequences: tuple[str, ...], shared_prefix: bool = True,
                chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """(S*N,) summed answer log-probs of a collated batch, in its block order (`split_logps` splits them).

    `shared_prefix`: y_w|m and y_l|m from one packed row where that is exact for the family (one image encoding
    per distinct image, `mfpo_train.shared_prefix`); otherwise, or when off, one row per sequence.
    `chunk_size`: answer tokens per LM-head chunk; 0 scores from the model's logits (`scoring`).
    """
    flat = shared_prefix_logps(model, batch, sequences, chunk_size) if shared_prefix else None
    return flat if flat is not None else sequence_logps(model, batch, chunk_size)
