"""The storage edge modules moved out of the cores (issue 11): the import
paths code on other branches still uses keep working, lazily, without the
cores importing the edge themselves."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from dcis.dtn import storage
from dcis.dtn.storage import plan_files, sqlite_store


@pytest.mark.parametrize(
    ("module", "name", "moved_to"),
    [
        ("dcis.dtn.agent", "SqliteStore", sqlite_store.SqliteStore),
        ("dcis.dtn.agent.store", "SqliteStore", sqlite_store.SqliteStore),
        ("dcis.dtn.routing", "load_plan", plan_files.load_plan),
        ("dcis.dtn.routing.plan", "load_plan", plan_files.load_plan),
        ("dcis.dtn.routing.plan", "save_plan", plan_files.save_plan),
        ("dcis.dtn.storage", "SqliteStore", sqlite_store.SqliteStore),
        ("dcis.dtn.storage", "load_plan", plan_files.load_plan),
    ],
)
def test_old_paths_reach_the_moved_names(
    module: str, name: str, moved_to: object
) -> None:
    assert getattr(importlib.import_module(module), name) is moved_to


def test_other_names_are_still_missing() -> None:
    with pytest.raises(AttributeError):
        _ = importlib.import_module("dcis.dtn.agent.store").NoSuchStore
    with pytest.raises(AttributeError):
        _ = importlib.import_module("dcis.dtn.routing.plan").read_plan


def test_the_agent_does_not_load_the_disk_store() -> None:
    # A fresh interpreter: importing the agent and routing must not pull in
    # sqlite3 or the storage edge.
    code = (
        "import sys; import dcis.dtn.agent, dcis.dtn.routing, dcis.dtn.node;"
        "bad = [m for m in ('sqlite3', 'dcis.dtn.storage') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""
    assert storage.KeyStore.__module__ == "dcis.dtn.storage.keystore"
