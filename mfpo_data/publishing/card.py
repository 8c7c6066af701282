"""The dataset card (README.md): YAML metadata plus the build's facts, then the human-written DATASHEET.md.

`publish` renders it from what it knows for sure: the features in `schema.py`, the splits it just
wrote (rows, bytes, pair types, difficulty buckets, key-object categories), the build's
`stats.json` (drops per reason, backends with model ids and revisions) and `recipe.resolved.yaml`
(perturbation parameters, seed, package versions), through `secrets.py`: only the recipe sections that
describe the data, local paths shortened, token-shaped strings scrubbed. `validate_card` checks the metadata offline the
way the Hub and `datasets` read it, so a card that would not parse is never uploaded.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from mfpo_data.errors import MfpoError
from mfpo_data.secrets import public_recipe, public_value, scrub


class CardError(MfpoError):
    """A dataset card whose metadata would not validate."""


TAGS = ("dpo", "trl", "preference", "hallucination", "mfpo", "vision-language", "coco")
REQUIRED_TAGS = ("dpo", "trl", "preference", "hallucination")
TASK_CATEGORIES = ("image-text-to-text", "visual-question-answering")


@dataclass(frozen=True)
class Licence:
    """The card's `license` metadata and the paragraph that explains it."""

    name: str
    link: str | None
    text: str
    license: str = "other"


COCO_LICENCE = Licence(
    name="coco-terms-of-use",
    link="https://cocodataset.org/#termsofuse",
    text=(
        "The images are COCO's, which the COCO Consortium does not own: their use must follow the "
        "[Flickr Terms of Use](https://www.flickr.com/help/terms) and each image's own Flickr licence. COCO's "
        "annotations, from which every caption, box, mask and answer here derives, are licensed under "
        "[CC BY 4.0](https://creativecommons.org/licenses/by/4.0/) ([COCO terms of use](https://cocodataset.org/#termsofuse))."
    ),
)
SAMPLE_LICENCE = Licence(
    name="mfpo-coco-sample",
    link=None,
    text=(
        "Built from the small COCO-format sample bundled with mfpo (`mfpo_data/assets/coco_sample/`), not from "
        "COCO: a demonstration build. Its photographs come from the sample data of scikit-image, matplotlib and "
        "OpenCV, each under its own licence (CC0 1.0 / public domain, or Apache-2.0 and BSD-3-Clause for the "
        "OpenCV samples); the per-image source and licence text are in `LICENSES/` of that folder. The captions "
        "and annotations were written for mfpo."
    ),
)


def licence_for(recipe: Mapping[str, Any], stats: Mapping[str, Any]) -> Licence:
    """COCO's terms for a build from a COCO folder; the bundled sample's own licences when `source.root` is null."""
    source = (stats.get("backends") or {}).get("source") or recipe.get("source") or {}
    if isinstance(source, Mapping) and source.get("kind", "coco") in ("coco", "on_policy") and source.get("root") is None:
        return SAMPLE_LICENCE
    return COCO_LICENCE


# The Hub's size buckets (https://huggingface.co/docs/hub/datasets-cards).
SIZE_CATEGORIES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
)
DATASHEET_NAME = "DATASHEET.md"
PACKAGE = Path(__file__).resolve().parents[1]  # mfpo_data/
CARD_TEMPLATE = PACKAGE / "assets" / "card.md"  # string.Template: ${name} placeholders
PAPER_URL = "https://arxiv.org/abs/2410.15334"
# How to train on the published dataset with mfpo's own trainer (image-side preference, curriculum).
MFPO_TRAIN_COMMAND = (
    "accelerate launch --num_processes 1 --mixed_precision bf16 -m mfpo_train.cli \\\n"
    "  --config llava15_7b_lora --set data.dataset={repo_id}"
)


@dataclass
class SplitSummary:
    """What the card says about one split; `publish` fills it from the rows it wrote."""

    name: str
    rows: int
    num_bytes: int = 0  # Arrow bytes (dataset_info.splits.num_bytes)
    download_bytes: int = 0  # parquet bytes
    shards: list[str] = field(default_factory=list)  # paths in the repo
    pair_types: dict[str, int] = field(default_factory=dict)
    buckets: dict[str, int] = field(default_factory=dict)
    categories: dict[str, int] = field(default_factory=dict)


def summarize_split(name: str, ds) -> SplitSummary:
    """Counts per pair type, difficulty bucket and key-object category, read without decoding images."""
    small = ds.select_columns(["pair_type", "difficulty_bucket", "key_objects"])
    pair_types = Counter(list(small["pair_type"]))  # datasets >= 4 returns a lazy Column
    buckets = Counter(list(small["difficulty_bucket"]))
    categories: Counter = Counter()
    for objects in list(small["key_objects"]):
        categories.update({o["category"] or o["phrase"] for o in objects or []})
    return SplitSummary(
        name=name,
        rows=len(ds),
        num_bytes=int(ds.data.nbytes),
        pair_types=dict(sorted(pair_types.items())),
        buckets=_bucket_order(buckets),
        categories=dict(sorted(categories.items(), key=lambda kv: (-kv[1], kv[0]))),
    )


def _bucket_order(counts: Mapping[str, int]) -> dict[str, int]:
    from mfpo_data.schema import DIFFICULTY_BUCKETS

    order = {b: i for i, b in enumerate(DIFFICULTY_BUCKETS)}
    return {str(k): v for k, v in sorted(counts.items(), key=lambda kv: (order.get(kv[0], 99), str(kv[0])))}


def size_category(rows: int) -> str:
    for limit, name in SIZE_CATEGORIES:
        if rows < limit:
            return name
    return "n>1T"


def find_datasheet() -> Path | None:
    """DATASHEET.md next to the package (a source checkout) or inside it (a packaged copy)."""
    for candidate in (PACKAGE.parent / DATASHEET_NAME, PACKAGE / DATASHEET_NAME):
        if candidate.is_file():
            return candidate
    return None


def card_data(splits: list[SplitSummary], pretty_name: str, licence: Licence = COCO_LICENCE):
    """The YAML metadata: license, tasks, tags, size, configs (data files per split) and dataset_info."""
    import datasets
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    from mfpo_data.schema import features

    data = DatasetCardData(
        license=licence.license,
        license_name=licence.name,
        **({"license_link": licence.link} if licence.link else {}),
        language=["en"],
        task_categories=list(TASK_CATEGORIES),
        tags=list(TAGS),
        size_categories=[size_category(sum(s.rows for s in splits))],
        pretty_name=pretty_name,
    )
    configs = {"default": {"data_files": [{"split": s.name, "path": f"data/{s.name}-*"} for s in splits]}}
    MetadataConfigs(configs).to_dataset_card_data(data)
    info = datasets.DatasetInfo(
        features=features(),
        splits=datasets.SplitDict(
            {s.name: datasets.SplitInfo(name=s.name, num_bytes=s.num_bytes, num_examples=s.rows) for s in splits}
        ),
        download_size=sum(s.download_bytes for s in splits),
        dataset_size=sum(s.num_bytes for s in splits),
    )
    DatasetInfosDict({"default": info}).to_dataset_card_data(data)
    return data


def _table(header: tuple[str, ...], rows: list[tuple]) -> str:
    def cell(v: Any) -> str:
        return "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _per_split_table(title: str, splits: list[SplitSummary], attr: str) -> str:
    keys: list[str] = []
    for s in splits:
        keys += [k for k in getattr(s, attr) if k not in keys]
    rows = [(k, *(getattr(s, attr).get(k, 0) for s in splits)) for k in keys]
    return _table((title, *(s.name for s in splits)), rows)


def _one_split_categories(splits: list[SplitSummary]) -> str:
    """Where the categories fall: the split is by image, so a small split misses some. A category only in `test`
    is never trained on; one only in `train` is never measured."""
    if len(splits) < 2:
        return ""
    parts = []
    for s in splits:
        others = set().union(*(o.categories for o in splits if o is not s))
        only = [f"{c} ({n})" for c, n in s.categories.items() if c not in others]
        if only:
            parts.append(f"only in `{s.name}`: {', '.join(only)}")
    if not parts:
        return "Every category is in every split."
    return f"The split is by image, so a category can fall in one split only (rows): {'; '.join(parts)}."


def _demote(markdown: str) -> str:
    """Datasheet headings one level down, its title dropped, so it nests under the card's section."""
    out, in_code = [], False
    for i, line in enumerate(markdown.strip().splitlines()):
        if line.startswith("```"):
            in_code = not in_code
        if not in_code and i == 0 and re.match(r"# ", line):
            continue
        if not in_code:
            line = "#" + line if re.match(r"#{1,5} ", line) else line
            # Links relative to the mfpo repository would break on the Hub: keep the text, name the path.
            line = re.sub(r"\[([^\]]+)\]\((?!https?://|mailto:|#)([^)\s]+)\)", r"\1 (`\2` in mfpo)", line)
        out.append(line)
    return "\n".join(out).strip()


def _backend_rows(stats: Mapping[str, Any]) -> list[tuple]:
    """One row per model-backed stage, in pipeline order; the source has its own table."""
    from mfpo_data.config import BACKEND_SECTIONS

    backends = {k: v for k, v in (stats.get("backends") or {}).items() if k != "source"}
    order = {s: i for i, s in enumerate(BACKEND_SECTIONS)}
    rows = []
    for stage, info in sorted(backends.items(), key=lambda kv: (order.get(kv[0], 99), kv[0])):
        info = dict(info or {}) if isinstance(info, Mapping) else {"backend": info}
        backend = info.pop("backend", info.pop("name", ""))
        model_id = info.pop("model_id", None)
        revision = info.pop("revision", None)
        extra = ", ".join(f"{k}={v}" for k, v in sorted(info.items()))
        rows.append((stage, f"`{backend}`" if backend else "", model_id or "none (no weights)", revision or "", extra))
    return rows


def _exclusion_sentence(stats: Mapping[str, Any]) -> str:
    """What `source.exclude` left out (COCO sources record it), so users know the evaluation images are not in it."""
    excluded = stats.get("excluded")
    if not isinstance(excluded, Mapping):
        return ""
    spec = excluded.get("exclude")
    if spec in (None, "none"):
        return ("No evaluation images were left out (`source.exclude: none`): do not score models trained on this "
                "dataset on COCO val2014 benchmarks (POPE, Object HalBench, CHAIR).")
    what = "the POPE and Object HalBench images (COCO val2014)" if spec == "eval" else f"listed in `{spec}`"
    return (f"{excluded.get('images', 0)} source images were left out because they are {what} "
            f"(`source.exclude: {spec}`), so `mfpo-eval` does not score models on their training images.")


def _on_policy_sentence(stats: Mapping[str, Any]) -> str:
    """For a build that sampled a model (`source.kind: on_policy`): whose answers the pairs are, how they were
    sampled and labelled, and that they are on-policy for that model only."""
    source = (stats.get("backends") or {}).get("source") or {}
    policy, sampling = stats.get("policy"), stats.get("sampling")
    if not isinstance(source, Mapping) or source.get("kind") != "on_policy" or not isinstance(policy, Mapping) \
            or not isinstance(sampling, Mapping):
        return ""
    policy = public_value(dict(policy))
    who = f"`{policy.get('model')}`" + (f" at revision `{policy['revision']}`" if policy.get("revision") else "")
    if policy.get("adapter"):
        sha = policy.get("adapter_sha256") or ""
        who += f" with the LoRA adapter `{policy['adapter']}`" + (f" (sha256 `{sha[:16]}`)" if sha else "")
    how = (f"{sampling.get('samples')} answers per prompt at temperature {sampling.get('temperature')}, top-p "
           f"{sampling.get('top_p')}, top-k {sampling.get('top_k') or 'off'}, at most {sampling.get('max_new_tokens')} "
           "new tokens, each seeded from the image and its sample number")
    labels = (f"CHAIR (`{source.get('chair_protocol', 'reference')}` protocol, `{source.get('chair_synonyms', 'coco')}` "
              "synonyms, as `mfpo-eval chair` scores) against each image's COCO instances and captions")
    if source.get("presence_questions"):
        labels += f", and POPE's `{source.get('presence_parser', 'pope')}` answer parser for the yes/no questions"
    min_recall = float(source.get("min_recall", 0.25))
    recall = (f"names at least {100 * min_recall:g}% of the image's objects" if min_recall else
              "may name none of the image's objects (`min_recall: 0`)")
    return (f"**On-policy data.** The text pairs are the answers of {who}, sampled from it ({how}) and labelled "
            f"without a judge model by {labels}: the chosen answer hallucinates fewer objects than the rejected "
            f"one and {recall}; `metadata` says which objects the rejected answer hallucinated. The pairs are "
            "on-policy for that model: train it on them. For any other model they are off-policy preference data.")


def _source_rows(recipe: Mapping[str, Any], stats: Mapping[str, Any]) -> list[tuple]:
    source = (stats.get("backends") or {}).get("source") or recipe.get("source") or {}
    return [(k, f"`{v}`") for k, v in source.items()] if isinstance(source, Mapping) else []


def _perturbation_rows(recipe: Mapping[str, Any], stats: Mapping[str, Any]) -> list[tuple]:
    """The perturber's own description (every parameter, resolved) when the build recorded it, else the recipe's."""
    params = (stats.get("backends") or {}).get("perturbation")
    if not isinstance(params, Mapping) or not params:
        params = recipe.get("perturbation") if isinstance(recipe.get("perturbation"), Mapping) else {}
    return [(k, f"`{v}`") for k, v in params.items()]


def _version_rows(recipe: Mapping[str, Any]) -> list[tuple]:
    versions = recipe.get("versions")
    return [(k, v) for k, v in versions.items()] if isinstance(versions, Mapping) else []


def render_card(
    *,
    repo_id: str,
    splits: list[SplitSummary],
    stats: Mapping[str, Any],
    recipe_text: str,
    preview: str | None = None,
    datasheet: str | None = None,
) -> str:
    """README.md for the Hub: metadata, then `assets/card.md` filled in: how to use it, this build's facts,
    the datasheet."""
    import yaml
    from huggingface_hub import DatasetCard

    recipe = yaml.safe_load(recipe_text) or {}
    recipe = public_recipe(recipe if isinstance(recipe, Mapping) else {})  # no executor, output or local path
    stats = {**stats, "backends": public_value(stats.get("backends") or {})}
    recipe_text = yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True)
    name = repo_id.split("/")[-1]
    licence = licence_for(recipe, stats)
    data = card_data(splits, pretty_name=name, licence=licence)
    dropped = stats.get("dropped") or {}
    edges = stats.get("difficulty_edges")
    regions = stats.get("perturbation_regions")
    source_rows, versions = _source_rows(recipe, stats), _version_rows(recipe)
    body = Template(CARD_TEMPLATE.read_text(encoding="utf-8")).substitute(
        name=name,
        paper_url=PAPER_URL,
        repo_id=repo_id,
        total=sum(s.rows for s in splits),
        split_rows=", ".join(f"`{s.name}` ({s.rows})" for s in splits),
        split_names=", ".join(s.name for s in splits),
        train_command=MFPO_TRAIN_COMMAND.format(repo_id=repo_id),
        preview=_block(
            f"![Preview: original image, key-object mask and perturbed image for a few pairs]({preview})\n\n"
            "*Preview: a few pairs from the train split.*" if preview else ""
        ),
        splits_table=_table(("split", "rows", "parquet shards"), [(s.name, s.rows, len(s.shards)) for s in splits]),
        excluded=_block(_exclusion_sentence(stats)),
        on_policy=_block(_on_policy_sentence(stats)),
        pair_types_table=_per_split_table("pair type", splits, "pair_types"),
        buckets_table=_per_split_table("bucket", splits, "buckets"),
        bucket_edges=_block(
            f"Bucket edges (tertiles of `difficulty` over the whole build): {edges[0]:.4g} and {edges[1]:.4g}."
            if isinstance(edges, list | tuple) and len(edges) == 2 else ""
        ),
        categories_table=_per_split_table("category", splits, "categories"),
        category_splits=_block(_one_split_categories(splits)),
        dropped=(
            _table(("reason", "samples"), sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0])))
            + f"\n\n{sum(dropped.values())} samples dropped in all; the build's `rejects.jsonl` lists each with its reason."
            if dropped
            else "No sample was dropped."
        ),
        backends_table=_table(("stage", "backend", "model id", "revision", "settings"), _backend_rows(stats)),
        perturbation_table=_table(("parameter", "value"), _perturbation_rows(recipe, stats)),
        regions=_block(
            "Perturbed region (`key_object`: inside the key object's mask; `whole_image`: no key region was found; "
            "`inserted`: an absent object painted in; `random` / `global`: the ablation's random box or whole image):\n\n"
            + _table(("region", "samples"), sorted(regions.items()))
            + _invalid_pairs_note(stats.get("invalid_image_pairs"))
            + _encoding_note(stats.get("rejected_image_formats"))
            if isinstance(regions, Mapping) and regions else ""
        ),
        evidence=_block(_evidence(stats)),
        source=_block("### Source\n\n" + _table(("option", "value"), source_rows) if source_rows else ""),
        licence=licence.text,
        versions=_block("### Package versions\n\n" + _table(("package", "version"), versions) if versions else ""),
        recipe=recipe_text.strip(),
        datasheet=_demote(datasheet)
        if datasheet
        else "See `DATASHEET.md` in the mfpo repository for motivation, composition, collection, uses and limits.",
    )  # fmt: skip
    # Values are inserted as they are: braces or `$` in the recipe or the datasheet are not template syntax.
    return scrub(str(DatasetCard("---\n" + data.to_yaml() + "\n---\n\n" + body)))


def _invalid_pairs_note(invalid) -> str:
    if not isinstance(invalid, Mapping) or not invalid:
        return ""
    reasons = ", ".join(f"{n} `{code}`" for code, n in sorted(invalid.items()))
    return (f"\n\n{sum(invalid.values())} rows have `image_pair_valid: false` ({reasons}): their perturbed image leaves "
            "the chosen answer as true, so `mfpo-train` masks the image term for them.")


def _encoding_note(formats) -> str:
    """How m' is stored, when some rows are not lossless (`output.image_format: jpeg_blocks`)."""
    if not isinstance(formats, Mapping) or not formats.get("jpeg_blocks"):
        return ""
    lossless = ", ".join(f"{n} {name}" for name, n in sorted(formats.items()) if name != "jpeg_blocks")
    return (f"\n\n{formats['jpeg_blocks']} rows store the perturbed image as the original's own JPEG with only the 8x8 "
            "coefficient blocks that the edit touches re-encoded (`output.image_format: jpeg_blocks`): beyond those blocks and a 2 px "
            "band its pixels are the original's, bit for bit; inside them the edit and the pixels around it are JPEG-"
            f"compressed, so pixels near the mask differ slightly from the original.{f' Lossless: {lossless}.' if lossless else ''}")


def _evidence(stats: Mapping[str, Any]) -> str:
    """What the build knows about its negatives: untargeted ones, negated key objects, removal re-detection."""

    def counts(key: str) -> dict:
        value = stats.get(key)
        return dict(value) if isinstance(value, Mapping) else {}

    untargeted, negated = counts("untargeted_negatives"), counts("negated_key_objects")
    checked, still, unverified = counts("removal_checked"), counts("removal_still_detected"), counts("removal_unverified")
    parts = []
    if untargeted:
        where = ", ".join(f"{n} `{region}`" for region, n in sorted(untargeted.items()))
        parts.append(f"{sum(untargeted.values())} rows have `targets_key_object: false` ({where}): their negative does not "
                     "aim at the key object by construction (an ablation, or the whole-image fallback).")
    if negated:
        parts.append(f"{sum(negated.values())} chosen answers negate their first key object (\"there is no dog\"): "
                     f"{negated.get('replaced', 0)} got another key object the answer asserts, "
                     f"{negated.get('no_asserted_object', 0)} assert none and have `image_pair_valid: false`.")
    if checked:
        rows = [(f"`{kind}`", n, still.get(kind, 0), f"{still.get(kind, 0) / n:.1%}") for kind, n in sorted(checked.items())]
        parts.append("Removal evidence: the build's grounder looked for the key object again, inside its region, on the "
                     "perturbed image (`removal_score`). Rows whose key object it still detects, per negative "
                     "(perturbation/region):\n\n" + _table(("negative", "rows checked", "still detected", "share"), rows))
    if unverified:
        parts.append(f"Removal not verified for {sum(unverified.values())} rows: their key regions come from ground-truth "
                     "annotations and the recipe has no detecting grounder, so `removal_score` is null.")
    return "### Negatives\n\n" + "\n\n".join(parts) if parts else ""


def _block(text: str) -> str:
    """An optional section of the template: its text and the blank line after it, or nothing."""
    return text + "\n\n" if text else ""


def validate_card(path_or_text: str | Path, splits: list[str] | None = None):
    """Parse a card the way the Hub and `datasets` do and check its metadata offline; return the DatasetCard.

    Checks: license (with a name when `other`), task categories, required tags, size category,
    `configs` data files per split, and `dataset_info` features equal to `schema.features()`.
    """
    import datasets
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    from mfpo_data.schema import features
    from mfpo_data.validate import features_problems

    try:
        card = DatasetCard.load(path_or_text) if isinstance(path_or_text, Path) else DatasetCard(path_or_text)
    except Exception as e:  # yaml errors, a missing front matter, ...
        raise CardError(f"the dataset card does not parse: {type(e).__name__}: {e}") from None
    data = card.data.to_dict()
    problems = []
    if not data.get("license"):
        problems.append("no license")
    elif data["license"] == "other" and not data.get("license_name"):
        problems.append("license 'other' needs a license_name")
    if not data.get("task_categories"):
        problems.append("no task_categories")
    missing_tags = [t for t in REQUIRED_TAGS if t not in (data.get("tags") or [])]
    if missing_tags:
        problems.append("missing tags: " + ", ".join(missing_tags))
    if not set(data.get("size_categories") or []) <= {name for _, name in SIZE_CATEGORIES} | {"n>1T"}:
        problems.append(f"unknown size_categories {data.get('size_categories')}")
    try:
        configs = MetadataConfigs.from_dataset_card_data(card.data)
        infos = DatasetInfosDict.from_dataset_card_data(card.data)
    except Exception as e:
        raise CardError(f"the dataset card's configs or dataset_info do not parse: {type(e).__name__}: {e}") from None
    config = configs.get("default")
    if not config or not config.get("data_files"):
        problems.append("no default config with data_files")
    else:
        card_splits = [d["split"] for d in config["data_files"]]
        if splits is not None and sorted(card_splits) != sorted(splits):
            problems.append(f"configs splits {card_splits} != {splits}")
    info = infos.get("default")
    if info is None or info.features is None:
        problems.append("no dataset_info features")
    else:
        problems += ["dataset_info " + p for p in features_problems(info.features, features(), strict=True)]
        if splits is not None and sorted(info.splits or {}) != sorted(splits):
            problems.append(f"dataset_info splits {sorted(info.splits or {})} != {splits}")
    if problems:
        raise CardError("dataset card metadata: " + "; ".join(problems))
    assert isinstance(info.features, datasets.Features)
    return card
