"""Assemble the stage list of a recipe: source, keywords, grounding, segmentation, filters,
perturbation, scoring, writer (the files of `stages/` in their listing order).

This module and `config.py` are the only readers of recipes: stages and backends take flat keyword
arguments and can be used from Python without YAML. Next: `run.py` runs the list on an executor.
"""

from __future__ import annotations

from mfpo_data import backends, sources
from mfpo_data.config import BACKEND_SECTIONS, Recipe
from mfpo_data.errors import ConfigError
from mfpo_data.stages.s1_keywords import KeywordStage
from mfpo_data.stages.s2_grounding import GroundingStage
from mfpo_data.stages.s3_segmentation import SegmentationStage
from mfpo_data.stages.s4_filters import RegionFilter
from mfpo_data.stages.s5_perturbation import PerturbationStage
from mfpo_data.stages.s6_scoring import ScoringStage
from mfpo_data.stages.s7_writer import ShardWriter


def make_backends(recipe: Recipe) -> dict:
    """Construct each backend from its section (cheap: models load lazily inside the workers)."""
    out = {}
    for name in BACKEND_SECTIONS:
        section = getattr(recipe, name)
        try:
            out[name] = backends.resolve(name, section.backend)(**section.options)
        except ValueError as e:  # a value the backend refuses (perturbation.t=5000): one line naming the section
            raise ConfigError(f"'{name}' ({section.backend}): {e}") from None
    return out


def make_source(recipe: Recipe):
    return sources.resolve(recipe.source.kind)(**recipe.source.options, seed=recipe.seed)


def worker_modules(recipe: Recipe) -> list[str]:
    """What every worker imports to run the recipe: this module (all stages) and the chosen source and
    backends (whose model libraries stay lazy until a backend's first load)."""
    chosen = [backends.module_of(name, getattr(recipe, name).backend) for name in BACKEND_SECTIONS]
    return sorted({__name__, "pyarrow", sources.module_of(recipe.source.kind), *chosen})


def build_pipeline(recipe: Recipe, source=None) -> list:
    """The stage list, in pipeline order: source, keywords, grounding, segmentation, filters,
    perturbation, scoring, writer."""
    b = make_backends(recipe)
    return [
        source if source is not None else make_source(recipe),
        KeywordStage(b["keywords"], top_k=recipe.keywords.top_k, batch_size=recipe.keywords.batch_size),
        GroundingStage(b["grounding"], batch_size=recipe.grounding.batch_size),
        SegmentationStage(b["segmentation"], batch_size=recipe.segmentation.batch_size),
        RegionFilter(**vars(recipe.filters)),
        PerturbationStage(b["perturbation"], kind=recipe.perturbation.backend, seed=recipe.seed,
                          batch_size=recipe.perturbation.batch_size),  # fmt: skip
        ScoringStage(b["scoring"], batch_size=recipe.scoring.batch_size),
        ShardWriter(recipe.output.dir, recipe.output.png_compress_level, recipe.output.row_group_size, recipe.output.progress),
    ]


def describe_backends(recipe: Recipe) -> dict:
    return {name: backend.describe() for name, backend in make_backends(recipe).items()}
