"""Backends by name, as recipes choose them: `section -> backend name -> "module:Class"`.

Modules are imported only when a backend is used, so a heavy backend's library is needed only by the
recipes that ask for it. (Sources have their own table, `mfpo_data.sources.SOURCES`.)
"""

from __future__ import annotations

from mfpo_data.registry import load, target


REGISTRY: dict[str, dict[str, str]] = {
    "keywords": {
        "vocabulary": "mfpo_data.backends.vocabulary:VocabularyKeywords",
        "graph": "mfpo_data.backends.graph_keywords:GraphKeywords",
    },
    "grounding": {
        "coco_gt": "mfpo_data.backends.coco_gt:CocoGtGrounder",
        "grounding_dino": "mfpo_data.backends.grounding_dino:GroundingDinoGrounder",
        "detector": "mfpo_data.backends.detector:DetectorGrounder",
        "groundingdino": "mfpo_data.backends.groundingdino_pth:GroundingDinoPthGrounder",
    },
    "segmentation": {
        "coco_gt": "mfpo_data.backends.coco_gt:CocoGtSegmenter",
        "box": "mfpo_data.backends.coco_gt:BoxSegmenter",
        "grabcut": "mfpo_data.backends.grabcut:GrabCutSegmenter",
        "sam": "mfpo_data.backends.sam:SamSegmenter",
        "sam2": "mfpo_data.backends.sam2:Sam2Segmenter",
        "segment_anything": "mfpo_data.backends.sam_pth:SegmentAnythingSegmenter",
    },
    "perturbation": {
        "diffusion_noise": "mfpo_data.backends.perturbers:DiffusionNoisePerturber",
        "gaussian_noise": "mfpo_data.backends.perturbers:GaussianNoisePerturber",
        "blur": "mfpo_data.backends.perturbers:BlurPerturber",
        "opencv_inpaint": "mfpo_data.backends.perturbers:OpenCVInpaintPerturber",
        "sd_inpaint": "mfpo_data.backends.sd_inpaint:SdInpaintPerturber",
        "random_crop": "mfpo_data.backends.perturbers:RandomCropPerturber",
        "box_occlusion": "mfpo_data.backends.perturbers:BoxOcclusionPerturber",
    },
    "reliance": {
        "none": "mfpo_data.backends.reliance:NoReliance",
        "vlm": "mfpo_data.backends.reliance:ImageRelianceScorer",
    },
    "scoring": {
        "heuristic": "mfpo_data.backends.heuristic:HeuristicDifficulty",
        "entropy": "mfpo_data.backends.entropy:EntropyDifficulty",
    },
}


def module_of(section: str, name: str) -> str:
    """The module that defines backend `name` of `section`, without importing it."""
    return target(REGISTRY.get(section, {}), f"{section}.backend", name)[0]


def resolve(section: str, name: str) -> type:
    """The class registered as `name` in `section`; a ConfigError naming the choices otherwise."""
    return load(REGISTRY.get(section, {}), f"{section}.backend", name)
