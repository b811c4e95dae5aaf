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

from dtn.bpv7.eid import DTN_NONE, DtnEid, Eid, IpnEid
from dtn.errors import DecodeError, InvalidArgument

_U64: Final = 1 << 64
MAX_TARGETS: Final = 256  # a bundle holds at most 256 blocks (dtn.bpv7.MAX_BLOCKS)
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


def encode_asb(asb: AbstractSecurityBlock) -> bytes:
    """The ASB as a CBOR sequence: the data of a BIB or BCB (RFC 9172 3.6)."""
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
    try:
        return _decode(bytes(data), where)
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
