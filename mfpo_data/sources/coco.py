"""Sources: read question-image material and yield `Sample`s, sharded by rank in a stable order.

`CocoSource` reads the COCO 2014/2017 layout (`annotations/instances_{split}.json`,
`annotations/captions_{split}.json`, images in `{split}/`), by default the small sample bundled with
mfpo. The index (`sources/base.py`) holds one line per image, sorted by image id, so no worker
loads COCO's large annotation files. The text pairs come from `coco_pairs.py`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from mfpo_data.errors import MfpoError
from mfpo_data.eval_ids import exclusion_ids
from mfpo_data.imaging import DEFAULT_MAX_PIXELS, ImageError, xywh_to_xyxy
from mfpo_data.schema import Annotation, Sample
from mfpo_data.seeding import rng
from mfpo_data.sources.base import IndexedSource, read_image
from mfpo_data.sources.validate import check_annotation, check_depth, check_id, check_path, check_text
from mfpo_data.textpairs.coco_pairs import caption_pairs, presence_pairs
from mfpo_data.textpairs.plausibility import ContextStats
from mfpo_data.textpairs.vocabulary import SUPERCATEGORY, find_mentions


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
        exclude: str = "eval",
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
        self.exclude = exclude  # "eval": leave out the images mfpo-eval scores on (mfpo_data.eval_ids)
        self.context_stats: dict = {}  # word -> {category: count} over the split's captions, set by prepare()

    # -- run once, before the ranks -------------------------------------------------------------
    def check(self) -> None:
        """Fail early, with one line, on a source that cannot be read at all."""
        if not self.root.is_dir():
            raise MfpoError(f"source.root: COCO folder not found: {self.root}")
        if not self.instances_file.is_file():
            splits = sorted(p.name.removeprefix("instances_").removesuffix(".json") for p in (self.root / "annotations").glob("instances_*.json"))
            has = f"; the folder has split(s): {', '.join(splits)} (source.split)" if splits else ""
            raise MfpoError(f"source: instances file not found: {self.instances_file}{has}")
        if "caption" in self.pair_types and not self.captions_file.is_file():
            raise MfpoError(f"source: captions file not found: {self.captions_file} (or drop 'caption' from source.pair_types)")
        if not self.images_dir.is_dir():
            raise MfpoError(f"source: image folder not found: {self.images_dir}")
        if not self.pair_types:
            raise MfpoError("source.pair_types is empty")
        exclusion_ids(self.exclude)  # fails early on a missing exclusion file

    def index_entries(self) -> list[dict]:
        """One line per image (its file, usable annotations, crowd categories, captions and the rejects of
        its annotations and captions), by image id; then one line per record that names no usable image.
        Every record is checked field by field (`sources/validate.py`); a bad one is a reject, never an error."""
        instances = _read_json(self.instances_file)
        for key in ("images", "annotations", "categories"):
            if not isinstance(instances.get(key), list):
                raise MfpoError(f"source: {self.instances_file} has no '{key}' list")
        loose: list[dict] = []  # rejects that belong to no image

        def reject(kind: str, record_id, position: int, reason: str) -> None:
            loose.append({"id": f"{self.split}:{kind}:{record_id if record_id is not None else f'#{position}'}", "reject": reason})

        categories = {}
        for position, cat, cat_id in _with_ids(instances["categories"], "category", reject):
            reason = check_text(cat.get("name"), "name")
            if reason:
                reject("category", cat_id, position, reason)
            else:
                categories[cat_id] = cat["name"]
        images = list(_with_ids(instances["images"], "image", reject))
        excluded = exclusion_ids(self.exclude)  # the images mfpo-eval scores on (source.exclude)
        kept = [t for t in images if t[2] not in excluded]
        self.index_stats["excluded"] = {"exclude": self.exclude, "images": len(images) - len(kept)}
        images = kept
        uses = Counter(img_id for _, _, img_id in images)
        records: dict = {}
        for position, img, img_id in sorted(images, key=lambda t: t[2]):
            reason = check_path(img.get("file_name"), "file_name")
            if uses[img_id] > 1:  # whose captions and boxes would be whose? Neither image is used.
                reason = f"duplicate_image_id: {uses[img_id]} images have id {img_id!r}"
            if reason:
                reject("image", img_id, position, reason)
                continue
            records[img_id] = {"id": img_id, "file_name": img["file_name"], "annotations": [], "crowd": [], "captions": [], "rejects": []}
        for position, ann, ann_id in sorted(_with_ids(instances["annotations"], "annotation", reject), key=lambda t: t[2]):
            rec = records.get(ann.get("image_id"))
            if rec is None:
                continue
            name = categories.get(ann.get("category_id"))
            reason = check_annotation(ann)
            if name not in SUPERCATEGORY:
                reason = f"unknown_category: {ann.get('category_id')!r:.40}"
            if reason:
                rec["rejects"].append({"id": f"{self.split}:annotation:{ann_id}", "reason": reason})
            elif ann.get("iscrowd"):
                rec["crowd"].append(name)  # present, but a crowd region is no one object's mask
            else:
                rec["annotations"].append({"category": name, "bbox": ann["bbox"], "segmentation": ann.get("segmentation")})
        if "caption" in self.pair_types:
            captions = _read_json(self.captions_file).get("annotations", [])
            if not isinstance(captions, list):
                raise MfpoError(f"source: {self.captions_file} has no 'annotations' list")
            stats = ContextStats()  # caption-context word statistics of the images this build uses
            for position, cap, cap_id in sorted(_with_ids(captions, "caption", reject), key=lambda t: t[2]):
                rec = records.get(cap.get("image_id"))
                if rec is None:
                    continue
                reason = check_text(cap.get("caption"), "caption")
                if reason:
                    rec["rejects"].append({"id": f"{self.split}:caption:{cap_id}", "reason": reason})
                else:
                    rec["captions"].append([cap_id, cap["caption"]])
                    stats.add(cap["caption"], find_mentions(cap["caption"]))
            self.context_stats = stats.to_dict()  # shipped to the ranks with the source
        kept = list(records.values())
        return (kept[: self.limit] if self.limit is not None else kept) + loose

    def entry_rejects(self, entry: dict) -> list[str]:
        return [entry["reject"]] if "reject" in entry else [r["reason"] for r in entry["rejects"]]

    # -- per rank ---------------------------------------------------------------------------------
    def samples(self, rec: dict, rank_state: dict) -> Iterator[Sample]:
        if "reject" in rec:
            yield self.reject(rec["id"], rec["reject"])
            return
        image_id = str(rec["id"])
        for reject in rec["rejects"]:
            yield self.reject(reject["id"], reject["reason"], image_id=image_id)
        annotations = [Annotation(a["category"], xywh_to_xyxy(a["bbox"]), a["segmentation"]) for a in rec["annotations"]]
        present = sorted({a.category for a in annotations} | set(rec.get("crowd", ())))
        pair_rng = rng(self.seed, f"{self.split}:{image_id}", "pairs")
        pairs = []
        if "caption" in self.pair_types:
            if "context_stats" not in rank_state:
                rank_state["context_stats"] = ContextStats.from_dict(self.context_stats)
            pairs += caption_pairs([(c[0], c[1]) for c in rec["captions"]], set(present), pair_rng, self.captions_per_image,
                                   stats=rank_state["context_stats"])  # fmt: skip
        if "presence" in self.pair_types and present:
            pairs += presence_pairs(present, pair_rng, self.presence_per_image, self.absent_key)
        if not pairs:  # a reject, so that every image is a row or a reject
            why = "no usable annotation" if not present else "no caption names an annotated object and presence pairs are off"
            yield self.reject(f"{self.split}:image:{image_id}", f"no_pairs: {why}", image_id=image_id)
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


def _with_ids(items: list, kind: str, reject) -> Iterator[tuple[int, dict, int | str]]:
    """`(position, record, id)` of the records that are objects with an id of the list's one id type
    (the type most of its ids have, int on a tie: int in COCO, str in some exports), wherever the odd
    records are in the list; each other record goes to `reject`."""
    kinds = Counter(type(item["id"]) for item in items if isinstance(item, dict)
                    and isinstance(item.get("id"), int | str) and not isinstance(item.get("id"), bool))
    id_type = max((int, str), key=lambda t: (kinds[t], t is int)) if kinds else None
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            reject(kind, None, position, f"bad_field: a {kind} is {type(item).__name__}, not an object")
            continue
        value = item.get("id")
        reason = check_id(value, "id", id_type or int) or (isinstance(value, str) and check_text(value, "id")) or check_depth(item, kind)
        if reason:
            nameable = isinstance(value, int | str) and not isinstance(value, bool) and not reason.startswith(("bad_text", "too_deep"))
            reject(kind, value if nameable else None, position, reason + (" (mixed id types)" if reason.startswith("bad_id") and id_type else ""))
            continue
        yield position, item, value


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise MfpoError(f"source: {path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise MfpoError(f"source: {path} nests lists or objects too deeply to parse") from None
    except UnicodeDecodeError as e:
        raise MfpoError(f"source: {path} is not UTF-8 (byte {e.start})") from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise MfpoError(f"source: {path} is not valid JSON ({str(e).splitlines()[0][:100]})") from None
    if not isinstance(data, dict):
        raise MfpoError(f"source: {path} must hold a JSON object")
    return data
