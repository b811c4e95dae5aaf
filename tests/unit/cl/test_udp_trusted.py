"""The UDP CL's per-datagram objects built with slot setters
(spec/performance.md "Eighth round: the 1 KB path") are the objects the
dataclass constructors build: a decoded DATA segment, and the link's
``SendDatagram`` and ``TxDone`` for a transmission and its ACK."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.cl.udp import (
    DataSegment,
    SendDatagram,
    TxDone,
    UdpLink,
    decode_datagram_untrusted,
    encode_data_segment,
)

_u64 = st.integers(min_value=0, max_value=2**64 - 1)
_bundle = st.binary(min_size=1, max_size=64).map(lambda b: b"\x9f" + b)


def _alike(fast: Any, slow: Any) -> None:
    assert type(fast) is type(slow)
    assert fast == slow
    assert hash(fast) == hash(slow)
    assert repr(fast) == repr(slow)
    field = dataclasses.fields(fast)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(fast, field, getattr(fast, field))


@given(st.integers(min_value=0, max_value=2**63 - 1), _u64, _bundle, st.booleans())
def test_a_decoded_data_segment_is_the_dataclass(
    sender: int, token: int, bundle: bytes, with_mac: bool
) -> None:
    mac = bytes(range(16)) if with_mac else None
    raw = encode_data_segment(sender=sender, token=token, bundle=bundle, mac=mac)
    _alike(decode_datagram_untrusted(raw), DataSegment(sender, token, bundle, mac))


@given(st.lists(_bundle, min_size=1, max_size=8), st.integers(min_value=0))
def test_the_links_outputs_are_the_dataclasses(bundles: list[bytes], seed: int) -> None:
    link = UdpLink(local_node=1, neighbor=2, rng=random.Random(seed))
    tokens = []
    for tx_id, bundle in enumerate(bundles):
        (out,) = link.transmit(tx_id, bundle, 1.0)
        assert isinstance(out, SendDatagram)
        assert out.token is not None
        _alike(out, SendDatagram(out.data, out.token))
        tokens.append(out.token)
    done = link.on_ack(tuple(tokens), 2.0)
    for tx_id, out in enumerate(done):
        _alike(out, TxDone(tx_id, True))
