"""Shared fixtures of the geometry tests."""

import jax
import pytest


@pytest.fixture
def x64():
    """Run one test in float64 (scikit-dimension parity) without touching the other tests."""
    with jax.enable_x64(True):
        yield
