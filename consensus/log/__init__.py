"""The partition-tolerant log (Raft-style commit, Bayou-style tentative
entries) and the key-value state store on it; other services use it through
:mod:`consensus.log.api`."""

from consensus.log.api import CompareAndSet as CompareAndSet
from consensus.log.api import Delete as Delete
from consensus.log.api import EntryId as EntryId
from consensus.log.api import KeyValueLog as KeyValueLog
from consensus.log.api import Level as Level
from consensus.log.api import Op as Op
from consensus.log.api import Outcome as Outcome
from consensus.log.api import Put as Put

__all__ = [
    "CompareAndSet",
    "Delete",
    "EntryId",
    "KeyValueLog",
    "Level",
    "Op",
    "Outcome",
    "Put",
]
