"""Perturbation: the dispreferred image m'. The edit is composited so pixels outside the perturbed
region stay bit-identical to the original.

The region is the key object (the method), a random box of `random_area` of the image, or the whole
image (`region: key_object | random | global`, the paper's Table 8). With no key region the whole
image is perturbed. The key region's shape (`region_shape`) is the object's mask (the paper's), the mask
grown by `region_dilation` pixels (`dilated`), or the union of the key objects' boxes and the mask
(`box`); a shape other than the mask is recorded in `perturbation_params`. A perturber may return the region it really changed (a dilated removal mask, an
occluding box): that becomes the stored mask. A whole-image perturber (`random_crop`) changes everything.

The stage also says whether the pair is valid for the image term: `L_image` prefers the chosen answer
on m over m', which teaches grounding only when m' makes that answer less true. An answer that says an
object is absent ("No, there is no dog") is as true on m' as on m, so such a pair is marked invalid,
unless `presence_negative: insert` paints the absent object into m' (beside the present object it was
drawn from), which makes the answer false there and the inserted object the key region.
"""

from __future__ import annotations

from mfpo_data.backends.base import PerturbDrop, Perturber
from mfpo_data.imaging import box_mask, composite, dilate_mask, mask_bbox
from mfpo_data.regions import insertion_box, random_box
from mfpo_data.schema import KeyObject, Sample
from mfpo_data.seeding import rng, sample_seed
from mfpo_data.stages.base import MapStage, SampleError
from mfpo_data.textpairs.vocabulary import article, surface


def insertion_prompt(category: str) -> str:
    word = surface(category)
    return f"a photo of {article(word)} {word}"


class PerturbationStage(MapStage):
    name = "perturbation"

    def __init__(self, perturber: Perturber, kind: str, seed: int = 0, batch_size: int = 8,
                 region: str = "key_object", random_area: float = 0.2, presence_negative: str = "none",
                 region_shape: str = "mask", region_dilation: int = 8):  # fmt: skip
        super().__init__(perturber, batch_size)
        self.kind, self.seed = kind, seed
        self.region, self.random_area, self.presence_negative = region, random_area, presence_negative
        self.region_shape, self.region_dilation = region_shape, region_dilation

    def process_batch(self, batch: list[Sample]) -> None:
        inserts = [s for s in batch if s.absent_object and self.presence_negative == "insert"]
        others = [s for s in batch if not (s.absent_object and self.presence_negative == "insert")]
        labels = {id(s): self._choose_region(s) for s in others}
        for s in inserts:
            labels[id(s)] = self._place_insertion(s)
        results = {}
        if others:
            seeds = [sample_seed(self.seed, s.id, "perturbation") for s in others]
            results.update(zip(map(id, others), self.backend.perturb(others, seeds), strict=True))
        if inserts:
            seeds = [sample_seed(self.seed, s.id, "perturbation") for s in inserts]
            prompts = [insertion_prompt(s.absent_object) for s in inserts]
            results.update(zip(map(id, inserts), self.backend.insert(inserts, seeds, prompts), strict=True))
        whole = getattr(self.backend, "whole_image", False)
        for sample in batch:
            result, region = results[id(sample)], labels[id(sample)]
            if isinstance(result, PerturbDrop):
                sample.drop(self.name, result.reason)
                continue
            if result.image.shape != sample.image.shape:
                raise SampleError(f"perturbation_shape: {result.image.shape} vs {sample.image.shape} in {sample.id}")
            if whole:
                sample.mask, region["region"] = None, "global"
            elif result.mask is not None:
                sample.mask = result.mask
            sample.rejected_image = composite(sample.image, result.image, sample.mask)
            sample.perturbation = self.kind
            sample.perturbation_params = {"kind": self.kind, **region, **result.params}
            self._judge_image_pair(sample)

    def _choose_region(self, sample: Sample) -> dict:
        """Set `sample.mask` to the region to perturb; the params that describe it."""
        if self.region == "global":
            sample.mask = None
            return {"region": "global"}
        if self.region == "random":
            x0, y0, x1, y1 = random_box(sample.height, sample.width, self.random_area, rng(self.seed, sample.id, "region"))
            sample.mask = box_mask((x0, y0, x1, y1), sample.height, sample.width)
            return {"region": "random", "random_box": [x0, y0, x1, y1], "random_area": self.random_area}
        if sample.mask is None:
            return {"region": "whole_image"}
        if self.region_shape == "mask":
            return {"region": "key_object"}
        sample.mask = self._shaped(sample)
        shape = {"region_shape": self.region_shape}
        return {"region": "key_object", **shape, **({"region_dilation": self.region_dilation} if self.region_shape == "dilated" else {})}

    def _shaped(self, sample: Sample):
        """The key region in `region_shape`: the mask grown by `region_dilation` pixels, or the mask and the
        key objects' boxes together (the mask's bounding box where no key object has a box)."""
        if self.region_shape == "dilated":
            return dilate_mask(sample.mask, self.region_dilation)
        boxes = [k.box_xyxy for k in sample.key_objects if k.box_xyxy is not None]
        region = sample.mask.copy()
        if not boxes:
            rows, cols = mask_bbox(sample.mask)
            boxes = [(cols.start, rows.start, cols.stop, rows.stop)]
        for box in boxes:
            region |= box_mask(box, sample.height, sample.width)
        return region

    def _place_insertion(self, sample: Sample) -> dict:
        """The absent object's box beside the present object it was drawn from; it becomes the key object."""
        anchor = None
        if sample.mask is not None:
            rows, cols = mask_bbox(sample.mask)
            anchor = (cols.start, rows.start, cols.stop, rows.stop)
        box = insertion_box(sample.height, sample.width, anchor, rng(self.seed, sample.id, "insertion"))
        sample.mask = box_mask(box, sample.height, sample.width)
        sample.key_objects = [KeyObject(surface(sample.absent_object), tuple(map(float, box)), 0.0, category=sample.absent_object)]
        return {"region": "inserted", "inserted": sample.absent_object, "insert_box": list(box),
                "anchor_box": list(anchor) if anchor else None}  # fmt: skip

    def _judge_image_pair(self, sample: Sample) -> None:
        """The key region is the region the chosen answer's claim rests on: an absent object's is nowhere
        in m, so without an insertion m' leaves the answer as true as m."""
        if sample.absent_object and sample.perturbation_params.get("region") != "inserted":
            sample.image_pair_invalid = (f"absent_object: there is no {sample.absent_object} in the image, so perturbing m "
                                         "cannot make the chosen answer less true")  # fmt: skip
            sample.metadata["image_pair_invalid"] = sample.image_pair_invalid
