"""The paper's Table 8 regions and the peers' negatives produce what they say, seeded, the same for any
number of tasks; absent-object pairs are valid only with the object inserted."""

import json

import numpy as np
import pytest

from mfpo_data.backends.perturbers import BoxOcclusionPerturber, DiffusionNoisePerturber, RandomCropPerturber
from mfpo_data.config import find_recipe, recipe_from_dict
from mfpo_data.errors import ConfigError
from mfpo_data.imaging import rle_decode
from mfpo_data.pipeline.build import build_dataset
from mfpo_data.regions import insertion_box, random_box
from mfpo_data.schema import KeyObject, Sample
from mfpo_data.stages.s5_perturbation import PerturbationStage
from tests.fixtures.builds import rows_by_id
from tests.fixtures.coco_folder import make_coco_folder


def _recipe(overrides):
    """The coco recipe with its diffusion-noise `t` left out, so other perturbation backends can be chosen."""
    from mfpo_data.strict import apply_overrides, load_yaml

    data = load_yaml(find_recipe("coco"))
    data["perturbation"].pop("t")
    return recipe_from_dict(apply_overrides(data, list(overrides)))


def _sample(sample_id="s1", h=60, w=80, box=(20, 10, 50, 40), absent=None):
    image = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    s = Sample(sample_id, "test", "1", "presence", "q", "a", "b", image=image, absent_object=absent)
    s.mask = np.zeros((h, w), bool)
    x0, y0, x1, y1 = box
    s.mask[y0:y1, x0:x1] = True
    s.key_objects = [KeyObject("dog", tuple(map(float, box)), 1.0, category="dog")]
    return s


@pytest.mark.parametrize("area", [0.2, 0.05, 0.5, 1.0])
def test_random_box_has_the_area_share_and_fits(area):
    for seed in range(20):
        x0, y0, x1, y1 = random_box(60, 80, area, np.random.default_rng(seed))
        assert 0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 60
        assert abs((x1 - x0) * (y1 - y0) / (60 * 80) - area) < 0.03


def test_region_random_perturbs_a_seeded_box_of_the_area_share_and_global_the_whole_image():
    stage = PerturbationStage(DiffusionNoisePerturber(), kind="diffusion_noise", seed=5, region="random", random_area=0.2)
    (a,) = stage.run([_sample()])
    (b,) = stage.run([_sample()])
    params = a.perturbation_params
    assert params["region"] == "random" and params["random_area"] == 0.2
    assert a.mask.mean() == pytest.approx(0.2, abs=0.02)
    x0, y0, x1, y1 = params["random_box"]
    assert a.mask[y0:y1, x0:x1].all() and a.mask.sum() == (x1 - x0) * (y1 - y0)
    assert np.array_equal(a.rejected_image[~a.mask], a.image[~a.mask])
    assert np.array_equal(a.rejected_image, b.rejected_image)  # seeded by (recipe seed, id)
    (c,) = stage.run([_sample("s2")])
    assert c.perturbation_params["random_box"] != params["random_box"]

    (g,) = PerturbationStage(DiffusionNoisePerturber(), kind="diffusion_noise", region="global").run([_sample()])
    assert g.mask is None and g.perturbation_params["region"] == "global"
    assert (g.rejected_image != g.image).any(axis=-1).mean() > 0.9


def test_random_crop_keeps_1_to_20_percent_resized_back():
    crop = RandomCropPerturber()
    for seed in range(30):
        x0, y0, x1, y1 = crop.crop_box(60, 80, np.random.default_rng(seed))
        assert 0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 60
        assert 0.005 <= (x1 - x0) * (y1 - y0) / 4800 <= 0.21
        assert 3 / 4 - 0.2 <= (x1 - x0) / (y1 - y0) <= 4 / 3 + 0.2
    (out,) = PerturbationStage(crop, kind="random_crop", seed=1).run([_sample()])
    p = out.perturbation_params
    assert out.mask is None and p["region"] == "global" and p["kind"] == "random_crop"
    x0, y0, x1, y1 = p["crop_box"]
    assert p["crop_area"] == pytest.approx((x1 - x0) * (y1 - y0) / 4800, abs=1e-6)
    from mfpo_data.imaging import resize_image

    expected = resize_image(np.ascontiguousarray(out.image[y0:y1, x0:x1]), 80, 60)
    assert out.rejected_image.shape == out.image.shape and np.array_equal(out.rejected_image, expected)


def test_box_occlusion_fills_the_key_objects_box():
    s = _sample()
    s.mask[:] = False
    s.mask[12:38, 25:45] = True  # the object's shape inside its box
    s.mask[12, 21] = True  # a stray pixel touching nothing: its own part, its own box
    (out,) = PerturbationStage(BoxOcclusionPerturber(), kind="box_occlusion").run([s])
    boxes = sorted(out.perturbation_params["boxes"])
    assert boxes == [[21, 12, 22, 13], [25, 12, 45, 38]]
    assert (out.rejected_image[12:38, 25:45] == 0).all()
    assert out.mask[12:38, 25:45].all() and out.mask.sum() == 20 * 26 + 1
    assert np.array_equal(out.rejected_image[~out.mask], out.image[~out.mask])


def test_absent_object_pairs_are_invalid_without_an_insertion():
    (out,) = PerturbationStage(DiffusionNoisePerturber(), kind="diffusion_noise").run([_sample(absent="cat")])
    assert out.image_pair_invalid.startswith("absent_object:") and "cat" in out.image_pair_invalid
    (present,) = PerturbationStage(DiffusionNoisePerturber(), kind="diffusion_noise").run([_sample()])
    assert present.image_pair_invalid is None


class _Painter:
    """A stand-in inpainter that paints a flat colour: enough to check where an insertion goes."""

    def perturb(self, samples, seeds):
        raise AssertionError("insertions go through insert()")

    def insert(self, samples, seeds, prompts):
        from mfpo_data.backends.base import Perturbed

        self.prompts = prompts
        return [Perturbed(np.full_like(s.image, 7), {"prompt": p}) for s, p in zip(samples, prompts, strict=True)]


def test_insertion_paints_the_absent_object_beside_its_anchor_and_makes_the_pair_valid():
    painter = _Painter()
    stage = PerturbationStage(painter, kind="sd_inpaint", presence_negative="insert")
    (out,) = stage.run([_sample(absent="cat")])
    assert out.image_pair_invalid is None
    assert painter.prompts == ["a photo of a cat"]
    p = out.perturbation_params
    assert p["region"] == "inserted" and p["inserted"] == "cat" and p["anchor_box"] == [20, 10, 50, 40]
    x0, y0, x1, y1 = p["insert_box"]
    assert y1 == 40 and (x1 <= 20 or x0 >= 50)  # beside the anchor, on its ground line, not over it
    assert [k.category for k in out.key_objects] == ["cat"] and out.key_objects[0].box_xyxy == (x0, y0, x1, y1)
    assert (out.rejected_image[y0:y1, x0:x1] == 7).all()
    assert np.array_equal(out.rejected_image[~out.mask], out.image[~out.mask])


def test_insertion_box_stays_in_the_image():
    for seed in range(20):
        x0, y0, x1, y1 = insertion_box(60, 80, (0, 5, 78, 59), np.random.default_rng(seed))
        assert 0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 60
        x0, y0, x1, y1 = insertion_box(60, 80, None, np.random.default_rng(seed))
        assert 0 <= x0 < x1 <= 80 and 30 <= y0 < y1 <= 60


def test_insert_needs_a_backend_that_paints():
    with pytest.raises(ConfigError, match="presence_negative"):
        _recipe(["perturbation.presence_negative=insert"])
    with pytest.raises(ConfigError, match="random_area"):
        _recipe(["perturbation.region=random", "perturbation.random_area=0"])
    assert _recipe(["perturbation.backend=sd_inpaint", "perturbation.presence_negative=insert"]).perturbation.presence_negative == "insert"


@pytest.mark.parametrize("overrides", [
    ["perturbation.region=random", "perturbation.random_area=0.3"],
    ["perturbation.backend=random_crop"],
    ["perturbation.backend=box_occlusion", "perturbation.fill=noise"],
], ids=["random", "random_crop", "box_occlusion"])
def test_negatives_are_identical_for_one_and_three_tasks(tmp_path, overrides):
    root = make_coco_folder(tmp_path / "coco", n_images=5)
    common = [f"source.root={root}", "source.split=val2017", "output.progress=false", *overrides]
    layout = build_dataset(_recipe([*common, f"output.dir={tmp_path / 'one'}"]))
    one = rows_by_id(layout)
    three = rows_by_id(build_dataset(_recipe([*common, "executor.tasks=3", f"output.dir={tmp_path / 'three'}"])))
    assert one.keys() == three.keys() and len(one) > 0
    untargeted = {}
    for key, row in one.items():
        assert row == three[key], key
        params = json.loads(row["perturbation_params"])
        assert row["targets_key_object"] is (params["region"] in ("key_object", "inserted")), key
        assert row["removal_score"] is None  # ground-truth regions, no detector: not verified
        if not row["targets_key_object"]:
            untargeted[params["region"]] = untargeted.get(params["region"], 0) + 1
        if "random_area" in params:
            assert rle_decode(row["mask"]).mean() == pytest.approx(0.3, abs=0.03)
        if params["kind"] == "random_crop":
            assert row["mask"] is None and row["mask_area_ratio"] == 1.0 and "crop_box" in params
    stats = layout.read_stats()
    assert stats["untargeted_negatives"] == untargeted
    if overrides[0].startswith("perturbation.region") or "random_crop" in overrides[0]:  # the ablations aim nowhere
        assert sum(untargeted.values()) == len(one)
    else:  # box occlusion aims at the key object; only the whole-image fallback does not
        assert set(untargeted) <= {"whole_image"} and sum(untargeted.values()) < len(one)
    with_key = sum(1 for r in one.values() if r["key_objects"] and json.loads(r["perturbation_params"])["region"] != "inserted")
    assert sum(stats["removal_unverified"].values()) == with_key > 0 and stats["removal_checked"] == {}


def test_inspect_labels_the_negative():
    from mfpo_data.inspect import negative_label

    crop = {"perturbation": "random_crop", "perturbation_params": json.dumps({"region": "global", "crop_area": 0.12, "seed": 1})}
    assert negative_label({**crop, "targets_key_object": False}) == "random_crop crop_area=0.12 on global (does not target the key object)"
    rnd = {"perturbation": "diffusion_noise", "perturbation_params": json.dumps({"region": "random", "t": 500, "random_area": 0.2})}
    assert negative_label({**rnd, "targets_key_object": True}) == "diffusion_noise t=500 random_area=0.2 on random"
    # a row of a dataset built before the column: what its parameters say
    assert negative_label(rnd).endswith("on random (does not target the key object)")
    assert negative_label(crop).endswith("on global (does not target the key object)")
    assert negative_label({**rnd, "perturbation_params": json.dumps({"region": "key_object", "t": 500})}) == "diffusion_noise t=500 on key_object"
    key = {"perturbation": "blur", "targets_key_object": True,
           "perturbation_params": json.dumps({"region": "key_object", "sigma": 15.0, "region_shape": "box"})}
    assert negative_label(key) == "blur sigma=15.0 region_shape=box on key_object"
