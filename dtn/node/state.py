"""Services' durable key -> bytes state, staged per call (sans-I/O).

Theory of operation
-------------------
Each service on a node has a small map (``ctx.state``). The bytes live in a
:class:`StateBackend`: the node's bundle store (``SqliteStore`` keeps them in
a table of its own database, ``MemoryStore`` in a dict), or, in the
simulator, a :class:`MemoryStateBackend` that outlives a node's crash the
way a disk would.

A service's writes during one call are *staged* (:class:`StagedState`):
reads see them at once, but they reach the backend only when the call
returns normally (:meth:`StagedState.commit`, run by ``NodeCore`` inside the
store transaction that also holds the call's sends and the delivery
confirmation). A call that raises has its writes discarded, so a half-done
update never survives, with either store.

A commit that fails (the store raising: a disk error) *keeps* the writes it
was given: the service has already acted on them in memory, so they stay
staged -- reads see them, a later call's raise does not discard them -- and
the next commit writes them again with that call's own (``NodeCore``
retries it, spec/node.md "Failure containment").

A commit into a transaction that is not the outermost one only joins it:
with ``until_settled`` the writes are also remembered until that
transaction's fate is known (:meth:`StagedState.settle`). If it rolls
back, they are staged (and kept) again, under any newer ones, as after a
failed commit -- the service acted on them, the disk never had them.
"""

from __future__ import annotations

from typing import Protocol

from dcis.dtn.errors import InvalidArgument

__all__ = [
    "MAX_STATE_KEY_BYTES",
    "MAX_STATE_VALUE_BYTES",
    "MemoryStateBackend",
    "StagedState",
    "StateBackend",
]

MAX_STATE_KEY_BYTES = 1024
"""Longest key (UTF-8 bytes) a service may write."""
MAX_STATE_VALUE_BYTES = 16 << 20
"""Largest value a service may write (16 MiB): the map is meant to be small."""


class StateBackend(Protocol):
    """Where services' state lives: ``SqliteStore``, ``MemoryStore`` and
    :class:`MemoryStateBackend` implement it."""

    def service_get(self, service: int, key: str) -> bytes | None: ...

    def service_put(self, service: int, key: str, value: bytes) -> None: ...

    def service_delete(self, service: int, key: str) -> None: ...

    def service_keys(self, service: int, prefix: str = "") -> list[str]: ...


class MemoryStateBackend:
    """A :class:`StateBackend` in dicts: the simulator's "disk" for the
    service state of a node whose bundle store is in memory (it survives the
    node's crash; the bundles do not)."""

    def __init__(self) -> None:
        self._maps: dict[int, dict[str, bytes]] = {}

    def service_get(self, service: int, key: str) -> bytes | None:
        """Service ``service``'s value under ``key``, or None."""
        return self._maps.get(service, {}).get(key)

    def service_put(self, service: int, key: str, value: bytes) -> None:
        """Set service ``service``'s ``key`` to ``value``."""
        self._maps.setdefault(service, {})[key] = bytes(value)

    def service_delete(self, service: int, key: str) -> None:
        """Remove service ``service``'s ``key`` (no-op if absent)."""
        self._maps.get(service, {}).pop(key, None)

    def service_keys(self, service: int, prefix: str = "") -> list[str]:
        """Service ``service``'s keys starting with ``prefix``, sorted."""
        return sorted(k for k in self._maps.get(service, {}) if k.startswith(prefix))


_DELETED = None


class StagedState:
    """One service's ``ctx.state`` (a ``dcis.dtn.node.ServiceState``): reads go
    through to the backend, writes wait in a stage until :meth:`commit`.

    ``put`` raises :class:`InvalidArgument` for a key that is not a
    non-empty ``str`` of at most :data:`MAX_STATE_KEY_BYTES` bytes or a
    value that is not bytes or is over :data:`MAX_STATE_VALUE_BYTES`.
    """

    def __init__(self, backend: StateBackend, service: int) -> None:
        self._backend = backend
        self._service = service
        self._stage: dict[str, bytes | None] = {}
        # Writes of a commit that failed: still staged, never discarded.
        self._kept: dict[str, bytes | None] = {}
        # Writes committed into a transaction not settled yet.
        self._joined: dict[str, bytes | None] = {}

    def get(self, key: str) -> bytes | None:
        """The value under ``key`` (as this call left it), or None."""
        if key in self._stage:
            return self._stage[key]
        return self._backend.service_get(self._service, key)

    def put(self, key: str, value: bytes) -> None:
        """Set ``key`` to ``value`` (committed when the call returns)."""
        _check_key(key)
        if not isinstance(value, bytes | bytearray | memoryview):
            raise InvalidArgument(
                f"state value must be bytes, got {type(value).__name__}"
            )
        if len(value) > MAX_STATE_VALUE_BYTES:
            raise InvalidArgument(
                f"state value of {len(value)} bytes is over {MAX_STATE_VALUE_BYTES}"
            )
        self._stage[key] = bytes(value)

    def delete(self, key: str) -> None:
        """Remove ``key`` (committed when the call returns)."""
        _check_key(key)
        self._stage[key] = _DELETED

    def keys(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix``, sorted (as this call left them)."""
        found = set(self._backend.service_keys(self._service, prefix))
        for k, v in self._stage.items():
            if k.startswith(prefix):
                if v is None:
                    found.discard(k)
                else:
                    found.add(k)
        return sorted(found)

    @property
    def dirty(self) -> bool:
        """True if writes wait to be committed."""
        return bool(self._stage)

    @property
    def kept(self) -> bool:
        """True if the writes of a failed commit wait to be written again."""
        return bool(self._kept)

    def commit(self, *, until_settled: bool = False) -> None:
        """Write the staged changes to the backend (call inside the store
        transaction of the call that made them). When the backend raises,
        every change stays staged (and kept: :meth:`discard` leaves it),
        to be written by the next commit, and the exception propagates.
        ``until_settled``: the transaction may still roll back; the
        changes are remembered until :meth:`settle`."""
        stage, self._stage = self._stage, {}
        try:
            for k, v in stage.items():
                if v is None:
                    self._backend.service_delete(self._service, k)
                else:
                    self._backend.service_put(self._service, k, v)
        except BaseException:
            # (A settle(False) the failure caused may have staged joined
            # writes meanwhile: older than these.)
            self._stage = {**self._stage, **stage}
            self._kept = dict(self._stage)
            raise
        if self._kept:
            self._kept = {}
        if until_settled:
            self._joined.update(stage)

    def settle(self, committed: bool) -> None:
        """The transaction the ``until_settled`` commits joined has
        committed, or not: then their changes are staged and kept again,
        under the newer ones, to be written by the next commit."""
        joined, self._joined = self._joined, {}
        if not committed and joined:
            self._stage = {**joined, **self._stage}
            self._kept = {**joined, **self._kept}

    def discard(self) -> None:
        """Forget the staged changes of the call that failed (the writes of
        a failed commit, :attr:`kept`, stay)."""
        if self._kept:
            self._stage = dict(self._kept)
        else:
            self._stage.clear()


def _check_key(key: str) -> None:
    if not key:
        raise InvalidArgument(f"state key must be a non-empty str, got {key!r}")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_STATE_KEY_BYTES:
        raise InvalidArgument(f"state key is over {MAX_STATE_KEY_BYTES} bytes")
