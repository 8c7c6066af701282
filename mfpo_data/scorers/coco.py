"""Ground truth from a COCO folder: images, instance categories in annotation order, human captions.

Reads the COCO layout mfpo's build reads (`annotations/instances_{split}.json`,
`annotations/captions_{split}.json`); `root=None` is the small sample bundled with `mfpo_data`
(split `sample`). The JSON is read directly: the scorers need names and captions, not the build's
per-image index.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mfpo_data.errors import MfpoError
from mfpo_data.scorers.chair import ChairVocabulary, find_mentions
from mfpo_data.scorers.io import read_json, shown


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
        raise MfpoError(f"--coco-root: COCO folder not found: {shown(root)}")
    inst_path = Path(instances_file) if instances_file else root / "annotations" / f"instances_{split}.json"
    instances = _lists(inst_path, "COCO instances file", ("images", "annotations", "categories"))
    names = {_int(c, "id", inst_path, "categories", i): _text(c, "name", inst_path, "categories", i)
             for i, c in enumerate(instances["categories"])}
    images: dict[int, str] = {}
    for i, img in enumerate(instances["images"]):
        image_id = _int(img, "id", inst_path, "images", i)
        if image_id in images:
            raise MfpoError(f"{shown(inst_path)}: images[{i}]: image id {image_id} appears twice")
        images[image_id] = _text(img, "file_name", inst_path, "images", i)
    objects: dict[int, list[str]] = {i: [] for i in images}
    for i, ann in enumerate(instances["annotations"]):
        image_id = _int(ann, "image_id", inst_path, "annotations", i)
        category = names.get(_int(ann, "category_id", inst_path, "annotations", i))
        if image_id in objects and category is not None:
            objects[image_id].append(category)
    caps: dict[int, list[str]] = {i: [] for i in images}
    if captions:
        cap_path = Path(captions_file) if captions_file else root / "annotations" / f"captions_{split}.json"
        for i, cap in enumerate(_lists(cap_path, "COCO captions file", ("annotations",))["annotations"]):
            image_id = _int(cap, "image_id", cap_path, "annotations", i)
            if image_id in caps:
                caps[image_id].append(_text(cap, "caption", cap_path, "annotations", i))
    return CocoAnnotations(split, images, objects, caps, list(names.values()))


def _lists(path: Path, what: str, keys: tuple[str, ...]) -> dict:
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise MfpoError(f"{shown(path)}: expected a JSON object")
    for key in keys:
        if not isinstance(data.get(key), list):
            raise MfpoError(f"{shown(path)}: no '{key}' list")
    return data


def _field(record, key: str, kind, path: Path, section: str, i: int):
    value = record.get(key) if isinstance(record, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise MfpoError(f"{shown(path)}: {section}[{i}]: '{key}' must be {'an integer' if kind is int else 'a string'}, "
                        f"got {json.dumps(value)[:40] if isinstance(record, dict) else 'no object'}")
    return value


def _int(record, key: str, path: Path, section: str, i: int) -> int:
    return _field(record, key, int, path, section, i)


def _text(record, key: str, path: Path, section: str, i: int) -> str:
    return _field(record, key, str, path, section, i)


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
