"""The partition-tolerant log (Raft-style commit, Bayou-style tentative
entries) and the key-value state store on it; other services use it through
:mod:`dcis.consensus.log.api`."""

from dcis.consensus.log.api import CompareAndSet as CompareAndSet
from dcis.consensus.log.api import Delete as Delete
from dcis.consensus.log.api import EntryId as EntryId
from dcis.consensus.log.api import KeyValueLog as KeyValueLog
from dcis.consensus.log.api import Level as Level
from dcis.consensus.log.api import Op as Op
from dcis.consensus.log.api import Outcome as Outcome
from dcis.consensus.log.api import Put as Put

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
