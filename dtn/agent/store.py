"""The bundle store: where a node keeps the bundles it is responsible for.

RFC 9171 section 5 ("bundle processing") has a node *retain* a bundle until it
is forwarded, delivered or deleted; section 5.4 lets it defer forwarding until
a contact opens. This module is that retention, behind one interface
(:class:`BundleStore`) with two implementations:

- :class:`MemoryStore` -- dictionaries; for the simulator and tests. What it
  holds lives as long as the object (a simulated "disk" can keep the object
  across a simulated crash; a simulated RAM store is simply dropped).
- ``SqliteStore`` -- SQLite in WAL mode on disk; the default for daemons. It
  does file I/O, so it lives outside this sans-I/O package, in the edge
  module :mod:`dcis.dtn.storage.sqlite_store`.

Durability contract (both implementations): when a write method returns
outside :meth:`BundleStore.transaction`, or when the outermost
``transaction()`` block exits without an exception, the write is durable
(for ``SqliteStore`` with ``synchronous="FULL"`` that means it survives
``kill -9`` *and* an OS crash or power loss). The agent acknowledges a bundle
(``Ack``, or returning from ``send``) only after such a point.

Bounded size: :meth:`BundleStore.put` refuses a new bundle with
:class:`StoreFull` (saying how full the store is) when its bytes would exceed
``limit_bytes``. A bundle already stored is never dropped to make room. The
agent may exceed the bound slightly with ``force=True`` when it *replaces*
bundles it already holds (fragmenting one, or reassembling fragments), since
refusing there would lose data it has already accepted.

Besides bundles the store keeps *delivered keys*: the keys of bundles handed
to a local application, each with an expiry time (the bundle's own end of
life), so a duplicate arriving later -- or a restart replaying a bundle whose
delivery was confirmed -- is never delivered twice.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final, Protocol, runtime_checkable

from dcis.dtn.errors import DtnError, InvalidArgument

__all__ = [
    "BundleState",
    "BundleStore",
    "DiskFull",
    "MemoryStore",
    "StoreCorrupt",
    "StoreError",
    "StoreFull",
    "StoredBundle",
]

_NO_TXN: AbstractContextManager[None] = nullcontext()
"""MemoryStore's transaction: nothing to group, so one shared no-op manager."""


class StoreFull(DtnError):
    """A new bundle was refused because the store's byte limit would be exceeded.

    ``needed_bytes`` is the bundle's size, ``used_bytes`` / ``limit_bytes`` the
    store's state at refusal. The message says all three.
    """

    def __init__(self, *, needed_bytes: int, used_bytes: int, limit_bytes: int) -> None:
        self.needed_bytes = needed_bytes
        self.used_bytes = used_bytes
        self.limit_bytes = limit_bytes
        super().__init__(
            f"store full: {used_bytes} of {limit_bytes} bytes used, a bundle of {needed_bytes} bytes does not fit"
        )


class DiskFull(StoreFull):
    """A new bundle was refused because the file system holding the store is
    (nearly) full: less than the store's ``disk_reserve_bytes`` would be left,
    or a write failed with ENOSPC. Nothing was acknowledged; accepting starts
    again by itself when space returns."""

    def __init__(
        self, *, needed_bytes: int, free_bytes: int, reserve_bytes: int
    ) -> None:
        DtnError.__init__(
            self,
            f"disk full: {free_bytes} bytes free on the store's file system, "
            f"a bundle of {needed_bytes} bytes would leave less than the "
            f"{reserve_bytes}-byte reserve",
        )
        self.needed_bytes = needed_bytes
        self.used_bytes = 0
        self.limit_bytes = 0
        self.free_bytes = free_bytes


class StoreError(DtnError):
    """The storage medium failed (I/O error, disk full, corrupt file).

    After this the in-memory state of an agent may disagree with the store: a
    driver should rebuild it with ``Agent.recover``.
    """


class StoreCorrupt(StoreError):
    """A stored bundle's bytes no longer match the checksum the store wrote
    with them (damaged after its commit): ``key`` names it. The bytes are
    never handed out."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"bundle {key!r} is corrupt in the store: {detail}")
        self.key = key


class BundleState(StrEnum):
    """What a stored bundle is waiting for."""

    PENDING = "pending"
    """Waiting to be forwarded (no contact yet, or queued for one)."""
    FORWARDING = "forwarding"
    """A transmission is in flight (agents may keep this in memory only: a
    bundle in flight at a crash is simply sent again)."""
    DELIVERING = "delivering"
    """For a local endpoint: handed over (or waiting for registration) and
    not yet confirmed with ``on_delivered``."""
    REASSEMBLY = "reassembly"
    """A fragment for a local endpoint, waiting for the rest of its bundle."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredBundle:
    """Metadata kept with each stored bundle (enough to rebuild an agent's
    queues without decoding the bundle).

    ``destination`` is the destination EID as text; ``expiry_ms`` and
    ``received_ms`` are DTN times (ms); ``size_bytes`` is ``len(data)``;
    ``prev_node`` is the ipn node it came from (None when sent locally or
    unknown); ``frag_group`` is the key of the whole bundle a fragment belongs
    to (None for a whole bundle).
    """

    key: str
    destination: str
    expiry_ms: int
    state: BundleState
    size_bytes: int
    received_ms: int
    prev_node: int | None = None
    frag_group: str | None = None


_set_key: Final = StoredBundle.__dict__["key"].__set__
_set_destination: Final = StoredBundle.__dict__["destination"].__set__
_set_expiry_ms: Final = StoredBundle.__dict__["expiry_ms"].__set__
_set_state: Final = StoredBundle.__dict__["state"].__set__
_set_size_bytes: Final = StoredBundle.__dict__["size_bytes"].__set__
_set_received_ms: Final = StoredBundle.__dict__["received_ms"].__set__
_set_prev_node: Final = StoredBundle.__dict__["prev_node"].__set__
_set_frag_group: Final = StoredBundle.__dict__["frag_group"].__set__


def trusted_stored_bundle(
    key: str,
    destination: str,
    expiry_ms: int,
    state: BundleState,
    size_bytes: int,
    received_ms: int,
    prev_node: int | None,
    frag_group: str | None,
) -> StoredBundle:
    """``StoredBundle(key=key, ...)`` with its fields as given, built with
    the slot setters: the frozen dataclass's __init__ sets each through
    ``object.__setattr__`` (~1.7 -> ~0.5 us; the agent makes one per bundle
    it stores; spec/performance.md, "Eighth round: the 1 KB path")."""
    r = object.__new__(StoredBundle)
    _set_key(r, key)
    _set_destination(r, destination)
    _set_expiry_ms(r, expiry_ms)
    _set_state(r, state)
    _set_size_bytes(r, size_bytes)
    _set_received_ms(r, received_ms)
    _set_prev_node(r, prev_node)
    _set_frag_group(r, frag_group)
    return r


@runtime_checkable
class BundleStore(Protocol):
    """The interface the agent uses. See the module docstring for durability."""

    @property
    def limit_bytes(self) -> int:
        """Maximum total bytes of stored bundles accepted by :meth:`put`."""
        ...

    @property
    def used_bytes(self) -> int:
        """Total bytes of bundles stored now."""
        ...

    def __len__(self) -> int: ...

    def __contains__(self, key: object) -> bool: ...

    def transaction(self, *, durable: bool = True) -> AbstractContextManager[None]:
        """Group writes: committed together when the outermost block exits.

        ``durable=True``: the commit survives a power cut once the block has
        exited. ``durable=False``: it survives a process crash (``kill -9``)
        but a power cut may lose it -- for writes whose loss only makes a
        bundle reappear (deletions after forwarding, expiry), never vanish.
        Nested blocks join the outer one (a durable inner block makes the
        outer commit durable). On an exception the outermost block rolls back
        what it wrote (:class:`MemoryStore` cannot roll back and keeps what was
        written: it has no crash to survive).
        """
        ...

    def put(
        self,
        record: StoredBundle,
        data: Wire,
        *,
        force: bool = False,
        write_later: bool = False,
    ) -> None:
        """Store a new bundle. Raises :class:`StoreFull` if it does not fit
        (unless ``force``), :class:`InvalidArgument` if ``record.key`` is
        already stored or ``record.size_bytes`` is not the data's length.

        ``write_later``: the caller tells nobody that the bundle is stored
        before the next durability point (a group-commit sync), so a store
        may put off writing its bytes until then -- and skip them if the
        bundle has left by then. A store may ignore it.

        ``data``: the encoded bundle, in one buffer or as buffers in order
        (``encode_bundle_parts``: a large payload as its own object); the
        bytes stored are their concatenation, and :meth:`get` returns them
        in one ``bytes``. A ``memoryview`` is read only during the call (its
        bytes may change after it): what the store keeps of it, it copies."""
        ...

    def get(self, key: str) -> bytes | None:
        """The stored bytes of bundle ``key``, or None."""
        ...

    def record(self, key: str) -> StoredBundle | None:
        """The metadata of bundle ``key``, or None."""
        ...

    def set_state(self, key: str, state: BundleState) -> None:
        """Change a stored bundle's state (no-op if ``key`` is not stored)."""
        ...

    def delete(self, key: str) -> bool:
        """Remove bundle ``key``; True if it was stored."""
        ...

    def discard(self, key: str) -> None:
        """Remove bundle ``key`` if it is stored, with no answer: inside a
        :meth:`transaction` a store may batch it with the block's other
        discards until the commit (every read of the store sees it done).
        What the agent uses when it drops a bundle it holds."""
        ...

    def records(self) -> Iterator[StoredBundle]:
        """Every stored bundle's metadata (for recovery after a restart)."""
        ...

    def mark_delivered(self, key: str, expiry_ms: int) -> None:
        """Remember that ``key`` was delivered locally, until ``expiry_ms``."""
        ...

    def is_delivered(self, key: str) -> bool:
        """True if ``key`` was delivered and its record has not been purged."""
        ...

    def delivered_among(self, keys: Iterable[str]) -> set[str]:
        """Those of ``keys`` for which :meth:`is_delivered` is true (one
        look for a batch of received bundles, not one each)."""
        ...

    def purge_delivered(self, now_ms: int) -> int:
        """Forget delivered keys whose expiry is before ``now_ms``; returns how many."""
        ...

    def close(self) -> None:
        """Release resources (files). The object is unusable afterwards."""
        ...


MAX_INT64 = (1 << 63) - 1
"""Largest time (ms) or node number a store keeps (SQLite integers are signed 64-bit)."""


def _check_room(record: StoredBundle, used: int, limit: int) -> None:
    if used + record.size_bytes > limit:
        raise StoreFull(
            needed_bytes=record.size_bytes, used_bytes=used, limit_bytes=limit
        )


Wire = bytes | memoryview | tuple[bytes, ...]
"""An encoded bundle for :meth:`BundleStore.put`: one buffer, or buffers in
order. A ``memoryview`` (a received frame still in a driver's read buffer)
is read only during the call: a store copies what it keeps of it."""


def wire_size(data: Wire) -> int:
    """The length of ``data`` (one buffer, or the sum of its buffers')."""
    return sum(map(len, data)) if isinstance(data, tuple) else len(data)


def _check_put(record: StoredBundle, data: Wire) -> None:
    n = wire_size(data)
    if record.size_bytes != n:
        raise InvalidArgument(f"record.size_bytes {record.size_bytes} != len(data) {n}")
    for name in ("expiry_ms", "received_ms", "prev_node"):
        v = getattr(record, name)
        if v is not None and not 0 <= v <= MAX_INT64:
            raise InvalidArgument(f"record.{name} must be in 0..2**63-1, got {v}")


class MemoryStore:
    """A :class:`BundleStore` in dictionaries (simulator, tests).

    ``limit_bytes`` bounds the bundle bytes held. Every operation is O(1)
    except :meth:`purge_delivered` (O(log n) per purged key).
    """

    def __init__(self, limit_bytes: int = 1 << 30) -> None:
        if limit_bytes < 0:
            raise InvalidArgument(f"limit_bytes must be >= 0, got {limit_bytes}")
        self._limit = limit_bytes
        self._used = 0
        self._data: dict[str, bytes] = {}
        self._meta: dict[str, StoredBundle] = {}
        self._delivered: dict[str, int] = {}
        self._delivered_heap: list[tuple[int, str]] = []
        self._services: dict[int, dict[str, bytes]] = {}

    @property
    def limit_bytes(self) -> int:
        """Maximum total bundle bytes accepted by :meth:`put`."""
        return self._limit

    @property
    def used_bytes(self) -> int:
        """Total bundle bytes held now."""
        return self._used

    def __len__(self) -> int:
        return len(self._meta)

    def __contains__(self, key: object) -> bool:
        return key in self._meta

    def transaction(self, *, durable: bool = True) -> AbstractContextManager[None]:
        """No-op grouping (memory writes are immediate and cannot be rolled back)."""
        # One shared, reusable no-op manager: two are opened per agent input.
        return _NO_TXN

    def put(
        self,
        record: StoredBundle,
        data: Wire,
        *,
        force: bool = False,
        write_later: bool = False,
    ) -> None:
        """See :meth:`BundleStore.put` (``write_later`` changes nothing here)."""
        _check_put(record, data)
        if record.key in self._meta:
            raise InvalidArgument(f"bundle {record.key!r} is already stored")
        if not force:
            _check_room(record, self._used, self._limit)
        self._meta[record.key] = record
        self._data[record.key] = (
            b"".join(data) if isinstance(data, tuple) else bytes(data)
        )
        self._used += record.size_bytes

    def get(self, key: str) -> bytes | None:
        """See :meth:`BundleStore.get`."""
        return self._data.get(key)

    def record(self, key: str) -> StoredBundle | None:
        """See :meth:`BundleStore.record`."""
        return self._meta.get(key)

    def set_state(self, key: str, state: BundleState) -> None:
        """See :meth:`BundleStore.set_state`."""
        rec = self._meta.get(key)
        if rec is not None and rec.state != state:
            self._meta[key] = replace(rec, state=state)

    def delete(self, key: str) -> bool:
        """See :meth:`BundleStore.delete`."""
        rec = self._meta.pop(key, None)
        if rec is None:
            return False
        del self._data[key]
        self._used -= rec.size_bytes
        return True

    def discard(self, key: str) -> None:
        """See :meth:`BundleStore.discard` (here: :meth:`delete`)."""
        self.delete(key)

    def records(self) -> Iterator[StoredBundle]:
        """See :meth:`BundleStore.records`."""
        return iter(list(self._meta.values()))

    def mark_delivered(self, key: str, expiry_ms: int) -> None:
        """See :meth:`BundleStore.mark_delivered`."""
        old = self._delivered.get(key)
        if old is None or expiry_ms > old:
            self._delivered[key] = expiry_ms
            heapq.heappush(self._delivered_heap, (expiry_ms, key))

    def is_delivered(self, key: str) -> bool:
        """See :meth:`BundleStore.is_delivered`."""
        return key in self._delivered

    def delivered_among(self, keys: Iterable[str]) -> set[str]:
        """See :meth:`BundleStore.delivered_among`."""
        delivered = self._delivered
        return {k for k in keys if k in delivered}

    def purge_delivered(self, now_ms: int) -> int:
        """See :meth:`BundleStore.purge_delivered`."""
        n = 0
        heap = self._delivered_heap
        while heap and heap[0][0] < now_ms:
            expiry, key = heapq.heappop(heap)
            if self._delivered.get(key) == expiry:  # else superseded by a later mark
                del self._delivered[key]
                n += 1
        return n

    @property
    def delivered_count(self) -> int:
        """How many delivered keys are remembered."""
        return len(self._delivered)

    # -- node services' durable state (dcis.dtn.node.state.StateBackend)

    def service_get(self, service: int, key: str) -> bytes | None:
        """Service ``service``'s value under ``key``, or None."""
        return self._services.get(service, {}).get(key)

    def service_put(self, service: int, key: str, value: bytes) -> None:
        """Set service ``service``'s ``key`` to ``value``."""
        self._services.setdefault(service, {})[key] = bytes(value)

    def service_delete(self, service: int, key: str) -> None:
        """Remove service ``service``'s ``key`` (no-op if absent)."""
        self._services.get(service, {}).pop(key, None)

    def service_keys(self, service: int, prefix: str = "") -> list[str]:
        """Service ``service``'s keys starting with ``prefix``, sorted."""
        return sorted(
            k for k in self._services.get(service, {}) if k.startswith(prefix)
        )

    def close(self) -> None:
        """Nothing to release."""


def __getattr__(name: str) -> Any:
    # For code written before SqliteStore moved to the edge (issue 11): the
    # core itself never imports it. Import it from dcis.dtn.storage.
    if name == "SqliteStore":
        from dcis.dtn.storage.sqlite_store import SqliteStore

        return SqliteStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
