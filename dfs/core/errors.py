"""The object store's exceptions (STYLE.md §4: local and remote errors apart).

- :class:`InvalidArgument` -- our caller's mistake (also a ``ValueError``).
- :class:`DecodeError` -- bytes from a peer, the log or the disk are malformed.
- :class:`NotFound` -- no object by that name (or it was deleted).
- :class:`PlacementError` -- fewer than n eligible nodes for a put or repair.
- :class:`Unrecoverable` -- fewer than k good shares could be had.
- :class:`StoreFull` -- the local share store has no room.
"""

from __future__ import annotations


class DfsError(Exception):
    """Base of every object store error."""


class InvalidArgument(DfsError, ValueError):
    """A caller passed a bad value (k, n, name, size...)."""


class DecodeError(DfsError):
    """Bytes from a peer, the log or the disk do not parse or do not verify."""


class NotFound(DfsError, KeyError):
    """No live object has that name."""

    # A KeyError's str() is the repr of its argument ("'big'"); an operator
    # reads the message as written.
    __str__ = Exception.__str__


class PlacementError(DfsError):
    """Not enough eligible distinct nodes to place the shares on."""


class Unrecoverable(DfsError):
    """Fewer than k shares of some chunk could be fetched and verified."""


class StoreFull(DfsError):
    """The share store is at its configured capacity."""


class CorruptBlock(DfsError):
    """A stored block failed its checksum when read back."""
