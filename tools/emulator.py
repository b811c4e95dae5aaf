"""The link emulator: a UDP relay that makes loopback behave like the contact plan.

Kernel netem is not available on our test machines, so the testbed puts this
relay between every pair of daemons. For each directed plan link a->b it opens
one UDP socket, ``port(a, b)``; node a is configured to reach b at that port.
A datagram arriving there is forwarded to b's real address

- only while the plan has a contact a->b open (at arrival, plan time);
- after the one-way light time of the plan's range a->b (0 without one);
- unless dropped with probability ``loss`` (a seeded ``random.Random``);
- unless the contact's rate is exceeded (token bucket of one second of the
  rate, at least 64 KiB): an over-rate datagram is dropped, as a radio would.

It is sent from ``port(b, a)``, the address b uses for a, so b recognises
its neighbour by source address and its replies (ACKs) take the reverse link
through the relay, subject to the reverse contact. ``python -m tools.emulator``
runs it standalone (see ``--help``); the testbed runs it in-process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import trio

from dtn.cl.udp import Pacer
from dtn.routing.contact import Contact
from dtn.routing.plan import ContactPlan


@dataclass(slots=True)
class LinkStats:
    """What happened on one directed link."""

    forwarded: int = 0
    dropped_down: int = 0
    dropped_loss: int = 0
    dropped_rate: int = 0
    bytes_forwarded: int = 0


class LinkModel:
    """The emulator's decisions (no I/O): ``decide(frm, to, size, at_s)``
    returns the delay in seconds, or None to drop. ``at_s`` is plan time."""

    def __init__(
        self, plan: ContactPlan, *, loss: float = 0.0, rng: random.Random | None = None
    ) -> None:
        if not 0.0 <= loss <= 1.0:
            raise ValueError(f"loss must be in [0, 1], got {loss}")
        self.plan = plan
        self.loss = loss
        self.rng = rng if rng is not None else random.Random(0)
        self._contacts: dict[tuple[int, int], list[Contact]] = {}
        for c in plan.contacts:
            self._contacts.setdefault((c.frm, c.to), []).append(c)
        for cs in self._contacts.values():
            cs.sort(key=lambda c: c.start_s)
        # Per link: the contact its token bucket belongs to (a new contact
        # starts with a full bucket), and the bucket.
        self._buckets: dict[tuple[int, int], tuple[Contact, Pacer]] = {}
        self.stats: dict[tuple[int, int], LinkStats] = {
            k: LinkStats() for k in self._contacts
        }

    @property
    def links(self) -> list[tuple[int, int]]:
        """Directed pairs with at least one contact."""
        return sorted(self._contacts)

    def contact_at(self, frm: int, to: int, at_s: float) -> Contact | None:
        """The contact frm->to open at plan time ``at_s``, if any."""
        for c in self._contacts.get((frm, to), ()):
            if c.start_s <= at_s < c.end_s:
                return c
        return None

    def decide(self, frm: int, to: int, size: int, at_s: float) -> float | None:
        """Delay (s) for a datagram of ``size`` bytes sent frm->to at ``at_s``, or None (dropped)."""
        st = self.stats.setdefault((frm, to), LinkStats())
        c = self.contact_at(frm, to, at_s)
        if c is None:
            st.dropped_down += 1
            return None
        if self.loss and self.rng.random() < self.loss:
            st.dropped_loss += 1
            return None
        bucket = self._buckets.get((frm, to))
        if bucket is None or bucket[0] is not c:
            # One second of the rate, at least 64 KiB (Pacer is unlimited for
            # a zero or infinite rate).
            pacer = Pacer(c.rate_bytes_s, burst_bytes=max(c.rate_bytes_s, 65_536.0))
            bucket = self._buckets[(frm, to)] = (c, pacer)
        # Over the rate: a radio drops what it cannot send; it never waits.
        if bucket[1].delay_s(size, at_s) > 0:
            st.dropped_rate += 1
            return None
        st.forwarded += 1
        st.bytes_forwarded += size
        return self.plan.owlt_s(frm, to, at_s)

    def totals(self) -> dict[str, int]:
        """Sums of :class:`LinkStats` over all links."""
        out = asdict(LinkStats())
        for s in self.stats.values():
            for k, v in asdict(s).items():
                out[k] += v
        return out


@dataclass(slots=True)
class Emulator:
    """The relay's sockets around a :class:`LinkModel`.

    ``node_addrs`` maps node -> its real UDP address. ``epoch_unix_s`` is the
    Unix time of plan time 0. Call :meth:`bind` (allocates ``port(a, b)`` for
    every plan link), then run :meth:`serve` in a nursery.
    """

    model: LinkModel
    node_addrs: dict[int, tuple[str, int]]
    epoch_unix_s: float
    host: str = "127.0.0.1"
    clock: Callable[[], float] = time.time
    socks: dict[tuple[int, int], socket.socket] = field(default_factory=dict)
    hosts: dict[int, str] = field(default_factory=dict)
    """Per node ``a``: the address the sockets ``port(a, b)`` bind to (the
    emulator's side of ``a``'s network namespace link); default ``host``."""

    def bind(
        self, ports: dict[tuple[int, int], int] | None = None
    ) -> dict[tuple[int, int], tuple[str, int]]:
        """Open one socket per direction of every linked pair; return their addresses."""
        pairs = set(self.model.links) | {(b, a) for a, b in self.model.links}
        for pair in sorted(pairs):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, opt, 4 * 1024 * 1024)
            s.bind((self.hosts.get(pair[0], self.host), (ports or {}).get(pair, 0)))
            s.setblocking(False)
            self.socks[pair] = s
        return {p: s.getsockname()[:2] for p, s in self.socks.items()}

    def close(self) -> None:
        """Close every socket."""
        for s in self.socks.values():
            s.close()

    async def serve(self) -> None:
        """Relay until cancelled."""
        async with trio.open_nursery() as nursery:
            for (a, b), s in self.socks.items():
                nursery.start_soon(self._relay, a, b, s, nursery)

    async def _relay(
        self, a: int, b: int, sock: socket.socket, nursery: trio.Nursery
    ) -> None:
        out = self.socks.get((b, a))
        dest = self.node_addrs.get(b)
        while True:
            await trio.lowlevel.wait_readable(sock)
            for _ in range(256):
                try:
                    data, _src = sock.recvfrom(65_535)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    continue
                if out is None or dest is None:
                    continue
                delay = self.model.decide(
                    a, b, len(data), self.clock() - self.epoch_unix_s
                )
                if delay is None:
                    continue
                if delay <= 0:
                    self._send(out, data, dest)
                else:
                    nursery.start_soon(self._later, delay, out, data, dest)

    async def _later(
        self, delay: float, out: socket.socket, data: bytes, dest: tuple[str, int]
    ) -> None:
        await trio.sleep(delay)
        self._send(out, data, dest)

    @staticmethod
    def _send(out: socket.socket, data: bytes, dest: tuple[str, int]) -> None:
        # Receiver gone or buffer full: lost, like any datagram.
        with contextlib.suppress(OSError):
            out.sendto(data, dest)


def _main(argv: Sequence[str] | None = None) -> int:
    from dtn.routing.plan import load_plan
    from dtn.runtime.config import ConfigError, parse_address

    p = argparse.ArgumentParser(
        prog="python -m tools.emulator",
        description="Relay UDP between dtn-node daemons by a contact plan.",
    )
    p.add_argument("--plan", required=True)
    p.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="N=HOST:PORT",
        help="a node's real UDP address (repeat)",
    )
    p.add_argument(
        "--epoch", type=float, help="Unix time of plan time 0 (default: now)"
    )
    p.add_argument("--loss", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration", type=float, default=math.inf, help="seconds to run")
    args = p.parse_args(argv)
    try:
        plan = load_plan(args.plan)
        addrs: dict[int, tuple[str, int]] = {}
        for item in args.node:
            n, _, addr = item.partition("=")
            addrs[int(n)] = parse_address(addr, f"--node {item}")
        model = LinkModel(plan, loss=args.loss, rng=random.Random(args.seed))
    except (ValueError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    emu = Emulator(model, addrs, args.epoch if args.epoch is not None else time.time())
    ports = emu.bind()
    for (a, b), (h, port) in sorted(ports.items()):
        print(f"node {a} reaches node {b} at {h}:{port}", flush=True)

    async def go() -> None:
        with trio.move_on_after(args.duration):
            await emu.serve()

    try:
        trio.run(go)
    except KeyboardInterrupt:
        pass
    finally:
        emu.close()
    stats: dict[str, Any] = {
        f"{a}->{b}": asdict(s) for (a, b), s in model.stats.items()
    }
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
