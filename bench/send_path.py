"""The send path of a stored bundle, alone: from the decoded bundle a node
holds to the socket, as node 1 forwards it over MTCP or UDP -- for telling
its CPU per bundle apart from the rest of the four-process pipeline, which
swings 2-3x with the machine's load (spec/performance.md, "Fifth round").

For each size it times, in one process and one run, alternating:

- ``joined``: ``update_for_forwarding``, ``encode_bundle`` (one buffer,
  the payload copied into it), then the MTCP frame head and the bundle in
  one gathered ``sendmsg`` (UDP: ``encode_data_segment`` joined, ``sendto``)
  -- the path before the fifth round;
- ``parts``: ``update_for_forwarding``, ``encode_bundle_parts`` (the payload
  block's data object passed as it is), gathered ``sendmsg`` (UDP:
  ``encode_data_segment_parts``, ``sendmsg`` to the address);
- ``now``: as ``parts``, the payload block's CRC field read from the
  stored bytes (``stored_payload_crc``, done when the agent stores the
  bundle, so not timed here) -- the path now;

into a loopback TCP connection (or UDP socket) drained by a child process,
and prints the sending thread's user and system CPU microseconds per
bundle (``getrusage``), best of ``--repeats``. glibc's malloc is pinned as
``dtn-node`` pins it (mmap threshold 1 MiB, trim threshold 16 MiB), so a
1 MB copy lands in reused heap, as in the daemon.

    .venv/bin/python bench/send_path.py
    .venv/bin/python bench/send_path.py --cl udp --sizes 1000,64000
"""

from __future__ import annotations

import argparse
import ctypes
import multiprocessing
import os
import resource
import socket
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dcis.dtn.bpv7.bundle import (
    Bundle,
    encode_bundle,
    encode_bundle_parts,
    make_bundle,
    stored_payload_crc,
)
from dcis.dtn.bpv7.eid import IpnEid
from dcis.dtn.bpv7.processing import update_for_forwarding
from dcis.dtn.cl.mtcp import bstr_head
from dcis.dtn.cl.udp import encode_data_segment, encode_data_segment_parts

_ME = IpnEid(1, 0)
# The payload CRC field each bundle's stored bytes carry (the agent reads
# it when it stores the bundle: entries.store_new), by payload block.
_CRC: dict[int, bytes | None] = {}


def _drain_tcp(port: int) -> None:
    s = socket.create_connection(("127.0.0.1", port))
    buf = bytearray(1 << 20)
    while s.recv_into(buf):
        pass


def _drain_udp(sock: socket.socket) -> None:
    buf = bytearray(1 << 17)
    while True:
        n = sock.recv_into(buf)
        if n == 1 and buf[0] == 0:
            return


def _send_all(sock: socket.socket, parts: list[bytes | memoryview]) -> None:
    while parts:
        n = sock.sendmsg(parts)
        while n:
            if n >= len(parts[0]):
                n -= len(parts[0])
                parts.pop(0)
            else:
                parts[0] = memoryview(parts[0])[n:]
                n = 0


def _mtcp_joined(sock: socket.socket, b: Bundle) -> None:
    wire = encode_bundle(update_for_forwarding(b, node=_ME, dwell_ms=3))
    _send_all(sock, [bstr_head(len(wire)), wire])


def _mtcp_parts(sock: socket.socket, b: Bundle) -> None:
    parts = encode_bundle_parts(update_for_forwarding(b, node=_ME, dwell_ms=3))
    _send_all(sock, [bstr_head(sum(map(len, parts))), *parts])


def _mtcp_stored_crc(sock: socket.socket, b: Bundle) -> None:
    out = update_for_forwarding(b, node=_ME, dwell_ms=3)
    parts = encode_bundle_parts(out, payload_crc=_CRC.get(id(b.blocks[-1])))
    _send_all(sock, [bstr_head(sum(map(len, parts))), *parts])


def _udp_joined(sock: socket.socket, b: Bundle) -> None:
    wire = encode_bundle(update_for_forwarding(b, node=_ME, dwell_ms=3))
    sock.send(encode_data_segment(sender=1, token=2**63 + 5, bundle=wire))


def _udp_parts(sock: socket.socket, b: Bundle) -> None:
    parts = encode_bundle_parts(update_for_forwarding(b, node=_ME, dwell_ms=3))
    sock.sendmsg(encode_data_segment_parts(sender=1, token=2**63 + 5, bundle=parts))


def _udp_stored_crc(sock: socket.socket, b: Bundle) -> None:
    out = update_for_forwarding(b, node=_ME, dwell_ms=3)
    parts = encode_bundle_parts(out, payload_crc=_CRC.get(id(b.blocks[-1])))
    sock.sendmsg(encode_data_segment_parts(sender=1, token=2**63 + 5, bundle=parts))


def _cpu_us(
    fn: Callable[[socket.socket, Bundle], None],
    sock: socket.socket,
    bundles: list[Bundle],
) -> tuple[float, float]:
    r0 = resource.getrusage(resource.RUSAGE_THREAD)
    for b in bundles:
        fn(sock, b)
    r1 = resource.getrusage(resource.RUSAGE_THREAD)
    n = len(bundles)
    return (r1.ru_utime - r0.ru_utime) / n * 1e6, (r1.ru_stime - r0.ru_stime) / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cl", default="mtcp", choices=("mtcp", "udp"))
    ap.add_argument("--sizes", default="1000,64000,1000000")
    ap.add_argument(
        "--bundles-mb",
        type=float,
        default=300.0,
        help="MB sent per timing (at most 20,000 bundles)",
    )
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD, as dtn-node
        libc.mallopt(-1, 16 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass
    if args.cl == "mtcp":
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        child = multiprocessing.Process(target=_drain_tcp, args=(srv.getsockname()[1],))
        child.start()
        sock, _ = srv.accept()
        ways = {"joined": _mtcp_joined, "parts": _mtcp_parts, "now": _mtcp_stored_crc}
    else:
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        rx.bind(("127.0.0.1", 0))
        child = multiprocessing.Process(target=_drain_udp, args=(rx,))
        child.start()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(rx.getsockname())
        ways = {"joined": _udp_joined, "parts": _udp_parts, "now": _udp_stored_crc}
    print(
        f"{args.cl}: sending thread CPU us per bundle (user + sys), best of"
        f" {args.repeats}; joined = before, parts = payload not copied,"
        " now = parts + the stored payload CRC"
    )
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            n = min(20_000, max(200, int(args.bundles_mb * 1e6 / max(size, 1))))
            # Distinct payloads, as a node forwards distinct bundles (not one hot in cache).
            bundles = [
                make_bundle(
                    source="ipn:1.1",
                    destination="ipn:2.1",
                    payload=os.urandom(size),
                    creation_ms=1_000_000,
                    sequence=i,
                    hop_limit=64,
                )
                for i in range(16)
            ]
            _CRC.clear()
            for b in bundles:
                crc = stored_payload_crc(b.blocks[-1], encode_bundle(b))
                _CRC[id(b.blocks[-1])] = crc
            seq = [bundles[i % 16] for i in range(n)]
            best: dict[str, tuple[float, float]] = {}
            for _ in range(args.repeats):
                for name, fn in ways.items():
                    u, s = _cpu_us(fn, sock, seq)
                    if name not in best or u + s < sum(best[name]):
                        best[name] = (u, s)
            j = sum(best["joined"])
            print(
                f"  {size:>9,} B x {n:>6}: "
                + "   ".join(
                    f"{k} {sum(v):7.1f} ({sum(v) / j - 1:+.0%})"
                    for k, v in best.items()
                )
            )
    finally:
        if args.cl == "mtcp":
            sock.close()
        else:
            sock.send(b"\0")
        child.join(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
