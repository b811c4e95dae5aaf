"""The agent's per-bundle objects built with slot setters (``trusted_*``,
spec/performance.md "Eighth round: the 1 KB path") are the objects the
dataclass constructors build: same class, equal, same hash and repr, and
still frozen -- a driver or a trace cannot tell them apart."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.agent.actions import (
    Ack,
    Event,
    EventKind,
    Inbound,
    Transmit,
    trusted_ack,
    trusted_event,
    trusted_inbound,
    trusted_transmit,
)
from dcis.dtn.agent.store import BundleState, StoredBundle, trusted_stored_bundle

_u64 = st.integers(min_value=0, max_value=2**64 - 1)
_text = st.text(max_size=40)


def _alike(fast: Any, slow: Any) -> None:
    assert type(fast) is type(slow)
    assert fast == slow
    assert hash(fast) == hash(slow)
    assert repr(fast) == repr(slow)
    assert dataclasses.astuple(fast) == dataclasses.astuple(slow)
    field = dataclasses.fields(fast)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(fast, field, getattr(fast, field))


@given(st.sampled_from(list(EventKind)), _text, _text)
def test_trusted_event_is_the_event(kind: EventKind, key: str, detail: str) -> None:
    _alike(trusted_event(kind, key, detail), Event(kind, key, detail))
    # the constructor's conversion of a kind's string gives the same object
    _alike(trusted_event(kind, key, detail), Event(str(kind), key, detail))


@given(_u64, _u64, st.none() | _text)
def test_trusted_ack_is_the_ack(neighbor: int, token: int, key: str | None) -> None:
    _alike(trusted_ack(neighbor, token), Ack(neighbor, token))
    _alike(trusted_ack(neighbor, token, key), Ack(neighbor, token, key))


@given(
    _u64,
    st.lists(st.binary(max_size=64), min_size=1, max_size=3).map(tuple),
    _u64,
)
def test_trusted_transmit_is_the_transmit(
    neighbor: int, parts: tuple[bytes, ...], tx_id: int
) -> None:
    fast = trusted_transmit(neighbor, parts, tx_id)
    _alike(fast, Transmit(neighbor, parts, tx_id))
    assert fast.data == b"".join(parts)


@given(_text, _text, st.binary(max_size=64), _u64, _u64, _text)
def test_trusted_inbound_is_the_inbound(
    endpoint: str, source: str, payload: bytes, creation: int, seq: int, key: str
) -> None:
    _alike(
        trusted_inbound(endpoint, source, payload, creation, seq, key),
        Inbound(
            endpoint=endpoint,
            source=source,
            payload=payload,
            creation_ms=creation,
            sequence=seq,
            bundle_key=key,
        ),
    )


@given(
    _text,
    _text,
    st.integers(min_value=0, max_value=2**63 - 1),
    st.sampled_from(list(BundleState)),
    st.integers(min_value=0, max_value=2**40),
    st.integers(min_value=0, max_value=2**63 - 1),
    st.none() | st.integers(min_value=0, max_value=2**63 - 1),
    st.none() | _text,
)
def test_trusted_stored_bundle_is_the_stored_bundle(
    key: str,
    destination: str,
    expiry: int,
    state: BundleState,
    size: int,
    received: int,
    prev: int | None,
    group: str | None,
) -> None:
    _alike(
        trusted_stored_bundle(
            key, destination, expiry, state, size, received, prev, group
        ),
        StoredBundle(
            key=key,
            destination=destination,
            expiry_ms=expiry,
            state=state,
            size_bytes=size,
            received_ms=received,
            prev_node=prev,
            frag_group=group,
        ),
    )
