"""Shared fixtures: the ``../shared`` data folder, the Open Bandit Dataset sample and small
synthetic logs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
KUAIRAND_PURE = SHARED / "data" / "kuairand-pure"

# Subprocesses (`rliv ...`) and Ray workers import the checkout under test, not whatever an
# editable install elsewhere points at (a git worktree beside the main checkout, for example).
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)


@pytest.fixture(scope="session")
def kuairand_pure_dir() -> Path:
    """The real KuaiRand-Pure user and video tables shipped in ``../shared``; skip without them."""
    if not (KUAIRAND_PURE / "user_features_pure.csv").exists():
        pytest.skip(f"KuaiRand-Pure tables not found at {KUAIRAND_PURE} (../shared is absent)")
    return KUAIRAND_PURE


@pytest.fixture(scope="session")
def obd_root() -> Path:
    """The Open Bandit Dataset sample that ``make obd`` extracts (``make test`` runs it first).
    Without it the test skips, except under CI=true, where it fails: CI never skips silently."""
    from rliv_ray.data.obd import is_available, obd_dir

    if not is_available():
        reason = f"Open Bandit Dataset sample not found at {obd_dir()}: run `make obd`"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: missing data fails here, never skips)")
        pytest.skip(reason)
    return obd_dir()


@pytest.fixture
def one_thread():
    """Tiny networks gain nothing from intra-op threads, which only contend on a shared box."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
