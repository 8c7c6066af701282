"""Assemble the stage list of a recipe: source, keywords, grounding, segmentation, filters,
perturbation, removal check, image reliance (optional), scoring, writer (the files of `stages/` in their listing order).

This module and `config.py` are the only readers of recipes: stages and backends take flat keyword
arguments and can be used from Python without YAML. Next: `run.py` runs the list on an executor.
"""

from __future__ import annotations

from mfpo_data import backends, sources
from mfpo_data.config import BACKEND_SECTIONS, Recipe
from mfpo_data.errors import ConfigError
from mfpo_data.pipeline.overlap import with_prefetch
from mfpo_data.stages.s1_keywords import KeywordStage
from mfpo_data.stages.s2_grounding import GroundingStage
from mfpo_data.stages.s3_segmentation import SegmentationStage
from mfpo_data.stages.s4_filters import RegionFilter
from mfpo_data.stages.s5_perturbation import PerturbationStage
from mfpo_data.stages.s5_removal_check import RemovalCheck
from mfpo_data.stages.s6_reliance import RelianceStage
from mfpo_data.stages.s6_scoring import ScoringStage
from mfpo_data.stages.s7_writer import ImageEncoder, ShardWriter


OFF = "none"  # the backend of an optional stage that is left out (`reliance`)


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


def check_models(recipe: Recipe) -> list[str]:
    """`validate`'s model check, loading nothing: each model backend's libraries import and its model is a
    local folder or in the Hub cache (`MissingExtraError` / `MissingModelError` when not, offline). Returns
    notes for models a build would download."""
    notes = []
    for backend in make_backends(recipe).values():
        check = getattr(backend, "check_available", None)
        note = check() if check is not None else None
        if note:
            notes.append(note)
    return notes


def make_source(recipe: Recipe):
    return sources.resolve(recipe.source.kind)(**recipe.source.options, seed=recipe.seed)


def worker_modules(recipe: Recipe) -> list[str]:
    """What every worker imports to run the recipe: this module (all stages) and the chosen source and
    backends (whose model libraries stay lazy until a backend's first load), and pandas where it is
    installed: pyarrow imports it at its first conversion of Python values (the writer's first row group),
    which cost each worker about 0.3 s of CPU."""
    import importlib.util

    chosen = [backends.module_of(name, getattr(recipe, name).backend) for name in BACKEND_SECTIONS]
    extra = ["pandas"] if importlib.util.find_spec("pandas") is not None else []
    return sorted({__name__, "pyarrow", sources.module_of(recipe.source.kind), *chosen, *extra})


def checks_removal(recipe: Recipe) -> bool:
    """Whether the build re-detects the key object on m': its grounder detects from pixels (every perturbation)."""
    return getattr(backends.resolve("grounding", recipe.grounding.backend), "detects", False)


def build_pipeline(recipe: Recipe, source=None) -> list:
    """The stage list, in pipeline order: source, keywords, grounding, segmentation, filters,
    perturbation, removal check (with a detecting grounder), scoring, writer. With
    `executor.overlap`, a `Prefetch` between each two stages runs each in its own thread (`overlap.py`)."""
    stages = _stages(recipe, source)
    for stage in stages:
        section = "grounding" if isinstance(stage, RemovalCheck) else getattr(stage, "name", "")
        if section in BACKEND_SECTIONS:
            stage.batch_timeout_s = getattr(recipe, section).batch_timeout_s
    if not recipe.executor.overlap:
        return stages
    # Each queue holds `prefetch` batches of the stage after it (the writer's: its encoding window), 4 samples
    # at least, so that a thread hands over several samples each time it holds the GIL.
    window = [2 * recipe.output.encode_threads if isinstance(s, ShardWriter) else getattr(s, "batch_size", 1)
              for s in stages[1:]]  # fmt: skip
    return with_prefetch(stages, [recipe.executor.prefetch * max(w, 4) for w in window])


def _stages(recipe: Recipe, source=None) -> list:
    b = make_backends(recipe)
    return [
        source if source is not None else make_source(recipe),
        KeywordStage(b["keywords"], top_k=recipe.keywords.top_k, batch_size=recipe.keywords.batch_size),
        GroundingStage(b["grounding"], batch_size=recipe.grounding.batch_size),
        SegmentationStage(b["segmentation"], batch_size=recipe.segmentation.batch_size),
        RegionFilter(recipe.filters.no_region, recipe.filters.min_mask_area_ratio, recipe.filters.max_mask_area_ratio),
        PerturbationStage(b["perturbation"], kind=recipe.perturbation.backend, seed=recipe.seed,
                          batch_size=recipe.perturbation.batch_size, region=recipe.perturbation.region,
                          random_area=recipe.perturbation.random_area,
                          presence_negative=recipe.perturbation.presence_negative,
                          region_shape=recipe.perturbation.region_shape,
                          region_dilation=recipe.perturbation.region_dilation),  # fmt: skip
        *([RemovalCheck(b["grounding"], recipe.filters.max_removal_score, batch_size=recipe.grounding.batch_size)]
          if checks_removal(recipe) else []),
        *([RelianceStage(b["reliance"], batch_size=recipe.reliance.batch_size)] if recipe.reliance.backend != OFF else []),
        ScoringStage(b["scoring"], batch_size=recipe.scoring.batch_size),
        ShardWriter(recipe.output.dir, _encoder(recipe), recipe.output.row_group_size,
                    recipe.output.progress, encode_threads=recipe.output.encode_threads),  # fmt: skip
    ]


def _encoder(recipe: Recipe) -> ImageEncoder:
    o = recipe.output
    return ImageEncoder(o.image_format, png_compress_level=o.png_compress_level, webp_method=o.webp_method)


def describe_backends(recipe: Recipe) -> dict:
    """What stats.json and the card say about each backend; an optional stage that is off is left out."""
    return {name: backend.describe() for name, backend in make_backends(recipe).items() if getattr(recipe, name).backend != OFF}
