"""The shipped Arrow schema is `features()`, and the writer's rows need no `datasets` encoding."""

import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa

from mfpo_data.imaging import encode_png, rle_encode
from mfpo_data.schema import ARROW_SCHEMA_FILE, KeyObject, Sample, arrow_schema, features, to_row


REPO = Path(__file__).resolve().parents[2]


def test_shipped_arrow_schema_is_features():
    stale = f"{ARROW_SCHEMA_FILE} is stale: run `python -m mfpo_data.schema` after changing features()"
    assert arrow_schema().equals(features().arrow_schema), stale
    assert datasets.Features.from_arrow_schema(arrow_schema()) == features(), stale


def _sample(with_mask: bool) -> tuple[Sample, dict]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    mask = np.zeros((12, 16), bool)
    mask[2:6, 3:9] = True
    sample = Sample("s:1", "coco", "1", "caption", "Describe the image.", "A cat on a sofa.", "A dog on a sofa.",
                    image=image, mask=mask if with_mask else None, difficulty=0.25,
                    key_objects=[KeyObject("cat", (3.0, 2.0, 9.0, 6.0), 0.9, "cat"), KeyObject("sofa", None, 0.5)],
                    perturbation="diffusion_noise", perturbation_params={"t": 500}, metadata={"replaced": [2, 5]})  # fmt: skip
    png = {"bytes": encode_png(image, 1), "path": None}
    return sample, to_row(sample, png, png, rle_encode(mask) if with_mask else None)


def test_rows_from_to_row_are_already_encoded():
    """The writer hands `to_row` output straight to Arrow: the same table as after `encode_example`."""
    for with_mask in (True, False):
        _, row = _sample(with_mask)
        direct = pa.Table.from_pylist([row], schema=arrow_schema())
        encoded = pa.Table.from_pylist([features().encode_example(row)], schema=arrow_schema())
        assert direct.equals(encoded), with_mask


def test_a_build_does_not_import_datasets(tmp_path):
    """A one-task build runs its rank in this process: neither it nor the launcher imports `datasets`."""
    code = ("import sys; from mfpo_data.pipeline.build import build_dataset; "
            f"build_dataset('coco', ['source.limit=2', 'output.progress=false'], {str(tmp_path)!r}); "
            "print('datasets' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == "False", out.stderr[-2000:]
