"""Endpoint IDs: ``dtn:none``, ``dtn://node/demux`` and ``ipn:N.S``.

RFC 9171 section 4.2.5.1 (EID encoding) and 4.2.5.1.1/4.2.5.1.2 (the dtn and
ipn schemes). https://www.rfc-editor.org/rfc/rfc9171#section-4.2.5.1

Wire form (CDDL, RFC 9171 4.2.5.1)::

    eid = $eid .within eid-structure
    eid-structure = [uri-code: uint, SSP: any]
    $eid /= [uri-code: 1, SSP: (tstr / 0)]             ; dtn, 0 = dtn:none
    $eid /= [uri-code: 2, SSP: [nodenum: uint, servicenum: uint]]   ; ipn
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from dcis.dtn.bpv7 import cbor
from dcis.dtn.errors import DecodeError, InvalidArgument

URI_SCHEME_DTN: Final = 1
URI_SCHEME_IPN: Final = 2
_U64_MAX: Final = (1 << 64) - 1
# RFC 9171 4.2.5.1.1: node-name = 1*VCHAR, demux = *VCHAR. We accept
# printable non-ASCII too (spec/bundle.md), but never whitespace or control
# characters (C0, space, DEL, C1).
_NOT_VCHAR: Final = re.compile("[\x00-\x20\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class IpnEid:
    """An ``ipn:node.service`` endpoint (RFC 9171 4.2.5.1.2).

    ``node`` and ``service`` are unsigned 64-bit integers; ``ipn:0.x`` is
    accepted (node number 0 is the null node, used by some peers).
    Raises :class:`InvalidArgument` when a number is out of range.
    """

    node: int
    service: int

    def __post_init__(self) -> None:
        if type(self.node) is not int or not 0 <= self.node <= _U64_MAX:
            raise InvalidArgument(
                f"ipn node number must be an integer in 0..2**64-1, got {self.node!r}"
            )
        if type(self.service) is not int or not 0 <= self.service <= _U64_MAX:
            raise InvalidArgument(
                f"ipn service number must be an integer in 0..2**64-1, got {self.service!r}"
            )

    @property
    def node_id(self) -> int:
        """The node part: the node number."""
        return self.node

    def __str__(self) -> str:
        return f"ipn:{self.node}.{self.service}"


@dataclass(frozen=True, slots=True)
class DtnEid:
    """A ``dtn`` scheme endpoint (RFC 9171 4.2.5.1.1).

    ``ssp`` is ``"none"`` for the null endpoint ``dtn:none``, otherwise
    ``"//node-name/demux"`` (the demux may be empty: ``dtn://n/`` is the node
    ID). Whitespace and control characters are refused (RFC 9171: VCHAR);
    printable non-ASCII is accepted. Raises :class:`InvalidArgument` for any
    other form.
    """

    ssp: str

    def __post_init__(self) -> None:
        ssp = self.ssp
        if type(ssp) is not str:
            raise InvalidArgument(f"dtn SSP must be a str, got {type(ssp).__name__}")
        if ssp == "none":
            return
        if not ssp.startswith("//"):
            raise InvalidArgument(
                f"dtn SSP must be 'none' or start with '//', got {ssp!r}"
            )
        node = ssp[2:].split("/", 1)[0]
        if not node:
            raise InvalidArgument(f"dtn EID has an empty node name: 'dtn:{ssp}'")
        bad = _NOT_VCHAR.search(ssp)
        if bad is not None:
            raise InvalidArgument(
                f"dtn EID has a control or space character "
                f"{bad.group()!r} at {bad.start() + 4}: {('dtn:' + ssp)[:60]!r}"
            )

    @property
    def is_none(self) -> bool:
        """True for the null endpoint ``dtn:none``."""
        return self.ssp == "none"

    @property
    def node_id(self) -> str:
        """The node ID: ``"dtn://node/"`` (``"dtn:none"`` for the null endpoint)."""
        if self.ssp == "none":
            return "dtn:none"
        return "dtn://" + self.ssp[2:].split("/", 1)[0] + "/"

    def __str__(self) -> str:
        return "dtn:" + self.ssp


Eid = IpnEid | DtnEid
"""Any endpoint ID we can represent."""

DTN_NONE: Final = DtnEid("none")
"""The null endpoint ``dtn:none``."""


IPN_NULL: Final = IpnEid(0, 0)
"""``ipn:0.0``, the ipn scheme's null endpoint (RFC 9758 3.4)."""


def is_null_eid(eid: Eid) -> bool:
    """True for a null endpoint, which has no members: ``dtn:none`` or ``ipn:0.0``.

    Nothing is ever sent to it (status reports included). ``ipn:0.x`` with
    x != 0 is an ordinary endpoint.
    """
    return eid in (DTN_NONE, IPN_NULL)


_PARSED: OrderedDict[str, Eid] = OrderedDict()
_PARSED_MAX: Final = 1024


def parse_eid(text: str) -> Eid:
    """Parse ``"dtn:none"``, ``"dtn://node/demux"`` or ``"ipn:N.S"``.

    Raises :class:`InvalidArgument` naming what is wrong. The EIDs of the
    last texts parsed are remembered (EIDs are frozen: sharing is safe; a
    node parses the same few names for every bundle it sends, ~2 us each).
    """
    got = _PARSED.get(text) if type(text) is str else None
    if got is not None:
        return got
    eid = _parse_eid(text)
    if len(text) <= 64:  # bounded memory: 1024 short names
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.popitem(last=False)
        _PARSED[text] = eid
    return eid


def _parse_eid(text: str) -> Eid:
    if not isinstance(text, str):
        raise InvalidArgument(f"EID must be a string, got {type(text).__name__}")
    scheme, sep, ssp = text.partition(":")
    if not sep:
        raise InvalidArgument(f"EID {text!r} has no scheme (expected 'dtn:' or 'ipn:')")
    if scheme == "dtn":
        return DtnEid(ssp)
    if scheme == "ipn":
        node_s, dot, service_s = ssp.partition(".")
        if (
            not dot
            or not node_s.isdigit()
            or not service_s.isdigit()
            or not node_s.isascii()
            or not service_s.isascii()
        ):
            raise InvalidArgument(
                f"ipn EID must be 'ipn:<node>.<service>' with decimal numbers, got {text!r}"
            )
        return IpnEid(int(node_s), int(service_s))
    raise InvalidArgument(
        f"unsupported EID scheme {scheme!r} in {text!r} (expected 'dtn' or 'ipn')"
    )


# Shared instances of ipn:N.S for N, S < 24 (frozen, so sharing is safe),
# returned by the decoder's fast path.
_SMALL_IPN: Final = tuple(IpnEid(n, s) for n in range(24) for s in range(24))


@lru_cache(maxsize=4096)
def encode_eid(eid: Eid) -> bytes:
    """Canonical CBOR encoding of ``eid`` (cached: nodes use few EIDs, often)."""
    if isinstance(eid, IpnEid):
        return b"\x82\x02\x82" + cbor.uint(eid.node) + cbor.uint(eid.service)
    if eid.ssp == "none":
        return b"\x82\x01\x00"
    return b"\x82\x01" + cbor.tstr(eid.ssp)


def read_eid(
    buf: bytes | memoryview, pos: int, end: int, where: str
) -> tuple[Eid, int]:
    """Decode an EID at ``pos``; returns ``(eid, new_pos)``.

    Raises :class:`DecodeError` naming ``where`` for anything but the dtn and
    ipn schemes in their RFC 9171 form (``ipn`` with a 2-element SSP).
    """
    # Fast path for the most common form, ipn with both numbers below 24
    # (82 02 82 <node> <service>): shared instances, no parsing calls.
    if (
        pos + 5 <= end
        and buf[pos] == 0x82
        and buf[pos + 1] == 0x02
        and buf[pos + 2] == 0x82
        and buf[pos + 3] < 24
        and buf[pos + 4] < 24
    ):
        return _SMALL_IPN[buf[pos + 3] * 24 + buf[pos + 4]], pos + 5
    if (
        pos + 3 <= end
        and buf[pos] == 0x82
        and buf[pos + 1] == 0x01
        and buf[pos + 2] == 0x00
    ):
        return DTN_NONE, pos + 3
    count, pos = cbor.read_array_head(buf, pos, end, where)
    if count != 2:
        raise DecodeError(
            f"EID must be a 2-element array, got {count} elements", where=where
        )
    scheme, pos = cbor.read_uint(buf, pos, end, where)
    if scheme == URI_SCHEME_IPN:
        n, pos = cbor.read_array_head(buf, pos, end, where)
        if n != 2:
            raise DecodeError(
                f"ipn SSP must be [node, service], got {n} elements", where=where
            )
        node, pos = cbor.read_uint(buf, pos, end, where)
        service, pos = cbor.read_uint(buf, pos, end, where)
        return IpnEid(node, service), pos
    if scheme == URI_SCHEME_DTN:
        if pos < end and buf[pos] == 0x00:
            return DTN_NONE, pos + 1
        text, pos = cbor.read_text(buf, pos, end, where)
        if not text.startswith("//"):
            raise DecodeError(
                f"dtn SSP must be 0 (dtn:none) or start with '//', got {text[:40]!r}",
                where=where,
            )
        try:
            return DtnEid(text), pos
        except InvalidArgument as exc:
            raise DecodeError(str(exc), where=where) from exc
    raise DecodeError(
        f"unsupported EID scheme code {scheme} (only 1=dtn and 2=ipn)", where=where
    )
