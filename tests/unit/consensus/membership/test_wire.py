"""Membership wire format: round trips and hostile bytes."""

from __future__ import annotations

import contextlib
import math
from dataclasses import replace
from unittest import mock

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcis.consensus.membership import wire
from dcis.consensus.membership.view import Resources
from dcis.consensus.membership.wire import (
    Kind,
    MemberRow,
    Message,
    Status,
    Update,
    UpdateSpans,
    check_digest_untrusted,
    decode_digest_untrusted,
    decode_message_untrusted,
    encode_digest,
    encode_message,
    encode_update,
    signed_bytes,
)
from dcis.dtn.errors import DecodeError, InvalidArgument
from tests.unit.consensus.membership.helpers import sign

u64 = st.integers(min_value=1, max_value=(1 << 64) - 1)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
resources = st.builds(
    Resources,
    store_free_bytes=st.integers(0, (1 << 64) - 1),
    store_total_bytes=st.integers(0, (1 << 64) - 1),
    cpu_load=finite,
    battery_pct=st.none() | finite,
    sunlit=st.none() | st.booleans(),
    temperature_c=st.none() | finite,
)


@st.composite
def updates(draw: st.DrawFn) -> Update:
    status = draw(st.sampled_from(Status))
    subject = draw(u64)
    signer = subject if status in (Status.ALIVE, Status.LEFT) else draw(u64)
    return Update(
        subject=subject,
        incarnation=draw(st.integers(0, (1 << 64) - 1)),
        status=status,
        signer=signer,
        resources=draw(resources) if status == Status.ALIVE else None,
        cert=draw(st.none() | st.binary(max_size=200)),
        signature=draw(st.binary(min_size=64, max_size=64)),
    )


messages = st.builds(
    Message,
    kind=st.sampled_from(Kind),
    seq=st.integers(0, (1 << 64) - 1),
    target=st.integers(0, (1 << 64) - 1),
    updates=st.lists(updates(), max_size=4).map(tuple),
    members=st.lists(
        st.builds(
            MemberRow,
            node=u64,
            state=st.sampled_from(["alive", "dead"]),
            incarnation=st.integers(0, 10),
            heard_ago_ms=st.none() | st.integers(0, 10**12),
            resources=resources,
        ),
        max_size=3,
    ).map(tuple),
    digest=st.lists(
        st.tuples(u64, st.integers(0, (1 << 64) - 1), st.integers(0, 3)), max_size=5
    ).map(encode_digest),
)


@given(messages)
def test_round_trip(m: Message) -> None:
    assert decode_message_untrusted(encode_message(m)) == m


@given(messages)
def test_round_trip_through_the_memo(m: Message) -> None:
    memo: dict[object, Update] = {}
    raw = encode_message(m)
    enc: dict[Update, bytes] = {}
    assert encode_message(m, memo=enc) == raw == encode_message(m, memo=enc)
    assert raw == cbor2.dumps(cbor2.loads(raw))
    assert decode_message_untrusted(raw, memo=memo) == m
    assert decode_message_untrusted(raw, memo=memo) == m


@given(messages, st.integers(0, (1 << 64) - 1), st.sampled_from(Kind))
def test_round_trip_through_the_body_memo(m: Message, seq: int, kind: Kind) -> None:
    # The second message shares the first one's body, not its envelope.
    bodies: dict[bytes, object] = {}
    other = replace(m, seq=seq, kind=kind)
    for msg in (m, m, other, m):
        got = decode_message_untrusted(encode_message(msg), bodies=bodies)  # type: ignore[arg-type]
        assert got == msg


def test_body_memo_never_admits_what_the_full_decoder_refuses() -> None:
    bodies: dict[bytes, object] = {}
    ok = encode_message(Message(kind=Kind.PUSH, digest=encode_digest([(1, 2, 0)])))
    decode_message_untrusted(ok, bodies=bodies)  # type: ignore[arg-type]
    # The same body behind a 6-element head (digest unannounced), a bad
    # version or an unknown kind is refused as it would be without the memo.
    for bad in (b"\x86" + ok[1:], b"\x87\x02" + ok[2:], b"\x87\x01\x18\x63" + ok[3:]):
        with pytest.raises(DecodeError):
            decode_message_untrusted(bad, bodies=bodies)  # type: ignore[arg-type]


def _outcome(data: bytes, **memos: object) -> object:
    try:
        return decode_message_untrusted(data, **memos)  # type: ignore[arg-type]
    except DecodeError:
        return DecodeError


@given(messages, st.integers(0, 400), st.integers(0, 255))
def test_known_updates_decode_as_the_full_decoder_does(
    m: Message, at: int, byte: int
) -> None:
    """Once its updates were seen (``spans``), a message is read without a
    CBOR walk; it, a truncation or a changed byte decodes to what the full
    decoder gives (or is refused as there)."""
    memo: dict[object, Update] = {}
    spans = UpdateSpans()
    raw = encode_message(m)
    assert _outcome(raw, memo=memo, bodies={}, spans=spans) == m
    if m.updates and not m.members:
        with mock.patch.object(wire, "loads_untrusted", side_effect=AssertionError):
            assert _outcome(raw, memo=memo, bodies={}, spans=spans) == m
    for data in (raw, raw[:at], raw[:at] + bytes([byte]) + raw[at + 1 :]):
        want = _outcome(data)
        assert _outcome(data, memo=memo, bodies={}, spans=spans) == want


def test_updates_alike_in_their_first_bytes_are_all_read_without_a_walk() -> None:
    """The same claim by signers whose numbers encode in different lengths
    shares the first bytes of its encoding: each is still known by its own
    length (one length per first bytes missed all but the last learnt)."""
    claims = tuple(
        Update(subject=1 << 32, incarnation=0, status=Status.SUSPECT, signer=s)
        for s in (1, 24, 1 << 16)
    )
    m = Message(kind=Kind.PING, updates=claims)
    memo: dict[object, Update] = {}
    spans = UpdateSpans()
    raw = encode_message(m)
    assert decode_message_untrusted(raw, memo=memo, bodies={}, spans=spans) == m
    with mock.patch.object(wire, "loads_untrusted", side_effect=AssertionError):
        assert decode_message_untrusted(raw, memo=memo, bodies={}, spans=spans) == m


@pytest.mark.parametrize("stand_in", [b"\xf4", b"\xf9\x00\x00"])  # false, 0.0
def test_a_known_update_with_a_bool_or_float_for_an_integer_is_refused(
    stand_in: bytes,
) -> None:
    """0 == False == 0.0 as dict keys: once an update with incarnation 0 was
    read, the same bytes with ``false`` or ``0.0`` there are still refused,
    as the full decoder refuses them."""
    u = Update(subject=5, incarnation=0, status=Status.ALIVE, signer=5)
    raw = encode_message(Message(kind=Kind.PING, updates=(u,)))
    memo: dict[object, Update] = {}
    spans = UpdateSpans()
    decode_message_untrusted(raw, memo=memo, bodies={}, spans=spans)
    at = raw.index(encode_update(u)) + 2  # the incarnation's byte
    assert raw[at] == 0
    bad = raw[:at] + stand_in + raw[at + 1 :]
    with pytest.raises(DecodeError):
        decode_message_untrusted(bad)
    with pytest.raises(DecodeError):
        decode_message_untrusted(bad, memo=memo, bodies={}, spans=spans)


def test_known_updates_never_admit_a_bad_digest() -> None:
    u = Update(subject=1, incarnation=1, status=Status.SUSPECT, signer=2)
    memo: dict[object, Update] = {}
    spans = UpdateSpans()
    ok = encode_message(
        Message(kind=Kind.PUSH, updates=(u,), digest=encode_digest([(1, 2, 0)]))
    )
    decode_message_untrusted(ok, memo=memo, bodies={}, spans=spans)
    assert spans.keys
    for bad in (ok[:-1] + b"\x04", ok[:-17] + bytes(8) + ok[-9:]):
        with pytest.raises(DecodeError):
            decode_message_untrusted(bad, memo=memo, bodies={}, spans=spans)


@given(
    st.lists(
        st.tuples(
            st.sampled_from([0, 1, 255, 256, 1 << 56, (1 << 64) - 1]),
            st.sampled_from([0, 1, (1 << 64) - 1]),
            st.integers(0, 255),
        ),
        max_size=6,
    ),
    st.integers(0, 120),
)
def test_digest_check_refuses_what_a_record_scan_refuses(
    recs: list[tuple[int, int, int]], cut: int
) -> None:
    data = encode_digest(recs)[:cut]
    whole = len(data) % 17 == 0
    ok = whole and all(s != 0 and r <= 3 for s, _, r in recs[: len(data) // 17])
    try:
        check_digest_untrusted(data)
    except DecodeError:
        assert not ok
    else:
        assert ok


def test_digest_round_trip_and_hostile_digests() -> None:
    recs = [(1, 0, 0), ((1 << 64) - 1, (1 << 64) - 1, 3)]
    assert decode_digest_untrusted(encode_digest(recs)) == recs
    for bad in (b"\x00" * 16, encode_digest([(0, 1, 0)]), encode_digest([(1, 1, 4)])):
        with pytest.raises(DecodeError):
            decode_digest_untrusted(bad)
        with pytest.raises((DecodeError, InvalidArgument)):
            decode_message_untrusted(
                cbor2.dumps([1, int(Kind.PUSH), 0, 0, [], [], bad]), bodies={}
            )


@given(st.binary(max_size=300))
def test_hostile_bytes_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_message_untrusted(data, memo={}, bodies={})


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.binary(max_size=8)
        | st.text(max_size=4),
        lambda c: st.lists(c, max_size=8),
        max_leaves=30,
    )
)
def test_hostile_cbor_structures_raise_only_decode_error(item: object) -> None:
    for data in (
        cbor2.dumps(item),
        cbor2.dumps([1, 0, 0, 0, [item], []]),
        cbor2.dumps([1, 4, 0, 0, [], [], item]),
    ):
        with contextlib.suppress(DecodeError):
            decode_message_untrusted(data, memo={}, bodies={})


def test_known_bytes() -> None:
    # [1, 0, 5, 0, [], []]: a ping with sequence number 5 and nothing on it.
    assert encode_message(Message(kind=Kind.PING, seq=5)) == bytes.fromhex(
        "86010005008080"
    )


@pytest.mark.parametrize(
    "bad",
    [
        [2, 0, 0, 0, [], []],  # version
        [1, 9, 0, 0, [], []],  # kind
        [1, 0, -1, 0, [], []],  # seq
        [1, 0, 0, 0, [[1, 0, 7, 1, None, None, bytes(64)]], []],  # status
        [
            1,
            0,
            0,
            0,
            [[1, 0, 0, 2, None, None, bytes(64)]],
            [],
        ],  # alive not self-signed
        [1, 0, 0, 0, [[1, 0, 0, 1, None, None, bytes(63)]], []],  # signature length
        [
            1,
            0,
            0,
            0,
            [[1, 0, 0, 1, [1, 2, float("nan"), None, None, None], None, bytes(64)]],
            [],
        ],
        [
            1,
            0,
            0,
            0,
            [[1, 0, 0, 1, [1, 2, 0.5, None, 3, None], None, bytes(64)]],
            [],
        ],  # sunlit
        [1, 0, 0, 0, [[0, 0, 0, 0, None, None, bytes(64)]], []],  # node 0
    ],
)
def test_bad_fields_are_decode_errors(bad: list[object]) -> None:
    with pytest.raises(DecodeError):
        decode_message_untrusted(cbor2.dumps(bad), memo={})


def test_update_validation() -> None:
    with pytest.raises(InvalidArgument):
        Update(subject=1, incarnation=0, status=Status.LEFT, signer=2)
    with pytest.raises(InvalidArgument):
        Update(subject=1, incarnation=-1, status=Status.ALIVE, signer=1)


def test_signature_covers_every_signed_field() -> None:
    u = sign(1, 3, Status.ALIVE, resources=Resources(store_free_bytes=5))
    base = signed_bytes(u)
    from dataclasses import replace

    for changed in (
        replace(u, incarnation=4),
        replace(u, resources=Resources(store_free_bytes=6)),
        replace(u, status=Status.LEFT, resources=None),
    ):
        assert signed_bytes(changed) != base


def test_a_negative_zero_decodes_as_zero_and_signs_alike() -> None:
    """-0.0 == 0.0 (one memo key): a copy of an update with -0.0 for a
    number decodes to the same signed fields, so every node checks its
    signature alike whether or not it read the original first."""
    u = sign(1, 3, Status.ALIVE, resources=Resources(cpu_load=0.0))
    raw = encode_message(Message(kind=Kind.PING, updates=(u,)))
    item = cbor2.loads(raw)
    item[4][0][4][2] = -0.0  # the update's resources' cpu_load
    copy = decode_message_untrusted(cbor2.dumps(item)).updates[0]
    assert copy.resources is not None
    assert math.copysign(1.0, copy.resources.cpu_load) == 1.0
    assert signed_bytes(copy) == signed_bytes(u)


def test_precedence_key() -> None:
    a, s, d = (
        sign(1, 3, Status.ALIVE),
        sign(1, 3, Status.SUSPECT, signer=2),
        sign(1, 3, Status.DEAD, signer=2),
    )
    assert a.key < s.key < d.key < sign(1, 4, Status.ALIVE).key


def test_updates_differing_only_in_their_unsigned_cert_do_not_share_a_hash() -> None:
    """No signature covers ``cert``: a peer can attach many encodings of one
    valid certificate to one signed update, and every copy verifies. They
    must not all hash alike, or each copy costs a walk of all the others in
    the verify and encode memos (quadratic work from one peer)."""
    u = sign(99_999, 5, Status.SUSPECT, signer=3)
    copies = [replace(u, cert=b"\xa0" + i.to_bytes(4, "big")) for i in range(64)]
    assert len({hash(c) for c in copies}) > 32
    assert hash(replace(copies[0])) == hash(copies[0])


def test_a_number_too_large_for_a_float_is_a_decode_error() -> None:
    """A bignum in a resource field raised OverflowError (``math.isfinite``
    on an int beyond a float), not the typed error a drop is counted by."""
    f = wire._update_fields(sign(2, 1, Status.ALIVE))
    f[4] = [0, 0, 10**400, None, None, None]
    with pytest.raises(DecodeError, match="finite number"):
        decode_message_untrusted(cbor2.dumps([1, 0, 0, 0, [f], []]))


_uint_heads = st.one_of(
    st.integers(0, 23).map(lambda v: bytes([v])),
    st.integers(0, 255).map(lambda v: bytes([24, v])),
    st.integers(0, 0xFFFF).map(lambda v: bytes([25]) + v.to_bytes(2, "big")),
    st.integers(0, 0xFFFFFFFF).map(lambda v: bytes([26]) + v.to_bytes(4, "big")),
    st.integers(0, (1 << 64) - 1).map(lambda v: bytes([27]) + v.to_bytes(8, "big")),
    st.binary(min_size=1, max_size=3),  # anything else, truncated heads too
)


_small = st.one_of(st.integers(0, 30).map(lambda v: bytes([v])), _uint_heads)


@given(
    first=st.sampled_from([0x85, 0x86, 0x87, 0x98]),
    version=st.one_of(st.just(b"\x01"), _small),
    kind=_small,
    seq=_uint_heads,
    target=_small,
    tail=st.binary(max_size=4),
)
def test_the_envelope_fast_path_reads_what_the_heads_say(
    first: int, version: bytes, kind: bytes, seq: bytes, target: bytes, tail: bytes
) -> None:
    """The hand-read common case of a message's head (one-byte kind and
    target, a seq of up to four bytes) gives what reading it head by head
    gives, for canonical, non-canonical, truncated and wrong heads."""
    data = bytes([first]) + version + kind + seq + target + tail
    assert wire._envelope(data) == wire._envelope_by_heads(data)


@given(
    kind=st.sampled_from(list(Kind)),
    seq=st.integers(0, (1 << 64) - 1),
    target=st.integers(0, (1 << 64) - 1),
)
def test_the_envelope_of_an_encoded_message_is_its_fields(
    kind: Kind, seq: int, target: int
) -> None:
    data = encode_message(Message(kind=kind, seq=seq, target=target))
    got = wire._envelope(data)
    assert got is not None
    assert got[1:4] == (kind, seq, target)
