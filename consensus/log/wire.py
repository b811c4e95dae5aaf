"""The log's wire format (service 17) and its durable records, in CBOR
(spec/consensus.md gives the CDDL).

Theory of operation: every bundle payload of the log is one CBOR array whose
first item is the message type. Entries (the unit of both the tentative set
and the committed log) are :class:`Entry`; the committed log holds
:class:`Record` s, each an entry, a leader's no-op or a voter configuration.
Each ``encode_x`` has a ``decode_x_untrusted`` that raises only
:class:`~dcis.dtn.errors.DecodeError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from dcis.consensus.log.api import (
    CompareAndSet,
    Delete,
    EntryId,
    Increment,
    Op,
    Put,
    SetAdd,
    SetRemove,
)
from dcis.consensus.log.cbor import Value, dumps, loads_untrusted
from dcis.dtn.errors import DecodeError

MAX_KEY_BYTES: Final = 1024
MAX_VALUE_BYTES: Final = 256 * 1024
MAX_PARENTS: Final = 4096


@dataclass(frozen=True, slots=True, order=True)
class Hlc:
    """A hybrid logical clock reading: DTN ms, then a counter within that ms."""

    ms: int
    count: int = 0

    def tick(self, now_ms: int) -> Hlc:
        """The next reading for a local event at ``now_ms``."""
        if now_ms > self.ms:
            return Hlc(now_ms, 0)
        return Hlc(self.ms, self.count + 1)

    def merge(self, seen: Hlc, now_ms: int) -> Hlc:
        """The reading after receiving ``seen`` at ``now_ms``."""
        top = max(self.ms, seen.ms, now_ms)
        if top == self.ms == seen.ms:
            return Hlc(top, max(self.count, seen.count) + 1)
        if top == self.ms:
            return Hlc(top, self.count + 1)
        if top == seen.ms:
            return Hlc(top, seen.count + 1)
        return Hlc(top, 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One operation made by ``origin`` as its ``seq`` -th entry, at clock
    ``hlc``, after ``parents`` (per other origin, the newest of its
    uncommitted entries this origin had seen). ``sig``: the origin's
    Ed25519 signature over the other fields, empty on a node without keys."""

    origin: int
    seq: int
    hlc: Hlc
    op: Op
    parents: tuple[EntryId, ...] = ()
    sig: bytes = b""

    @property
    def id(self) -> EntryId:
        """The entry's identity."""
        return EntryId(self.origin, self.seq)

    @property
    def order_key(self) -> tuple[int, int, int, int]:
        """The tentative order: by clock, then origin, then sequence. An
        origin's clock only grows and parents were seen before, so this order
        puts an origin's entries and every entry's parents first."""
        return (self.hlc.ms, self.hlc.count, self.origin, self.seq)


class RecordKind(IntEnum):
    """What a committed-log record carries."""

    ENTRY = 0
    NOOP = 1
    CONFIG = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """One slot of the committed log: its Raft term and what it carries."""

    term: int
    kind: RecordKind
    entry: Entry | None = None
    voters: tuple[int, ...] = ()


class MsgType(IntEnum):
    """The first item of every log message."""

    PRE_VOTE = 1
    PRE_VOTE_REPLY = 2
    VOTE = 3
    VOTE_REPLY = 4
    APPEND = 5
    APPEND_REPLY = 6
    SNAPSHOT = 7
    GOSSIP = 8
    CLIENT = 9
    CLIENT_REPLY = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class VoteRequest:
    """A (pre-)vote request. A pre-vote does not bump anyone's term."""

    pre: bool
    term: int
    last_index: int
    last_term: int


@dataclass(frozen=True, slots=True, kw_only=True)
class VoteReply:
    """The answer to a (pre-)vote request."""

    pre: bool
    term: int
    granted: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Append:
    """Raft AppendEntries: ``records`` follow ``prev_index``/``prev_term``."""

    term: int
    prev_index: int
    prev_term: int
    records: tuple[Record, ...]
    commit: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendReply:
    """``match``: on success the index the follower's log now matches to;
    on failure the follower's last index (a hint where to resume)."""

    term: int
    success: bool
    match: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """The leader's state machine as of ``last_index`` (replaces a prefix
    the leader has compacted away)."""

    term: int
    last_index: int
    last_term: int
    voters: tuple[int, ...]
    state: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Gossip:
    """Anti-entropy of tentative entries within a partition: the sender's
    version vector (per origin, the highest sequence it holds with none
    missing below) and entries the receiver may lack."""

    vv: tuple[EntryId, ...]
    entries: tuple[Entry, ...]
    certs: tuple[bytes, ...] = ()
    """Encoded operator certificates of the entries' origins (on a node
    with security), so a receiver can check each entry's signature."""


class ClientKind(IntEnum):
    """What an app-API client asks the log service."""

    APPEND = 1
    GET = 2
    STATUS = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientRequest:
    """A request from an app endpoint (``dcis log``); ``op`` for APPEND,
    ``key`` and ``level`` for GET."""

    req_id: int
    kind: ClientKind
    op: Op | None = None
    key: str = ""
    level: str = "committed"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientReply:
    """The answer: ``ok`` false with ``error`` on a refused request; else
    ``value`` for GET, ``entry`` for APPEND, ``status`` (CBOR map as pairs)
    for STATUS."""

    req_id: int
    ok: bool
    error: str = ""
    value: bytes | None = None
    entry: EntryId | None = None
    status: tuple[tuple[str, Value], ...] = field(default=())


Message = (
    VoteRequest
    | VoteReply
    | Append
    | AppendReply
    | Snapshot
    | Gossip
    | ClientRequest
    | ClientReply
)


# -- ops ---------------------------------------------------------------------


def _zigzag(n: int) -> int:
    return n * 2 if n >= 0 else -n * 2 - 1


def _unzigzag(n: int) -> int:
    return n // 2 if n % 2 == 0 else -(n + 1) // 2


def op_value(op: Op) -> Value:
    """``op`` as a CBOR value."""
    if isinstance(op, Put):
        return [0, op.key, op.value]
    if isinstance(op, Delete):
        return [1, op.key]
    if isinstance(op, CompareAndSet):
        return [2, op.key, op.expected, op.value]
    if isinstance(op, Increment):
        return [3, op.key, _zigzag(op.delta)]
    if isinstance(op, SetAdd):
        return [4, op.key, op.member]
    return [5, op.key, op.member]


def _list(v: Value, n: int | None, what: str) -> list[Value]:
    if not isinstance(v, list) or (n is not None and len(v) != n):
        raise DecodeError(f"{what}: expected an array of {n}", where="log message")
    return v


def _int(v: Value, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise DecodeError(f"{what}: expected an unsigned integer", where="log message")
    return v


def _bytes(v: Value, what: str, limit: int = MAX_VALUE_BYTES) -> bytes:
    if not isinstance(v, bytes) or len(v) > limit:
        raise DecodeError(f"{what}: expected bytes (<= {limit})", where="log message")
    return v


def _opt_bytes(v: Value, what: str) -> bytes | None:
    return None if v is None else _bytes(v, what)


def _str(v: Value, what: str, limit: int = MAX_KEY_BYTES) -> str:
    if not isinstance(v, str) or len(v) > limit:
        raise DecodeError(f"{what}: expected text (<= {limit})", where="log message")
    return v


def _bool(v: Value, what: str) -> bool:
    if not isinstance(v, bool):
        raise DecodeError(f"{what}: expected a boolean", where="log message")
    return v


def op_from_value(v: Value) -> Op:
    """Decode an op; :class:`DecodeError` if malformed."""
    items = _list(v, None, "op")
    if len(items) < 2:
        raise DecodeError("op: too short", where="log message")
    kind = _int(items[0], "op kind")
    key = _str(items[1], "key")
    if kind == 0 and len(items) == 3:
        return Put(key, _bytes(items[2], "value"))
    if kind == 1 and len(items) == 2:
        return Delete(key)
    if kind == 2 and len(items) == 4:
        return CompareAndSet(
            key, _opt_bytes(items[2], "expected"), _opt_bytes(items[3], "value")
        )
    if kind == 3 and len(items) == 3:
        return Increment(key, _unzigzag(_int(items[2], "delta")))
    if kind in (4, 5) and len(items) == 3:
        member = _bytes(items[2], "member", MAX_KEY_BYTES)
        if b"\n" in member:
            raise DecodeError("set member holds a newline", where="log message")
        return SetAdd(key, member) if kind == 4 else SetRemove(key, member)
    raise DecodeError(f"op: unknown kind {kind} or wrong length", where="log message")


# -- entries and records -----------------------------------------------------


def _ids(v: Value, what: str, limit: int) -> tuple[EntryId, ...]:
    items = _list(v, None, what)
    if len(items) > limit:
        raise DecodeError(f"{what}: more than {limit}", where="log message")
    out = []
    for it in items:
        pair = _list(it, 2, what)
        out.append(EntryId(_int(pair[0], "origin"), _int(pair[1], "seq")))
    return tuple(out)


def _ids_value(ids: tuple[EntryId, ...]) -> Value:
    return [[i.origin, i.seq] for i in ids]


def signed_part(entry: Entry) -> bytes:
    """The bytes an origin signs: the entry without its signature."""
    return dumps(
        [
            entry.origin,
            entry.seq,
            [entry.hlc.ms, entry.hlc.count],
            op_value(entry.op),
            _ids_value(entry.parents),
        ]
    )


def entry_value(entry: Entry) -> Value:
    """``entry`` as a CBOR value."""
    return [
        entry.origin,
        entry.seq,
        [entry.hlc.ms, entry.hlc.count],
        op_value(entry.op),
        _ids_value(entry.parents),
        entry.sig,
    ]


def entry_from_value(v: Value) -> Entry:
    """Decode an entry; :class:`DecodeError` if malformed."""
    items = _list(v, 6, "entry")
    hlc = _list(items[2], 2, "hlc")
    seq = _int(items[1], "seq")
    if seq < 1:
        raise DecodeError("entry seq must be >= 1", where="log message")
    return Entry(
        origin=_int(items[0], "origin"),
        seq=seq,
        hlc=Hlc(_int(hlc[0], "hlc ms"), _int(hlc[1], "hlc count")),
        op=op_from_value(items[3]),
        parents=_ids(items[4], "parents", MAX_PARENTS),
        sig=_bytes(items[5], "sig", 128),
    )


def encode_entry(entry: Entry) -> bytes:
    """The durable/wire bytes of one entry."""
    return dumps(entry_value(entry))


def decode_entry_untrusted(data: bytes) -> Entry:
    """Inverse of :func:`encode_entry`; raises only :class:`DecodeError`."""
    return entry_from_value(loads_untrusted(data, "log entry"))


def record_value(rec: Record) -> Value:
    """``rec`` as a CBOR value."""
    body: Value
    if rec.kind == RecordKind.ENTRY:
        assert rec.entry is not None
        body = entry_value(rec.entry)
    elif rec.kind == RecordKind.CONFIG:
        body = list(rec.voters)
    else:
        body = None
    return [rec.term, int(rec.kind), body]


def record_from_value(v: Value) -> Record:
    """Decode a record; :class:`DecodeError` if malformed."""
    items = _list(v, 3, "record")
    term = _int(items[0], "term")
    kind = _int(items[1], "record kind")
    if kind == RecordKind.ENTRY:
        return Record(
            term=term, kind=RecordKind.ENTRY, entry=entry_from_value(items[2])
        )
    if kind == RecordKind.NOOP:
        return Record(term=term, kind=RecordKind.NOOP)
    if kind == RecordKind.CONFIG:
        voters = tuple(_int(x, "voter") for x in _list(items[2], None, "voters"))
        if not voters or len(voters) > MAX_PARENTS:
            raise DecodeError("config: bad voter count", where="log message")
        return Record(term=term, kind=RecordKind.CONFIG, voters=voters)
    raise DecodeError(f"unknown record kind {kind}", where="log message")


def encode_record(rec: Record) -> bytes:
    """The durable bytes of one committed-log record."""
    return dumps(record_value(rec))


def decode_record_untrusted(data: bytes) -> Record:
    """Inverse of :func:`encode_record`; raises only :class:`DecodeError`."""
    return record_from_value(loads_untrusted(data, "log record"))


# -- messages ----------------------------------------------------------------


def encode_message(msg: Message) -> bytes:
    """The bundle payload of one log message."""
    v: Value
    if isinstance(msg, VoteRequest):
        t = MsgType.PRE_VOTE if msg.pre else MsgType.VOTE
        v = [int(t), msg.term, msg.last_index, msg.last_term]
    elif isinstance(msg, VoteReply):
        t = MsgType.PRE_VOTE_REPLY if msg.pre else MsgType.VOTE_REPLY
        v = [int(t), msg.term, msg.granted]
    elif isinstance(msg, Append):
        v = [
            int(MsgType.APPEND),
            msg.term,
            msg.prev_index,
            msg.prev_term,
            [record_value(r) for r in msg.records],
            msg.commit,
        ]
    elif isinstance(msg, AppendReply):
        v = [int(MsgType.APPEND_REPLY), msg.term, msg.success, msg.match]
    elif isinstance(msg, Snapshot):
        v = [
            int(MsgType.SNAPSHOT),
            msg.term,
            msg.last_index,
            msg.last_term,
            list(msg.voters),
            msg.state,
        ]
    elif isinstance(msg, Gossip):
        v = [
            int(MsgType.GOSSIP),
            _ids_value(msg.vv),
            [entry_value(e) for e in msg.entries],
        ]
        if msg.certs:
            v.append(list(msg.certs))
    elif isinstance(msg, ClientRequest):
        v = [
            int(MsgType.CLIENT),
            msg.req_id,
            int(msg.kind),
            None if msg.op is None else op_value(msg.op),
            msg.key,
            msg.level,
        ]
    else:
        v = [
            int(MsgType.CLIENT_REPLY),
            msg.req_id,
            msg.ok,
            msg.error,
            msg.value,
            None if msg.entry is None else [msg.entry.origin, msg.entry.seq],
            [[k, x] for k, x in msg.status],
        ]
    return dumps(v)


def decode_message_untrusted(data: bytes) -> Message:
    """Decode a log bundle payload; raises only :class:`DecodeError`."""
    items = _list(loads_untrusted(data), None, "message")
    if not items:
        raise DecodeError("empty message", where="log message")
    t = _int(items[0], "message type")
    n = len(items)
    if t in (MsgType.PRE_VOTE, MsgType.VOTE) and n == 4:
        return VoteRequest(
            pre=t == MsgType.PRE_VOTE,
            term=_int(items[1], "term"),
            last_index=_int(items[2], "last index"),
            last_term=_int(items[3], "last term"),
        )
    if t in (MsgType.PRE_VOTE_REPLY, MsgType.VOTE_REPLY) and n == 3:
        return VoteReply(
            pre=t == MsgType.PRE_VOTE_REPLY,
            term=_int(items[1], "term"),
            granted=_bool(items[2], "granted"),
        )
    if t == MsgType.APPEND and n == 6:
        return Append(
            term=_int(items[1], "term"),
            prev_index=_int(items[2], "prev index"),
            prev_term=_int(items[3], "prev term"),
            records=tuple(
                record_from_value(r) for r in _list(items[4], None, "records")
            ),
            commit=_int(items[5], "commit"),
        )
    if t == MsgType.APPEND_REPLY and n == 4:
        return AppendReply(
            term=_int(items[1], "term"),
            success=_bool(items[2], "success"),
            match=_int(items[3], "match"),
        )
    if t == MsgType.SNAPSHOT and n == 6:
        return Snapshot(
            term=_int(items[1], "term"),
            last_index=_int(items[2], "last index"),
            last_term=_int(items[3], "last term"),
            voters=tuple(_int(x, "voter") for x in _list(items[4], None, "voters")),
            state=_bytes(items[5], "state", 1 << 30),
        )
    if t == MsgType.GOSSIP and n in (3, 4):
        certs: tuple[bytes, ...] = ()
        if n == 4:
            raw_certs = _list(items[3], None, "certs")
            if not raw_certs or len(raw_certs) > MAX_PARENTS:
                raise DecodeError("gossip: bad certificate count", where="log message")
            certs = tuple(_bytes(c, "cert", 4096) for c in raw_certs)
        return Gossip(
            vv=_ids(items[1], "vv", 1 << 20),
            entries=tuple(
                entry_from_value(e) for e in _list(items[2], None, "entries")
            ),
            certs=certs,
        )
    if t == MsgType.CLIENT and n == 6:
        kind_n = _int(items[2], "client kind")
        if kind_n not in (1, 2, 3):
            raise DecodeError(f"unknown client kind {kind_n}", where="log message")
        level = _str(items[5], "level", 16)
        if level not in ("committed", "tentative"):
            raise DecodeError(f"unknown level {level!r}", where="log message")
        return ClientRequest(
            req_id=_int(items[1], "req id"),
            kind=ClientKind(kind_n),
            op=None if items[3] is None else op_from_value(items[3]),
            key=_str(items[4], "key"),
            level=level,
        )
    if t == MsgType.CLIENT_REPLY and n == 7:
        eid = items[5]
        entry = None
        if eid is not None:
            pair = _list(eid, 2, "entry id")
            entry = EntryId(_int(pair[0], "origin"), _int(pair[1], "seq"))
        status = []
        for kv in _list(items[6], None, "status"):
            pair = _list(kv, 2, "status item")
            status.append((_str(pair[0], "status key"), pair[1]))
        return ClientReply(
            req_id=_int(items[1], "req id"),
            ok=_bool(items[2], "ok"),
            error=_str(items[3], "error", 4096),
            value=_opt_bytes(items[4], "value"),
            entry=entry,
            status=tuple(status),
        )
    raise DecodeError(
        f"unknown message type {t} or wrong length {n}", where="log message"
    )
