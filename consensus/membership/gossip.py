"""The dissemination queue of the membership service: at most one update
per subject, handed out fewest-sent first (ties: lower subject), each at most
a given number of times (SWIM's piggyback, lambda * log N retransmissions).

Items also sit in buckets by how often they were sent, subjects sorted, so
picking the few to piggyback costs O(picked) list work rather than a scan
of the whole queue: after a partition it holds a claim about most members,
and every message picks from it.
"""

from __future__ import annotations

from bisect import bisect_left, insort

from dcis.consensus.membership.wire import Update

__all__ = ["GossipQueue"]


class GossipQueue:
    """Updates to piggyback, one per subject."""

    def __init__(self) -> None:
        # subject -> times sent (ints, not lists: nothing for the garbage
        # collector to walk, and after a partition it holds most members)
        self._items: dict[int, int] = {}
        self._updates: dict[int, Update] = {}
        self._by_sent: dict[int, list[int]] = {}  # sent -> sorted subjects

    def __len__(self) -> int:
        return len(self._items)

    def get(self, subject: int) -> Update | None:
        """The update queued about ``subject``, or None."""
        return self._updates.get(subject)

    def put(self, u: Update) -> None:
        """Queue ``u`` (not sent yet), replacing what ``u.subject`` had (its
        place in the queue's order is kept)."""
        sent = self._items.get(u.subject)
        if sent is not None:
            self._unsort(sent, u.subject)
        self._items[u.subject] = 0  # a key already there keeps its place
        self._updates[u.subject] = u
        insort(self._by_sent.setdefault(0, []), u.subject)

    def discard(self, subject: int) -> None:
        """Drop what is queued about ``subject``."""
        sent = self._items.pop(subject, None)
        if sent is not None:
            del self._updates[subject]
            self._unsort(sent, subject)

    def take(self, most: int, limit: int) -> list[Update]:
        """Up to ``most`` updates to send now: all of them, in the order
        queued, when there are no more; else fewest sent first, ties by
        lower subject. Each is counted sent and dropped at ``limit``."""
        items = self._items
        if len(items) <= most:
            picked = list(items.items())
        else:
            picked = []
            for sent in sorted(self._by_sent):
                subjects = self._by_sent[sent][: most - len(picked)]
                picked += [(s, sent) for s in subjects]
                if len(picked) >= most:
                    break
        out = []
        for subject, sent in picked:
            out.append(self._updates[subject])
            self._unsort(sent, subject)
            if sent + 1 >= limit:
                del items[subject], self._updates[subject]
            else:
                items[subject] = sent + 1
                insort(self._by_sent.setdefault(sent + 1, []), subject)
        return out

    def _unsort(self, sent: int, subject: int) -> None:
        subjects = self._by_sent[sent]
        del subjects[bisect_left(subjects, subject)]
        if not subjects:
            del self._by_sent[sent]
