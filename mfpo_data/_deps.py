"""Optional dependencies: import them lazily, and say which pip extra brings them when they are missing."""

from __future__ import annotations

import contextlib
import importlib

from mfpo_data.errors import MissingExtraError, install_hint


def require(*modules: str, extra: str, feature: str | None = None) -> None:
    """Raise `MissingExtraError` naming `pip install -e ".[extra]"` unless every module imports."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
        except Exception as e:  # installed but broken, e.g. a torchvision wheel built for another torch
            first = (str(e).strip().splitlines() or [""])[0]
            missing.append(f"{name} (installed, but importing it fails: {type(e).__name__}: {first[:120]})")
    if missing:
        what = feature or f"the '{extra}' backends"
        raise MissingExtraError(
            f"{what} need{'s' if feature else ''} {', '.join(missing)}: {install_hint(extra)}"
        )


def model_in_reach(model_id: str, revision: str | None = None) -> bool:
    """True when `model_id` loads without the network: a local folder, or its config is in the Hub cache.

    Reads no weights (validate uses it to check a recipe in a second)."""
    from pathlib import Path

    path = Path(model_id).expanduser()
    if path.is_dir():
        return any((path / name).is_file() for name in ("config.json", "model_index.json", "adapter_config.json"))
    if path.suffix or model_id.count("/") > 1:  # a file or a path that is not there
        return False
    from huggingface_hub import try_to_load_from_cache

    for name in ("config.json", "model_index.json"):  # transformers models / diffusers pipelines
        try:
            found = try_to_load_from_cache(model_id, name, revision=revision)
        except Exception:  # an id huggingface_hub refuses (HFValidationError) is not in reach either
            return False
        if isinstance(found, str):
            return True
    return False


def hub_offline() -> bool:
    import os

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def missing_model_message(model_id: str, key: str) -> str:
    from pathlib import Path

    if Path(model_id).is_absolute() or model_id.startswith((".", "~")) or model_id.count("/") > 1:
        return f"no model folder at {model_id} ({key}): point {key} at a folder with the model's config.json"
    offline = " and the Hub is offline (HF_HUB_OFFLINE)" if hub_offline() else ""
    return (f"model '{model_id}' ({key}) is neither a local folder nor in the Hugging Face cache{offline}: "
            f"download it (hf download {model_id}) or point {key} at a local folder")


@contextlib.contextmanager
def loading_model(model_id: str, key: str):
    """Turn the long tracebacks of a model that cannot be loaded into one `MissingModelError` line naming `key`."""
    from mfpo_data.errors import MfpoError, MissingModelError

    try:
        yield
    except MfpoError:
        raise
    except (OSError, ValueError) as e:  # transformers/diffusers/huggingface_hub: not found, offline, bad folder
        if not model_in_reach(model_id):
            raise MissingModelError(missing_model_message(model_id, key)) from None
        first = (str(e).strip().splitlines() or [""])[0]
        raise MissingModelError(f"cannot load model '{model_id}' ({key}): {type(e).__name__}: {first}") from None
