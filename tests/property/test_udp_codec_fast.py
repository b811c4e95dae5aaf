"""The UDP CL's fast segment codec agrees with the general CBOR path.

``encode_data_segment``/``encode_ack_segment`` (and ``encode_part_segments``,
``encode_need_segment``) write CBOR heads by hand and
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
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.cl import udp
from dcis.dtn.errors import DecodeError, InvalidArgument

U64 = st.integers(0, 2**64 - 1)
SMALL_OR_EDGE = st.one_of(
    st.integers(0, 30),
    st.sampled_from(
        [23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63]
    ),
    U64,
)
BUNDLE = st.binary(min_size=0, max_size=40).map(lambda b: b"\x9f" + b)
CHUNK = st.binary(min_size=0, max_size=40)
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


@st.composite
def part_bodies(draw: st.DrawFn) -> list[Any]:
    """A PART body, in range or not: the chunk within ``total`` or past it,
    starting a bundle at offset 0 or not."""
    offset = draw(st.one_of(st.just(0), SMALL_OR_EDGE))
    chunk = draw(BUNDLE if offset == 0 and draw(st.booleans()) else CHUNK)
    end = offset + len(chunk)
    total = draw(
        st.one_of(
            st.integers(end, end + 3),
            st.just(udp.MAX_TRANSFER_BYTES),
            st.just(udp.MAX_TRANSFER_BYTES + 1),
            SMALL_OR_EDGE,
        )
    )
    return [2, draw(SMALL_OR_EDGE), draw(SMALL_OR_EDGE), offset, total, chunk]


BOUND = st.one_of(
    st.integers(0, 40),
    st.sampled_from(
        [23, 24, 65536, udp.MAX_TRANSFER_BYTES, udp.MAX_TRANSFER_BYTES + 1, 2**64 - 1]
    ),
)


@st.composite
def need_bodies(draw: st.DrawFn) -> list[Any]:
    """A NEED body: ranges (touching, disjoint or not, empty or past
    ``MAX_NEED_RANGES``), or bounds in any order."""
    many = udp.MAX_NEED_RANGES * 2 + 2
    size = draw(st.sampled_from([8, many]))
    if draw(st.booleans()):
        # Ranges from a start, (gap, length) each: a gap of 0 makes two
        # ranges touch.
        pos, bounds = draw(BOUND), []
        gaps = st.tuples(st.integers(0, 3), st.integers(1, 4))
        for gap, length in draw(st.lists(gaps, max_size=size // 2)):
            bounds += [pos + gap, pos + gap + length]
            pos += gap + length
    else:
        bounds = draw(st.lists(BOUND, max_size=size))
        if draw(st.booleans()):
            bounds = sorted(set(bounds))
    return [3, draw(SMALL_OR_EDGE), draw(SMALL_OR_EDGE), bounds]


def ranges_valid(bounds: list[int]) -> bool:
    """What a NEED may carry (spelled out here, not udp's own check): an
    even number of bounds, 1 to MAX_NEED_RANGES ranges each ``start <
    end``, each starting at or after the previous one's end, none past
    MAX_TRANSFER_BYTES."""
    if len(bounds) % 2 or not 0 < len(bounds) // 2 <= udp.MAX_NEED_RANGES:
        return False
    prev = 0
    for start, end in zip(bounds[::2], bounds[1::2], strict=True):
        if start < prev or end <= start:
            return False
        prev = end
    return prev <= udp.MAX_TRANSFER_BYTES


@given(
    sender=SMALL_OR_EDGE,
    token=SMALL_OR_EDGE,
    bundle=BUNDLE,
    chunk_bytes=st.integers(1, 50),
    key=st.none() | st.binary(min_size=32, max_size=32),
)
def test_part_encoder_writes_what_cbor2_writes(
    sender: int, token: int, bundle: bytes, chunk_bytes: int, key: bytes | None
) -> None:
    parts = udp.encode_part_segments(
        sender=sender,
        token=token,
        bundle=bundle,
        chunk_bytes=chunk_bytes,
        mac_key=key,
        receiver=9,
    )
    for bufs, start, end in parts:
        chunk = bundle[start:end]
        body: list[Any] = [2, sender, token, start, len(bundle), chunk]
        if key is not None:
            body.append(
                udp.part_mac(
                    key,
                    sender=sender,
                    receiver=9,
                    token=token,
                    offset=start,
                    total=len(bundle),
                    chunk=chunk,
                )
            )
        assert b"".join(bufs) == cbor2.dumps(cbor2.CBORTag(udp.DCIS_TAG, body))


@given(body=need_bodies(), mac=st.none() | MAC)
def test_need_encoder_writes_what_cbor2_writes(
    body: list[Any], mac: bytes | None
) -> None:
    _, sender, token, bounds = body
    bounds = bounds[: len(bounds) // 2 * 2]  # the encoder takes pairs
    body[3] = bounds
    ranges = list(zip(bounds[::2], bounds[1::2], strict=True))
    if not ranges_valid(bounds):
        with pytest.raises(InvalidArgument):
            udp.encode_need_segment(sender=sender, token=token, ranges=ranges, mac=mac)
        return
    want = cbor2.dumps(cbor2.CBORTag(udp.DCIS_TAG, body + ([mac] if mac else [])))
    got = udp.encode_need_segment(sender=sender, token=token, ranges=ranges, mac=mac)
    assert got == want


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
    kind = draw(st.sampled_from([0, 1, 2, 3, 4]))
    if kind == 0:
        body: list[Any] = [0, draw(SMALL_OR_EDGE), draw(SMALL_OR_EDGE), draw(BUNDLE)]
    elif kind == 2:
        body = draw(part_bodies())
    elif kind == 3:
        body = draw(need_bodies())
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
    raw = cbor2.dumps(cbor2.CBORTag(udp.DCIS_TAG, body))
    if draw(st.booleans()) and len(raw) > 3:
        return _mangled(draw, raw, 4)
    return raw


def _mangled(draw: st.DrawFn, raw: bytes, most_added: int) -> bytes:
    """``raw`` with a byte after the tag flipped, its end cut off, or up
    to ``most_added`` bytes added after it."""
    out = bytearray(raw)
    op = draw(st.sampled_from(["flip", "cut", "extend"]))
    if op == "flip":
        i = draw(st.integers(3, len(out) - 1))
        out[i] ^= draw(st.integers(1, 255))
    elif op == "cut":
        del out[draw(st.integers(3, len(out) - 1)) :]
    else:
        out += draw(st.binary(min_size=1, max_size=most_added))
    return bytes(out)


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


@given(body=st.one_of(part_bodies(), need_bodies()), mac=st.none() | MAC)
def test_part_and_need_decode_to_their_fields_or_are_refused(
    body: list[Any], mac: bytes | None
) -> None:
    # Unmutated PART/NEED bodies: decoded to exactly their fields when in
    # range, refused otherwise -- the same answer on both paths.
    raw = cbor2.dumps(cbor2.CBORTag(udp.DCIS_TAG, body + ([mac] if mac else [])))
    got = _answer(udp.decode_datagram_untrusted, raw)
    assert got == _answer(udp._decode_segment_general, raw)
    if body[0] == 2:
        _, sender, token, offset, total, chunk = body
        ok = (
            sender <= udp.MAX_NODE
            and len(chunk) > 0
            and offset + len(chunk) <= total <= udp.MAX_TRANSFER_BYTES
            and (offset > 0 or chunk[0] == udp.BUNDLE_FIRST_BYTE)
        )
        want: object = udp.PartSegment(sender, token, offset, total, chunk, mac)
    else:
        _, sender, token, bounds = body
        ranges = tuple(zip(bounds[::2], bounds[1::2], strict=False))
        ok = sender <= udp.MAX_NODE and ranges_valid(bounds)
        want = udp.NeedSegment(sender, token, ranges, mac)
    assert got == (want if ok else DecodeError)


@st.composite
def mangled_parts_and_needs(draw: st.DrawFn) -> bytes:
    """A PART or NEED as the encoders write it (MAC or not), then a byte
    flipped, the end cut off, or bytes added after it."""
    sender, token = draw(SMALL_OR_EDGE), draw(SMALL_OR_EDGE)
    mac = draw(st.none() | MAC)
    if draw(st.booleans()):
        bundle = draw(BUNDLE)
        parts = udp.encode_part_segments(
            sender=sender,
            token=token,
            bundle=bundle,
            chunk_bytes=draw(st.integers(1, 50)),
            mac_key=None if mac is None else mac * 2,
        )
        bufs, _, _ = draw(st.sampled_from(parts))
        raw = b"".join(bufs)
    else:
        gaps = st.tuples(st.integers(0, 3), st.integers(1, 4))
        pos, ranges = draw(BOUND.filter(lambda b: b < 2**32 - 1000)), []
        for gap, length in draw(st.lists(gaps, min_size=1, max_size=6)):
            ranges.append((pos + gap, pos + gap + length))
            pos += gap + length
        raw = udp.encode_need_segment(
            sender=sender, token=token, ranges=ranges, mac=mac
        )
    return _mangled(draw, raw, 17)  # 17: as long as a MAC


@given(raw=mangled_parts_and_needs())
def test_fast_decoder_gives_the_general_answer_on_mangled_parts_and_needs(
    raw: bytes,
) -> None:
    assert _answer(udp.decode_datagram_untrusted, raw) == _answer(
        udp._decode_segment_general, raw
    )
