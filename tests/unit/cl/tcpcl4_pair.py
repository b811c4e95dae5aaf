"""Two sans-I/O TCPCLv4 sessions joined back to back (test helper)."""

from __future__ import annotations

from dcis.dtn.cl.tcpcl4.session import (
    BundleReceived,
    Session,
    SessionConfig,
    SessionEvent,
    StartTls,
)


class Pair:
    """An active and a passive session; ``run`` shuttles bytes until both are quiet.

    Received bundles are acknowledged at once unless ``auto_ack`` is False;
    StartTls is answered with ``tls_established`` (the handshake itself is the
    driver's business).
    """

    def __init__(
        self,
        a: SessionConfig | None = None,
        p: SessionConfig | None = None,
        *,
        auto_ack: bool = True,
    ) -> None:
        self.a = Session(a or SessionConfig(node_id="ipn:1.0"), active=True)
        self.p = Session(p or SessionConfig(node_id="ipn:2.0"), active=False)
        self.auto_ack = auto_ack
        self.events: dict[str, list[SessionEvent]] = {"a": [], "p": []}
        self.wire: dict[str, list[bytes]] = {"a": [], "p": []}
        self.now = 0

    def start(self) -> None:
        self._handle("a", self.a.start(self.now))
        self._handle("p", self.p.start(self.now))
        self.run()

    def _handle(self, side: str, evs: list[SessionEvent]) -> None:
        s = self.a if side == "a" else self.p
        for ev in evs:
            self.events[side].append(ev)
            if isinstance(ev, StartTls):
                self._handle(side, s.tls_established(self.now))
            elif isinstance(ev, BundleReceived) and self.auto_ack:
                s.ack_transfer(ev.transfer_id, self.now)

    def run(self, chunk: int = 1 << 30) -> None:
        for _ in range(100_000):
            moved = False
            for side, src, dst in (("a", self.a, self.p), ("p", self.p, self.a)):
                data = src.data_to_send(chunk)
                if data:
                    moved = True
                    self.wire[side].append(data)
                    other = "p" if side == "a" else "a"
                    for i in range(0, len(data), chunk):
                        self._handle(
                            other, dst.receive_data(data[i : i + chunk], self.now)
                        )
            if not moved:
                return
        raise AssertionError("sessions never went quiet")

    def of(self, side: str, kind: type) -> list[SessionEvent]:
        return [e for e in self.events[side] if isinstance(e, kind)]
