"""The bundle protocol agent (sans-I/O core) and its bundle store."""

from __future__ import annotations

from typing import Any

from dcis.dtn.agent.actions import Ack as Ack
from dcis.dtn.agent.actions import Action as Action
from dcis.dtn.agent.actions import Deliver as Deliver
from dcis.dtn.agent.actions import Event as Event
from dcis.dtn.agent.actions import EventKind as EventKind
from dcis.dtn.agent.actions import Schedule as Schedule
from dcis.dtn.agent.actions import Transmit as Transmit
from dcis.dtn.agent.agent import Agent as Agent
from dcis.dtn.agent.agent import AgentConfig as AgentConfig
from dcis.dtn.agent.agent import (
    ConfirmationsInterrupted as ConfirmationsInterrupted,
)
from dcis.dtn.agent.agent import Received as Received
from dcis.dtn.agent.agent import SecurityHook as SecurityHook
from dcis.dtn.agent.agent import SendRequest as SendRequest
from dcis.dtn.agent.agent import SendsInterrupted as SendsInterrupted
from dcis.dtn.agent.store import BundleState as BundleState
from dcis.dtn.agent.store import BundleStore as BundleStore
from dcis.dtn.agent.store import MemoryStore as MemoryStore
from dcis.dtn.agent.store import StoredBundle as StoredBundle
from dcis.dtn.agent.store import StoreError as StoreError
from dcis.dtn.agent.store import StoreFull as StoreFull


def __getattr__(name: str) -> Any:
    # For code written before SqliteStore moved to the edge (issue 11):
    # import it from dcis.dtn.storage.
    if name == "SqliteStore":
        from dcis.dtn.storage.sqlite_store import SqliteStore

        return SqliteStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
