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



@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for this test session (``tools/postgres.py``: initdb and
    pg_ctl into a temporary folder, as an unprivileged user)."""
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    import postgres

    try:
        with postgres.temporary_server() as server:
            yield server
    except postgres.Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def postgres_url(postgres_server, request) -> str:
    """A fresh, empty database on the session's PostgreSQL server, as a seglab ``--db`` URL."""
    import re

    import postgres

    return postgres.create_database(
        postgres_server, "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:50])
