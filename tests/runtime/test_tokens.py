"""The UDP tokens' random source (dcis.dtn.runtime.tokens): 64-bit draws
from a pool of os.urandom bytes, refilled when empty, emptied in a forked
child; everything else as random.SystemRandom."""

from __future__ import annotations

import random

import pytest

from dcis.dtn.runtime import tokens
from dcis.dtn.runtime.tokens import POOL_BYTES, PooledSystemRandom


def test_tokens_are_the_pools_bytes_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    pages = [bytes([i]) * POOL_BYTES for i in (1, 2)]
    calls: list[int] = []

    def urandom(n: int) -> bytes:
        calls.append(n)
        return pages[len(calls) - 1]

    monkeypatch.setattr(tokens.os, "urandom", urandom)
    r = PooledSystemRandom()
    per_page = POOL_BYTES // 8
    drawn = [r.getrandbits(64) for _ in range(per_page + 1)]
    # one read per page, 512 tokens each, then the next page
    assert calls == [POOL_BYTES, POOL_BYTES]
    assert drawn[:per_page] == [int.from_bytes(b"\x01" * 8, "big")] * per_page
    assert drawn[per_page] == int.from_bytes(b"\x02" * 8, "big")


def test_a_forked_child_does_not_reuse_the_parents_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = PooledSystemRandom()
    r.getrandbits(64)  # the pool is full now
    reads: list[int] = []
    monkeypatch.setattr(
        tokens.os, "urandom", lambda n: reads.append(n) or bytes(range(8)) * (n // 8)
    )
    tokens._after_fork_in_child()  # what os.register_at_fork runs in a child
    assert r.getrandbits(64) == int.from_bytes(bytes(range(8)), "big")
    assert reads == [POOL_BYTES]


def test_other_draws_are_system_random_s() -> None:
    r = PooledSystemRandom()
    assert isinstance(r, random.SystemRandom)
    assert 0 <= r.getrandbits(16) < 1 << 16
    assert 0 <= r.getrandbits(64) < 1 << 64
    assert len({r.getrandbits(64) for _ in range(2000)}) == 2000
