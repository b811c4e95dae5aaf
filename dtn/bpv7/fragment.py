"""Fragmentation and reassembly (RFC 9171 section 5.8).

https://www.rfc-editor.org/rfc/rfc9171#section-5.8

Each fragment is a bundle whose primary block has IS_FRAGMENT set, the
fragment offset (bytes into the original application data unit, ADU) and the
total ADU length. Blocks with MUST_REPLICATE appear in every fragment, and
so does the bundle age block of a bundle with no creation time (RFC 9171
4.4.2: each fragment is such a bundle); every
other extension block only in the first (offset-0 part), which is where
reassembly takes them from. Fragmenting a fragment is allowed: offsets stay
relative to the original ADU.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from dcis.dtn.bpv7.bundle import GATHER_PAYLOAD_BYTES, Bundle, trusted_bundle
from dcis.dtn.bpv7.canonical import (
    CanonicalBlock,
    _set_CanonicalBlock_data,
    encode_block_parts,
    trusted_block,
)
from dcis.dtn.bpv7.cbor import uint
from dcis.dtn.bpv7.crc import crc16_raw, crc32c_raw
from dcis.dtn.bpv7.eid import Eid, is_null_eid
from dcis.dtn.bpv7.flags import BlockFlags, BlockType, BundleFlags
from dcis.dtn.bpv7.primary import (
    PrimaryBlock,
    bundle_flags,
    encode_primary,
    trusted_primary,
)
from dcis.dtn.bpv7.processing import update_for_forwarding
from dcis.dtn.errors import InvalidArgument

_IS_FRAGMENT = int(BundleFlags.IS_FRAGMENT)
_MUST_NOT_FRAGMENT = int(BundleFlags.MUST_NOT_FRAGMENT)
_MUST_REPLICATE = int(BlockFlags.MUST_REPLICATE)


def fragment_bundle(b: Bundle, sizes: int | Sequence[int]) -> list[Bundle]:
    """Split ``b`` into fragments.

    ``sizes`` is either the maximum payload bytes per fragment (an int >= 1) or
    the explicit payload sizes of the fragments in order (each >= 1, summing to
    the payload length). A bundle whose payload already fits is returned alone,
    unchanged. Raises :class:`InvalidArgument` for MUST_NOT_FRAGMENT bundles,
    admin records of course included when flagged, and bad sizes.
    """
    payload = b.payload
    n = len(payload)
    if isinstance(sizes, int):
        if sizes < 1:
            raise InvalidArgument(f"max payload per fragment must be >= 1, got {sizes}")
        if n <= sizes:
            return [b]
        plan = [min(sizes, n - i) for i in range(0, n, sizes)]
    else:
        plan = list(sizes)
        if any(s < 1 for s in plan) or sum(plan) != n:
            raise InvalidArgument(
                f"fragment sizes must be >= 1 and sum to the payload length {n}, got {plan}"
            )
        if len(plan) <= 1:  # one piece, or an empty payload with no sizes
            return [b]
    if b.primary.flags & BundleFlags.MUST_NOT_FRAGMENT:
        raise InvalidArgument("the bundle has MUST_NOT_FRAGMENT set")
    out: list[Bundle] = []
    offset = 0
    for size in plan:
        out.append(_piece(b, offset, size))
        offset += size
    return out


def fragment_at(b: Bundle, offset: int, size: int) -> Bundle:
    """The one fragment of ``b`` carrying its payload bytes ``offset`` to
    ``offset + size``: the same bundle :func:`fragment_bundle` makes for that
    piece, made alone (a sender cutting a bundle as it transmits it makes
    one piece at a time). Raises :class:`InvalidArgument` for a
    MUST_NOT_FRAGMENT bundle or a range that is empty or outside the
    payload."""
    _check_range(b, offset, size)
    return _piece(b, offset, size)


def forwarded_piece_parts(
    b: Bundle, offset: int, size: int, *, node: Eid, dwell_ms: int, view: bool = True
) -> tuple[bytes | memoryview, ...]:
    """``encode_bundle_parts(update_for_forwarding(fragment_at(b, offset,
    size), node=node, dwell_ms=dwell_ms))``: the bytes a sender cutting
    ``b`` as it transmits it sends for this piece, byte for byte and in the
    same buffers -- but a large piece's payload is a ``memoryview`` of
    ``b``'s, neither copied into a piece nor read but by its CRC (issue 18:
    the copy, the piece's objects and its general encode were ~40% of a
    UDP 1 MB bundle's transmission work at node 1). Raises as those do
    (:class:`InvalidArgument` for a bad range or MUST_NOT_FRAGMENT,
    :class:`~dcis.dtn.errors.DecodeError` for a malformed hop block).
    ``view=False``: the payload buffer is a copy (it then keeps no reference
    to ``b``'s payload)."""
    return PieceEncoder(b, node).parts(offset, size, dwell_ms=dwell_ms, view=view)


class PieceEncoder:
    """:func:`forwarded_piece_parts` for the pieces of one bundle, with what
    they share worked out once: the primary block's encoding up to its
    fragment offset (each piece writes its offset and CRC after it), and
    the extension blocks as updated and encoded -- for the first piece and
    for the others -- unless a bundle age block is among them (it grows
    with the time held). ``parts`` gives the bytes
    ``forwarded_piece_parts(bundle, ..., node=node)`` gives, in the same
    buffers (the shared parts were ~12 of a 64 KB piece's ~20 us)."""

    __slots__ = ("_ext", "_prefix", "bundle", "node")

    def __init__(self, bundle: Bundle, node: Eid) -> None:
        self.bundle = bundle
        self.node = node
        self._prefix: bytes | None = None
        self._ext: dict[bool, bytes] = {}

    def parts(
        self, offset: int, size: int, *, dwell_ms: int, view: bool = True
    ) -> tuple[bytes | memoryview, ...]:
        """The piece's buffers (see :func:`forwarded_piece_parts`)."""
        b = self.bundle
        ext = self._ext.get(offset == 0)
        if ext is None or self._prefix is None:
            return self._general(offset, size, dwell_ms, view)
        _check_range(b, offset, size)
        p = b.primary
        total = p.total_adu_length
        # As encode_primary writes a fragment's primary block (the fields
        # after the prefix: offset, total ADU length, CRC).
        body = b"".join(
            (
                self._prefix,
                uint((p.fragment_offset or 0) + offset),
                uint(total if total is not None else len(b.payload)),
            )
        )
        crc_type = p.crc_type
        if crc_type == 2:
            body += b"\x44"
            crc = crc32c_raw(b"\0\0\0\0", crc32c_raw(body)).to_bytes(4, "big")
        elif crc_type == 1:
            body += b"\x42"
            crc = crc16_raw(b"\0\0", crc16_raw(body)).to_bytes(2, "big")
        else:
            crc = b""
        return _with_payload(b, [b"\x9f", body, crc, ext], offset, size, view)

    def _general(
        self, offset: int, size: int, dwell_ms: int, view: bool
    ) -> tuple[bytes | memoryview, ...]:
        b = self.bundle
        _check_range(b, offset, size)
        primary, blocks = _piece_head(b, offset)
        # The hop blocks are updated on the piece's head with b's payload
        # block in its place (update_for_forwarding reads only the blocks
        # before it); that bundle is never kept.
        out = update_for_forwarding(
            trusted_bundle(primary, (*blocks, b.payload_block)),
            node=self.node,
            dwell_ms=dwell_ms,
        )
        encoded = encode_primary(out.primary)
        ext = b"".join(
            chunk for blk in out.blocks[:-1] for chunk in encode_block_parts(blk)
        )
        if b.primary.creation.time_ms != 0 and not any(
            blk.type_code == BlockType.BUNDLE_AGE for blk in blocks
        ):
            self._ext[offset == 0] = ext  # the same for every such piece
        if self._prefix is None:
            assert primary.fragment_offset is not None
            assert primary.total_adu_length is not None
            cut = (
                len(uint(primary.fragment_offset))
                + len(uint(primary.total_adu_length))
                + _CRC_FIELD_BYTES[primary.crc_type]
            )
            self._prefix = encoded[: len(encoded) - cut]
        return _with_payload(b, [b"\x9f", encoded, ext], offset, size, view)


# Length of a block's CRC field (its byte string's head and value) by CRC type.
_CRC_FIELD_BYTES = (0, 3, 5)


def _with_payload(
    b: Bundle,
    head: list[bytes | memoryview],
    offset: int,
    size: int,
    view: bool,
) -> tuple[bytes | memoryview, ...]:
    """The buffers of the piece whose encoding up to its payload block is
    ``head``: its payload block's head, its payload (b's bytes ``offset``
    to ``offset + size``, as a view unless ``view`` is False) and CRC field
    and the closing break, gathered as encode_bundle_parts gathers them."""
    old = b.payload_block
    pv = memoryview(b.payload)[offset : offset + size]
    # The piece's payload block with the view as its data, for
    # encode_block_parts alone (a CanonicalBlock's data is bytes).
    piece = trusted_block(old.type_code, old.number, old.flags, old.crc_type, b"")
    _set_CanonicalBlock_data(piece, pv)
    own = encode_block_parts(piece)  # [head, view(, crc field)]
    head.append(own[0])
    tail = bytes(own[2]) + b"\xff" if len(own) == 3 else b"\xff"
    if size < GATHER_PAYLOAD_BYTES:
        head += (pv, tail)
        return (b"".join(head),)
    return (b"".join(head), pv if view else bytes(pv), tail)


def _check_range(b: Bundle, offset: int, size: int) -> None:
    n = len(b.payload)
    if size < 1 or offset < 0 or offset + size > n:
        raise InvalidArgument(
            f"fragment range {offset}+{size} must be non-empty and within the "
            f"payload's {n} bytes"
        )
    if int(b.primary.flags) & _MUST_NOT_FRAGMENT:  # int: IntFlag's & is slow
        raise InvalidArgument("the bundle has MUST_NOT_FRAGMENT set")


def _piece(b: Bundle, offset: int, size: int) -> Bundle:
    payload = b.payload
    primary, blocks = _piece_head(b, offset)
    data = (
        payload
        if size == len(payload)
        else bytes(memoryview(payload)[offset : offset + size])
    )
    old = b.payload_block
    piece = trusted_block(old.type_code, old.number, old.flags, old.crc_type, data)
    return trusted_bundle(primary, (*blocks, piece))


def _piece_head(
    b: Bundle, offset: int
) -> tuple[PrimaryBlock, tuple[CanonicalBlock, ...]]:
    """The primary block and extension blocks of b's piece starting at
    ``offset``.

    Built without re-validating each object (trusted constructors): ``b``
    is a valid bundle and the piece a non-empty range of its payload (the
    callers checked), so the piece is valid -- its blocks a subset of b's
    with the payload last, its fragment fields within b's ADU.
    ``dataclasses.replace`` and the checks of three constructors were ~20
    of the ~45 us a 64 KB piece cost to cut, update and encode
    (spec/performance.md, "Eighth round: UDP 1 MB")."""
    p = b.primary
    primary = trusted_primary(
        flags=bundle_flags(int(p.flags) | _IS_FRAGMENT),
        crc_type=p.crc_type,
        destination=p.destination,
        source=p.source,
        report_to=p.report_to,
        time_ms=p.creation.time_ms,
        sequence=p.creation.sequence,
        lifetime_ms=p.lifetime_ms,
        fragment_offset=(p.fragment_offset or 0) + offset,
        total_adu_length=(
            p.total_adu_length if p.total_adu_length is not None else len(b.payload)
        ),
    )
    ext = b.blocks[:-1]
    if offset == 0:
        return primary, ext
    # Only the piece that starts where b starts carries every block. A
    # bundle with no creation time must carry its age (RFC 9171 4.4.2), and
    # so must each of its fragments -- each is such a bundle: without it a
    # later hop would count the age from its own arrival and keep the
    # fragment past its lifetime.
    no_clock = p.creation.time_ms == 0
    return primary, tuple(
        blk
        for blk in ext
        if int(blk.flags) & _MUST_REPLICATE
        or (no_clock and blk.type_code == BlockType.BUNDLE_AGE)
    )


def _refuse_anonymous(b: Bundle) -> None:
    # RFC 9171 4.2.3: a bundle from the null endpoint has no unique ID, so
    # it must not be fragmented: fragments of two such bundles created in
    # the same millisecond would share one ID and reassemble into one
    # corrupt payload. Its source should have set MUST_NOT_FRAGMENT;
    # fragment_bundle does not refuse it (callers that check only that flag
    # would fail where they now forward), but nothing reassembles it.
    if is_null_eid(b.primary.source):
        raise InvalidArgument(
            f"a bundle from the null endpoint {b.primary.source} is never "
            "fragmented or reassembled (RFC 9171 4.2.3: it has no unique ID)"
        )


def reassemble(fragments: Iterable[Bundle]) -> Bundle:
    """Rebuild the original bundle from its fragments (any order, overlaps allowed).

    Extension blocks come from the fragment at offset 0. Raises
    :class:`InvalidArgument` if the fragments belong to different bundles,
    disagree on the total length, or leave a gap.
    """
    frags = sorted(
        fragments, key=lambda f: (f.primary.fragment_offset or 0, -len(f.payload))
    )
    if not frags:
        raise InvalidArgument("no fragments")
    first = frags[0]
    if not first.is_fragment:
        if len(frags) == 1:
            return first
        raise InvalidArgument("a whole bundle among fragments")
    _refuse_anonymous(first)
    # The pieces' original bundle ID, compared field by field (building
    # each piece's key string cost ~1 us a piece; the error names keys).
    fp = first.primary
    source, creation = fp.source, fp.creation
    total = first.primary.total_adu_length
    assert total is not None
    if first.primary.fragment_offset != 0:
        raise InvalidArgument("incomplete: no fragment at offset 0")
    # The payload's pieces in order, overlaps cut off, joined once: one copy
    # of the payload (a zero-filled bytearray, each piece copied in and the
    # whole copied out again were three passes over it).
    chunks: list[bytes | memoryview] = []
    covered = 0
    for f in frags:
        p = f.primary
        if not f.is_fragment or p.creation != creation or p.source != source:
            raise InvalidArgument(
                f"fragment {f.bundle_key} does not belong to {first.original_key}"
            )
        if p.total_adu_length != total:
            raise InvalidArgument(
                f"fragment {f.bundle_key}: total ADU length {p.total_adu_length} != {total}"
            )
        off = p.fragment_offset
        assert off is not None
        data = f.payload
        if off + len(data) > total:
            raise InvalidArgument(
                f"fragment {f.bundle_key} extends past the total ADU length {total}"
            )
        if off > covered:
            raise InvalidArgument(f"incomplete: bytes {covered}..{off} missing")
        if off + len(data) > covered:
            chunks.append(data if off == covered else memoryview(data)[covered - off :])
            covered = off + len(data)
    if covered != total:
        raise InvalidArgument(f"incomplete: bytes {covered}..{total} missing")
    primary = replace(
        first.primary,
        # int arithmetic: IntFlag's ~ would also clear the bits it has no
        # member for (unassigned flags the source set travel unchanged).
        flags=bundle_flags(int(first.primary.flags) & ~_IS_FRAGMENT),
        fragment_offset=None,
        total_adu_length=None,
    )
    payload_block = replace(first.payload_block, data=b"".join(chunks))
    return Bundle(primary, (*first.blocks[:-1], payload_block))


@dataclass
class _Pending:
    fragments: dict[tuple[int, int], Bundle] = field(default_factory=dict)
    held_bytes: int = 0
    # Coverage, kept incrementally so that n fragments cost O(n log n) in all
    # (sorting every slot on every add was quadratic: 8,000 one-byte
    # fragments took 4.5 s). ``prefix``: bytes 0..prefix are covered;
    # ``later``: a min-heap of (offset, end) pieces starting beyond it.
    prefix: int = 0
    later: list[tuple[int, int]] = field(default_factory=list)

    def cover(self, offset: int, end: int) -> int:
        """Record bytes ``offset..end``; returns the covered prefix length."""
        heapq.heappush(self.later, (offset, end))
        later = self.later
        prefix = self.prefix
        while later and later[0][0] <= prefix:
            prefix = max(prefix, heapq.heappop(later)[1])
        self.prefix = prefix
        return prefix


class Reassembler:
    """Collects fragments by original bundle ID and returns each bundle once complete.

    ``max_pending`` bounds the number of partial bundles held,
    ``max_pending_bytes`` the payload bytes they hold and
    ``max_pending_fragments`` the fragments they hold; beyond any of them,
    the oldest partial bundle is dropped (the one being added too, when it
    alone exceeds a bound) and its original key appended to :attr:`dropped`.
    Duplicated and empty fragments are ignored. Adding n fragments costs
    O(n log n).
    """

    def __init__(
        self,
        *,
        max_pending: int = 1024,
        max_pending_bytes: int = 64 << 20,
        max_pending_fragments: int = 1 << 16,
    ) -> None:
        self._pending: dict[str, _Pending] = {}
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.max_pending_fragments = max_pending_fragments
        self.pending_bytes = 0
        self.pending_fragments = 0
        self.dropped: list[str] = []

    def add(self, fragment: Bundle) -> Bundle | None:
        """Add one fragment; returns the whole bundle when this completes it, else None."""
        if not fragment.is_fragment:
            return fragment
        if is_null_eid(fragment.primary.source):
            return None  # never reassembled: see _refuse_anonymous
        total = fragment.primary.total_adu_length or 0
        size = len(fragment.payload)
        if size == 0 and total > 0:
            return None  # covers nothing
        key = fragment.original_key
        pend = self._pending.get(key)
        if pend is None:
            if len(self._pending) >= self.max_pending:
                self._drop_oldest()
            pend = self._pending[key] = _Pending()
        off = fragment.primary.fragment_offset or 0
        slot = (off, size)
        if slot in pend.fragments:
            return None
        pend.fragments[slot] = fragment
        pend.held_bytes += size
        self.pending_bytes += size
        self.pending_fragments += 1
        if pend.cover(off, off + size) >= total:
            try:
                whole = reassemble(pend.fragments.values())
            except InvalidArgument:
                pass  # e.g. fragments disagree on the total: stays pending
            else:
                self._drop(key, record=False)
                return whole
        # Bound what incomplete bundles hold (a peer could send endless
        # fragments of a bundle it never completes): other bundles go first,
        # then this one.
        while self._over_bounds():
            if len(self._pending) > 1:
                self._drop_oldest(keep=key)
            else:
                self._drop(key)
                return None
        return None

    def _over_bounds(self) -> bool:
        return (
            self.pending_bytes > self.max_pending_bytes
            or self.pending_fragments > self.max_pending_fragments
        )

    def _drop(self, key: str, *, record: bool = True) -> None:
        pend = self._pending.pop(key)
        self.pending_bytes -= pend.held_bytes
        self.pending_fragments -= len(pend.fragments)
        if record:
            self.dropped.append(key)

    def _drop_oldest(self, keep: str | None = None) -> None:
        for k in self._pending:
            if k != keep:
                self._drop(k)
                return

    def discard(self, original_key: str) -> None:
        """Forget the partial bundle ``original_key`` (e.g. its lifetime expired)."""
        if original_key in self._pending:
            self._drop(original_key, record=False)

    @property
    def pending_keys(self) -> list[str]:
        """Original keys of the bundles still incomplete."""
        return list(self._pending)

    def __len__(self) -> int:
        return len(self._pending)
