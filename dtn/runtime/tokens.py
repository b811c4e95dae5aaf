"""Random 64-bit numbers for the UDP CL's DATA segment tokens, drawn from the
operating system's generator a page at a time.

``random.SystemRandom().getrandbits(64)`` asks the kernel for 8 bytes on
every call (a ``getrandom`` system call, ~1.4 us): once per bundle sent over
UDP. :class:`PooledSystemRandom` reads 4 KiB of ``os.urandom`` at once and
hands out 8 bytes of it per token -- the same source, as unpredictable, one
system call per 512 tokens (spec/performance.md, "Eighth round: the 1 KB
path"). A child process forked from this one empties its pools first, so
parent and child never hand out the same bytes.
"""

from __future__ import annotations

import os
import random
import struct
import weakref
from typing import Final

POOL_BYTES: Final = 4096
_UNPACK: Final = struct.Struct(f">{POOL_BYTES // 8}Q").unpack

_POOLS: weakref.WeakSet[PooledSystemRandom] = weakref.WeakSet()


class PooledSystemRandom(random.SystemRandom):
    """``random.SystemRandom`` whose 64-bit ``getrandbits`` comes from a
    pool of ``os.urandom`` bytes (other sizes, and every other method, as
    ``SystemRandom``)."""

    def __init__(self) -> None:
        super().__init__()
        self._pool: list[int] = []
        _POOLS.add(self)

    def getrandbits(self, k: int) -> int:
        if k != 64:
            return super().getrandbits(k)
        pool = self._pool
        if not pool:
            pool += _UNPACK(os.urandom(POOL_BYTES))
        return pool.pop()

    def _forget(self) -> None:
        self._pool.clear()


def _after_fork_in_child() -> None:
    for p in list(_POOLS):
        p._forget()


os.register_at_fork(after_in_child=_after_fork_in_child)
