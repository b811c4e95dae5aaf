"""Edge modules that own the file I/O the sans-I/O cores may not do: the
bundle store on disk (:class:`SqliteStore`, with its segment files), the
key store's files (:class:`KeyStore`) and contact plan files
(:func:`load_plan`, :func:`save_plan`).

The cores (``dcis.dtn.agent``, ``dcis.dtn.routing``, ``dcis.crypto`` ...)
define the interfaces and the pure parts -- the ``BundleStore`` protocol and
``MemoryStore``, plan parsing and formatting, keys and certificates -- and
never import this package (pyproject.toml's import-linter contract; the AST
test in tests/unit/test_architecture.py bans ``os``, ``sqlite3`` and
``pathlib`` in them). Drivers (the runtime, the simulator's durable nodes,
the tools) pick the edge module they need.
"""

from __future__ import annotations

from dcis.dtn.storage.keystore import KeyStore as KeyStore
from dcis.dtn.storage.plan_files import load_plan as load_plan
from dcis.dtn.storage.plan_files import save_plan as save_plan
from dcis.dtn.storage.sqlite_store import SqliteStore as SqliteStore
