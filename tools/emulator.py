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
through the relay, subject to the reverse contact. ``python -m dcis.tools.emulator``
runs it standalone (see ``--help``); the testbed runs it in-process.

Given the plan's file (``Emulator.plan_path``), the emulator follows edits
of it as the daemons do: it re-reads the file when its modification time,
size or inode changes (checked every ``plan_poll_s``, 1 s) and, standalone,
on SIGHUP. The new plan decides from the next datagram on, on the same plan
clock (``epoch_unix_s`` stays; an ``@`` reference time in the new file does
not move it). Datagrams already in the delay line were admitted under the
old plan and are still delivered. A file that does not parse leaves the
running plan in force and prints one line naming FILE:LINE. Sockets exist
only for the pairs linked when :meth:`Emulator.bind` ran: a pair that only
the new plan links is not relayed (the daemons have no address for it
either) until a restart.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import trio

from dcis.dtn.cl.udp import Pacer
from dcis.dtn.errors import DtnError
from dcis.dtn.routing.contact import Contact
from dcis.dtn.routing.plan import ContactPlan
from dcis.dtn.runtime.watch import file_stamp
from dcis.dtn.storage.plan_files import load_plan


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
        self._contacts = _by_link(plan)
        # Per link: the contact its token bucket belongs to (a new contact
        # starts with a full bucket), and the bucket.
        self._buckets: dict[tuple[int, int], tuple[Contact, Pacer]] = {}
        self.stats: dict[tuple[int, int], LinkStats] = {
            k: LinkStats() for k in self._contacts
        }

    def replace_plan(self, plan: ContactPlan) -> None:
        """Decide by ``plan`` from now on (a reloaded plan file).

        Statistics carry on. A link's token bucket carries on while the
        contact it belongs to is in the new plan unchanged; a changed or new
        contact starts with a full bucket, as any new contact does.
        """
        contacts = _by_link(plan)
        buckets: dict[tuple[int, int], tuple[Contact, Pacer]] = {}
        for link, (c, pacer) in self._buckets.items():
            same = next((n for n in contacts.get(link, ()) if n == c), None)
            if same is not None:
                buckets[link] = (same, pacer)
        self.plan, self._contacts, self._buckets = plan, contacts, buckets
        for k in contacts:
            self.stats.setdefault(k, LinkStats())

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
        link = (frm, to)
        # Every plan link has its stats already: no LinkStats built per datagram.
        st = self.stats.get(link) or self.stats.setdefault(link, LinkStats())
        c = self.contact_at(frm, to, at_s)
        if c is None:
            st.dropped_down += 1
            return None
        if self.loss and self.rng.random() < self.loss:
            st.dropped_loss += 1
            return None
        bucket = self._buckets.get(link)
        if bucket is None or bucket[0] is not c:
            # One second of the rate, at least 64 KiB (Pacer is unlimited for
            # a zero or infinite rate).
            pacer = Pacer(c.rate_bytes_s, burst_bytes=max(c.rate_bytes_s, 65_536.0))
            bucket = self._buckets[link] = (c, pacer)
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


def _by_link(plan: ContactPlan) -> dict[tuple[int, int], list[Contact]]:
    out: dict[tuple[int, int], list[Contact]] = {}
    for c in plan.contacts:
        out.setdefault((c.frm, c.to), []).append(c)
    for cs in out.values():
        cs.sort(key=lambda c: c.start_s)
    return out


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(slots=True)
class Emulator:
    """The relay's sockets around a :class:`LinkModel`.

    ``node_addrs`` maps node -> its real UDP address. ``epoch_unix_s`` is the
    Unix time of plan time 0. Call :meth:`bind` (allocates ``port(a, b)`` for
    every plan link), then run :meth:`serve` in a nursery.

    With ``plan_path`` set, :meth:`serve` also re-reads that file when it
    changes (polled every ``plan_poll_s``; 0 turns polling off) and
    :meth:`reload_plan` re-reads it on demand (SIGHUP, standalone). Each
    reload prints one line through ``log``.
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
    plan_path: str | None = None
    plan_poll_s: float = 1.0
    log: Callable[[str], None] = _stderr_line
    reloads: int = 0
    """Plan reloads applied."""
    reload_failures: int = 0
    """Plan reloads refused (the file did not parse); the old plan stayed."""

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
        """Relay until cancelled (and follow edits of ``plan_path``)."""
        async with trio.open_nursery() as nursery:
            for (a, b), s in self.socks.items():
                nursery.start_soon(self._relay, a, b, s, nursery)
            if self.plan_path is not None and self.plan_poll_s > 0:
                nursery.start_soon(self._watch_plan, self.plan_path)

    async def reload_plan(self) -> bool:
        """Re-read ``plan_path`` and decide by it from the next datagram on.

        Plan time keeps its origin (``epoch_unix_s``). Datagrams already
        waiting out their light time are sent as admitted. On a file that
        does not parse, the running plan stays: one line through ``log``
        naming FILE:LINE, and False.
        """
        path = self.plan_path
        if path is None:
            return False
        try:
            # Parsed off the event loop: a large plan must not stall relaying.
            new = await trio.to_thread.run_sync(load_plan, path)
        except (DtnError, OSError, ValueError) as exc:
            self.reload_failures += 1
            self.log(f"emulator: plan not reloaded, the running plan stays: {exc}")
            return False
        old_c = set(self.model.plan.contacts)
        new_c = set(new.contacts)
        self.model.replace_plan(new)
        self.reloads += 1
        self.log(
            f"emulator: plan reloaded from {path}: {len(new_c)} contacts"
            f" ({len(new_c - old_c)} added, {len(old_c - new_c)} removed)"
        )
        unrelayed = sorted(set(self.model.links) - set(self.socks))
        if unrelayed:
            pairs = ", ".join(f"{a}->{b}" for a, b in unrelayed)
            self.log(
                f"emulator: {path}: no relay socket for new link(s) {pairs}; "
                "restart the emulator (and the daemons) to relay them"
            )
        return True

    async def _watch_plan(self, path: str) -> None:
        # The same check as the daemons' (dtn/runtime/node.py).
        last = file_stamp(path)
        while True:
            await trio.sleep(self.plan_poll_s)
            now = file_stamp(path)
            if now is not None and now != last:
                last = now
                await self.reload_plan()

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
    from dcis.dtn.runtime.config import ConfigError, parse_address

    p = argparse.ArgumentParser(
        prog="python -m dcis.tools.emulator",
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
        "--epoch",
        type=float,
        help="Unix time of plan time 0 (default: the plan's @ time, else now)",
    )
    p.add_argument("--loss", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration", type=float, default=math.inf, help="seconds to run")
    p.add_argument(
        "--plan-poll",
        type=float,
        default=1.0,
        metavar="S",
        help="re-read the plan file when it changes, checked every S seconds "
        "(0: only on SIGHUP; default 1)",
    )
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
    # Plan time 0 as a daemon without plan_epoch_unix_s takes it.
    epoch = args.epoch
    if epoch is None:
        epoch = plan.epoch_unix_s if plan.epoch_unix_s is not None else time.time()
    emu = Emulator(
        model, addrs, epoch, plan_path=args.plan, plan_poll_s=max(0.0, args.plan_poll)
    )
    ports = emu.bind()

    async def go() -> None:
        with (
            trio.move_on_after(args.duration),
            trio.open_signal_receiver(signal.SIGHUP) as signals,
        ):
            # Printed once SIGHUP is handled: a caller that waits for these
            # lines may send it.
            for (a, b), (h, port) in sorted(ports.items()):
                print(f"node {a} reaches node {b} at {h}:{port}", flush=True)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(emu.serve)
                async for _ in signals:
                    await emu.reload_plan()

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
