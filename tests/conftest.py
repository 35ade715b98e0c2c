"""Shared fixtures: the ``../shared`` data folder and small synthetic logs."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
KUAIRAND_PURE = SHARED / "data" / "kuairand-pure"


@pytest.fixture(scope="session")
def kuairand_pure_dir() -> Path:
    """The real KuaiRand-Pure user and video tables shipped in ``../shared``; skip without them."""
    if not (KUAIRAND_PURE / "user_features_pure.csv").exists():
        pytest.skip(f"KuaiRand-Pure tables not found at {KUAIRAND_PURE} (../shared is absent)")
    return KUAIRAND_PURE


@pytest.fixture
def one_thread():
    """Tiny networks gain nothing from intra-op threads, which only contend on a shared box."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
