"""Shared fixtures: the real data beside the project, and tiny generated images."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEGLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"real data not found at {SHARED} (CI has it beside the project)")
    return SHARED


@pytest.fixture(autouse=True)
def _two_threads():
    import torch

    torch.set_num_threads(2)
    yield
