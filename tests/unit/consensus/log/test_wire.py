"""Log wire format: round trips of every message and hostile bytes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcis.consensus.log.api import (
    CompareAndSet,
    Delete,
    EntryId,
    Increment,
    Put,
    SetAdd,
    SetRemove,
)
from dcis.consensus.log.cbor import dumps, loads_untrusted
from dcis.consensus.log.wire import (
    Append,
    AppendReply,
    ClientKind,
    ClientReply,
    ClientRequest,
    Entry,
    Gossip,
    Hlc,
    Record,
    RecordKind,
    Snapshot,
    VoteReply,
    VoteRequest,
    decode_entry_untrusted,
    decode_message_untrusted,
    decode_record_untrusted,
    encode_entry,
    encode_message,
    encode_record,
)
from dcis.dtn.errors import DecodeError

u = st.integers(0, 2**40)
keys = st.text(max_size=8)
vals = st.binary(max_size=16)
member = st.binary(max_size=8).filter(lambda b: b"\n" not in b)
ops = st.one_of(
    st.builds(Put, keys, vals),
    st.builds(Delete, keys),
    st.builds(CompareAndSet, keys, st.none() | vals, st.none() | vals),
    st.builds(Increment, keys, st.integers(-(2**40), 2**40)),
    st.builds(SetAdd, keys, member),
    st.builds(SetRemove, keys, member),
)
ids = st.builds(EntryId, u, st.integers(1, 2**40))
entries = st.builds(
    Entry,
    origin=u,
    seq=st.integers(1, 2**40),
    hlc=st.builds(Hlc, u, u),
    op=ops,
    parents=st.lists(ids, max_size=3).map(tuple),
    sig=st.binary(max_size=64),
)
records = st.one_of(
    st.builds(Record, term=u, kind=st.just(RecordKind.ENTRY), entry=entries),
    st.builds(Record, term=u, kind=st.just(RecordKind.NOOP)),
    st.builds(
        Record,
        term=u,
        kind=st.just(RecordKind.CONFIG),
        voters=st.lists(u, min_size=1, max_size=5).map(tuple),
    ),
)
messages = st.one_of(
    st.builds(VoteRequest, pre=st.booleans(), term=u, last_index=u, last_term=u),
    st.builds(VoteReply, pre=st.booleans(), term=u, granted=st.booleans()),
    st.builds(
        Append,
        term=u,
        prev_index=u,
        prev_term=u,
        records=st.lists(records, max_size=3).map(tuple),
        commit=u,
    ),
    st.builds(AppendReply, term=u, success=st.booleans(), match=u),
    st.builds(
        Snapshot,
        term=u,
        last_index=u,
        last_term=u,
        voters=st.lists(u, max_size=3).map(tuple),
        state=vals,
    ),
    st.builds(
        Gossip,
        vv=st.lists(ids, max_size=3).map(tuple),
        entries=st.lists(entries, max_size=3).map(tuple),
    ),
    st.builds(
        ClientRequest,
        req_id=u,
        kind=st.sampled_from(ClientKind),
        op=st.none() | ops,
        key=keys,
        level=st.sampled_from(["committed", "tentative"]),
    ),
    st.builds(
        ClientReply,
        req_id=u,
        ok=st.booleans(),
        error=keys,
        value=st.none() | vals,
        entry=st.none() | ids,
        status=st.lists(st.tuples(keys, st.none() | u | keys), max_size=3).map(tuple),
    ),
)


@given(messages)
def test_message_round_trip(msg: object) -> None:
    data = encode_message(msg)  # type: ignore[arg-type]
    assert decode_message_untrusted(data) == msg
    assert encode_message(decode_message_untrusted(data)) == data


@given(entries)
def test_entry_round_trip(entry: Entry) -> None:
    assert decode_entry_untrusted(encode_entry(entry)) == entry


@given(records)
def test_record_round_trip(rec: Record) -> None:
    assert decode_record_untrusted(encode_record(rec)) == rec


@given(st.binary(max_size=64))
def test_hostile_bytes_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_message_untrusted(data)


@given(messages, st.data())
def test_truncated_or_flipped_messages(msg: object, data: st.DataObject) -> None:
    raw = bytearray(encode_message(msg))  # type: ignore[arg-type]
    cut = data.draw(st.integers(0, len(raw) - 1))
    with contextlib.suppress(DecodeError):
        decode_message_untrusted(bytes(raw[:cut]))
    raw[cut] ^= data.draw(st.integers(1, 255))
    with contextlib.suppress(DecodeError):
        decode_message_untrusted(bytes(raw))


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (23, b"\x17"),
        (24, b"\x18\x18"),
        (1000, b"\x19\x03\xe8"),
        (b"", b"\x40"),
        ("a", b"\x61a"),
        ([1, [2, 3]], b"\x82\x01\x82\x02\x03"),
        (None, b"\xf6"),
        (True, b"\xf5"),
    ],
)
def test_cbor_rfc8949_vectors(value: object, encoded: bytes) -> None:
    # RFC 8949 Appendix A
    assert dumps(value) == encoded  # type: ignore[arg-type]
    assert loads_untrusted(encoded) == value


def test_cbor_bounds() -> None:
    with pytest.raises(DecodeError):
        loads_untrusted(b"\x81" * 20 + b"\x00")  # too deep
    with pytest.raises(DecodeError):
        loads_untrusted(b"\x9a\xff\xff\xff\xff")  # array longer than the input
    with pytest.raises(DecodeError):
        loads_untrusted(b"\x00\x00")  # trailing bytes
    with pytest.raises(DecodeError):
        loads_untrusted(b"\x20")  # negative integers are not ours
    with pytest.raises(DecodeError):
        loads_untrusted(b"\x62\xff\xfe")  # not UTF-8


def test_unknown_message_type_and_bad_level() -> None:
    with pytest.raises(DecodeError):
        decode_message_untrusted(dumps([99]))
    with pytest.raises(DecodeError):
        decode_message_untrusted(dumps([9, 1, 2, None, "k", "sideways"]))
    with pytest.raises(DecodeError):
        decode_message_untrusted(
            dumps([8, [], [[1, 0, [0, 0], [0, "k", b""], [], b""]]])
        )


def test_hlc_orders_local_and_received_events() -> None:
    h = Hlc(100).tick(50)
    assert h == Hlc(100, 1)
    assert Hlc(100, 1).tick(200) == Hlc(200, 0)
    assert Hlc(100, 3).merge(Hlc(100, 7), 90) == Hlc(100, 8)
    assert Hlc(100, 3).merge(Hlc(300, 7), 90) == Hlc(300, 8)
    assert Hlc(100, 3).merge(Hlc(50, 7), 90) == Hlc(100, 4)
    assert Hlc(100, 3).merge(Hlc(50, 7), 400) == Hlc(400, 0)
