"""The abstract security block (ASB): BPSec's block-type-specific data.

RFC 9172 section 3.6 (https://www.rfc-editor.org/rfc/rfc9172#section-3.6).
The Block Integrity Block (type 11) and the Block Confidentiality Block
(type 12) both carry an ASB as their block-type-specific data: a CBOR
*sequence* (RFC 8742), not an array::

    abstract-security-block = (
      security-targets: [+ uint],       ; block numbers, unique, 0 = primary block
      security-context-id: int,         ; negative ids: local/experimental use
      security-context-flags: uint,     ; bit 0: parameters present
      security-source: eid,             ; the node that added the block
      ? security-context-parameters: [+ [id: uint, value: any]],
      security-results: [+ [+ [id: uint, value: any]]],  ; one list per target, same order
    )

Parameter and result values are kept as decoded CBOR values (int, bytes, ...)
so that blocks of contexts we do not implement survive a decode/encode round
trip unchanged.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Final

import cbor2

from dcis.crypto.cbor_guard import check_untrusted
from dcis.crypto.errors import DecodeError as CborDecodeError
from dcis.dtn.bpv7.eid import DTN_NONE, DtnEid, Eid, IpnEid
from dcis.dtn.errors import DecodeError, InvalidArgument

_U64: Final = 1 << 64
MAX_TARGETS: Final = 256  # a bundle holds at most 256 blocks (dcis.dtn.bpv7.MAX_BLOCKS)
MAX_ITEMS: Final = 64  # parameters per block, results per target


class SecurityBlockType(IntEnum):
    """Block type codes of the two BPSec blocks (RFC 9172 section 11.1)."""

    BIB = 11
    BCB = 12


class ContextFlags(IntFlag):
    """Security context flags (RFC 9172 section 3.6)."""

    NONE = 0
    PARAMETERS_PRESENT = 0x01


Item = tuple[int, object]  # (parameter or result id, value)


def _is_uint(v: object) -> bool:
    # type() first: the common case (a plain int) costs one comparison.
    if type(v) is not int and (not isinstance(v, int) or isinstance(v, bool)):
        return False
    return 0 <= v < _U64


@dataclass(frozen=True, slots=True, kw_only=True)
class AbstractSecurityBlock:
    """One BIB's or BCB's security operations (RFC 9172 3.6).

    ``results[i]`` belongs to ``targets[i]``. ``parameters`` is None when the
    context-flags bit "parameters present" is clear. Raises
    :class:`InvalidArgument` for an inconsistent block.
    """

    targets: tuple[int, ...]
    context_id: int
    source: Eid
    parameters: tuple[Item, ...] | None = None
    results: tuple[tuple[Item, ...], ...]

    def __post_init__(self) -> None:
        targets = self.targets
        # Runtime checks on declared types: callers may pass lists by mistake.
        if not isinstance(targets, tuple) or not targets:  # type: ignore[redundant-expr]
            raise InvalidArgument("an ASB needs a non-empty tuple of security targets")
        if len(targets) > MAX_TARGETS:
            raise InvalidArgument(f"more than {MAX_TARGETS} security targets")
        for t in targets:
            if not _is_uint(t):
                raise InvalidArgument("security targets must be block numbers (uint)")
        if len(set(targets)) != len(targets):
            raise InvalidArgument("security targets must be unique (RFC 9172 3.6)")
        ctx: object = self.context_id
        if not isinstance(ctx, int) or isinstance(ctx, bool) or not -_U64 <= ctx < _U64:
            raise InvalidArgument(f"context id must be a 64-bit integer, got {ctx!r}")
        if not isinstance(self.source, IpnEid | DtnEid):
            raise InvalidArgument("security source must be an EID")
        if not isinstance(self.results, tuple) or len(self.results) != len(targets):  # type: ignore[redundant-expr]
            raise InvalidArgument(
                f"{len(targets)} targets need as many result lists (RFC 9172 3.6)"
            )
        if self.parameters is not None:
            _check_items("parameter", self.parameters)
        for r in self.results:
            _check_items("result", r, allow_empty=True)

    @property
    def flags(self) -> ContextFlags:
        """The security context flags implied by this block."""
        return (
            ContextFlags.PARAMETERS_PRESENT
            if self.parameters is not None
            else ContextFlags.NONE
        )

    def parameter(self, pid: int) -> object | None:
        """The value of parameter ``pid``, or None when absent."""
        for k, v in self.parameters or ():
            if k == pid:
                return v
        return None

    def result(self, target: int, rid: int) -> object | None:
        """The value of result ``rid`` for security target ``target``, or None."""
        for k, v in self.results[self.targets.index(target)]:
            if k == rid:
                return v
        return None


def _check_items(
    kind: str, items: Sequence[object], *, allow_empty: bool = False
) -> None:
    if not isinstance(items, tuple):
        raise InvalidArgument(f"{kind}s must be a tuple")
    if not items and not allow_empty:
        raise InvalidArgument(f"an empty {kind} list must be omitted, not sent")
    if len(items) > MAX_ITEMS:
        raise InvalidArgument(f"more than {MAX_ITEMS} {kind}s")
    for it in items:
        if not (isinstance(it, tuple) and len(it) == 2 and _is_uint(it[0])):
            raise InvalidArgument(f"each {kind} must be (id: uint, value)")


def _eid_value(eid: Eid) -> list[object]:
    # RFC 9171 4.2.5.1, as a value cbor2 encodes to the same bytes as encode_eid.
    if isinstance(eid, IpnEid):
        return [2, [eid.node, eid.service]]
    return [1, 0] if eid == DTN_NONE else [1, eid.ssp]


# -- fast paths for the shapes our own contexts produce ----------------------
#
# Every bundle between DCiS nodes carries one BCB (-101) or BIB (-102) over
# the payload, so their ASB is encoded once per bundle at the source and
# decoded once at the destination. cbor2 costs ~7 us to encode and ~12 us to
# decode one; these byte templates cost ~1 us. They are exact: a block that
# does not match a template byte for byte (another context, several targets,
# a non-shortest integer, ...) takes the general path, which gives the same
# result for the blocks the templates accept (tests/unit/security/test_asb_fast.py).
#
#   81 <t>            security targets: [t], t < 24
#   38 64 | 38 65     context id -101 | -102
#   01 | 00           flags: parameters present (BCB) | absent (BIB)
#   82 02 82 <n> <s>  security source ipn:n.s (shortest-form uints)
#   81 82 01 58 18 <24 bytes>        (BCB only) parameters [[1, nonce]]
#   81 81 82 01 50 <16 bytes>        results [[[1, tag]]]         (BCB)
#   81 81 82 01 58 40 <64 bytes>     results [[[1, signature]]]   (BIB)

_CTX_HEAD: Final = {-101: b"\x38\x64\x01", -102: b"\x38\x65\x00"}
_FAST_PARAM: Final = b"\x81\x82\x01\x58\x18"
_FAST_RESULT: Final = {-101: b"\x81\x81\x82\x01\x50", -102: b"\x81\x81\x82\x01\x58\x40"}
_FAST_RESULT_LEN: Final = {-101: 16, -102: 64}
_set_targets: Final = AbstractSecurityBlock.__dict__["targets"].__set__
_set_context_id: Final = AbstractSecurityBlock.__dict__["context_id"].__set__
_set_source: Final = AbstractSecurityBlock.__dict__["source"].__set__
_set_parameters: Final = AbstractSecurityBlock.__dict__["parameters"].__set__
_set_results: Final = AbstractSecurityBlock.__dict__["results"].__set__


def _uint_bytes(n: int) -> bytes:
    # Shortest-form CBOR unsigned integer (RFC 8949 4.2.1); n < 2**64.
    if n < 24:
        return bytes((n,))
    if n < 0x100:
        return bytes((0x18, n))
    if n < 0x10000:
        return b"\x19" + n.to_bytes(2, "big")
    if n < 0x100000000:
        return b"\x1a" + n.to_bytes(4, "big")
    return b"\x1b" + n.to_bytes(8, "big")


def _fast_encode(asb: AbstractSecurityBlock) -> bytes | None:
    ctx = asb.context_id
    head = _CTX_HEAD.get(ctx)
    src = asb.source
    if head is None or type(src) is not IpnEid or len(asb.targets) != 1:
        return None
    t = asb.targets[0]
    results = asb.results[0]
    if t >= 24 or len(results) != 1:
        return None
    rid, value = results[0]
    if rid != 1 or type(value) is not bytes or len(value) != _FAST_RESULT_LEN[ctx]:
        return None
    params = asb.parameters
    if ctx == -101:
        if params is None or len(params) != 1:
            return None
        pid, nonce = params[0]
        if pid != 1 or type(nonce) is not bytes or len(nonce) != 24:
            return None
        middle = _FAST_PARAM + nonce
    elif params is not None:
        return None
    else:
        middle = b""
    return b"".join(
        (
            bytes((0x81, t)),
            head,
            b"\x82\x02\x82",
            _uint_bytes(src.node),
            _uint_bytes(src.service),
            middle,
            _FAST_RESULT[ctx],
            value,
        )
    )


def encode_bcb_template(target: int, source: IpnEid, nonce: bytes, tag: bytes) -> bytes:
    """The ASB bytes of a -101 BCB over one target (< 24): what
    :func:`encode_asb` gives for it, without building the object."""
    return b"".join(
        (
            bytes((0x81, target)),
            b"\x38\x64\x01\x82\x02\x82",
            _uint_bytes(source.node),
            _uint_bytes(source.service),
            _FAST_PARAM,
            nonce,
            _FAST_RESULT[-101],
            tag,
        )
    )


_UINT_SIZES: Final = {0x18: 1, 0x19: 2, 0x1A: 4, 0x1B: 8}
_IPN: dict[tuple[int, int], IpnEid] = {}


def _ipn(node: int, service: int) -> IpnEid:
    # Security sources are few (ipn:N.0 per node): share their EID objects.
    k = (node, service)
    eid = _IPN.get(k)
    if eid is None:
        eid = IpnEid(node, service)
        if len(_IPN) < 4096:  # bounded: hostile blocks may name any node
            _IPN[k] = eid
    return eid


def _read_short_uint(raw: bytes, pos: int) -> tuple[int, int] | None:
    # A shortest-form uint at ``pos``, or None (anything else: general path).
    if pos >= len(raw):
        return None
    ib = raw[pos]
    if ib < 24:
        return ib, pos + 1
    size = _UINT_SIZES.get(ib)
    if size is None or pos + 1 + size > len(raw):
        return None
    v = int.from_bytes(raw[pos + 1 : pos + 1 + size], "big")
    if _uint_bytes(v) != raw[pos : pos + 1 + size]:
        return None  # not shortest form
    return v, pos + 1 + size


def _fast_decode(raw: bytes) -> AbstractSecurityBlock | None:
    if len(raw) < 10 or raw[0] != 0x81 or raw[1] >= 24 or raw[2] != 0x38:
        return None
    ctx = -1 - raw[3]
    head = _CTX_HEAD.get(ctx)
    if head is None or raw[2:5] != head or raw[5:8] != b"\x82\x02\x82":
        return None
    node = _read_short_uint(raw, 8)
    if node is None:
        return None
    service = _read_short_uint(raw, node[1])
    if service is None:
        return None
    pos = service[1]
    params: tuple[Item, ...] | None = None
    if ctx == -101:
        if raw[pos : pos + 5] != _FAST_PARAM:
            return None
        params = ((1, raw[pos + 5 : pos + 29]),)
        pos += 29
    tag = _FAST_RESULT[ctx]
    n = _FAST_RESULT_LEN[ctx]
    if raw[pos : pos + len(tag)] != tag or len(raw) != pos + len(tag) + n:
        return None
    asb = object.__new__(AbstractSecurityBlock)
    # Every field was checked above: skip __post_init__ on this hot path.
    _set_targets(asb, (raw[1],))
    _set_context_id(asb, ctx)
    _set_source(asb, _ipn(node[0], service[0]))
    _set_parameters(asb, params)
    _set_results(asb, (((1, raw[pos + len(tag) :]),),))
    return asb


def encode_asb(asb: AbstractSecurityBlock) -> bytes:
    """The ASB as a CBOR sequence: the data of a BIB or BCB (RFC 9172 3.6)."""
    fast = _fast_encode(asb)
    if fast is not None:
        return fast
    # One cbor2 call for the whole sequence: encode it as an array of 5 or 6
    # items and drop the array's one-byte head (0x85/0x86). Tuples encode as
    # arrays.
    seq: list[object] = [
        asb.targets,
        asb.context_id,
        int(asb.flags),
        _eid_value(asb.source),
    ]
    if asb.parameters is not None:
        seq.append(asb.parameters)
    seq.append(asb.results)
    return cbor2.dumps(seq)[1:]


def _to_value(v: object) -> object:
    # Lists become tuples so that decoded blocks compare and hash like built ones.
    return tuple(_to_value(x) for x in v) if isinstance(v, list) else v


def _items(raw: object, where: str) -> tuple[Item, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_ITEMS:
        raise DecodeError(
            f"expected an array of at most {MAX_ITEMS} [id, value] pairs", where=where
        )
    out: list[Item] = []
    for it in raw:
        if not (
            isinstance(it, list) and len(it) == 2
        ):  # id: checked by the constructor
            raise DecodeError("expected an [id: uint, value] pair", where=where)
        v = it[1]
        out.append((it[0], _to_value(v) if isinstance(v, list) else v))
    return tuple(out)


def _eid_from_cbor(raw: object, where: str) -> Eid:
    # RFC 9171 4.2.5.1: [1, "//node/demux"] | [1, 0] | [2, [node, service]]
    if not (isinstance(raw, list) and len(raw) == 2):
        raise DecodeError("EID must be a 2-element array", where=where)
    scheme, ssp = raw
    if scheme == 1 and ssp == 0 and not isinstance(ssp, bool):
        return DTN_NONE
    if scheme == 1 and isinstance(ssp, str) and ssp.startswith("//"):
        return DtnEid(ssp)
    if (
        scheme == 2
        and isinstance(ssp, list)
        and len(ssp) == 2
        and _is_uint(ssp[0])
        and _is_uint(ssp[1])
    ):
        return IpnEid(ssp[0], ssp[1])
    raise DecodeError("unsupported or malformed EID (expected dtn or ipn)", where=where)


def decode_asb_untrusted(
    data: bytes | memoryview, *, where: str = "security block"
) -> AbstractSecurityBlock:
    """Decode a BIB's or BCB's data. Raises only :class:`DecodeError`."""
    raw = bytes(data)
    fast = _fast_decode(raw)
    if fast is not None:
        return fast
    try:
        return _decode(raw, where)
    except DecodeError:
        raise
    except Exception as exc:  # untrusted input raises only DecodeError
        raise DecodeError(
            f"malformed abstract security block ({type(exc).__name__}: {exc})",
            where=where,
        ) from exc


def _sequence_items(raw: bytes, where: str) -> list[object]:
    """The items of the CBOR sequence ``raw`` (exact boundaries, no trailing bytes)."""
    # Decode the sequence as the content of an indefinite-length array, in one
    # C call. read_size=1 stops cbor2 from reading ahead, so the stream
    # position tells whether the array ended exactly at our closing break: a
    # break (0xff) inside ``raw`` would end it early and leave bytes unread.
    wrapped = b"\x9f" + raw + b"\xff"
    try:
        # cbor2's C decoder leaks on some malformed items (dcis.crypto.cbor_guard).
        check_untrusted(wrapped, what=where)
    except CborDecodeError as exc:
        raise DecodeError(str(exc), where=where) from None
    fp = io.BytesIO(wrapped)
    items = cbor2.CBORDecoder(fp, read_size=1).decode()  # type: ignore[call-arg]  # C decoder option; stubs lag
    if fp.tell() != len(wrapped):
        raise DecodeError(
            "bytes after a break (0xff) in the CBOR sequence", where=where
        )
    if not isinstance(items, list):  # pragma: no cover -- 0x9f always yields a list
        raise DecodeError("not a CBOR sequence", where=where)
    if len(items) > 6:
        raise DecodeError(f"expected 5 or 6 items, got {len(items)}", where=where)
    return items


def _decode(raw: bytes, where: str) -> AbstractSecurityBlock:
    items = _sequence_items(raw, where)
    if len(items) < 5:
        raise DecodeError(f"expected 5 or 6 items, got {len(items)}", where=where)
    targets, ctx, flags, source = items[0], items[1], items[2], items[3]
    if not isinstance(targets, list):  # their values: checked by the constructor
        raise DecodeError(
            "security targets must be an array of block numbers",
            where=f"{where}, targets",
        )
    if not isinstance(ctx, int) or isinstance(ctx, bool):
        raise DecodeError(
            "security context id must be an integer", where=f"{where}, context id"
        )
    if not _is_uint(flags):
        raise DecodeError(
            "security context flags must be an unsigned integer",
            where=f"{where}, flags",
        )
    assert isinstance(flags, int)
    if flags & ~int(ContextFlags.PARAMETERS_PRESENT):  # ~ on an IntFlag is 0
        # RFC 9172 3.6 reserves bits 1-7. Refusing them keeps the ASB from
        # carrying bits that no signature or tag covers.
        raise DecodeError(
            f"reserved security context flag bits set ({flags:#x})",
            where=f"{where}, flags",
        )
    has_params = bool(flags & ContextFlags.PARAMETERS_PRESENT)
    if len(items) != (6 if has_params else 5):
        raise DecodeError(
            f"flags say parameters are {'present' if has_params else 'absent'} but the sequence has {len(items)} items",
            where=where,
        )
    params = _items(items[4], f"{where}, parameters") if has_params else None
    raw_results = items[-1]
    if not isinstance(raw_results, list):
        raise DecodeError(
            "security results must be an array", where=f"{where}, results"
        )
    results = tuple(_items(r, f"{where}, results") for r in raw_results)
    try:
        return AbstractSecurityBlock(
            targets=tuple(targets),
            context_id=ctx,
            source=_eid_from_cbor(source, f"{where}, source"),
            parameters=params,
            results=results,
        )
    except InvalidArgument as exc:
        raise DecodeError(str(exc), where=where) from exc
