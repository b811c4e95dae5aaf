"""The bundle protocol agent (sans-I/O core) and its bundle store."""

from __future__ import annotations

from dtn.agent.actions import Ack as Ack
from dtn.agent.actions import Action as Action
from dtn.agent.actions import Deliver as Deliver
from dtn.agent.actions import Event as Event
from dtn.agent.actions import EventKind as EventKind
from dtn.agent.actions import Schedule as Schedule
from dtn.agent.actions import Transmit as Transmit
from dtn.agent.agent import Agent as Agent
from dtn.agent.agent import AgentConfig as AgentConfig
from dtn.agent.agent import Received as Received
from dtn.agent.agent import SecurityHook as SecurityHook
from dtn.agent.store import BundleState as BundleState
from dtn.agent.store import BundleStore as BundleStore
from dtn.agent.store import MemoryStore as MemoryStore
from dtn.agent.store import SqliteStore as SqliteStore
from dtn.agent.store import StoredBundle as StoredBundle
from dtn.agent.store import StoreError as StoreError
from dtn.agent.store import StoreFull as StoreFull
