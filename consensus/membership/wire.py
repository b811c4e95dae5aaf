"""Membership wire format: the CBOR messages of service 16 (spec/membership.md).

Theory of operation
-------------------
Every membership bundle's payload is one CBOR (RFC 8949) array, a
:class:`Message`::

    message = [version: 1, kind: uint, seq: uint, target: uint,
               updates: [* update], members: [* member-row], ? digest: bstr]

``kind`` names what it is (:class:`Kind`): a probe (``ping``), its answer
(``ack``), a request to probe ``target`` for us (``ping-req``), a relay's
"no answer" (``nack``), the two halves of an anti-entropy exchange (``push``,
``pull``) and the local ``dcis members`` query and its answer. ``seq`` pairs
an answer with its question. ``updates`` are the piggybacked, signed
membership statements (:class:`Update`); ``members`` is only used by the
query answer.

An :class:`Update` says "``subject`` is ``status`` at ``incarnation``".
``alive`` and ``left`` are signed by the subject itself and an ``alive``
carries the subject's operator-issued certificate and its resource
advertisement; ``suspect`` and ``dead`` are signed by the accuser
(``signer``), whose certificate the receiver already holds from the
accuser's own ``alive``. The signature is Ed25519 over
``UPDATE_LABEL || CBOR([subject, incarnation, status, signer, resources])``.

Decoding never verifies: :func:`decode_message_untrusted` raises only
:class:`DecodeError`; the service checks signatures.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from operator import itemgetter

import cbor2

from dcis.consensus.membership.view import Resources
from dcis.crypto.cbor_guard import loads_untrusted
from dcis.crypto.errors import DecodeError as CborDecodeError
from dcis.dtn.errors import DecodeError, InvalidArgument

__all__ = [
    "DIGEST_RECORD",
    "MAX_UPDATES",
    "UPDATE_LABEL",
    "Kind",
    "MemberRow",
    "Message",
    "Status",
    "Update",
    "UpdateSpans",
    "check_digest_untrusted",
    "decode_digest_untrusted",
    "decode_message_untrusted",
    "digest_record",
    "encode_digest",
    "encode_message",
    "encode_update",
    "signed_bytes",
    "split_digest",
]

VERSION = 1
UPDATE_LABEL = b"dcis membership update v1\0"
"""Domain separation: an update signature is never a certificate's or a bundle's."""
MAX_UPDATES = 8192
"""Most updates (or member rows, or digest records) one message may carry;
more is refused."""
DIGEST_RECORD = 17
"""Bytes per digest record: subject (u64), incarnation (u64), rank (u8)."""
MAX_DIGEST_BYTES = MAX_UPDATES * DIGEST_RECORD
_DIGEST = struct.Struct(">QQB")
_RECORD = struct.Struct(f"{DIGEST_RECORD}s")
# Eight zero bytes at the start of a record: a subject 0.
_ZERO_SUBJECT = re.compile(rb"(?:.{%d})*?\x00{8}" % DIGEST_RECORD, re.DOTALL)
_MAX_RANK = 3
_BODY_MEMO_BYTES = 4096  # larger bodies (anti-entropy) are not memoised
_BODY_MEMO_MAX = 1024  # entries: at most ~4 MiB of keys
_U64 = 1 << 64
_MEMO_MAX = 1 << 16  # entries in an encode or decode memo
_SPANS_MAX = 1 << 14  # update encodings kept (each at most ~1.2 KiB)
_SPAN_PREFIX = 12  # bytes that begin an update's encoding in UpdateSpans
# Lengths kept per first bytes: updates that differ only after them (the same
# subject, incarnation and status claimed by signers whose numbers encode in
# 1, 2, 3, 5 or 9 bytes; with and without resources or a certificate).
_SPAN_LENGTHS = 16
_WHERE = "membership message"


class Kind(IntEnum):
    """What a message is (``kind``)."""

    PING = 0
    ACK = 1
    PING_REQ = 2
    NACK = 3
    PUSH = 4
    PULL = 5
    QUERY = 6
    ANSWER = 7


class Status(IntEnum):
    """The status an update states; ``unreachable`` is local and never sent."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class Update:
    """A signed statement: ``subject`` is ``status`` at ``incarnation``.

    ``cert`` (CBOR of the signer's NodeCertificate) is present on ``alive``;
    ``resources`` is the subject's advertisement on ``alive`` (None otherwise).
    """

    subject: int
    incarnation: int
    status: Status
    signer: int
    resources: Resources | None = None
    cert: bytes | None = None
    signature: bytes = bytes(64)

    def __post_init__(self) -> None:
        for name in ("subject", "incarnation", "signer"):
            v = getattr(self, name)
            ok = isinstance(v, int) and not isinstance(v, bool)
            if not ok or not 0 <= v < _U64:
                raise InvalidArgument(f"{name} must be a uint64, got {v!r}")
        if self.subject == 0 or self.signer == 0:
            raise InvalidArgument("node 0 is not a node number")
        if self.status in (Status.ALIVE, Status.LEFT) and self.signer != self.subject:
            raise InvalidArgument(f"{self.status.name.lower()} must be self-signed")
        if len(self.signature) != 64:
            raise InvalidArgument("signature must be 64 bytes")

    def __hash__(self) -> int:
        # Equal updates have equal signatures: hashing four fields (bytes
        # keep their own hash) instead of all seven, with the resources'
        # six, costs about half. Updates key the encode and verify memos:
        # several lookups per message. ``cert`` stays in: no signature
        # covers it, so without it a peer could send one signed update
        # with many encodings of a valid certificate that all verify and
        # all collide in the memos (quadratic work for us, none for it).
        return hash((self.subject, self.incarnation, self.signature, self.cert))

    @property
    def key(self) -> tuple[int, int]:
        """Precedence (incarnation, rank): a higher key overrides a lower one;
        at one incarnation dead/left > suspect > alive (SWIM's order)."""
        return (self.incarnation, _RANK[self.status])


_RANK = {Status.ALIVE: 0, Status.SUSPECT: 1, Status.DEAD: 2, Status.LEFT: 3}


def _res_fields(r: Resources | None) -> list[object] | None:
    if r is None:
        return None
    return [
        r.store_free_bytes,
        r.store_total_bytes,
        r.cpu_load,
        r.battery_pct,
        r.sunlit,
        r.temperature_c,
    ]


def signed_bytes(u: Update) -> bytes:
    """The exact bytes the signer signs for ``u``."""
    return UPDATE_LABEL + cbor2.dumps(
        [u.subject, u.incarnation, int(u.status), u.signer, _res_fields(u.resources)]
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberRow:
    """One member in a query answer (what ``dcis members`` prints);
    ``heard_ago_ms`` is how long ago the node last heard of it (None: never)."""

    node: int
    state: str
    incarnation: int
    heard_ago_ms: int | None
    resources: Resources


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One membership bundle payload (see the module docstring)."""

    kind: Kind
    seq: int = 0
    target: int = 0
    updates: tuple[Update, ...] = ()
    members: tuple[MemberRow, ...] = ()
    digest: bytes = b""
    """Packed :data:`DIGEST_RECORD` records (see :func:`encode_digest`);
    empty on every kind but ``push`` and ``pull``."""

    def __post_init__(self) -> None:
        seq: object = self.seq
        target: object = self.target
        if not (
            type(seq) is int
            and 0 <= seq < _U64
            and type(target) is int
            and 0 <= target < _U64
        ):
            for name, v in (("seq", seq), ("target", target)):
                if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < _U64:
                    raise InvalidArgument(f"{name} must be a uint64, got {v!r}")
        if len(self.updates) > MAX_UPDATES or len(self.members) > MAX_UPDATES:
            raise InvalidArgument(f"at most {MAX_UPDATES} updates or members")
        if len(self.digest) % DIGEST_RECORD or len(self.digest) > MAX_DIGEST_BYTES:
            raise InvalidArgument(
                f"digest must be whole {DIGEST_RECORD}-byte records, "
                f"at most {MAX_UPDATES}"
            )


def encode_digest(entries: Iterable[tuple[int, int, int]]) -> bytes:
    """Pack ``(subject, incarnation, rank)`` triples (rank: 0 alive,
    1 suspect, 2 dead, 3 left, as :attr:`Update.key`) into a digest: one
    17-byte record each, subject and incarnation as big-endian uint64."""
    return b"".join(_DIGEST.pack(s, i, r) for s, i, r in entries)


def digest_record(subject: int, incarnation: int, rank: int) -> bytes:
    """One digest record (what :func:`encode_digest` packs per triple)."""
    return _DIGEST.pack(subject, incarnation, rank)


def split_digest(data: bytes) -> list[bytes]:
    """A digest's records as bytes, in order (``data`` already checked by
    :func:`decode_digest_untrusted`): two equal records are one key."""
    return list(map(itemgetter(0), _RECORD.iter_unpack(data)))


def decode_digest_untrusted(data: bytes) -> list[tuple[int, int, int]]:
    """Unpack a digest from a peer. Raises DecodeError (not whole records,
    too many, a subject 0 or an unknown rank)."""
    check_digest_untrusted(data)
    return list(_DIGEST.iter_unpack(data))


def check_digest_untrusted(data: bytes) -> None:
    """Raise DecodeError where :func:`decode_digest_untrusted` would, without
    unpacking (ranks and subjects are checked in C, not per record)."""
    if len(data) % DIGEST_RECORD or len(data) > MAX_DIGEST_BYTES:
        raise DecodeError("digest: not whole records or too long", where=_WHERE)
    if data and (
        max(data[DIGEST_RECORD - 1 :: DIGEST_RECORD]) > _MAX_RANK
        or _ZERO_SUBJECT.match(data)
    ):
        raise DecodeError("digest: node 0 or unknown rank", where=_WHERE)


def _update_fields(u: Update) -> list[object]:
    return [
        u.subject,
        u.incarnation,
        int(u.status),
        u.signer,
        _res_fields(u.resources),
        u.cert,
        u.signature,
    ]


_SMALL_HEADS = [[bytes([major << 5 | n]) for n in range(24)] for major in range(8)]


def _head(major: int, n: int) -> bytes:
    # RFC 8949 section 3: the shortest head for an argument n.
    if n < 24:
        return _SMALL_HEADS[major][n]
    for ai, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * width):
            return bytes([major << 5 | ai]) + n.to_bytes(width, "big")
    raise InvalidArgument("array too long")  # pragma: no cover - bounded by MAX_UPDATES


def encode_update(u: Update, memo: dict[Update, bytes] | None = None) -> bytes:
    """CBOR of one update (``update`` in spec/membership.md)."""
    if memo is not None:
        got = memo.get(u)
        if got is not None:
            return got
    raw: bytes = cbor2.dumps(_update_fields(u))
    if memo is not None:
        if len(memo) >= _MEMO_MAX:
            memo.pop(next(iter(memo)))
        memo[u] = raw
    return raw


def encode_message(m: Message, *, memo: dict[Update, bytes] | None = None) -> bytes:
    """CBOR encoding of ``m`` (spec/membership.md). ``memo`` (optional)
    keeps each update's encoding: gossip sends the same update many times."""
    if m.members:
        members = cbor2.dumps(
            [
                [
                    r.node,
                    r.state,
                    r.incarnation,
                    r.heard_ago_ms,
                    _res_fields(r.resources),
                ]
                for r in m.members
            ]
        )
    else:
        members = b"\x80"  # an empty array
    # The envelope's uints by hand: one cbor2.dumps costs ~15 us, and every
    # probe carries four (spec/membership.md, "Performance").
    return b"".join(
        (
            _head(4, 7 if m.digest else 6),
            _head(0, VERSION),
            _head(0, int(m.kind)),
            _head(0, m.seq),
            _head(0, m.target),
            _head(4, len(m.updates)),
            *(encode_update(u, memo) for u in m.updates),
            members,
            *((_head(2, len(m.digest)), m.digest) if m.digest else ()),
        )
    )


# -- decoding (untrusted) -----------------------------------------------------


def _uint(x: object, what: str) -> int:
    if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x < _U64:
        raise DecodeError(f"{what}: expected a uint64, got {x!r:.40}", where=_WHERE)
    return x


def _num(x: object, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise DecodeError(f"{what}: expected a finite number", where=_WHERE)
    try:
        finite = math.isfinite(x)
    except OverflowError:  # an integer too large for a float
        finite = False
    if not finite:
        raise DecodeError(f"{what}: expected a finite number", where=_WHERE)
    # + 0.0 turns -0.0 into 0.0: they are equal (and one memo key), so one
    # must also re-encode alike, or the signature check over the signed
    # fields would depend on which of the two a node decoded first.
    return float(x) + 0.0


def _opt_num(x: object, what: str) -> float | None:
    return None if x is None else _num(x, what)


def _array(x: object, what: str, n: int | None = None) -> list[object]:
    if not isinstance(x, list):
        raise DecodeError(f"{what}: expected an array", where=_WHERE)
    if n is not None and len(x) != n:
        raise DecodeError(f"{what}: expected {n} elements, got {len(x)}", where=_WHERE)
    return x


def _resources(x: object) -> Resources | None:
    if x is None:
        return None
    f = _array(x, "resources", 6)
    sunlit = f[4]
    if sunlit is not None and not isinstance(sunlit, bool):
        raise DecodeError("resources: sunlit must be a bool or null", where=_WHERE)
    return Resources(
        store_free_bytes=_uint(f[0], "store_free_bytes"),
        store_total_bytes=_uint(f[1], "store_total_bytes"),
        cpu_load=_num(f[2], "cpu_load"),
        battery_pct=_opt_num(f[3], "battery_pct"),
        sunlit=sunlit,
        temperature_c=_opt_num(f[5], "temperature_c"),
    )


_MAX_STATUS = max(Status)
_MAX_KIND = max(Kind)
_KINDS = tuple(Kind(k) for k in range(_MAX_KIND + 1))


def _memo_key(x: object) -> object:
    # Only flat updates are memoised (hashable scalars); anything else takes
    # the full check, which raises DecodeError for it.
    # Type-strict: 0 == False == 0.0 as dict keys, but the full check
    # refuses a bool or a float where an unsigned integer stands.
    if (
        isinstance(x, list)
        and len(x) == 7
        and type(x[0]) is int
        and type(x[1]) is int
        and type(x[2]) is int
        and type(x[3]) is int
    ):
        r = x[4]
        if r is None or (
            isinstance(r, list)
            and len(r) == 6
            and type(r[0]) is int
            and type(r[1]) is int
            and bool not in (type(r[2]), type(r[3]), type(r[5]))
            and (r[4] is None or type(r[4]) is bool)
        ):
            try:
                key = (*x[:4], None if r is None else tuple(r), x[5], x[6])
                hash(key)
            except TypeError:
                return None
            return key
    return None


def _update_memo(x: object, memo: dict[object, Update] | None) -> Update:
    if memo is None:
        return _update(x)
    key = _memo_key(x)
    if key is None:
        return _update(x)
    got = memo.get(key)
    if got is None:
        got = _update(x)
        if len(memo) >= _MEMO_MAX:
            memo.pop(next(iter(memo)))
        memo[key] = got
    return got


def _update(x: object) -> Update:
    f = _array(x, "update", 7)
    status_n = _uint(f[2], "status")
    if status_n > _MAX_STATUS:
        raise DecodeError(f"unknown status {status_n}", where=_WHERE)
    cert, sig = f[5], f[6]
    if cert is not None and (not isinstance(cert, bytes) or len(cert) > 1024):
        raise DecodeError("cert must be a byte string (<= 1024) or null", where=_WHERE)
    if not isinstance(sig, bytes) or len(sig) != 64:
        raise DecodeError("signature must be 64 bytes", where=_WHERE)
    try:
        return Update(
            subject=_uint(f[0], "subject"),
            incarnation=_uint(f[1], "incarnation"),
            status=Status(status_n),
            signer=_uint(f[3], "signer"),
            resources=_resources(f[4]),
            cert=cert,
            signature=sig,
        )
    except InvalidArgument as exc:
        raise DecodeError(str(exc), where=_WHERE) from exc


def _row(x: object) -> MemberRow:
    f = _array(x, "member row", 5)
    if not isinstance(f[1], str):
        raise DecodeError("member row: state must be text", where=_WHERE)
    return MemberRow(
        node=_uint(f[0], "node"),
        state=f[1],
        incarnation=_uint(f[2], "incarnation"),
        heard_ago_ms=None if f[3] is None else _uint(f[3], "heard_ago_ms"),
        resources=_resources(f[4]) or Resources(),
    )


_Body = tuple[tuple[Update, ...], tuple[MemberRow, ...], bytes]


def _envelope(data: bytes) -> tuple[int, Kind, int, int, int] | None:
    """(elements, kind, seq, target, offset of ``updates``) read by hand from
    a message's head, or None if it is not a plain version-1 envelope (the
    full decoder then says what is wrong)."""
    if not data or data[0] not in (0x86, 0x87):
        return None
    if len(data) > 5 and data[1] == VERSION and data[2] <= _MAX_KIND:
        # The common case: kind and target in one byte each, seq in one
        # byte or after a head of 1, 2 or 4 (probes count it up: most
        # messages carry a seq of 24 or more).
        b = data[3]
        if b < 24:
            if data[4] < 24:
                return data[0] - 0x80, _KINDS[data[2]], b, data[4], 5
        elif b <= 26:
            end = 4 + (1 << (b - 24))
            if len(data) > end and data[end] < 24:
                seq = int.from_bytes(data[4:end], "big")
                return data[0] - 0x80, _KINDS[data[2]], seq, data[end], end + 1
    return _envelope_by_heads(data)


def _envelope_by_heads(data: bytes) -> tuple[int, Kind, int, int, int] | None:
    """:func:`_envelope` without its fast path: the four uints read head by
    head (the reference the fast path must agree with)."""
    if not data or data[0] not in (0x86, 0x87):
        return None
    pos, vals = 1, []
    for _ in range(4):
        if pos >= len(data):
            return None
        ib = data[pos]
        pos += 1
        if ib >> 5:
            return None
        ai = ib & 0x1F
        if ai < 24:
            vals.append(ai)
            continue
        if ai > 27:
            return None
        width = 1 << (ai - 24)
        if pos + width > len(data):
            return None
        vals.append(int.from_bytes(data[pos : pos + width], "big"))
        pos += width
    version, kind, seq, target = vals
    if version != VERSION or kind > _MAX_KIND:
        return None
    return data[0] - 0x80, _KINDS[kind], seq, target, pos


def decode_message_untrusted(
    data: bytes,
    *,
    memo: dict[object, Update] | None = None,
    bodies: dict[bytes, _Body] | None = None,
    spans: UpdateSpans | None = None,
) -> Message:
    """Parse one membership message from a peer's bytes. Raises only DecodeError.

    ``memo`` (optional, bounded here) maps an update's decoded CBOR fields to
    the :class:`Update` already built from the same fields: gossip repeats
    updates, and decoding is a pure function of those fields.

    ``bodies`` (optional, bounded here) maps the bytes after the envelope's
    four uints (``updates``, ``members``, ``digest``) to what they decoded
    to: a node's probes and acks repeat the same piggyback for many periods,
    and bytes that passed every check once pass them again.

    ``spans`` (optional, bounded, with ``memo`` and ``bodies``) knows the
    bytes of updates decoded before: a body made only of such updates, no
    member rows and a valid digest is read without decoding it again.
    """
    if not data:
        raise DecodeError("empty payload", where=_WHERE)
    env = _envelope(data) if bodies is not None else None
    if env is not None and bodies is not None:
        n_elems, kind, seq, target, at = env
        body = bodies.get(data[at:])
        if body is not None:
            ups, rows, dig = body
            if (n_elems == 7) == bool(dig):
                return Message(
                    kind=kind,
                    seq=seq,
                    target=target,
                    updates=ups,
                    members=rows,
                    digest=dig,
                )
    known = None
    if env is not None and spans is not None and memo is not None:
        known = _known_body(data, env[4], env[0], memo, spans)
    if known is not None:
        msg = Message(
            kind=env[1],  # type: ignore[index]
            seq=env[2],  # type: ignore[index]
            target=env[3],  # type: ignore[index]
            updates=known[0],
            digest=known[2],
        )
    else:
        msg = _decode_full(data, memo, spans)
    if (
        env is not None
        and bodies is not None
        and len(data) - env[4] <= _BODY_MEMO_BYTES
    ):
        if len(bodies) >= _BODY_MEMO_MAX:
            bodies.pop(next(iter(bodies)))
        bodies[data[env[4] :]] = (msg.updates, msg.members, msg.digest)
    return msg


def _decode_full(
    data: bytes, memo: dict[object, Update] | None, spans: UpdateSpans | None = None
) -> Message:
    try:
        # Guarded: cbor2's C decoder leaks on some malformed items (dcis.crypto.cbor_guard).
        item = loads_untrusted(data, what=_WHERE)
    except CborDecodeError as exc:
        raise DecodeError(f"malformed CBOR ({exc})", where=_WHERE) from None
    if isinstance(item, list) and len(item) == 7:
        dig = item.pop()
        if not isinstance(dig, bytes) or not dig:
            raise DecodeError("digest must be a non-empty byte string", where=_WHERE)
        check_digest_untrusted(dig)
    else:
        dig = b""
    f = _array(item, "message", 6)
    if _uint(f[0], "version") != VERSION:
        raise DecodeError(f"unsupported version {f[0]!r}", where=_WHERE)
    kind_n = _uint(f[1], "kind")
    if kind_n > _MAX_KIND:
        raise DecodeError(f"unknown kind {kind_n}", where=_WHERE)
    ups = _array(f[4], "updates")
    rows = _array(f[5], "members")
    if len(ups) > MAX_UPDATES or len(rows) > MAX_UPDATES:
        raise DecodeError(f"more than {MAX_UPDATES} updates or members", where=_WHERE)
    msg = Message(
        kind=Kind(kind_n),
        seq=_uint(f[2], "seq"),
        target=_uint(f[3], "target"),
        updates=tuple(_update_memo(u, memo) for u in ups),
        members=tuple(_row(r) for r in rows),
        digest=dig,
    )
    if spans is not None and memo is not None:
        spans.learn(ups, memo)
    return msg


@dataclass(slots=True)
class UpdateSpans:
    """The encodings of updates that decoded (bounded): each one's bytes to
    its ``memo`` key, and its first bytes to its length, so a message made of
    known updates is split without a CBOR walk (see :func:`_known_body`)."""

    keys: dict[bytes, object] = field(default_factory=dict)
    sizes: dict[bytes, tuple[int, ...]] = field(default_factory=dict)

    def learn(self, items: list[object], memo: dict[object, Update]) -> None:
        """Remember ``items`` (decoded update arrays) that ``memo`` holds."""
        for x in items:
            key = _memo_key(x)
            if key is None or key not in memo:
                continue
            raw = cbor2.dumps(x)  # decodes to ``x`` again (ints, bytes, floats)
            for known in (self.keys, self.sizes):
                if len(known) >= _SPANS_MAX:
                    known.pop(next(iter(known)))
            self.keys[raw] = key
            first, n = raw[:_SPAN_PREFIX], len(raw)
            had = self.sizes.get(first, ())
            if n not in had:
                # A length beyond the bound replaces the oldest: a message
                # with the update it stood for takes the full decoder.
                self.sizes[first] = (*had[1 - _SPAN_LENGTHS :], n)


def _arg(data: bytes, pos: int, major: int) -> tuple[int, int] | None:
    """A definite head of ``major`` at ``pos``: (argument, next position)."""
    if pos >= len(data) or data[pos] >> 5 != major:
        return None
    ai = data[pos] & 0x1F
    if ai < 24:
        return ai, pos + 1
    if ai > 26 or pos + 1 + (1 << (ai - 24)) > len(data):
        return None
    end = pos + 1 + (1 << (ai - 24))
    return int.from_bytes(data[pos + 1 : end], "big"), end


def _known_body(
    data: bytes, at: int, n_elems: int, memo: dict[object, Update], spans: UpdateSpans
) -> _Body | None:
    """The body from ``at`` when its updates are all byte for byte ones that
    decoded before (CBOR items are self-delimiting: bytes equal to a whole
    item are that item), it has no member rows and its digest is valid:
    what the full decoder would give. None otherwise."""
    head = _arg(data, at, 4)
    if head is None or head[0] > MAX_UPDATES:
        return None
    count, pos = head
    ups = []
    for _ in range(count):
        # CBOR items are self-delimiting: at most one known encoding is
        # the whole item at ``pos``.
        for size in spans.sizes.get(data[pos : pos + _SPAN_PREFIX], ()):
            key = spans.keys.get(data[pos : pos + size])
            if key is not None:
                break
        else:
            return None
        u = memo.get(key)
        if u is None:
            return None
        ups.append(u)
        pos += size
    if data[pos : pos + 1] != b"\x80":  # no member rows
        return None
    if n_elems == 6:
        return (tuple(ups), (), b"") if pos + 1 == len(data) else None
    dig = _arg(data, pos + 1, 2)
    if dig is None or dig[0] == 0 or dig[1] + dig[0] != len(data):
        return None
    try:
        check_digest_untrusted(data[dig[1] :])
    except DecodeError:
        return None
    return tuple(ups), (), data[dig[1] :]
