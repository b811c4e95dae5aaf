"""A small generic CBOR (RFC 8949) value codec for the log's wire format and
its durable records: unsigned integers, byte and text strings, arrays,
``null`` and booleans, nothing else.

Theory of operation: :func:`dumps` writes the shortest (canonical) heads, so
one value has one encoding (the state hash depends on it).
:func:`loads_untrusted` reads a whole buffer with a depth bound and an item
bound checked before anything is allocated, and raises only
:class:`~dcis.dtn.errors.DecodeError`.
"""

from __future__ import annotations

from typing import Final

from dcis.dtn.bpv7.cbor import head, read_head
from dcis.dtn.errors import DecodeError

Value = int | bytes | str | bool | None | list["Value"]
"""What :func:`dumps` takes and :func:`loads_untrusted` returns."""

MAX_DEPTH: Final = 12
MAX_ITEMS: Final = 1_000_000

_FALSE: Final = b"\xf4"
_TRUE: Final = b"\xf5"
_NULL: Final = b"\xf6"


def dumps(value: Value) -> bytes:
    """Canonical CBOR bytes of ``value`` (integers must be >= 0)."""
    out: list[bytes] = []
    _dump(value, out)
    return b"".join(out)


def _dump(value: Value, out: list[bytes]) -> None:
    if value is None:
        out.append(_NULL)
    elif value is True:
        out.append(_TRUE)
    elif value is False:
        out.append(_FALSE)
    elif isinstance(value, int):
        if value < 0:
            raise ValueError(f"negative integer {value} not encodable here")
        out.append(head(0, value))
    elif isinstance(value, bytes):
        out.append(head(2, len(value)))
        out.append(value)
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        out.append(head(3, len(raw)))
        out.append(raw)
    else:
        out.append(head(4, len(value)))
        for item in value:
            _dump(item, out)


def loads_untrusted(data: bytes, where: str = "log message") -> Value:
    """Decode one CBOR value filling all of ``data``; :class:`DecodeError` on
    anything malformed, unsupported, too deep or with trailing bytes."""
    budget = [MAX_ITEMS]
    value, pos = _load(data, 0, len(data), 0, budget, where)
    if pos != len(data):
        raise DecodeError(f"{len(data) - pos} trailing bytes", where=where)
    return value


def _load(
    buf: bytes, pos: int, end: int, depth: int, budget: list[int], where: str
) -> tuple[Value, int]:
    if depth > MAX_DEPTH:
        raise DecodeError("nested too deep", where=where)
    budget[0] -= 1
    if budget[0] < 0:
        raise DecodeError("too many items", where=where)
    major, arg, pos = read_head(buf, pos, end, where)
    if arg < 0:
        raise DecodeError("indefinite lengths not allowed", where=where)
    if major == 0:
        return arg, pos
    if major in (2, 3):
        if arg > end - pos:
            raise DecodeError("string longer than the input", where=where)
        raw = buf[pos : pos + arg]
        if major == 2:
            return bytes(raw), pos + arg
        try:
            return raw.decode("utf-8"), pos + arg
        except UnicodeDecodeError as exc:
            raise DecodeError("text is not UTF-8", where=where) from exc
    if major == 4:
        if arg > end - pos:  # every item takes at least one byte
            raise DecodeError("array longer than the input", where=where)
        items: list[Value] = []
        for _ in range(arg):
            item, pos = _load(buf, pos, end, depth + 1, budget, where)
            items.append(item)
        return items, pos
    if major == 7 and arg in (20, 21, 22) and buf[pos - 1] in (0xF4, 0xF5, 0xF6):
        return (False, True, None)[arg - 20], pos
    raise DecodeError(f"unsupported CBOR major type {major}", where=where)
