"""The bookkeeping of hop ACKs held until delivery
(:mod:`dcis.dtn.runtime.ack_hold`): released once each, by confirmation,
by the hold time, or all at once by an ACK naming no bundle; bounded in
count and bytes."""

from __future__ import annotations

from dcis.dtn.runtime.ack_hold import HOLD_MAX, HOLD_MAX_BYTES, HOLD_S, AckHold


def test_a_confirmed_bundle_releases_its_ack_once_and_only_if_it_left() -> None:
    h = AckHold()
    sent: list[str] = []
    assert h.hold("a", 10_000, lambda: sent.append("a"), now=0.0)
    assert h.hold("b", 10_000, lambda: sent.append("b"), now=0.0)
    # b is still in the store (the confirmation did not take it): held on.
    assert h.confirmed(["a", "b", "c"], gone=lambda k: k != "b") == 1
    assert sent == ["a"]
    assert list(h.keys()) == ["b"]
    assert h.confirmed(["a"], gone=lambda k: True) == 0
    assert sent == ["a"]


def test_the_hold_time_releases_in_order_and_only_when_due() -> None:
    h = AckHold()
    sent: list[str] = []
    for i, key in enumerate("abc"):
        assert h.hold(key, 5_000, lambda k=key: sent.append(k), now=i * 0.01)
    assert h.due_at() == HOLD_S
    assert not h.is_due(HOLD_S - 0.001)
    assert h.take_due(HOLD_S - 0.001) == []
    for key, ack in h.take_due(HOLD_S + 0.01):
        ack()
        assert sent[-1] == key
    assert sent == ["a", "b"]
    assert list(h.keys()) == ["c"]


def test_an_ack_naming_no_bundle_makes_every_held_one_due() -> None:
    h = AckHold()
    for key in "ab":
        assert h.hold(key, 5_000, lambda: None, now=100.0)
    h.expire_all()
    assert h.is_due(100.0)
    assert len(h.take_due(100.0)) == 2
    assert len(h) == 0
    assert h.due_at() is None


def test_the_count_and_bytes_are_bounded() -> None:
    h = AckHold()
    assert not h.hold("big", HOLD_MAX_BYTES + 1, lambda: None, now=0.0)
    for i in range(HOLD_MAX):
        assert h.hold(str(i), 1, lambda: None, now=0.0)
    assert not h.hold("one more", 1, lambda: None, now=0.0)
    assert not h.hold("0", 1, lambda: None, now=0.0)  # held already
    h2 = AckHold()
    assert h2.hold("a", HOLD_MAX_BYTES, lambda: None, now=0.0)
    assert not h2.hold("b", 1, lambda: None, now=0.0)
    h2.confirmed(["a"], gone=lambda k: True)
    assert h2.hold("b", 1, lambda: None, now=0.0)  # its bytes came back


def test_a_refused_bundle_s_held_ack_is_dropped() -> None:
    h = AckHold()
    sent: list[str] = []
    for key in "ab":
        assert h.hold(key, 5_000, lambda k=key: sent.append(k), now=0.0)
    h.drop(["a", "z"])
    assert list(h.keys()) == ["b"]
    assert h.confirmed(["a", "b"], gone=lambda k: True) == 1
    assert sent == ["b"]
    assert h.hold("c", HOLD_MAX_BYTES - 5_000, lambda: None, now=0.0)  # a's bytes back
