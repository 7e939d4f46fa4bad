"""Optional frameworks in the tests: PyTorch, TensorFlow, JAX, CuPy.

In CI (CI=true, or PYTCONV_REQUIRE_FRAMEWORKS=1) a missing PyTorch,
TensorFlow or JAX fails the test that needs it, so a broken install cannot
pass silently; elsewhere such tests are skipped with the reason. CuPy and a
GPU are never required (CI has no GPU).
"""

from __future__ import annotations

import importlib
import os

import pytest

REQUIRED_IN_CI = ("torch", "tensorflow", "jax")


def _strict() -> bool:
    return os.environ.get("PYTCONV_REQUIRE_FRAMEWORKS") == "1" or os.environ.get("CI", "").lower() in (
        "1",
        "true",
        "yes",
    )


def require(name: str):
    """The imported module `name`, or skip (locally) / fail (in CI) the test."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if _strict() and name.split(".")[0] in REQUIRED_IN_CI:
            pytest.fail(f"{name} is required in CI but cannot be imported: {exc}")
        pytest.skip(f"{name} is not installed: {exc}")
