"""Shared fixtures: small synthetic data sets and the real metadata in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")  # figures render without a display
os.environ["PIP_NO_INDEX"] = "1"  # no test reaches the package index (pip fails instead)

from whaleutils import synth

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WHALE_SHARED", REPO.parent / "shared"))
HAPPYWHALE_METADATA = SHARED / "data" / "happywhale"
REAL_PHOTOS = SHARED / "data" / "real_photos"

SMALL_CONFIG = synth.SynthConfig(seed=3, individuals=40, max_side=160)


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not available (set WHALE_SHARED to the shared folder)")
    return path


@pytest.fixture(scope="session")
def small_synth(tmp_path_factory) -> Path:
    """A small synthetic data set, generated once per test session. Tests must not modify it."""
    out = tmp_path_factory.mktemp("synth") / "small"
    synth.generate(out, SMALL_CONFIG)
    return out


@pytest.fixture(scope="session")
def default_synth(tmp_path_factory) -> Path:
    """The default synthetic data set (the one the README's numbers are about)."""
    out = tmp_path_factory.mktemp("synth") / "default"
    synth.generate(out, synth.SynthConfig(), workers=os.cpu_count() or 1)
    return out
