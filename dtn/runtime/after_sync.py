"""What waits for a sync (group commit, ``Node.when_durable``), and what
becomes of it when that sync refuses bundles (spec/agent.md, "A late write
that fails").

With a FULL store the daemon's commits do not fsync on the event loop; what
promises durability -- hop ACKs, replies to app sends, TCPCL answers --
waits for the sync that covers its commit, as an :class:`AfterSync` entry.
A sync may instead drop bundles whose late write the disk refused: nobody
was told they are stored, so every entry standing for one is withheld or
turned into a refusal (:func:`withdraw`). Each entry says what it is
(:class:`Durable`) and which bundles or neighbour it stands for: that is
decided from these fields, never by looking inside ``fn``.

No I/O and no clock.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from dcis.dtn.appapi.wire import decode_message_untrusted, encode_message
from dcis.dtn.errors import DecodeError

__all__ = ["AfterSync", "Durable", "withdraw"]


class Durable(enum.Enum):
    """What an :class:`AfterSync` entry is, for a sync that refuses bundles."""

    HOP_ACK = "hop_ack"
    """A hop ACK (UDP or an LTP block's share) naming the bundle ``key``:
    never sent if it is refused."""
    PIECE_ACK = "piece_ack"
    """A UDP hop ACK naming no bundle (a piece's, a duplicate's), to
    ``peer``: withheld if ``peer`` is a previous hop of a refused bundle."""
    LTP_ACK = "ltp_ack"
    """An LTP block's share naming no bundle: withheld if a previous hop of
    a refused bundle is an LTP neighbour."""
    APP_REPLY = "app_reply"
    """An app connection's framed ``replies`` (``fn`` sends that list):
    the "ok" of a send whose bundle is refused becomes a "store full"
    error to the same request."""
    TCPCL_ANSWER = "tcpcl_answer"
    """A TCPCL transfer's XFER_ACK, standing for the bundles ``keys``: if
    one of them is refused, ``refuse`` (XFER_REFUSE) runs instead."""
    OTHER = "other"
    """Promises nothing about a bundle (an in-process send's wake-up, LTP
    segments to send): goes after the sync as it is."""


_NO_KEYS: Final[frozenset[str]] = frozenset()


@dataclass(slots=True, eq=False)
class AfterSync:
    """``fn``, to run once the store's write generation ``gen`` is durable;
    ``kind`` and the fields it names say what it stands for (:class:`Durable`).
    One is made per hop ACK (a slotted object, like the tuple it replaced)."""

    gen: int
    fn: Callable[[], object]
    kind: Durable
    key: str | None = None
    peer: int = 0
    keys: frozenset[str] = _NO_KEYS
    replies: list[bytes] | None = None
    refuse: Callable[[], object] | None = None


# Members bound once: a hop ACK names its kind for every bundle, and on
# Python 3.11 a member read off its class costs ~4x a global's
# (spec/performance.md, "Eighth round: the 1 KB path").
HOP_ACK: Final = Durable.HOP_ACK
PIECE_ACK: Final = Durable.PIECE_ACK
LTP_ACK: Final = Durable.LTP_ACK
APP_REPLY: Final = Durable.APP_REPLY
TCPCL_ANSWER: Final = Durable.TCPCL_ANSWER
OTHER: Final = Durable.OTHER


def withdraw(
    entries: Iterable[AfterSync],
    gone: set[str],
    hops: set[int],
    ltp_hop: bool,
    refusal: str,
) -> deque[AfterSync]:
    """The ``entries`` that still go after a sync that dropped the bundles
    ``gone`` (their late writes failed), in order. ``hops``: the previous
    hops of those bundles; ``ltp_hop``: one of them is an LTP neighbour.
    Hop ACKs of refused bundles are left out; so is every ACK naming no
    bundle from one of ``hops`` (it may be a piece's of a refused bundle:
    some stand for bundles stored, whose senders send them again). A
    TCPCL answer for a refused bundle is refused here and left out; the
    app replies are kept, a refused send's "ok" rewritten to ``refusal``."""
    kept: deque[AfterSync] = deque()
    for e in entries:
        kind = e.kind
        if kind is HOP_ACK:
            if e.key in gone:
                continue  # never sent: the previous hop sends it again
        elif kind is PIECE_ACK:
            if e.peer in hops:
                continue  # perhaps a piece's ACK: withheld
        elif kind is LTP_ACK:
            if ltp_hop:
                continue  # perhaps a piece's share of its block: withheld
        elif kind is TCPCL_ANSWER:
            if not gone.isdisjoint(e.keys):
                assert e.refuse is not None
                e.refuse()  # XFER_REFUSE: the peer keeps it
                continue
        elif kind is APP_REPLY:
            assert e.replies is not None
            # In place: ``fn`` sends this list.
            e.replies[:] = [_refused_reply(m, gone, refusal) for m in e.replies]
        kept.append(e)
    return kept


def _refused_reply(msg: bytes, gone: set[str], refusal: str) -> bytes:
    """``msg`` (a framed app API reply), or -- if it is the "ok" of a send
    whose bundle is in ``gone`` -- an error reply saying ``refusal`` to the
    same request. Only on a late write's failure: the replies are decoded
    again here."""
    if not any(k.encode() in msg for k in gone):
        return msg
    head = msg[0] & 0x1F
    start = 1 + (0 if head < 24 else 1 << (head - 24))
    try:
        m = decode_message_untrusted(msg[start:])
    except DecodeError:
        return msg
    if m.get("type") != "ok" or m.get("bundle_key") not in gone:
        return msg
    return encode_message({"type": "error", "id": m.get("id", 0), "message": refusal})
