"""A fake UDP network for runtime tests, modelled on trio's own FakeNet
(``trio/testing/_fake_net.py``): datagram sockets in memory, and a
``route_packet`` step that drops, duplicates, delays and reorders from a
seeded ``random.Random``.

Theory of operation
-------------------
``FakeNet(seed=...)`` hands out :class:`FakeUdpSocket` objects through
:meth:`FakeNet.socket` (pass ``net.socket`` as a ``Node``'s
``udp_socket=``). A socket ``bind``s to ``("127.0.0.1", port)`` (port 0: the
net picks one). ``sendto`` never blocks: it gives the datagram to
:meth:`FakeNet.route_packet`, which decides with the seeded generator
(``r.choices(["deliver", "drop", "dupe", "delay"], weights)``, as trio's DTLS
tests do) and delivers now, never, twice, or after a random delay (trio's
clock: run under ``MockClock(autojump_threshold=0)`` and delays cost no real
time). A datagram to an address nobody bound is dropped, like a real one.
``recvfrom`` raises ``BlockingIOError`` when the queue is empty;
``wait_readable()`` waits for the next datagram. ``partition(a, b)`` and
``heal()`` cut and restore all traffic between two ports' owners.

Under an autojump clock keep real threads out of the nodes (a SQLite store
with ``synchronous="NORMAL"`` or in memory, not FULL's fsync thread): while
a task waits for a thread the clock jumps to the next timer, so ACKs would
always come after the retransmission timeout.

Same seed and same program => the same drops and delays (trio's scheduler
is not deterministic across task interleavings, so this is a fault source,
not a replay tool: the simulator is the replay tool).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

import trio

Address = tuple[str, int]


class FakeNet:
    """A seeded, lossy datagram network in memory (see the module docstring).

    ``drop``, ``dupe`` and ``delay`` are probabilities (their sum at most 1);
    a delayed datagram waits ``uniform(0, max_delay_s)``, so later ones can
    overtake it (reordering)."""

    def __init__(
        self,
        *,
        seed: int = 0,
        drop: float = 0.0,
        dupe: float = 0.0,
        delay: float = 0.0,
        max_delay_s: float = 0.5,
    ) -> None:
        if drop + dupe + delay > 1.0 or min(drop, dupe, delay) < 0:
            raise ValueError("drop, dupe and delay must be >= 0 and sum to <= 1")
        self.rng = random.Random(seed)
        self.weights = [1.0 - drop - dupe - delay, drop, dupe, delay]
        self.max_delay_s = max_delay_s
        self._bound: dict[Address, FakeUdpSocket] = {}
        self._next_port = 40_000
        self._cut: set[frozenset[int]] = set()
        self.counts = {
            "sent": 0,
            "delivered": 0,
            "dropped": 0,
            "duped": 0,
            "delayed": 0,
        }
        self.hook: Callable[[bytes, Address, Address], bytes | None] | None = None
        """Optional: ``hook(data, src, dst)`` may rewrite a datagram (or
        return None to drop it) before the seeded decision."""

    def socket(self, family: int = 0, kind: int = 0) -> FakeUdpSocket:
        """A new unbound datagram socket (``socket.socket``'s signature)."""
        return FakeUdpSocket(self)

    def free_port(self) -> int:
        """A port no socket holds (for configs written before binding)."""
        while ("127.0.0.1", self._next_port) in self._bound:
            self._next_port += 1
        port = self._next_port
        self._next_port += 1
        return port

    def partition(self, port_a: int, port_b: int) -> None:
        """Drop every datagram between the sockets on these two ports."""
        self._cut.add(frozenset((port_a, port_b)))

    def heal(self) -> None:
        """Undo every :meth:`partition`."""
        self._cut.clear()

    def _bind(self, sock: FakeUdpSocket, addr: Address) -> Address:
        host, port = addr
        if port == 0:
            port = self.free_port()
        key = ("127.0.0.1" if host in ("", "0.0.0.0", "localhost") else host, port)
        if key in self._bound:
            raise OSError(98, f"address already in use: {key}")
        self._bound[key] = sock
        return key

    def _unbind(self, addr: Address) -> None:
        self._bound.pop(addr, None)

    def route_packet(self, data: bytes, src: Address, dst: Address) -> None:
        """Deliver, drop, duplicate or delay one datagram (seeded)."""
        self.counts["sent"] += 1
        if self.hook is not None:
            rewritten = self.hook(data, src, dst)
            if rewritten is None:
                self.counts["dropped"] += 1
                return
            data = rewritten
        if frozenset((src[1], dst[1])) in self._cut:
            self.counts["dropped"] += 1
            return
        (what,) = self.rng.choices(["deliver", "drop", "dupe", "delay"], self.weights)
        if what == "drop":
            self.counts["dropped"] += 1
        elif what == "dupe":
            self.counts["duped"] += 1
            self._deliver(data, src, dst)
            self._deliver(data, src, dst)
        elif what == "delay":
            self.counts["delayed"] += 1
            wait = self.rng.uniform(0.0, self.max_delay_s)
            trio.lowlevel.spawn_system_task(self._later, wait, data, src, dst)
        else:
            self._deliver(data, src, dst)

    def inject(self, data: bytes, src: Address, dst: Address) -> None:
        """Deliver ``data`` to ``dst`` as if ``src`` had sent it, with no
        hook and no fault (a replay by an attacker on the path)."""
        self._deliver(bytes(data), src, dst)

    async def _later(
        self, wait: float, data: bytes, src: Address, dst: Address
    ) -> None:
        await trio.sleep(wait)
        self._deliver(data, src, dst)

    def _deliver(self, data: bytes, src: Address, dst: Address) -> None:
        sock = self._bound.get(dst)
        if sock is None:
            self.counts["dropped"] += 1
            return
        self.counts["delivered"] += 1
        sock._push(data, src)


class FakeUdpSocket:
    """The parts of a non-blocking ``socket.socket(AF_INET, SOCK_DGRAM)``
    the runtime uses, plus ``async wait_readable()``/``wait_writable()``."""

    def __init__(self, net: FakeNet, *, queue_limit: int = 4096) -> None:
        self._net = net
        self._addr: Address | None = None
        self._queue: deque[tuple[bytes, Address]] = deque()
        self._queue_limit = queue_limit
        self._readable = trio.Event()
        self._closed = False

    def setsockopt(self, *args: object) -> None:
        """Ignored (buffer sizes)."""

    def setblocking(self, flag: bool) -> None:
        """Always non-blocking."""

    def bind(self, addr: Address) -> None:
        """Take ``addr`` (port 0: any free port)."""
        self._addr = self._net._bind(self, (addr[0], int(addr[1])))

    def getsockname(self) -> Address:
        """The bound address."""
        if self._addr is None:
            raise OSError(22, "not bound")
        return self._addr

    def sendto(self, data: bytes, addr: Address) -> int:
        """Hand the datagram to the net; never blocks."""
        if self._closed:
            raise OSError(9, "socket closed")
        if self._addr is None:
            self.bind(("127.0.0.1", 0))
        assert self._addr is not None
        self._net.route_packet(bytes(data), self._addr, (addr[0], int(addr[1])))
        return len(data)

    def sendmsg(
        self,
        buffers: tuple[bytes | memoryview, ...],
        ancdata: object = (),
        flags: int = 0,
        addr: Address | None = None,
    ) -> int:
        """A datagram gathered from ``buffers`` (as ``socket.sendmsg``)."""
        if addr is None:
            raise OSError(89, "destination address required")
        return self.sendto(b"".join(buffers), addr)

    def recvfrom(self, bufsize: int) -> tuple[bytes, Address]:
        """The next datagram (truncated to ``bufsize``), else BlockingIOError."""
        if not self._queue:
            raise BlockingIOError
        data, src = self._queue.popleft()
        return data[:bufsize], src

    async def wait_readable(self) -> None:
        """Wait until a datagram is queued."""
        while not self._queue:
            await self._readable.wait()
            self._readable = trio.Event()

    async def wait_writable(self) -> None:
        """Always writable."""
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        """Unbind; later datagrams to the address are dropped."""
        self._closed = True
        if self._addr is not None:
            self._net._unbind(self._addr)

    def _push(self, data: bytes, src: Address) -> None:
        if self._closed or len(self._queue) >= self._queue_limit:
            self._net.counts["dropped"] += 1  # a full receive buffer drops
            return
        self._queue.append((data, src))
        self._readable.set()
