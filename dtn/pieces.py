"""Bytes kept as the pieces they arrived in, joined once at the end.

Theory of operation: a reader that gathers a large value (an MTCP frame, an
app API payload) keeps each piece of at least :data:`MIN_PIECE` bytes as it
came -- a ``bytes`` object as it is, a view copied once -- and joins shorter
ones into a small buffer as they arrive, so that a peer trickling bytes
cannot make it hold one Python object per byte: the memory held stays close
to :attr:`Pieces.held`, the bytes received, never an announced length. A
value that came as one ``bytes`` piece is returned without a copy.
"""

from __future__ import annotations

__all__ = ["MIN_PIECE", "Pieces"]

MIN_PIECE = 4096
"""Pieces shorter than this are joined into a small buffer as they arrive."""


class Pieces:
    """The pieces of one value in progress and their total length."""

    __slots__ = ("_parts", "held")

    def __init__(self) -> None:
        self._parts: list[bytes | bytearray] = []
        self.held = 0

    def add(self, data: bytes | memoryview) -> None:
        """Keep ``data``, the next bytes of the value: ``bytes`` of at least
        :data:`MIN_PIECE` as it is, anything else copied."""
        parts = self._parts
        n = len(data)
        self.held += n
        if n >= MIN_PIECE:
            parts.append(data if type(data) is bytes else bytes(data))
        elif parts and type(parts[-1]) is bytearray and len(parts[-1]) < MIN_PIECE:
            parts[-1] += data
        else:
            parts.append(bytearray(data))

    def join(self) -> bytes:
        """The value as one ``bytes`` (the one piece itself if it came whole);
        the pieces are then empty."""
        parts, self._parts = self._parts, []
        self.held = 0
        if len(parts) == 1 and type(parts[0]) is bytes:
            return parts[0]
        return b"".join(parts)
