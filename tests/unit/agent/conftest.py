"""Fixtures shared by the agent's unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dcis.dtn.agent.store import BundleStore, MemoryStore
from dcis.dtn.storage.sqlite_store import SqliteStore


@pytest.fixture(params=["memory", "sqlite"])
def view_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BundleStore]:
    """Each bundle store in turn (memory, SQLite in ``tmp_path``), closed after."""
    s: BundleStore = (
        MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "s.db")
    )
    yield s
    s.close()
