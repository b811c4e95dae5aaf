"""dcis.crypto.cbor_guard: untrusted CBOR reaches cbor2's C decoder only when its
leaking error paths are out of reach, and decodes as cbor2 would otherwise."""

from __future__ import annotations

import contextlib
import gc
import random
import types

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcis.crypto.cbor_guard import check_untrusted, loads_untrusted
from dcis.crypto.errors import DecodeError
from dcis.dtn.cl.udp import DCIS_TAG, decode_datagram_untrusted
from dcis.dtn.errors import DecodeError as DtnDecodeError

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=5)
    ),
    max_leaves=30,
)


@given(values)
def test_well_formed_items_decode_as_cbor2_decodes_them(value: object) -> None:
    data = cbor2.dumps(value)
    assert loads_untrusted(data) == cbor2.loads(data)


@given(st.binary(max_size=200))
def test_hostile_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        loads_untrusted(data, allowed_tags=(0, 1, 2, 3, 36, DCIS_TAG))


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "truncated"),
        (b"\x01\x02", "trailing"),
        (b"\x82\x01", "longer than the input"),
        (b"\x9f\x01", "truncated"),
        (b"\x62\xff\xfe", "UTF-8"),
        (b"\xc1\x00", "tag 1"),
        (b"\x5f\x41a\xff", "additional information 31"),
        (b"\xf8\x10", "simple value"),
        (b"\x9b" + b"\xff" * 8, "longer than the input"),
        (b"\xff", "break"),
        (b"\x81" * 40 + b"\x00", "deeper"),
    ],
)
def test_what_is_refused_and_why(data: bytes, why: str) -> None:
    with pytest.raises(DecodeError, match=why):
        check_untrusted(data)


def test_junk_segments_do_not_pin_the_callers_frames() -> None:
    # cbor2 5.8's C decoder leaked its exception, with the traceback, on an
    # invalid UTF-8 text string: every frame live at that moment stayed in
    # memory (a daemon's whole receive batch, ~15 KiB a datagram).
    rng = random.Random(7)

    def receive_one(data: bytes, batch: list[bytes]) -> None:
        batch.append(data)
        with contextlib.suppress(DtnDecodeError):
            decode_datagram_untrusted(data)

    for _ in range(500):
        bad_text = b"\x62" + bytes([0xC0 | rng.randrange(32), rng.randrange(0x40)])
        junk = b"\xd9\xdc\x15\x83" + bad_text + rng.randbytes(rng.randrange(0, 60))
        receive_one(junk, [bytes(10_000)])
    gc.collect()
    pinned = [
        o
        for o in gc.get_objects()
        if isinstance(o, types.FrameType) and o.f_code is receive_one.__code__
    ]
    assert pinned == []
