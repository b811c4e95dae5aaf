"""Small helpers for driving agents by hand in tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from dcis.dtn.agent.actions import Ack, Action, Deliver, Event, Schedule, Transmit
from dcis.dtn.agent.agent import Agent, Received
from dcis.dtn.agent.location import RESTING, Location
from dcis.dtn.routing.contact import Contact

T = TypeVar("T")

OPEN = float("inf")


def of(actions: Sequence[Action], kind: type[T]) -> list[T]:
    """The actions of one type, in order."""
    return [a for a in actions if isinstance(a, kind)]


def events(actions: Sequence[Action], kind: str) -> list[Event]:
    return [a for a in actions if isinstance(a, Event) and a.kind == kind]


def link(
    frm: int, to: int, *, start_s: float = 0.0, end_s: float = OPEN, rate: float = 0.0
) -> Contact:
    """A contact; open-ended with no rate bound by default (a driver's link)."""
    return Contact(frm, to, start_s, end_s, rate)


__all__ = [
    "OPEN",
    "Ack",
    "Deliver",
    "Event",
    "Schedule",
    "Transmit",
    "events",
    "link",
    "of",
]


class Net:
    """Agents joined by hand: carries Transmits instantly, acks hop by hop.

    ``pump(node, actions)`` carries out ``actions`` of agent ``node``:
    a Transmit goes to the neighbour's ``on_receive`` (cl_token = tx_id); the
    neighbour's Ack completes it with ``on_transmit_done(ok=True)``; a Deliver
    is recorded and confirmed with ``on_delivered``. ``drop`` makes the next
    transmissions vanish (the sender gets ``ok=False``).
    """

    def __init__(self, agents: dict[int, Agent]) -> None:
        self.agents = agents
        self.delivered: list[tuple[int, Deliver]] = []
        self.transmitted: list[tuple[int, Transmit]] = []
        self.now = 0
        self.drop = 0

    def pump(self, node: int, actions: Sequence[Action]) -> None:
        work: list[tuple[int, Action]] = [(node, a) for a in actions]
        while work:
            n, act = work.pop(0)
            agent = self.agents[n]
            if isinstance(act, Transmit):
                self.transmitted.append((n, act))
                if self.drop > 0:
                    self.drop -= 1
                    work.extend(
                        (n, a)
                        for a in agent.on_transmit_done(act.tx_id, False, self.now)
                    )
                    continue
                rx = self.agents[act.neighbor]
                out = rx.on_receive(
                    cla="test",
                    neighbor=n,
                    data=act.data,
                    now=self.now,
                    cl_token=act.tx_id,
                )
                acked = any(isinstance(a, Ack) and a.cl_token == act.tx_id for a in out)
                work.extend((act.neighbor, a) for a in out if not isinstance(a, Ack))
                work.extend(
                    (n, a) for a in agent.on_transmit_done(act.tx_id, acked, self.now)
                )
            elif isinstance(act, Deliver):
                self.delivered.append((n, act))
                work.extend(
                    (n, a) for a in agent.on_delivered(act.bundle_key, self.now)
                )

    def at(self, now: int) -> Net:
        self.now = now
        return self

    def start(self, c: Contact) -> None:
        self.pump(c.frm, self.agents[c.frm].on_contact_start(c, self.now))

    def end(self, c: Contact) -> None:
        self.pump(c.frm, self.agents[c.frm].on_contact_end(c, self.now))

    def tick(self) -> None:
        for n, agent in self.agents.items():
            self.pump(n, agent.on_tick(self.now))


def check_locations(ag: Agent) -> None:
    """Between inputs, each stored bundle rests in one location, and the
    agent keeps its key exactly where that location says."""
    for key, e in ag._entries.items():
        loc = e.location
        assert loc in RESTING, (key, loc)
        moving = loc in (Location.QUEUED, Location.IN_FLIGHT)
        assert (e.next_hop is not None) == moving, (key, loc, e.next_hop)
        assert (e.tx_id is not None) == (loc is Location.IN_FLIGHT), (key, loc)
        if loc is Location.QUEUED:
            assert e.next_hop is not None
            assert key in ag._queues.get(e.next_hop, ()), (key, loc)
        elif loc is Location.IN_FLIGHT and key in ag._pieces:
            # Going out in pieces (cut at transmission): the entry names the
            # first piece's transmission; some piece is in flight or to come.
            p = ag._pieces[key]
            assert e.tx_id == p.tx_id, (key, loc)
            assert p.outstanding or p.link.sending is p, (key, loc)
            if p.link.sending is p:
                # Pieces still to go go on the open link to the next hop:
                # a link closed or replaced sends none.
                assert ag._links.get(e.next_hop) is p.link, (key, loc)
            for tx in p.outstanding:
                assert ag._inflight[tx][:2] == (key, e.next_hop), (key, loc)
        elif loc is Location.IN_FLIGHT:
            assert e.tx_id is not None
            assert ag._inflight[e.tx_id][:2] == (key, e.next_hop), (key, loc)
        elif loc is Location.UNROUTED:
            assert key in ag._unrouted.get(e.dest_node, {}), (key, loc)
        elif loc is Location.UNCLAIMED:
            assert key in ag._unclaimed.get(e.destination, {}), (key, loc)
        elif loc is Location.REASSEMBLY:
            assert e.frag_group is not None
            assert key in ag._groups[e.frag_group].parts, (key, loc)


def receive_as_views(a: Agent, frames: Sequence[bytes], now: int) -> list[Action]:
    """``frames`` received as views of one buffer (``Received.data``, as the
    MTCP driver passes them) in one store transaction, as NodeCore does;
    then the buffer is overwritten and resized, as a driver's next read
    could: a view kept anywhere raises BufferError."""
    buf = bytearray(b"".join(frames))
    view = memoryview(buf)
    items, pos = [], 0
    for f in frames:
        items.append(Received("mtcp", None, view[pos : pos + len(f)]))
        pos += len(f)
    with a.store.transaction():
        acts = a.on_receive_many(items, now=now)
    del items
    view.release()
    buf[:] = b"\xee" * len(buf)
    buf.extend(b"\xee" * 4096)  # BufferError if anything still exports it
    buf.clear()
    return acts
