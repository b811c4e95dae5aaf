"""The dtn package's exception tree (one per package, local and remote apart).

- :class:`InvalidArgument` -- our caller's mistake (a bad value passed to a
  constructor or function). Also a :class:`ValueError`.
- :class:`DecodeError` -- bytes from a peer (or a file) are malformed. Every
  ``*_untrusted`` function raises only this. It names *what* and *where*.
- :class:`ProtocolViolation` -- well-formed, but not allowed in this state.
"""

from __future__ import annotations


class DtnError(Exception):
    """Base of every error the dtn package raises on purpose."""


class InvalidArgument(DtnError, ValueError):
    """A caller passed a value that is not allowed (local error)."""


class DecodeError(DtnError):
    """Untrusted bytes could not be decoded (remote error).

    ``where`` names the place, e.g. ``"block 2 (type 7), field crc"``; it is
    part of the message so that a log line alone tells the story.
    """

    def __init__(self, what: str, *, where: str | None = None) -> None:
        self.what = what
        self.where = where
        super().__init__(f"{where}: {what}" if where else what)


class ProtocolViolation(DtnError):
    """Well-formed input that is illegal in the current state."""
