"""Ground truth from a COCO folder: images, instance categories in annotation order, human captions.

Reads the COCO layout mfpo's build reads (`annotations/instances_{split}.json`,
`annotations/captions_{split}.json`); `root=None` is the small sample bundled with `mfpo_data`
(split `sample`). The JSON is read directly: the scorers need names and captions, not the build's
per-image index.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mfpo_data.errors import MfpoError
from mfpo_data.scorers.chair import ChairVocabulary, find_mentions
from mfpo_data.scorers.io import read_json


def bundled_coco_root() -> Path:
    """The COCO sample shipped with `mfpo_data` (split `sample`)."""
    return Path(str(resources.files("mfpo_data").joinpath("assets/coco_sample")))


@dataclass
class CocoAnnotations:
    """One COCO split: `images` id -> file name, `objects` id -> category names in annotation order
    (one per instance, repeats included), `captions` id -> human captions, `categories` all names."""

    split: str
    images: dict[int, str]
    objects: dict[int, list[str]]
    captions: dict[int, list[str]]
    categories: list[str]


def read_coco(
    root: str | Path | None,
    split: str = "sample",
    *,
    captions: bool = True,
    instances_file: str | Path | None = None,
    captions_file: str | Path | None = None,
) -> CocoAnnotations:
    """Read a split's instances (and captions); a missing or malformed file is one `MfpoError` line."""
    root = Path(root).expanduser() if root else bundled_coco_root()
    if not root.is_dir():
        raise MfpoError(f"--coco-root: COCO folder not found: {root}")
    inst_path = Path(instances_file) if instances_file else root / "annotations" / f"instances_{split}.json"
    instances = read_json(inst_path, "COCO instances file")
    if not isinstance(instances, dict):
        raise MfpoError(f"{inst_path}: expected a JSON object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(instances.get(key), list):
            raise MfpoError(f"{inst_path}: no '{key}' list")
    names = {c["id"]: c["name"] for c in instances["categories"]}
    images = {img["id"]: img.get("file_name", "") for img in instances["images"]}
    objects: dict[int, list[str]] = {i: [] for i in images}
    for ann in instances["annotations"]:
        image_id, category = ann.get("image_id"), names.get(ann.get("category_id"))
        if image_id in objects and category is not None:
            objects[image_id].append(category)
    caps: dict[int, list[str]] = {i: [] for i in images}
    if captions:
        cap_path = Path(captions_file) if captions_file else root / "annotations" / f"captions_{split}.json"
        data = read_json(cap_path, "COCO captions file")
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            raise MfpoError(f"{cap_path}: no 'annotations' list")
        for cap in data["annotations"]:
            if cap.get("image_id") in caps:
                caps[cap["image_id"]].append(cap.get("caption") or "")
    return CocoAnnotations(split, images, objects, caps, list(names.values()))


def chair_ground_truth(
    coco: CocoAnnotations, vocab: ChairVocabulary, image_ids: Iterable[int] | None = None
) -> dict[int, set[str]]:
    """Each image's CHAIR ground truth: its instance categories plus every object its captions mention.

    Instance names go through the synonym list like the reference (`inverse_synonym_dict[name]`);
    a category name the list does not know is an error.
    """
    ids = list(coco.images) if image_ids is None else list(image_ids)
    truth: dict[int, set[str]] = {}
    for image_id in ids:
        if image_id not in coco.images:
            raise MfpoError(f"image_id {image_id} is not in COCO split {coco.split!r}")
        objs = set()
        for name in coco.objects[image_id]:
            if name not in vocab.synonyms:
                raise MfpoError(f"COCO category {name!r} is not in the CHAIR synonym list")
            objs.add(vocab.synonyms[name])
        for caption in coco.captions[image_id]:
            objs.update(m.category for m in find_mentions(caption, vocab))
        truth[image_id] = objs
    return truth


def unique_objects(objects: Mapping[int, list[str]]) -> dict[int, list[str]]:
    """Per image, the distinct categories in order of first annotation (POPE's `objects` list)."""
    return {i: list(dict.fromkeys(names)) for i, names in objects.items()}
