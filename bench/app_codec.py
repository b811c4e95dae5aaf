"""CPU per message of the app API and MTCP codecs on the daemon pair's path,
without the daemons: what one process spends per bundle on framing, for the
1 KB and 64 KB rows of ``bench/large_goodput.py`` (spec/performance.md,
"Fourth round: the 64 KB path outside the store").

Four steps, each timed alone (best of ``--repeats``, microseconds per
message):

- ``client send encode``: the trio client framing a ``send`` request
  (``encode_message_parts``, payloads of 16 KiB or more by reference);
- ``node app read``: the node's app reader (``MessageReader.feed``) over a
  stream of those requests, cut into reads of ``--read`` bytes that land in
  one reused 1 MiB buffer, as ``Node._read_into`` does;
- ``node mtcp read``: ``MtcpDecoder.feed`` over a stream of MTCP frames of
  bundles of that size, cut the same way;
- ``client push read``: the trio client's ``PushReader`` over a stream of
  pushed ``bundle`` messages, cut the same way.

Run with another tree's Python to measure that tree::

    .venv/bin/python bench/app_codec.py
    /work/main/.venv/bin/python bench/app_codec.py
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dcis.dtn.appapi.wire import (
    MessageReader,
    encode_bundle_message_parts,
    encode_message_parts,
)
from dcis.dtn.cl.mtcp import MtcpDecoder, encode_mtcp_frame
from dcis.dtn.client.common import send_request
from dcis.dtn.client.push_reader import PushReader


def _cuts(total: int, read: int, rng: random.Random) -> list[int]:
    """Read boundaries: reads of ``read`` bytes +-50%, like a stream socket's."""
    out, pos = [], 0
    while pos < total:
        pos = min(total, pos + rng.randint(read // 2, read + read // 2))
        out.append(pos)
    return out


def _feed_all(
    stream: bytes, cuts: list[int], feed: Callable[[memoryview], list[object]]
) -> int:
    # The copy into the read buffer stands for the kernel's (it is counted
    # in every figure alike).
    buf = memoryview(bytearray(1 << 20))
    src = memoryview(stream)
    n, prev = 0, 0
    for c in cuts:
        k = c - prev
        buf[:k] = src[prev:c]
        n += len(feed(buf[:k]))
        prev = c
    return n


def _best(fn: Callable[[], object], count: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best / count * 1e6


def _row(size: int, count: int, read: int, repeats: int, rng: random.Random) -> str:
    """One size's figures, as a printed line."""
    payload = os.urandom(size)

    def request(i: int) -> dict[str, object]:
        m = send_request("ipn:2.1", payload, "ipn:1.1", 3_600_000)
        m["id"] = i + 1
        return m

    reqs = [request(i) for i in range(count)]
    enc = _best(
        lambda: [encode_message_parts(m, large=16 * 1024) for m in reqs],
        count,
        repeats,
    )
    app_stream = b"".join(b"".join(encode_message_parts(m)) for m in reqs)
    app_cuts = _cuts(len(app_stream), min(read, 1 << 19), rng)

    def app_read() -> None:
        r = MessageReader(max_message_bytes=1 << 24)
        assert _feed_all(app_stream, app_cuts, r.feed) == count

    mtcp_stream = encode_mtcp_frame(os.urandom(size + 200)) * count
    mtcp_cuts = _cuts(len(mtcp_stream), min(read, 1 << 19), rng)

    def mtcp_read() -> None:
        d = MtcpDecoder()
        assert _feed_all(mtcp_stream, mtcp_cuts, d.feed) == count

    push = b"".join(
        b"".join(
            encode_bundle_message_parts(
                endpoint="ipn:2.1",
                source="ipn:1.1",
                payload=payload,
                creation_ms=800_000_000_000 + i,
                sequence=i,
                bundle_key=f"ipn:1.1|{800_000_000_000 + i}|{i}",
            )
        )
        for i in range(count)
    )
    push_cuts = _cuts(len(push), min(read, 1 << 19), rng)

    def push_read() -> None:
        r = PushReader()
        assert _feed_all(push, push_cuts, r.feed) == count

    return (
        f"{size:>7} B: client send encode {enc:6.2f} us"
        f"  node app read {_best(app_read, count, repeats):6.2f} us"
        f"  node mtcp read {_best(mtcp_read, count, repeats):6.2f} us"
        f"  client push read {_best(push_read, count, repeats):6.2f} us"
        "  (CPU per message, best of"
        f" {repeats})"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,64000")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--read", type=int, default=200_000, help="mean read size (bytes)")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(1)
    for size in (int(x) for x in args.sizes.split(",")):
        print(_row(size, args.count, args.read, args.repeats, rng))
    return 0


if __name__ == "__main__":
    sys.exit(main())
