"""CPU per large app API message read by a client: the plain ``MessageReader``
(frame buffered whole, copied out, payload copied again by cbor2) against
``PushReader`` (the payload streamed into one preallocated buffer), same
process, same run -- and, with ``--pinned``, under the malloc settings
``dtn-node`` uses (mmap threshold 1 MiB; trim threshold 128 KiB, glibc's
default once the mmap threshold is pinned, or ``--trim`` bytes).

    .venv/bin/python bench/reader_copies.py
    .venv/bin/python bench/reader_copies.py --pinned
    .venv/bin/python bench/reader_copies.py --pinned --trim 16777216

Prints microseconds of CPU per 1 MB message for reads of 2 MiB, 1 MiB and
64 KiB. Allocation patterns make the plain reader's figure jump between
runs (fresh 1 MB blocks handed back to the kernel and faulted in again);
run it a few times.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pinned", action="store_true", help="mmap threshold at 1 MiB")
    ap.add_argument(
        "--trim", type=int, default=0, help="M_TRIM_THRESHOLD (with --pinned)"
    )
    ap.add_argument("--messages", type=int, default=200)
    args = ap.parse_args()
    if args.pinned:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)
        if args.trim:
            libc.mallopt(-1, args.trim)
    from dcis.dtn.appapi.wire import MessageReader, encode_message
    from dcis.dtn.client.push_reader import PushReader

    msg = {
        "type": "bundle",
        "endpoint": "ipn:2.1",
        "source": "ipn:1.1",
        "payload": os.urandom(1_000_000),
        "creation_ms": 1,
        "sequence": 2,
        "bundle_key": "ipn:1.1/1/2",
    }
    stream = encode_message(msg) * 2
    readers: list[tuple[str, Callable[[], Any]]] = [
        ("MessageReader", MessageReader),
        ("PushReader", PushReader),
    ]
    for size in (1 << 21, 1 << 20, 1 << 16):
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        for name, make in readers:
            t0 = time.process_time()
            for _ in range(args.messages // 2):
                r = make()
                for c in chunks:
                    r.feed(c)
            us = (time.process_time() - t0) / args.messages * 1e6
            print(f"{name:14s} reads of {size:8d} B: {us:8.1f} us CPU per 1 MB message")
    return 0


if __name__ == "__main__":
    sys.exit(main())
