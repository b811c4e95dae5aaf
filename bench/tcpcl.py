"""TCPCLv4 session machine throughput, sans-I/O, next to a plain copy of the same bytes.

Two :class:`~dcis.dtn.cl.tcpcl4.session.Session` objects (active and passive)
joined back to back in memory move ``--count`` bundles of ``--size`` bytes
(segments of ``--segment`` bytes): every byte is encoded into XFER_SEGMENTs,
parsed, reassembled, acknowledged (cumulative XFER_ACKs, the final one held
and released as a store would) and the acknowledgements parsed. Prints MB/s
and bundles/s (median of ``--repeats``) and, as the reference measured in the
same run, MB/s of ``bytes(bytearray(...))`` over the same volume in the same
chunks (the floor any Python CL pays to move bytes). No sockets: the TCP and
TLS cost of the driver are not included.

    .venv/bin/python bench/tcpcl.py [--count 200] [--size 65536] [--segment 1048576] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dcis.dtn.cl.tcpcl4.session import (
    BundleReceived,
    Session,
    SessionConfig,
    TransferAcked,
)


def run_once(count: int, size: int, segment: int) -> float:
    a = Session(
        SessionConfig(node_id="ipn:1.0", max_segment_bytes=segment), active=True
    )
    p = Session(
        SessionConfig(node_id="ipn:2.0", segment_mru=max(segment, 1 << 20)),
        active=False,
    )
    a.start(0)
    p.start(0)
    for _ in range(4):  # contact headers and SESS_INITs
        p.receive_data(a.data_to_send(), 0)
        a.receive_data(p.data_to_send(), 0)
    assert a.established
    assert p.established
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    acked = 0
    sent = 0
    t0 = time.perf_counter()
    while acked < count:
        while sent < count and a.in_flight < 512:
            a.send_bundle(payload, 0)
            sent += 1
        data = a.data_to_send(1 << 20)
        for ev in p.receive_data(data, 0):
            if isinstance(ev, BundleReceived):
                p.ack_transfer(ev.transfer_id, 0)
        for ev in a.receive_data(p.data_to_send(1 << 22), 0):
            if isinstance(ev, TransferAcked):
                acked += 1
    return time.perf_counter() - t0


def copy_once(count: int, size: int, segment: int) -> float:
    payload = bytes(size)
    t0 = time.perf_counter()
    for _ in range(count):
        buf = bytearray()
        for i in range(0, size, segment):
            buf += payload[i : i + segment]
        bytes(buf)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--size", type=int, default=65536)
    ap.add_argument("--segment", type=int, default=1 << 20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    mb = args.count * args.size / 1e6
    t = statistics.median(
        run_once(args.count, args.size, args.segment) for _ in range(args.repeats)
    )
    r = statistics.median(
        copy_once(args.count, args.size, args.segment) for _ in range(args.repeats)
    )
    print(f"bundles: {args.count} x {args.size} B, segments of {args.segment} B")
    print(f"tcpcl4 session pair: {mb / t:8.1f} MB/s  {args.count / t:10.0f} bundles/s")
    print(f"reference (copy):    {mb / r:8.1f} MB/s")
    print(f"ratio: {r / t:.2f} of the copy rate")


if __name__ == "__main__":
    main()
