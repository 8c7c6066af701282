"""Backends by name, as recipes choose them: `section -> backend name -> "module:Class"`.

Modules are imported only when a backend is used, so a heavy backend's library is needed only by the
recipes that ask for it. Issue-specific heavy backends register here too.
"""

from __future__ import annotations

import importlib

from mfpo_data.errors import ConfigError


REGISTRY: dict[str, dict[str, str]] = {
    "source": {
        "coco": "mfpo_data.stages.sources:CocoSource",
        "jsonl": "mfpo_data.stages.sources_jsonl:JsonlSource",
        "hf": "mfpo_data.stages.sources_hf:HfSource",
    },
    "keywords": {
        "vocabulary": "mfpo_data.backends.vocabulary:VocabularyKeywords",
        "graph": "mfpo_data.backends.graph_keywords:GraphKeywords",
    },
    "grounding": {
        "coco_gt": "mfpo_data.backends.coco_gt:CocoGtGrounder",
        "grounding_dino": "mfpo_data.backends.grounding_dino:GroundingDinoGrounder",
    },
    "segmentation": {
        "coco_gt": "mfpo_data.backends.coco_gt:CocoGtSegmenter",
        "box": "mfpo_data.backends.coco_gt:BoxSegmenter",
        "grabcut": "mfpo_data.backends.grabcut:GrabCutSegmenter",
        "sam": "mfpo_data.backends.sam:SamSegmenter",
    },
    "perturbation": {
        "diffusion_noise": "mfpo_data.backends.perturbers:DiffusionNoisePerturber",
        "gaussian_noise": "mfpo_data.backends.perturbers:GaussianNoisePerturber",
        "blur": "mfpo_data.backends.perturbers:BlurPerturber",
        "opencv_inpaint": "mfpo_data.backends.perturbers:OpenCVInpaintPerturber",
        "sd_inpaint": "mfpo_data.backends.sd_inpaint:SdInpaintPerturber",
    },
    "scoring": {
        "heuristic": "mfpo_data.backends.heuristic:HeuristicDifficulty",
        "entropy": "mfpo_data.backends.entropy:EntropyDifficulty",
    },
}


def _entry(section: str, name: str) -> tuple[str, str]:
    choices = REGISTRY.get(section, {})
    if name not in choices:
        key = "kind" if section == "source" else "backend"
        raise ConfigError(f"'{section}.{key}' is '{name}', expected one of: {', '.join(sorted(choices))}")
    module_name, _, attr = choices[name].partition(":")
    return module_name, attr


def module_of(section: str, name: str) -> str:
    """The module that defines backend `name` of `section`, without importing it."""
    return _entry(section, name)[0]


def resolve(section: str, name: str) -> type:
    """The class registered as `name` in `section`; a ConfigError naming the choices otherwise."""
    module_name, attr = _entry(section, name)
    return getattr(importlib.import_module(module_name), attr)
