"""UDP convergence layer: reassembly of PART segments (sans-I/O).

A bundle larger than a datagram travels whole in PART segments
(:class:`~dcis.dtn.cl.udp.PartSegment`, spec/udpcl.md), all with the
sender's one ``token``. :class:`PartAssembler` is the receiving side: it
collects the chunks of each transfer, keyed by ``(sender, token)``, into one
preallocated ``bytearray(total)`` and hands the encoded bundle back once
whole. The driver gives it to the agent and acknowledges ``token`` once the
bundle is stored durably, exactly as for a DATA segment; it checks each
part's MAC before calling :meth:`PartAssembler.on_part`.

Theory of operation
-------------------
Each transfer moves through :class:`TransferState` by the one table
:data:`TRANSFER_TRANSITIONS`. What a transfer holds is a merged list of
received ranges (flat ``[start0, end0, start1, end1, ...]``, ascending,
half-open), updated by two bisections per part; each chunk is copied once,
by slice assignment, into the transfer's buffer. A part ending at ``total``
while gaps remain (the last chunk, or the sender's probe: its retransmission
timer resends only the last part) is answered by the missing ranges, for a
NEED segment (at most :data:`~dcis.dtn.cl.udp.MAX_NEED_RANGES`, the first
ones); the sender resends only those (selective repeat).

Memory is bounded: the ``total`` of all partial transfers sums to at most
``max_partial_bytes`` and they number at most ``max_transfers``. A new
transfer evicts the least recently *progressed* partials (by arrival of a
part that added bytes) until it fits; a partial without progress for
``idle_timeout_s`` is forgotten by :meth:`PartAssembler.expire`. A
duplicate is not progress, so a peer replaying one part keeps nothing
alive. A one-part transfer completes at once and never counts as partial.
The first copy of each byte is the one kept: a later chunk that overlaps
bytes already held fills only the gaps, so a copy in the sender's name that
arrives after the genuine one cannot change what was held (without a link
key anyone can send one: spec/udpcl.md, threat model).
Forgetting costs only a resend: nothing is acknowledged before it is whole
and stored, so the sender still holds the bundle.

It never reads a clock: every method takes ``now_s`` (any monotonic
seconds) from its driver.
"""

from __future__ import annotations

import enum
import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from typing import Final

from dcis.dtn.cl.udp import (
    MAX_NEED_RANGES,
    MAX_TRANSFER_BYTES,
    MIN_PART_CHUNK_BYTES,
    PartSegment,
)
from dcis.dtn.errors import InvalidArgument


class TransferState(enum.Enum):
    """Where one transfer stands at the receiver."""

    __hash__ = object.__hash__  # identity hash, as udp.TxState's

    ABSENT = "absent"
    """Not held: never seen, completed, or forgotten."""
    ASSEMBLING = "assembling"
    """Some of its bytes are held in its buffer."""


class TransferInput(enum.Enum):
    """What can happen to a transfer (classified by :meth:`PartAssembler.on_part`)."""

    __hash__ = object.__hash__

    FIRST_PART = "first_part"
    """A part of a transfer not held, that leaves it incomplete."""
    PART = "part"
    """A part adding bytes to a held transfer, leaving it incomplete."""
    DUPLICATE = "duplicate"
    """A part whose every byte is held already."""
    COMPLETE = "complete"
    """A part after which every byte is held (or a one-part transfer)."""
    TOO_BIG = "too_big"
    """A new transfer's ``total`` exceeds ``max_transfer_bytes``."""
    NO_ROOM = "no_room"
    """A new transfer's ``total`` alone exceeds ``max_partial_bytes``."""
    CONFLICT = "conflict"
    """A part whose ``total`` is not the held transfer's."""
    IDLE = "idle"
    """No progress for ``idle_timeout_s`` (:meth:`PartAssembler.expire`)."""
    EVICT = "evict"
    """Room needed for a newer transfer; this one progressed least recently."""
    SMALL = "small"
    """A chunk shorter than ``min_chunk_bytes`` that does not end its transfer."""
    LATE = "late"
    """A part of a transfer completed less than ``idle_timeout_s`` ago -- a
    duplicate or a reordered copy, or the last part that ends a NEED round
    the transfer's completion overtook: starting the transfer again would
    hold a buffer of its ``total`` and ask for all of it at once. The last
    part does start it again once ``probe_after_s`` have passed since the
    completion: it is then the sender's probe after a lost ACK (which comes
    no sooner than its first retransmission timeout), answered with a NEED
    for everything."""


class TransferEffect(enum.Enum):
    """What a transition makes the assembler do: START (allocate the buffer,
    write the chunk), WRITE (write it, merge its range, mark progress),
    KEEP (a duplicate: the bytes held stay, counted), DELIVER (write it, return
    the whole bundle, forget the transfer), DROP (refuse the part, counted,
    the transfer unchanged), FORGET (free the partial, counted)."""

    START = "start"
    WRITE = "write"
    KEEP = "keep"
    DELIVER = "deliver"
    DROP = "drop"
    FORGET = "forget"


_S, _I, _E = TransferState, TransferInput, TransferEffect
TRANSFER_TRANSITIONS: dict[
    tuple[TransferState, TransferInput], tuple[TransferState, TransferEffect]
] = {
    (_S.ABSENT, _I.FIRST_PART): (_S.ASSEMBLING, _E.START),
    (_S.ABSENT, _I.COMPLETE): (_S.ABSENT, _E.DELIVER),
    (_S.ABSENT, _I.TOO_BIG): (_S.ABSENT, _E.DROP),
    (_S.ABSENT, _I.NO_ROOM): (_S.ABSENT, _E.DROP),
    (_S.ASSEMBLING, _I.PART): (_S.ASSEMBLING, _E.WRITE),
    (_S.ASSEMBLING, _I.DUPLICATE): (_S.ASSEMBLING, _E.KEEP),
    (_S.ASSEMBLING, _I.COMPLETE): (_S.ABSENT, _E.DELIVER),
    (_S.ASSEMBLING, _I.CONFLICT): (_S.ASSEMBLING, _E.DROP),
    (_S.ASSEMBLING, _I.IDLE): (_S.ABSENT, _E.FORGET),
    (_S.ASSEMBLING, _I.EVICT): (_S.ABSENT, _E.FORGET),
    (_S.ABSENT, _I.SMALL): (_S.ABSENT, _E.DROP),
    (_S.ASSEMBLING, _I.SMALL): (_S.ASSEMBLING, _E.DROP),
    (_S.ABSENT, _I.LATE): (_S.ABSENT, _E.DROP),
}
"""The reassembly state machine of one transfer: ``(state, input) -> (next
state, effect)``. Every transition of :class:`PartAssembler` goes through
this table; :meth:`PartAssembler.on_part` only ever classifies a part into
an input the table lists for the transfer's state."""

# Members read per part, bound once (EnumType's attribute hook: see udp.py).
_ABSENT: Final = _S.ABSENT
_ASSEMBLING: Final = _S.ASSEMBLING
_FIRST_PART: Final = _I.FIRST_PART
_PART: Final = _I.PART
_DUPLICATE: Final = _I.DUPLICATE
_COMPLETE: Final = _I.COMPLETE
_START: Final = _E.START
_WRITE: Final = _E.WRITE
_DELIVER: Final = _E.DELIVER
_DROP: Final = _E.DROP
_FORGET: Final = _E.FORGET
_COUNTER_OF: Final = {
    _I.TOO_BIG: "dropped_too_big",
    _I.NO_ROOM: "dropped_no_room",
    _I.CONFLICT: "dropped_conflict",
    _I.IDLE: "expired",
    _I.EVICT: "evicted",
    _I.SMALL: "dropped_small",
    _I.LATE: "dropped_late",
}


@dataclass(frozen=True, slots=True)
class PartResult:
    """What one part did: ``whole`` -- the encoded bundle, when this part
    completed it; ``need`` -- the missing ``(start, end)`` ranges (ascending,
    disjoint, at most ``MAX_NEED_RANGES``, the first ones) when this part
    ends at ``total`` and gaps remain, else empty; ``dropped`` -- why the
    part was refused, else None."""

    whole: bytearray | None = None
    need: tuple[tuple[int, int], ...] = ()
    dropped: str | None = None


_NOTHING: Final = PartResult()


@dataclass(slots=True)
class AssemblerCounters:
    """Counters of one :class:`PartAssembler` (for ``dcis status``)."""

    parts_in: int = 0
    completed: int = 0
    needs: int = 0
    duplicates: int = 0
    dropped_too_big: int = 0
    dropped_conflict: int = 0
    dropped_no_room: int = 0
    evicted: int = 0
    expired: int = 0
    dropped_small: int = 0
    dropped_late: int = 0


@dataclass(slots=True)
class _Partial:
    buf: bytearray
    have: list[int]  # merged received ranges, flat: [start0, end0, ...]
    last_s: float  # when a part last added bytes


def _missing(have: list[int], total: int) -> tuple[tuple[int, int], ...]:
    """The complement of ``have`` in ``[0, total)``, its first ``MAX_NEED_RANGES``."""
    bounds = [0, *have[: 2 * MAX_NEED_RANGES + 1], total]
    gaps = zip(bounds[0::2], bounds[1::2], strict=False)
    return tuple([g for g in gaps if g[0] < g[1]][:MAX_NEED_RANGES])


@dataclass(slots=True)
class PartAssembler:
    """Receiving side of PART transfers, from every neighbour (sans-I/O).

    ``max_transfer_bytes``: largest ``total`` accepted (at most
    :data:`~dcis.dtn.cl.udp.MAX_TRANSFER_BYTES`); ``max_partial_bytes``: most
    bytes held by incomplete transfers together; ``idle_timeout_s``: a
    partial without progress that long is forgotten; ``max_transfers``:
    most partials at once. Raises :class:`InvalidArgument` for an argument
    out of range; :meth:`on_part` raises it for a part whose chunk is empty
    or ends after ``total`` (the decoder never makes one). Nothing else
    escapes: a part it cannot take is refused in its :class:`PartResult`.
    """

    max_transfer_bytes: int
    max_partial_bytes: int
    idle_timeout_s: float
    max_transfers: int = 256
    min_chunk_bytes: int = MIN_PART_CHUNK_BYTES
    """Smallest chunk accepted but a transfer's last: a transfer is then at
    most ``total / min_chunk_bytes`` ranges to keep track of."""
    probe_after_s: float = 0.5
    """How long after a transfer completed its last part is still a copy
    (see ``TransferInput.LATE``); the daemon passes half its ACK timeout."""
    counters: AssemblerCounters = field(default_factory=AssemblerCounters)
    # Transfers of several parts completed, with when (insertion order):
    # at most 4 * max_transfers, none older than idle_timeout_s once expire
    # has run.
    _done: dict[tuple[int, int], float] = field(default_factory=dict)
    # Insertion order is progress order: the first is the least recently progressed.
    _partials: dict[tuple[int, int], _Partial] = field(default_factory=dict)
    _bytes: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.max_transfer_bytes <= MAX_TRANSFER_BYTES:
            raise InvalidArgument(f"bad max_transfer_bytes {self.max_transfer_bytes}")
        if (
            self.max_partial_bytes < 1
            or self.max_transfers < 1
            or self.min_chunk_bytes < 1
        ):
            raise InvalidArgument("max_partial_bytes and max_transfers must be >= 1")
        if not 0 < self.idle_timeout_s < math.inf:
            raise InvalidArgument(f"bad idle_timeout_s {self.idle_timeout_s}")

    @property
    def partial_bytes(self) -> int:
        """Sum of ``total`` over incomplete transfers (their buffers' size)."""
        return self._bytes

    @property
    def partial_count(self) -> int:
        """Incomplete transfers held."""
        return len(self._partials)

    def next_deadline(self) -> float | None:
        """When :meth:`expire` has something to forget (None: nothing held)."""
        for p in self._partials.values():
            return p.last_s + self.idle_timeout_s
        return None

    def expire(self, now_s: float) -> int:
        """Forget the partials without progress for ``idle_timeout_s``; how many."""
        done = self._done
        while done:
            key = next(iter(done))
            if done[key] + self.idle_timeout_s > now_s:
                break
            del done[key]
        n = 0
        while self._partials:
            key, p = next(iter(self._partials.items()))
            if p.last_s + self.idle_timeout_s > now_s:
                break  # the rest progressed later still
            self._forget(key, _I.IDLE)
            n += 1
        return n

    def _forget(self, key: tuple[int, int], event: TransferInput) -> None:
        """Apply IDLE or EVICT to a held transfer, as the table says."""
        _, effect = TRANSFER_TRANSITIONS[(_ASSEMBLING, event)]
        if effect is not _FORGET:
            return
        self._bytes -= len(self._partials.pop(key).buf)
        name = _COUNTER_OF[event]
        setattr(self.counters, name, getattr(self.counters, name) + 1)

    def on_part(self, part: PartSegment, now_s: float) -> PartResult:
        """Take one authentic part; see :class:`PartResult`."""
        c = self.counters
        c.parts_in += 1
        off, total, chunk = part.offset, part.total, part.chunk
        end = off + len(chunk)
        if not 0 <= off < end <= total:
            raise InvalidArgument(f"part {off}..{end} of {total}")
        key = (part.sender, part.token)
        p = self._partials.get(key)
        i = j = 0
        if end != total and end - off < self.min_chunk_bytes:
            state = _ABSENT if p is None else _ASSEMBLING
            event, why = _I.SMALL, f"a chunk of {end - off} bytes"
        elif p is None:
            state = _ABSENT
            done_s = self._done.get(key)
            if done_s is not None and (
                end != total or now_s - done_s < self.probe_after_s
            ):
                event, why = _I.LATE, "its transfer completed"
            elif total > self.max_transfer_bytes:
                event, why = _I.TOO_BIG, f"total {total} over {self.max_transfer_bytes}"
            elif off == 0 and end == total:
                event, why = _COMPLETE, None
            elif total > self.max_partial_bytes:
                event, why = _I.NO_ROOM, f"total {total} over {self.max_partial_bytes}"
            else:
                event, why = _FIRST_PART, None
        else:
            state, have = _ASSEMBLING, p.have
            if total != len(p.buf):
                event, why = _I.CONFLICT, f"total {total}, first said {len(p.buf)}"
            elif (k := bisect_right(have, off)) & 1 and end <= have[k]:
                event, why = _DUPLICATE, None
            else:
                # The chunk merges with the ranges it touches: have[i:j].
                i, j = bisect_left(have, off), bisect_right(have, end)
                lo = have[i - 1] if i & 1 else off
                hi = have[j] if j & 1 else end
                event = _COMPLETE if lo == 0 and hi == total else _PART
                why = None
        _, effect = TRANSFER_TRANSITIONS[(state, event)]
        if effect is _DROP:
            name = _COUNTER_OF[event]
            setattr(c, name, getattr(c, name) + 1)
            return PartResult(dropped=why)
        if effect is _DELIVER:
            c.completed += 1
            if p is None:
                return PartResult(whole=bytearray(chunk))
            del self._partials[key]
            self._bytes -= total
            _fill(p.buf, p.have, off, end, chunk)
            self._done.pop(key, None)  # to the end: its time is now
            self._done[key] = now_s
            if len(self._done) > 4 * self.max_transfers:
                del self._done[next(iter(self._done))]
            return PartResult(whole=p.buf)
        if effect is _START:
            while (
                len(self._partials) >= self.max_transfers
                or self._bytes + total > self.max_partial_bytes
            ):
                self._forget(next(iter(self._partials)), _I.EVICT)
            p = self._partials[key] = _Partial(bytearray(total), [off, end], now_s)
            self._bytes += total
            p.buf[off:end] = chunk
        elif effect is _WRITE:
            assert p is not None
            _fill(p.buf, p.have, off, end, chunk)
            # have[i:j] gives way to the bounds not inside a range already:
            # off unless i is odd, end unless j is odd.
            p.have[i:j] = (off, end)[i & 1 : 2 - (j & 1)]
            p.last_s = now_s
            self._partials[key] = self._partials.pop(key)  # most recent now
        else:  # KEEP
            assert p is not None
            c.duplicates += 1
        if end != total:
            return _NOTHING
        c.needs += 1
        return PartResult(need=_missing(p.have, total))


def _fill(
    buf: bytearray, have: list[int], off: int, end: int, chunk: bytes | memoryview
) -> None:
    """Copy into ``buf`` the bytes of ``chunk`` (at ``off``..``end``) that
    no range of ``have`` (flat ascending bounds, before this chunk is
    merged) holds yet: the first copy of a byte is the one kept."""
    view = memoryview(chunk)
    k = bisect_right(have, off)
    pos = off
    if k & 1:  # off lies inside a held range: start after it
        pos = have[k]
        k += 1
    while pos < end:
        nxt = have[k] if k < len(have) else end
        stop = min(nxt, end)
        if stop > pos:
            buf[pos:stop] = view[pos - off : stop - off]
        if nxt >= end or k + 1 >= len(have):
            break
        pos = have[k + 1]
        k += 2
