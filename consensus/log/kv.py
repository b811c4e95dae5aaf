"""The key-value state machine on the log.

Theory of operation: the committed state is the fold of the committed log's
entries, in log order, through :meth:`KvState.apply`; every node folds the
same records and so holds the same state (and :meth:`KvState.state_hash`).
``apply`` is where Bayou's rules are enforced, deterministically:

- an entry already applied (same origin and sequence, e.g. proposed twice
  by two leaders) is skipped, so each entry takes effect exactly once;
- an entry whose origin predecessor or causal parent has not been applied,
  or whose compare-and-set precondition fails on the committed state,
  becomes a ``rejected`` record with its reason (every node records the same
  one, and the origin reads it with ``outcome``).

The tentative view is the committed state with the known uncommitted entries
applied in tentative order (hybrid clock, origin, sequence): puts and deletes
merge last-writer-wins by hybrid clock, increments add (a counter CRDT) and
set adds/removes commute per member. A compare-and-set is shown there when
its precondition holds on that view (a prediction; the decision is at commit).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from dcis.consensus.log.api import (
    CompareAndSet,
    Delete,
    EntryId,
    Increment,
    Op,
    Outcome,
    Put,
    SetAdd,
)
from dcis.consensus.log.cbor import Value, dumps, loads_untrusted
from dcis.consensus.log.wire import Entry, _bytes, _int, _list, _str
from dcis.dtn.errors import DecodeError


def apply_op(values: dict[str, bytes], op: Op) -> bool:
    """Apply ``op`` to ``values`` in place; False (and no change) when a
    compare-and-set's precondition does not hold."""
    if isinstance(op, Put):
        values[op.key] = op.value
    elif isinstance(op, Delete):
        values.pop(op.key, None)
    elif isinstance(op, CompareAndSet):
        if values.get(op.key) != op.expected:
            return False
        if op.value is None:
            values.pop(op.key, None)
        else:
            values[op.key] = op.value
    elif isinstance(op, Increment):
        values[op.key] = str(counter_value(values.get(op.key)) + op.delta).encode()
    else:
        members = set_members(values.get(op.key))
        if isinstance(op, SetAdd):
            members.add(op.member)
        else:
            members.discard(op.member)
        values[op.key] = b"\n".join(sorted(members))
    return True


def counter_value(raw: bytes | None) -> int:
    """A counter's total (0 for absent or non-counter values)."""
    if raw is None:
        return 0
    try:
        return int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return 0


def set_members(raw: bytes | None) -> set[bytes]:
    """A set's members (empty for absent values)."""
    if not raw:
        return set()
    return set(raw.split(b"\n"))


@dataclass(slots=True)
class KvState:
    """Committed state: values, per-origin applied sequence, rejections."""

    values: dict[str, bytes] = field(default_factory=dict)
    applied: dict[int, int] = field(default_factory=dict)
    rejected: dict[EntryId, str] = field(default_factory=dict)
    _hash: str | None = field(default=None, compare=False, repr=False)

    def is_applied(self, eid: EntryId) -> bool:
        """True once ``eid`` is committed or rejected."""
        return eid.seq <= self.applied.get(eid.origin, 0)

    def outcome(self, eid: EntryId) -> Outcome | None:
        """COMMITTED / REJECTED once decided, else None."""
        if not self.is_applied(eid):
            return None
        return Outcome.REJECTED if eid in self.rejected else Outcome.COMMITTED

    def apply(self, entry: Entry) -> Outcome | None:
        """Fold one committed entry; None if it was applied before."""
        eid = entry.id
        last = self.applied.get(entry.origin, 0)
        if entry.seq <= last:
            return None
        self._hash = None
        self.applied[entry.origin] = entry.seq
        reason = ""
        if entry.seq != last + 1:
            reason = f"origin gap: {last + 1}..{entry.seq - 1} not committed"
        elif any(not self.is_applied(p) for p in entry.parents):
            reason = "a causal parent is not committed"
        elif not apply_op(self.values, entry.op):
            reason = "compare-and-set precondition failed"
        if reason:
            # A gap's skipped sequence numbers are rejected too, so that each
            # is decided exactly once.
            for s in range(last + 1, entry.seq):
                self.rejected[EntryId(entry.origin, s)] = "skipped by a later entry"
            self.rejected[eid] = reason
            return Outcome.REJECTED
        return Outcome.COMMITTED

    def view(self, tentative: Iterable[Entry]) -> dict[str, bytes]:
        """The tentative view: these values with ``tentative`` (already in
        tentative order) applied on a copy."""
        values = dict(self.values)
        for e in tentative:
            if not self.is_applied(e.id):
                apply_op(values, e.op)
        return values

    def to_value(self) -> Value:
        """The state as a canonical CBOR value (snapshots, the state hash)."""
        return [
            [[k, self.values[k]] for k in sorted(self.values)],
            [[o, self.applied[o]] for o in sorted(self.applied)],
            [
                [i.origin, i.seq, self.rejected[i]]
                for i in sorted(self.rejected, key=lambda x: (x.origin, x.seq))
            ],
        ]

    def encode(self) -> bytes:
        """Snapshot bytes."""
        return dumps(self.to_value())

    def state_hash(self) -> str:
        """SHA-256 (hex) of the canonical state: equal on every node that
        applied the same committed log."""
        if self._hash is None:
            self._hash = hashlib.sha256(self.encode()).hexdigest()
        return self._hash


def decode_kv_untrusted(data: bytes) -> KvState:
    """Inverse of :meth:`KvState.encode`; raises only :class:`DecodeError`."""
    items = _list(loads_untrusted(data, "log snapshot"), 3, "snapshot")
    st = KvState()
    for kv in _list(items[0], None, "values"):
        pair = _list(kv, 2, "value")
        st.values[_str(pair[0], "key")] = _bytes(pair[1], "value")
    for ov in _list(items[1], None, "applied"):
        pair = _list(ov, 2, "applied")
        st.applied[_int(pair[0], "origin")] = _int(pair[1], "seq")
    for rv in _list(items[2], None, "rejected"):
        tri = _list(rv, 3, "rejected")
        st.rejected[EntryId(_int(tri[0], "origin"), _int(tri[1], "seq"))] = _str(
            tri[2], "reason", 4096
        )
    if any(s < 1 for s in st.applied.values()):
        raise DecodeError("applied seq must be >= 1", where="log snapshot")
    return st
