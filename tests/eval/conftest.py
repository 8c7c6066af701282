"""Fixtures of the evaluation-run tests (tiny models of two families, an adapter from mfpo-train, a fresh build)."""

from tests.fixtures.eval_run import fresh_build, tiny_models, trained_adapter  # noqa: F401
