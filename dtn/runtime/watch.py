"""Noticing that a file changed, by polling ``os.stat``.

One stamp serves every watcher (the daemon's plan, the emulator's plan, the
key store): a file replaced by rename gets a new inode, so a same-size
rewrite within the file system's mtime granularity is still seen.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

Stamp = tuple[int, int, int]
"""(inode, mtime_ns, size) of a file."""


def file_stamp(path: str | os.PathLike[str]) -> Stamp | None:
    """``path``'s (inode, mtime_ns, size), or None when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def files_stamp(
    paths: Iterable[str | os.PathLike[str]],
) -> tuple[tuple[str, int, int, int], ...]:
    """(path, inode, mtime_ns, size) of each of ``paths`` that exists, in order."""
    out = []
    for p in paths:
        s = file_stamp(p)
        if s is not None:
            out.append((os.fspath(p), *s))
    return tuple(out)
