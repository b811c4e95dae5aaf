"""Bundles in LTP blocks, both ways (RFC 7122 section 3; ION and HDTN practice).

Theory of operation
-------------------
The Bundle Protocol is LTP client service 1. A block carries one or more
whole BPv7 bundles back to back: ION puts several in a block by default,
HDTN accepts exactly one. Each bundle is an indefinite-length CBOR array
(first byte ``0x9F``, RFC 9171 section 4.1) ending with a ``0xFF`` break, so
the block is cut by walking the CBOR items without decoding them: a head
names each item's length; the walk never allocates more than the item list
it returns, and gives up at :data:`MAX_DEPTH` nesting or on a truncated item.
The agent decodes (and checks) each bundle afterwards.
"""

from __future__ import annotations

from dcis.dtn.errors import DecodeError

MAX_DEPTH = 32
"""Deepest CBOR nesting the walk follows (a bundle needs four)."""


def aggregate(bundles: list[bytes]) -> bytes:
    """One block carrying ``bundles`` back to back."""
    return b"".join(bundles)


def _head(data: bytes, pos: int) -> tuple[int, int, int | None, int]:
    """(major, info, argument or None for indefinite, next position)."""
    if pos >= len(data):
        raise DecodeError("truncated CBOR item", where="ltp block")
    ib = data[pos]
    major, info = ib >> 5, ib & 0x1F
    pos += 1
    if info < 24:
        return major, info, info, pos
    if info <= 27:
        n = 1 << (info - 24)
        if pos + n > len(data):
            raise DecodeError("truncated CBOR head", where="ltp block")
        return major, info, int.from_bytes(data[pos : pos + n], "big"), pos + n
    if info == 31 and major in (2, 3, 4, 5, 7):
        return major, info, None, pos
    raise DecodeError(f"reserved CBOR additional info {info}", where="ltp block")


def _skip(data: bytes, pos: int) -> int:
    """Position just past the CBOR item at ``pos``."""
    # Stack of items still to skip in each open container: an int count, or
    # None for an indefinite one (ended by a break).
    stack: list[int | None] = [1]
    while stack:
        top = stack[-1]
        if top == 0:
            stack.pop()
            continue
        major, info, arg, pos = _head(data, pos)
        if major == 7 and info == 31:
            if top is not None:
                raise DecodeError(
                    "break inside a definite container", where="ltp block"
                )
            stack.pop()
            continue
        if top is not None:
            stack[-1] = top - 1
        if major in (2, 3):
            if arg is None:  # indefinite string: chunks until a break
                stack.append(None)
            else:
                if arg > len(data) - pos:
                    raise DecodeError("string runs past the block", where="ltp block")
                pos += arg
        elif major in (4, 5):
            n = None if arg is None else arg * (2 if major == 5 else 1)
            if n is not None and n > len(data) - pos:
                raise DecodeError("container longer than the block", where="ltp block")
            stack.append(n)
        elif major == 6:
            stack.append(1)  # a tag wraps one item
        if len(stack) > MAX_DEPTH:
            raise DecodeError("CBOR nested too deeply", where="ltp block")
    return pos


def split_block_untrusted(
    block: bytes, *, max_bundles: int = 65_536
) -> tuple[list[bytes], DecodeError | None]:
    """Cut a received block into its bundles.

    Returns the bundles found and, if the block did not end cleanly after
    them (a malformed or truncated bundle, something that is not a bundle,
    more than ``max_bundles``), the :class:`DecodeError` that stopped the walk.
    Never raises for the peer's bytes.
    """
    out: list[bytes] = []
    pos = 0
    while pos < len(block):
        if len(out) >= max_bundles:
            return out, DecodeError(
                f"more than {max_bundles} bundles", where="ltp block"
            )
        if block[pos] != 0x9F:
            return out, DecodeError(
                f"byte 0x{block[pos]:02x} at {pos} does not start a bundle",
                where="ltp block",
            )
        try:
            end = _skip(block, pos)
        except DecodeError as exc:
            return out, exc
        out.append(block[pos:end])
        pos = end
    return out, None
