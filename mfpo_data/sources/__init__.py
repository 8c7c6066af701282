"""Sources: the first stage of a build. They read question-image material and yield `Sample`s.

    base.py     the index, rank sharding, rejects and the one image reader, shared by all sources
    coco.py     `kind: coco`: COCO annotations and images; text pairs from `mfpo_data/textpairs/coco_pairs.py`
    on_policy.py `kind: on_policy`: COCO images, the model's own sampled answers, pairs labelled by CHAIR
                (`mfpo_data/textpairs/policy_pairs.py`)
    records.py  what `jsonl` and `hf` share: ready-made pairs, column presets, record validation
    jsonl.py    `kind: jsonl`: a JSON-lines file with image paths
    hf.py       `kind: hf`: a Hugging Face dataset (Hub id or local folder); a stream sharded by its files
    presets/    published schemas that are not one flat pair per row: RLHF-V (`rlhf_v`), VLFeedback (`vlfeedback`)
"""

from __future__ import annotations

from mfpo_data.registry import load, target


SOURCES: dict[str, str] = {
    "coco": "mfpo_data.sources.coco:CocoSource",
    "on_policy": "mfpo_data.sources.on_policy:OnPolicySource",
    "jsonl": "mfpo_data.sources.jsonl:JsonlSource",
    "hf": "mfpo_data.sources.hf:HfSource",
}


def module_of(kind: str) -> str:
    """The module that defines source `kind`, without importing it."""
    return target(SOURCES, "source.kind", kind)[0]


def resolve(kind: str) -> type:
    """The source class of `source.kind`; a ConfigError naming the choices otherwise."""
    return load(SOURCES, "source.kind", kind)
