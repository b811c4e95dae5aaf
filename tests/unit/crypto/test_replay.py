"""Replay windows (crypto/replay.py): new, duplicate, too old; bounded memory."""

from __future__ import annotations

import random

import pytest

from dcis.crypto import InvalidArgument, ReplayGuard, ReplayVerdict, ReplayWindow

NEW, DUP, OLD = ReplayVerdict.NEW, ReplayVerdict.DUPLICATE, ReplayVerdict.TOO_OLD


def test_new_then_duplicate() -> None:
    w = ReplayWindow(window_ms=1_000, max_entries=10)
    assert w.record(5_000, 0) is NEW
    assert w.record(5_000, 0) is DUP
    assert w.record(5_000, 1) is NEW
    assert w.check(5_000, 1) is DUP


def test_check_does_not_record() -> None:
    w = ReplayWindow(window_ms=1_000, max_entries=10)
    assert w.check(1, 1) is NEW
    assert w.check(1, 1) is NEW
    assert len(w) == 0


def test_older_than_time_window_is_too_old() -> None:
    w = ReplayWindow(window_ms=1_000, max_entries=10)
    w.record(10_000, 0)
    assert w.record(9_000, 3) is NEW  # exactly at the edge: still inside
    assert w.record(8_999, 3) is OLD
    w.record(20_000, 0)
    # The first entries fell out of the window; they are refused, not forgotten-and-accepted.
    assert w.record(10_000, 0) is OLD
    assert len(w) == 1


def test_count_bound_evicts_oldest_and_refuses_them() -> None:
    w = ReplayWindow(window_ms=10**12, max_entries=3)
    for seq in range(5):
        assert w.record(0, seq) is NEW  # creation time 0: a source without a clock
    assert len(w) == 3
    assert w.record(0, 0) is OLD
    assert w.record(0, 1) is OLD
    assert w.record(0, 4) is DUP
    assert w.record(0, 5) is NEW


def test_out_of_order_arrivals_inside_window_are_new_once() -> None:
    rng = random.Random(7)
    stamps = [(1_000 + i * 10, i % 3) for i in range(200)]
    rng.shuffle(stamps)
    w = ReplayWindow(window_ms=10_000, max_entries=1_000)
    assert all(w.record(t, s) is NEW for t, s in stamps)
    assert all(w.record(t, s) is DUP for t, s in stamps)


def test_window_matches_model() -> None:
    # Model: never NEW twice for the same stamp, and NEW for every unseen stamp inside
    # both bounds, whatever the order.
    rng = random.Random(3)
    w = ReplayWindow(window_ms=500, max_entries=50)
    accepted: set[tuple[int, int]] = set()
    for _ in range(3_000):
        stamp = (rng.randrange(0, 5_000), rng.randrange(0, 4))
        verdict = w.record(*stamp)
        if verdict is NEW:
            assert stamp not in accepted
            accepted.add(stamp)
        assert len(w) <= 50


def test_guard_keeps_sources_apart() -> None:
    g = ReplayGuard(window_ms=1_000)
    assert g.record(5, 100, 1) is NEW
    assert g.record(6, 100, 1) is NEW
    assert g.record(5, 100, 1) is DUP
    assert g.check(7, 100, 1) is NEW
    g.forget(5)
    assert g.check(5, 100, 1) is NEW


def test_bad_arguments() -> None:
    with pytest.raises(InvalidArgument):
        ReplayWindow(window_ms=-1, max_entries=1)
    with pytest.raises(InvalidArgument):
        ReplayWindow(window_ms=1, max_entries=0)
