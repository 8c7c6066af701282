"""The recipe schema: one dataclass per YAML section, strict loading, `--set` overrides.

Sections that pick a backend (`keywords`, `grounding`, `segmentation`, `perturbation`, `scoring`)
hold the stage's own keys (`backend`, `batch_size`, ...) and pass every other key to the backend's
constructor; those keys are checked against the backend's signature when the recipe loads, so a
typo fails `mfpo-data validate` before any model loads. `source` works the same with `kind`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mfpo_data import backends, sources
from mfpo_data.errors import ConfigError
from mfpo_data.strict import (
    apply_overrides,
    check_kwargs,
    from_dict,
    keyword_params,
    load_yaml,
    parse_override,
    to_dict,
)


_PACKAGE = Path(__file__).resolve().parent
# Recipes shipped in the wheel (copied there by setup.py), or the checkout's recipes/ in a source tree.
logger = logging.getLogger(__name__)

RECIPES_DIR = _PACKAGE / "recipes" if (_PACKAGE / "recipes").is_dir() else _PACKAGE.parent / "recipes"
RESERVED_OPTIONS = {"seed", "index_path"}  # set by the builder, not by recipes


@dataclass
class SourceConfig:
    kind: str = "coco"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class BackendConfig:
    """`batch_size` samples go to the backend in one call, filled from consecutive samples. With
    `batch_timeout_s`, a partial batch goes when no sample came for that long (its composition then
    depends on timing; null: always a full batch, so the same recipe gives the same batches)."""

    backend: str
    batch_size: int = 8
    batch_timeout_s: float | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def check(self, path: str) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"'{path}.batch_size' must be >= 1")
        if self.batch_timeout_s is not None and not self.batch_timeout_s > 0:
            raise ConfigError(f"'{path}.batch_timeout_s' must be > 0 (or null to wait for full batches)")


@dataclass
class KeywordsConfig(BackendConfig):
    backend: str = "vocabulary"
    top_k: int = 1


@dataclass
class GroundingConfig(BackendConfig):
    backend: str = "coco_gt"


@dataclass
class SegmentationConfig(BackendConfig):
    backend: str = "coco_gt"


@dataclass
class PerturbationConfig(BackendConfig):
    """`region`: what is perturbed: the key object (the method), a random box of `random_area` of the
    image, or the whole image (the paper's Table 8 ablation). `presence_negative: insert` paints the
    absent object of a "No, there is no X" pair into m' with an inpainting backend, so the answer is
    false there; `none` leaves such pairs without a valid image pair (`image_pair_valid` false).
    `region_shape` is the key region's shape: the object's `mask` (the paper's), the mask grown by
    `region_dilation` pixels (`dilated`: its outline goes too), or its `box`."""

    backend: str = "diffusion_noise"
    region: Literal["key_object", "random", "global"] = "key_object"
    random_area: float = 0.2
    presence_negative: Literal["none", "insert"] = "none"
    region_shape: Literal["mask", "dilated", "box"] = "mask"
    region_dilation: int = 8

    def check(self, path: str) -> None:
        super().check(path)
        if not 0.0 < self.random_area <= 1.0:
            raise ConfigError(f"'{path}.random_area' must be in (0, 1]")
        if self.region_dilation < 0:
            raise ConfigError(f"'{path}.region_dilation' must be >= 0")
        if self.region_shape != "mask" and self.region != "key_object":
            raise ConfigError(f"'{path}.region_shape: {self.region_shape}' shapes the key region; {path}.region is "
                              f"'{self.region}'")


@dataclass
class RelianceConfig(BackendConfig):
    """`backend: vlm` (with `model_id`) stores each chosen-answer token's image reliance; `none` leaves it out."""

    backend: str = "none"
    batch_size: int = 4


@dataclass
class ScoringConfig(BackendConfig):
    backend: str = "heuristic"


@dataclass
class FiltersConfig:
    no_region: Literal["fallback", "drop"] = "fallback"
    min_mask_area_ratio: float = 0.0
    max_mask_area_ratio: float = 1.0
    max_removal_score: float | None = None  # drop a pair whose key object the grounder still finds on m' above this

    def check(self, path: str) -> None:
        if self.max_removal_score is not None and not 0.0 <= self.max_removal_score <= 1.0:
            raise ConfigError(f"'{path}.max_removal_score' must be in [0, 1] (or null)")
        if not 0.0 <= self.min_mask_area_ratio <= self.max_mask_area_ratio <= 1.0:
            raise ConfigError(f"'{path}.min_mask_area_ratio' and 'max_mask_area_ratio' must satisfy 0 <= min <= max <= 1")


@dataclass
class OutputConfig:
    dir: str = "outputs/mfpo-coco"
    # The format of every image the writer encodes (m', and an original that is not embedded as it is):
    # webp (lossless, libwebp's `webp_method`) or png (zlib `png_compress_level`); both keep every pixel.
    # jpeg_blocks: m' is the original's own JPEG with only the 8x8 coefficient blocks that the edit touches
    # re-encoded at its quantisation (about a third of lossless WebP's bytes; pixels beyond those blocks and a
    # 2 px band stay bit-identical, the touched blocks are lossy; `mfpo_data/jpeg_blocks.py`); lossless WebP where
    # it cannot apply.
    image_format: Literal["webp", "png", "jpeg_blocks"] = "webp"
    webp_method: int = 0  # 0 fastest (about 11% fewer bytes than PNG level 1, half its time) .. 6 smallest
    png_compress_level: int = 1  # zlib level of the embedded PNGs: 1 is 3x faster than 6 for ~10% more bytes
    row_group_size: int = 64
    progress: bool = True
    keep_staging: bool = False  # keep staging/ (per-rank shards, the source index) after a finished build
    encode_threads: int = 2  # image encoding of a rank's rows on this many threads, in order (0: the writer's own)

    def check(self, path: str) -> None:
        if self.encode_threads < 0:
            raise ConfigError(f"'{path}.encode_threads' must be >= 0")
        if not 0 <= self.png_compress_level <= 9:
            raise ConfigError(f"'{path}.png_compress_level' must be in [0, 9]")
        if not 0 <= self.webp_method <= 6:
            raise ConfigError(f"'{path}.webp_method' must be in [0, 6]")
        if self.image_format == "jpeg_blocks":
            from mfpo_data import jpeg_blocks

            if not jpeg_blocks.available():
                raise ConfigError(f"'{path}.image_format' is jpeg_blocks, which needs jpeglib: pip install 'mfpo[jpeg]' "
                                  f"(or set {path}.image_format=webp)")
        if self.image_format in ("webp", "jpeg_blocks"):
            from PIL import features

            if not features.check("webp"):
                raise ConfigError(f"'{path}.image_format' is {self.image_format}, but this Pillow was built without WebP; install a "
                                  f"Pillow wheel from PyPI or set {path}.image_format=png")
        if self.row_group_size < 1:
            raise ConfigError(f"'{path}.row_group_size' must be >= 1")


@dataclass
class ExecutorConfig:
    """Where the ranks run: datatrove's Local, Slurm or Ray executor, with flat options.

    `tasks` shards the input (rank r takes items r, r + tasks, ...); the rows do not depend on it or on
    anything else here. `workers` is how many tasks run at once (local default 1; Slurm's array
    throttle and Ray's concurrency default to no limit). Local multi-GPU: `workers` = number of GPUs
    and rank r uses GPU r mod n. On Slurm and Ray each task asks for `gpus_per_task` and sees its own.
    """

    kind: Literal["local", "slurm", "ray"] = "local"
    tasks: int = 1
    workers: int | None = None
    start_method: Literal["auto", "forkserver", "spawn", "fork"] = "auto"  # local only; auto: fork when safe
    # Inside a rank: each stage in its own thread, `prefetch` batches of the next stage queued between two
    # stages, so model and CPU work overlap (false: one thread runs the stages in turn). Rows do not change.
    overlap: bool = True
    prefetch: int = 2
    logging_dir: str | None = None  # datatrove's logs, stats and completion markers; default OUTPUT/logs
    # Slurm and Ray resources per task
    cpus_per_task: int = 1
    gpus_per_task: int = 0
    mem_per_cpu_gb: int = 2
    time: str | None = None  # wall-clock limit per job, Slurm syntax: "HH:MM:SS" or "D-HH:MM:SS" (required on Slurm)
    tasks_per_job: int = 1  # ranks per Slurm array job (one after another) or per Ray actor (side by side)
    # Slurm only
    partition: str | None = None
    job_name: str = "mfpo-build"
    qos: str | None = None
    env_command: str | None = None  # e.g. "source /shared/venv/bin/activate", run before the job
    venv_path: str | None = None
    condaenv: str | None = None
    sbatch_args: dict[str, str | int] = field(default_factory=dict)  # extra #SBATCH lines: {account: x, constraint: h100}
    max_array_size: int = 1001
    finalize_time: str = "01:00:00"
    finalize_mem_gb: int = 8
    # Ray only
    ray_address: str | None = None  # None: the cluster of RAY_ADDRESS, else a local one; "auto": an existing cluster

    def check(self, path: str) -> None:
        if self.tasks < 1:
            raise ConfigError(f"'{path}.tasks' must be >= 1")
        if self.prefetch < 1:
            raise ConfigError(f"'{path}.prefetch' must be >= 1")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"'{path}.workers' must be >= 1 (or null for the executor's default)")
        for name in ("cpus_per_task", "mem_per_cpu_gb", "tasks_per_job", "max_array_size", "finalize_mem_gb"):
            if getattr(self, name) < 1:
                raise ConfigError(f"'{path}.{name}' must be >= 1")
        if self.gpus_per_task < 0:
            raise ConfigError(f"'{path}.gpus_per_task' must be >= 0")
        if self.kind == "slurm":
            for name in ("partition", "time"):
                if not getattr(self, name):
                    raise ConfigError(f"'{path}.{name}' is required when {path}.kind is slurm")
        if self.time is not None:
            time_to_seconds(self.time, f"{path}.time")
        time_to_seconds(self.finalize_time, f"{path}.finalize_time")


def time_to_seconds(value: str, path: str = "executor.time") -> int:
    """Slurm's time syntax ("MM", "HH:MM:SS", "D-HH:MM:SS") in seconds."""
    days, _, rest = value.rpartition("-") if "-" in value else ("0", "", value)
    parts = rest.split(":")
    try:
        numbers = [int(p) for p in parts] + [int(days or 0)]
    except ValueError:
        raise ConfigError(f"'{path}' must look like HH:MM:SS or D-HH:MM:SS, got {value!r}") from None
    if len(parts) > 3 or any(n < 0 for n in numbers):
        raise ConfigError(f"'{path}' must look like HH:MM:SS or D-HH:MM:SS, got {value!r}")
    if len(parts) == 1:
        h, m, s = 0, numbers[0], 0
    else:
        h, m, s = ([0] * (3 - len(parts)) + numbers[: len(parts)])[-3:]
    return numbers[-1] * 86400 + h * 3600 + m * 60 + s


@dataclass
class Recipe:
    seed: int = 0
    source: SourceConfig = field(default_factory=SourceConfig)
    keywords: KeywordsConfig = field(default_factory=KeywordsConfig)
    grounding: GroundingConfig = field(default_factory=GroundingConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    perturbation: PerturbationConfig = field(default_factory=PerturbationConfig)
    reliance: RelianceConfig = field(default_factory=RelianceConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)

    def to_yaml_dict(self) -> dict:
        """The resolved recipe as YAML data, backend options flattened back into their sections."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (SourceConfig, BackendConfig)):
                d = to_dict(value)
                d.update(d.pop("options"))
                out[f.name] = d
            else:
                out[f.name] = to_dict(value)
        return out


BACKEND_SECTIONS = {  # the recipe sections that choose a backend, in pipeline order
    "keywords": KeywordsConfig,
    "grounding": GroundingConfig,
    "segmentation": SegmentationConfig,
    "perturbation": PerturbationConfig,
    "reliance": RelianceConfig,
    "scoring": ScoringConfig,
}


def _split_section(name: str, cls: type, data: Any, selector: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"'{name}' must be a mapping, got {data!r}")
    own = {f.name for f in dataclasses.fields(cls)} - {"options"}
    section = from_dict(cls, {k: v for k, v in data.items() if k in own}, name)
    chosen = getattr(section, selector)
    backend_cls = sources.resolve(chosen) if name == "source" else backends.resolve(name, chosen)
    options = {k: v for k, v in data.items() if k not in own}
    reserved = sorted(RESERVED_OPTIONS & set(options))
    if reserved:
        raise ConfigError(f"'{name}.{reserved[0]}' is set by mfpo, not by recipes")
    section.options = check_kwargs(backend_cls, options, name, exclude=RESERVED_OPTIONS)
    return section


def recipe_from_dict(data: dict) -> Recipe:
    known = {f.name for f in dataclasses.fields(Recipe)}
    unknown = [k for k in data if k not in known]
    if unknown:
        raise ConfigError(f"unknown key '{unknown[0]}' (allowed: {', '.join(known)})")
    plain = {k: v for k, v in data.items() if k in ("seed", "filters", "output", "executor")}
    recipe = from_dict(Recipe, plain)
    recipe.source = _split_section("source", SourceConfig, data.get("source"), "kind")
    for name, cls in BACKEND_SECTIONS.items():
        setattr(recipe, name, _split_section(name, cls, data.get(name), "backend"))
    perturbation = recipe.perturbation
    if perturbation.presence_negative == "insert" and not hasattr(backends.resolve("perturbation", perturbation.backend), "insert"):
        raise ConfigError(f"'perturbation.presence_negative: insert' needs a backend that paints objects (sd_inpaint), "
                          f"not '{perturbation.backend}'")
    if perturbation.region_shape != "mask" and getattr(backends.resolve("perturbation", perturbation.backend), "whole_image", False):
        raise ConfigError(f"'perturbation.region_shape: {perturbation.region_shape}' needs a key-region perturbation; "
                          f"'{perturbation.backend}' replaces the whole image")
    if recipe.filters.max_removal_score is not None and not getattr(backends.resolve("grounding", recipe.grounding.backend), "detects", False):
        raise ConfigError("'filters.max_removal_score' needs a grounding backend that detects from pixels "
                          f"(grounding_dino, detector), not '{recipe.grounding.backend}'")
    return recipe


def find_recipe(name_or_path: str | Path, subdir: str = "") -> Path:
    """A recipe file by path, or by name in ./recipes/ and then among the recipes shipped with mfpo.

    `subdir="train"` looks for training configs (`recipes/train/`), as `mfpo-train --config NAME` does.
    """
    path = Path(name_or_path).expanduser()
    kind, command = ("training config", "mfpo-train configs") if subdir == "train" else ("recipe", "mfpo-data recipes")
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if path.is_dir():
            raise ConfigError(f"{kind} {path} is a folder, not a file")
        if not path.is_file():
            raise ConfigError(f"{kind} file not found: {path}")
        return path
    for folder in _recipe_folders(subdir):
        candidate = folder / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    raise ConfigError(f"no {kind} named '{name_or_path}' (see `{command}`)")


def _recipe_folders(subdir: str) -> tuple[Path, Path]:
    return Path.cwd() / "recipes" / subdir, RECIPES_DIR / subdir


def load_recipe(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    data = load_yaml(find_recipe(name_or_path))
    data = drop_options_of_switched_backends(data, overrides)
    return recipe_from_dict(apply_overrides(data, list(overrides)))


def drop_options_of_switched_backends(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """`--set perturbation.backend=blur` on a recipe written for `diffusion_noise`: the recipe's options that
    the new backend does not take (`t`, `schedule`) are dropped with a note instead of failing as unknown keys.
    Options given with `--set` are never dropped: a wrong one is still an error."""
    selectors = {"source": (SourceConfig, "kind"), **{n: (c, "backend") for n, c in BACKEND_SECTIONS.items()}}
    parsed = [parse_override(item)[::-1] for item in overrides]
    given = {tuple(parts) for _, parts in parsed}
    out = dict(data)
    for value, parts in parsed:
        if len(parts) != 2 or parts[0] not in selectors or parts[1] != selectors[parts[0]][1]:
            continue
        section, (cls, selector) = parts[0], selectors[parts[0]]
        recipe_section = data.get(section)
        if not isinstance(recipe_section, dict) or recipe_section.get(selector) == value:
            continue
        try:
            chosen = sources.resolve(value) if section == "source" else backends.resolve(section, value)
            accepted = keyword_params(chosen)
        except ConfigError:  # an unknown backend: recipe_from_dict names it
            continue
        own = {f.name for f in dataclasses.fields(cls)}
        dropped = [k for k in recipe_section if k not in own and k not in accepted and (section, k) not in given]
        if dropped:
            logger.warning("note: %s.%s=%s does not take the recipe's %s; dropped", section, selector, value,
                           ", ".join(f"{section}.{k}" for k in dropped))
            out[section] = {k: v for k, v in recipe_section.items() if k not in dropped}
    return out


def list_recipes(subdir: str = "") -> list[tuple[str, Path, str]]:
    """(name, path, first header comment line) of every recipe found, local ones first."""
    seen, out = set(), []
    for folder in _recipe_folders(subdir):
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
            if path.stem in seen:
                continue
            seen.add(path.stem)
            header = next((ln.lstrip("# ").strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
            out.append((path.stem, path, header))
    return out
