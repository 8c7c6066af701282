"""Every count the documentation states about the bundled sample is what the code gives: the sample is built once
(the session's `sample_build`), each fact below is computed from it, and each stated number must equal its fact.

To guard a new number, add a row to STATED: the file, a pattern whose groups capture the stated values (spaces
and line breaks in the file count as one space), and the facts they must equal, in order. A fact missing from
`facts` is a KeyError; a pattern that no longer matches fails, so a reworded sentence is noticed, not skipped.

Guarded elsewhere: the gaussian_noise measurements of DATASHEET.md (19 distinct key masks, the correlations and
clipped shares), by tests/benchmarks/test_gaussian_strength.py from the same kind of build. Times and speed-up
ratios come from the benchmarks that print them on a shared machine; tests never assert timings.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.paths import REPO


STATED = [  # (file, pattern, the facts its groups state)
    ("README.md", r"This builds the bundled (\d+)-photo COCO-format sample into `outputs/mfpo-coco/` \((\d+) pairs,",
     ("images", "rows")),
    ("README.md", r"Without `--coco-root` the COCO benchmarks run on the bundled sample \((\d+) images:", ("images",)),
    ("README.md", r"and items \(the bundled sample's (\d+) images,", ("images",)),
    ("README.md", r"publish a dry-run copy with a test split \((\d+) train and (\d+) test rows",
     ("train_rows", "test_rows")),
    ("recipes/coco.yaml", r"mfpo-data build --recipe coco # the bundled (\d+)-photo sample", ("images",)),
    ("recipes/train/debug.yaml", r"# train (\d+) / test (\d+) rows, split by image", ("train_rows", "test_rows")),
    ("mfpo_data/assets/coco_sample/README.md", r"\* (\d+) real photographs, (\d+) instances, (\d+) categories used: ([^.]+)\.",
     ("images", "instances", "categories", "category_names")),
]


@pytest.fixture(scope="module")
def facts(sample_build) -> dict[str, str]:
    """What the code gives for the bundled sample: its annotations, the default build, the debug flow's split."""
    from mfpo_data.publishing.publish import split_by_image
    from mfpo_data.sources.coco import BUNDLED_COCO
    from tests.fixtures.builds import rows_by_id

    instances = json.loads((BUNDLED_COCO / "annotations" / "instances_sample.json").read_text())
    used = sorted({a["category_id"] for a in instances["annotations"]})
    names = {c["id"]: c["name"] for c in instances["categories"]}
    rows = list(rows_by_id(sample_build).values())
    stats = sample_build.read_stats()
    assert stats["rows"] == len(rows)
    # The debug flow publishes with --test-size 0.25 and the default seed 0 (recipes/train/debug.yaml's header).
    train, test = split_by_image([r["image_id"] for r in rows], 0.25, 0)
    found = {
        "images": len(instances["images"]),
        "instances": len(instances["annotations"]),
        "categories": len(used),
        "category_names": ", ".join(names[c] for c in used),
        "rows": stats["rows"],
        "train_rows": len(train),
        "test_rows": len(test),
    }
    return {k: str(v) for k, v in found.items()}


def _normalised(path: str) -> str:
    """The file's text with every run of spaces and line breaks as one space."""
    lines = (REPO / path).read_text(encoding="utf-8").splitlines()
    return " ".join(" ".join(lines).split())


@pytest.mark.parametrize("row", STATED, ids=lambda r: f"{r[0]}: {r[2]}")
def test_a_stated_number_is_what_the_code_gives(facts, row):
    path, pattern, names = row
    text = _normalised(path)
    matches = list(re.finditer(pattern, text))
    assert matches, f"{path} no longer says {pattern!r}: reword the pattern in STATED with the sentence"
    for match in matches:
        stated = dict(zip(names, match.groups(), strict=True))
        assert stated == {n: facts[n] for n in names}, f"{path}: {match.group(0)!r}"


def test_every_fact_is_stated_somewhere(facts):
    assert {n for _, _, names in STATED for n in names} == set(facts)


def _requirement_names(requirements: list[str]) -> tuple[set[str], set[str]]:
    """(package names, mfpo extras) of pyproject requirements: `torch>=2.3` -> torch, `mfpo[all,ray]` -> all, ray."""
    names, extras = set(), set()
    for req in requirements:
        name = re.split(r"[<>=!~;\s]", req, maxsplit=1)[0]
        if name.startswith("mfpo["):
            extras |= set(name[5:-1].split(","))
        else:
            names.add(name)
    return names, extras


def test_the_readme_extras_table_is_pyprojects():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {"(core)": project["dependencies"], **project["optional-dependencies"]}
    text = (REPO / "README.md").read_text(encoding="utf-8")
    table = text.split("| extra | installs | for |", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in table.strip().splitlines()[1:]:  # | extra | installs (packages, `[other extra]`) | for |
        extra, installs, purpose = (c.strip() for c in line.strip("|").split("|"))
        items = [i.strip() for i in installs.split(",")]
        extras = {i.strip("`[]") for i in items if i.startswith("`[")}
        rows[extra.strip("`")] = ({i for i in items if not i.startswith("`[")}, extras, purpose)
    assert set(rows) == set(declared)
    for extra, requirements in declared.items():
        names, extras, purpose = rows[extra]
        assert (names, extras) == _requirement_names(requirements), extra
        assert purpose, extra
