"""Repository paths for tests, anchored on this file so the suite runs from any working directory."""

from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
TRAIN_RECIPES = REPO / "recipes" / "train"
DEBUG_TRAIN_RECIPE = TRAIN_RECIPES / "debug.yaml"
