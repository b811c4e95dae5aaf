"""The UDP CL's fast segment codec agrees with the general CBOR path.

``encode_data_segment``/``encode_ack_segment`` write CBOR heads by hand and
``decode_datagram_untrusted`` reads the common segments head by head (the
simulator and the runtime run every datagram through them); the general
path (the guarded cbor2 decoder) remains for everything else. Checked on
generated segments, well-formed or not: the encoders write the bytes cbor2
writes, and the decoder gives the general path's answer -- the same
segment, or a ``DecodeError`` both ways.
"""

from __future__ import annotations

from typing import Any

import cbor2
from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.cl import udp
from dcis.dtn.errors import DecodeError

U64 = st.integers(0, 2**64 - 1)
SMALL_OR_EDGE = st.one_of(
    st.integers(0, 30),
    st.sampled_from(
        [23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63]
    ),
    U64,
)
BUNDLE = st.binary(min_size=0, max_size=40).map(lambda b: b"\x9f" + b)
MAC = st.binary(min_size=16, max_size=16)


@given(sender=SMALL_OR_EDGE, token=SMALL_OR_EDGE, bundle=BUNDLE, mac=st.none() | MAC)
def test_data_encoder_writes_what_cbor2_writes(
    sender: int, token: int, bundle: bytes, mac: bytes | None
) -> None:
    body: list[Any] = [0, sender, token, bundle] + ([mac] if mac else [])
    want = cbor2.dumps(cbor2.CBORTag(udp.DCIS_TAG, body))
    got = udp.encode_data_segment(sender=sender, token=token, bundle=bundle, mac=mac)
    assert got == want


@given(
    sender=SMALL_OR_EDGE,
    tokens=st.lists(SMALL_OR_EDGE, max_size=30),
    mac=st.none() | MAC,
)
def test_ack_encoder_writes_what_cbor2_writes(
    sender: int, tokens: list[int], mac: bytes | None
) -> None:
    body: list[Any] = [1, sender, tokens] + ([mac] if mac else [])
    want = cbor2.dumps(cbor2.CBORTag(udp.DCIS_TAG, body))
    assert udp.encode_ack_segment(sender=sender, tokens=tokens, mac=mac) == want


FIELD = st.one_of(
    SMALL_OR_EDGE,
    st.integers(-5, -1),
    st.binary(max_size=20),
    BUNDLE,
    MAC,
    st.text(max_size=3),
    st.lists(SMALL_OR_EDGE, max_size=4),
    st.none(),
)


@st.composite
def segments(draw: st.DrawFn) -> bytes:
    """A DCiS-tagged item: a plausible segment, or a mangled one."""
    kind = draw(st.sampled_from([0, 1, 2]))
    if kind == 0:
        body: list[Any] = [0, draw(SMALL_OR_EDGE), draw(SMALL_OR_EDGE), draw(BUNDLE)]
    else:
        body = [kind, draw(SMALL_OR_EDGE), draw(st.lists(SMALL_OR_EDGE, max_size=5))]
    if draw(st.booleans()):
        body.append(draw(MAC))
    if draw(st.booleans()):  # replace, add or drop a field
        i = draw(st.integers(0, len(body)))
        op = draw(st.sampled_from(["set", "add", "drop"]))
        if op == "set" and i < len(body):
            body[i] = draw(FIELD)
        elif op == "add":
            body.insert(i, draw(FIELD))
        elif body and i < len(body):
            del body[i]
    raw = bytearray(cbor2.dumps(cbor2.CBORTag(udp.DCIS_TAG, body)))
    if draw(st.booleans()) and len(raw) > 3:  # flip, cut or extend bytes
        op = draw(st.sampled_from(["flip", "cut", "extend"]))
        if op == "flip":
            i = draw(st.integers(3, len(raw) - 1))
            raw[i] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del raw[draw(st.integers(3, len(raw) - 1)) :]
        else:
            raw += draw(st.binary(min_size=1, max_size=4))
    return bytes(raw)


def _answer(f: Any, raw: bytes) -> object:
    try:
        return f(raw)
    except DecodeError:
        return DecodeError


@given(raw=segments())
def test_fast_decoder_gives_the_general_answer(raw: bytes) -> None:
    assert raw.startswith(udp.DCIS_PREFIX)
    assert _answer(udp.decode_datagram_untrusted, raw) == _answer(
        udp._decode_segment_general, raw
    )
