"""The reference forward takes the image features that the policy forward of the same batch computed.

The online reference is the policy with its LoRA adapters disabled (or the frozen "ref" adapter active). On the
path from pixels to image features (the vision tower and the projector, which the recipes keep free of adapters
with `lora.exclude_modules`) both forwards then run the same frozen weights on the same pixels, so the reference
need not encode every image again: it looks each of its images up among those the policy forward encoded (equal
pixels, equal arguments) and uses their features. Exact, not approximate: the features are the same tensors.

Whether the path allows it is decided once, from the modules the first encoding runs: none may be an adapter
layer (its output changes when adapters are disabled), hold a trainable parameter (a projector trained in full:
peft's `modules_to_save` copy is disabled with the adapters) or apply dropout in training mode (the policy forward
trains, the reference runs in eval mode). Otherwise every image is encoded again, as without this, logged once.

Models whose `get_image_features` returns one entry per row of `pixel_values` (LLaVA and its kin) are matched image
by image, so the reference's per-block forwards find the images that the policy's forward encoded together; any
other model is matched only call for call (the same pixel tensor and arguments).
"""

from __future__ import annotations

import contextlib
import logging

import torch

from mfpo_train.scoring import log_once, transformers_model


logger = logging.getLogger(__name__)
_DROPOUT_ATTRS = ("dropout", "attention_dropout", "dropout_p", "hidden_dropout", "dropout_rate")
# Arguments that reach `get_image_features` from the model's forward but do not change the features it returns.
_NEUTRAL = ("use_cache", "return_dict", "output_attentions", "output_hidden_states")


def feature_modules(model) -> list[torch.nn.Module]:
    """The innermost modules of the model that have a `get_image_features` (LLaVA: `LlavaModel`, which its
    forward calls; the outer class only delegates to it)."""
    owners = [m for m in transformers_model(model).modules() if callable(getattr(m, "get_image_features", None))]
    return [m for m in owners if not any(c is not m and callable(getattr(c, "get_image_features", None))
                                         for c in m.modules())]  # fmt: skip


def not_shareable(modules, training: bool) -> str | None:
    """Why features computed by `modules` in the policy forward could differ in the reference forward (None: they
    cannot)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in modules:
        if isinstance(module, BaseTunerLayer):
            return f"an adapter layer ({name}) computes them"
        if any(p.requires_grad for p in module.parameters(recurse=False)):
            return f"a trainable parameter ({name}) computes them"
        if training and module.training and (
                (isinstance(module, torch.nn.Dropout) and module.p > 0)
                or any(isinstance(getattr(module, a, None), float) and getattr(module, a) > 0 for a in _DROPOUT_ATTRS)
                or isinstance(module, torch.nn.modules.batchnorm._BatchNorm)):  # fmt: skip
            return f"{name} acts differently in training mode (dropout or batch statistics)"
    return None


class SharedImageFeatures:
    """While open: `get_image_features` of `model` records what it computes; inside `serve()` it answers from the
    records where it can. `exact` is the decision of an earlier batch of the same model (None: decide now)."""

    def __init__(self, model, exact: bool | None = None):
        self.model, self.exact, self.serving = model, exact, False
        self.entries: list[tuple] = []  # (pixel_values, other args, output, per-image features or None)
        self.hits = self.misses = 0
        self.owners = feature_modules(model)
        for owner in self.owners:
            original = owner.get_image_features
            owner.get_image_features = self._wrap(owner, original)

    def close(self) -> None:
        for owner in self.owners:
            owner.__dict__.pop("get_image_features", None)  # the class's method again
        self.entries.clear()

    @contextlib.contextmanager
    def serve(self):
        self.serving = True
        try:
            yield
        finally:
            self.serving = False

    def _wrap(self, owner, original):
        def get_image_features(pixel_values=None, *args, **kwargs):
            if self.serving and self.exact:
                found = self._lookup(pixel_values, args, kwargs)
                if found is not None:
                    self.hits += 1
                    return found
                self.misses += 1
            if self.serving or self.exact is False:
                return original(pixel_values, *args, **kwargs)
            if self.exact is None:
                out = self._first(owner, original, pixel_values, args, kwargs)
            else:
                out = original(pixel_values, *args, **kwargs)
            if self.exact:
                self._record(pixel_values, args, kwargs, out)
            return out

        return get_image_features

    def _first(self, owner, original, pixel_values, args, kwargs):
        """The first encoding, watching which modules run: they decide `exact`."""
        ran, hooks = [], []
        for name, module in owner.named_modules():
            hooks.append(module.register_forward_pre_hook(lambda m, a, name=name: ran.append((name, m))))
        try:
            out = original(pixel_values, *args, **kwargs)
        finally:
            for h in hooks:
                h.remove()
        reason = not_shareable(ran, training=owner.training) if ran else "no module computed them"
        self.exact = reason is None
        family = type(transformers_model(self.model)).__name__
        if self.exact:
            log_once(family, "reference forward: the policy forward's image features are reused (no adapter, trainable "
                             "parameter or training-mode dropout on the vision path)")
        else:
            log_once(family, "reference forward: the images are encoded again (%s)", reason)
        return out

    def _record(self, pixel_values, args, kwargs, out) -> None:
        if not torch.is_tensor(pixel_values):
            return
        self.entries.append((pixel_values, _others(args, kwargs), out, _per_image(out, pixel_values)))

    def _lookup(self, pixel_values, args, kwargs):
        """The recorded output for exactly this call, or one assembled image by image; None when any is missing."""
        if not torch.is_tensor(pixel_values):
            return None
        others = _others(args, kwargs)
        same_args = [e for e in self.entries if _same(e[1], others)]
        for pv, _, out, _ in same_args:
            if pv.shape == pixel_values.shape and torch.equal(pv, pixel_values):
                return out
        if not any(t is not None and torch.is_tensor(t) for t in others[1].values()):  # only per-image arguments
            rows = [e for e in same_args if e[3] is not None]
            found = []
            for image in pixel_values:
                hit = next((feats[k] for pv, _, _, feats in rows for k in range(len(pv))
                            if pv[k].shape == image.shape and torch.equal(pv[k], image)), None)  # fmt: skip
                if hit is None:
                    return None
                found.append(hit)
            if found:
                return _assemble(rows[0][2], found)
        return None


def _others(args, kwargs) -> tuple:
    return tuple(args), {k: v for k, v in kwargs.items() if k != "pixel_values" and k not in _NEUTRAL}


def _same(a: tuple, b: tuple) -> bool:
    (args_a, kw_a), (args_b, kw_b) = a, b
    if len(args_a) != len(args_b) or kw_a.keys() != kw_b.keys():
        return False
    for x, y in [*zip(args_a, args_b, strict=True), *((kw_a[k], kw_b[k]) for k in kw_a)]:
        if torch.is_tensor(x) or torch.is_tensor(y):
            if not (torch.is_tensor(x) and torch.is_tensor(y) and x.shape == y.shape and torch.equal(x, y)):
                return False
        elif x != y:
            return False
    return True


def _features(out):
    return out.pooler_output if hasattr(out, "pooler_output") else out


def _per_image(out, pixel_values) -> list | None:
    """The features of each row of `pixel_values`, when the output has one entry per row."""
    feats = _features(out)
    n = pixel_values.shape[0]
    if isinstance(feats, (list, tuple)) and len(feats) == n and all(torch.is_tensor(f) for f in feats):
        return list(feats)
    if torch.is_tensor(feats) and feats.dim() > 0 and feats.shape[0] == n:
        return list(feats)
    return None


def _assemble(template, found: list):
    """An output like `template` holding `found` (one entry per image), in the form its family returns."""
    feats = _features(template)
    value = list(found) if isinstance(feats, (list, tuple)) else torch.stack(found)
    if hasattr(template, "pooler_output"):
        return type(template)(pooler_output=value)
    return value
