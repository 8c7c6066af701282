"""Sources: read question-image material and yield `Sample`s, sharded by rank in a stable order.

`CocoSource` reads the COCO 2014/2017 layout (`annotations/instances_{split}.json`,
`annotations/captions_{split}.json`, images in `{split}/`), by default the small sample bundled with
mfpo. The index (`sources/base.py`) holds one line per image, sorted by image id, so no worker
loads COCO's large annotation files. The text pairs come from `coco_pairs.py`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from mfpo_data.coco_pairs import caption_pairs, presence_pairs
from mfpo_data.errors import MfpoError
from mfpo_data.imaging import DEFAULT_MAX_PIXELS, ImageError, xywh_to_xyxy
from mfpo_data.plausibility import ContextStats
from mfpo_data.schema import Annotation, Sample
from mfpo_data.seeding import rng
from mfpo_data.sources.base import IndexedSource, read_image
from mfpo_data.vocabulary import SUPERCATEGORY, find_mentions


BUNDLED_COCO = Path(__file__).resolve().parent.parent / "assets" / "coco_sample"


class CocoSource(IndexedSource):
    """COCO images with caption pairs and presence pairs built from their annotations."""

    kind = "coco"

    def __init__(
        self,
        root: str | None = None,
        split: str = "sample",
        images_dir: str | None = None,
        instances_file: str | None = None,
        captions_file: str | None = None,
        pair_types: list[Literal["caption", "presence"]] | None = None,
        captions_per_image: int = 2,
        presence_per_image: int = 2,
        absent_key: Literal["nearest", "none"] = "nearest",
        limit: int | None = None,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
        seed: int = 0,
        index_path: str | None = None,
    ):
        super().__init__(max_image_pixels, seed, index_path)
        self.root = Path(root).expanduser() if root else BUNDLED_COCO
        self.split = split
        self.images_dir = self.root / (images_dir or split)
        self.instances_file = self.root / (instances_file or f"annotations/instances_{split}.json")
        self.captions_file = self.root / (captions_file or f"annotations/captions_{split}.json")
        self.pair_types = list(pair_types) if pair_types is not None else ["caption", "presence"]
        self.captions_per_image, self.presence_per_image = captions_per_image, presence_per_image
        self.absent_key, self.limit = absent_key, limit
        self.context_stats: dict = {}  # word -> {category: count} over the split's captions, set by prepare()

    # -- run once, before the ranks -------------------------------------------------------------
    def check(self) -> None:
        """Fail early, with one line, on a source that cannot be read at all."""
        if not self.root.is_dir():
            raise MfpoError(f"source.root: COCO folder not found: {self.root}")
        if not self.instances_file.is_file():
            raise MfpoError(f"source: instances file not found: {self.instances_file}")
        if "caption" in self.pair_types and not self.captions_file.is_file():
            raise MfpoError(f"source: captions file not found: {self.captions_file} (or drop 'caption' from source.pair_types)")
        if not self.images_dir.is_dir():
            raise MfpoError(f"source: image folder not found: {self.images_dir}")
        if not self.pair_types:
            raise MfpoError("source.pair_types is empty")

    def index_entries(self) -> list[dict]:
        """One line per image: its file, usable annotations, captions and rejected annotations."""
        instances = _read_json(self.instances_file)
        for key in ("images", "annotations", "categories"):
            if not isinstance(instances.get(key), list):
                raise MfpoError(f"source: {self.instances_file} has no '{key}' list")
        categories = {c["id"]: c["name"] for c in instances["categories"]}
        records: dict[int, dict] = {}
        for img in sorted(instances["images"], key=lambda i: i["id"]):
            records[img["id"]] = {"id": img["id"], "file_name": img["file_name"], "annotations": [], "captions": [], "rejects": []}
        for ann in sorted(instances["annotations"], key=lambda a: a["id"]):
            rec = records.get(ann.get("image_id"))
            if rec is None:
                continue
            name = categories.get(ann.get("category_id"))
            if name not in SUPERCATEGORY:
                rec["rejects"].append({"id": f"{self.split}:annotation:{ann['id']}", "reason": f"unknown_category: {ann.get('category_id')!r}"})
                continue
            if ann.get("iscrowd"):
                continue
            rec["annotations"].append({"category": name, "bbox": ann["bbox"], "segmentation": ann.get("segmentation")})
        if "caption" in self.pair_types:
            stats = ContextStats()
            for cap in sorted(_read_json(self.captions_file).get("annotations", []), key=lambda c: c["id"]):
                text = cap.get("caption") or ""
                stats.add(text, find_mentions(text))
                rec = records.get(cap.get("image_id"))
                if rec is not None:
                    rec["captions"].append([cap["id"], text])
            self.context_stats = stats.to_dict()  # shipped to the ranks with the source
        return list(records.values())[: self.limit] if self.limit is not None else list(records.values())

    # -- per rank ---------------------------------------------------------------------------------
    def samples(self, rec: dict, rank_state: dict) -> Iterator[Sample]:
        image_id = str(rec["id"])
        for reject in rec["rejects"]:
            yield self.reject(reject["id"], reject["reason"], image_id=image_id)
        annotations = [Annotation(a["category"], xywh_to_xyxy(a["bbox"]), a["segmentation"]) for a in rec["annotations"]]
        present = sorted({a.category for a in annotations})
        pair_rng = rng(self.seed, f"{self.split}:{image_id}", "pairs")
        pairs = []
        if "caption" in self.pair_types:
            if "context_stats" not in rank_state:
                rank_state["context_stats"] = ContextStats.from_dict(self.context_stats)
            pairs += caption_pairs([(c[0], c[1]) for c in rec["captions"]], set(present), pair_rng, self.captions_per_image,
                                   stats=rank_state["context_stats"])  # fmt: skip
        if "presence" in self.pair_types and present:
            pairs += presence_pairs(present, pair_rng, self.presence_per_image, self.absent_key)
        if not pairs:
            self.stat_update("images_without_pairs")
            return
        try:  # once per image: its pairs share the decoded image
            image, embedded = read_image(rec["file_name"], self.images_dir, self.max_image_pixels)
        except ImageError as e:
            error = str(e)
        else:
            error = None
        for pair in pairs:
            sample = Sample(
                id=f"{self.split}:{image_id}:{pair.key}",
                source=self.kind,
                image_id=image_id,
                pair_type=pair.kind,
                question=pair.question,
                chosen=pair.chosen,
                rejected=pair.rejected,
                annotations=annotations,
                target=pair.target,
                absent_object=pair.absent,
                metadata={"file_name": rec["file_name"], **pair.metadata},
            )
            if error:
                self.drop(sample, error)
            else:
                sample.image, sample.image_bytes = image, embedded
                self.stat_update(f"pairs/{pair.kind}")
            yield sample


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise MfpoError(f"source: {path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise MfpoError(f"source: {path} must hold a JSON object")
    return data
