"""h2-style sweep of the agent's bundle locations (issue 11).

A real agent is driven into every resting Location a stored bundle can have,
every Input is applied, and the bundle must end where
dcis.dtn.agent.location.TRANSITIONS says, with the agent's queues agreeing
with the entry's location. The moves the agent makes on the way are
recorded: every row of MOVES must be one the agent really makes (no dead
rows), and every pair MOVES lacks must raise IllegalMove.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from dcis.dtn.agent.actions import Transmit
from dcis.dtn.agent.agent import Agent
from dcis.dtn.agent.entries import Entry
from dcis.dtn.agent.location import (
    MOVES,
    RESTING,
    TRANSITIONS,
    IllegalMove,
    Input,
    Location,
    Step,
    location_of,
)
from dcis.dtn.agent.store import MemoryStore, StoreCorrupt
from dcis.dtn.bpv7.bundle import encode_bundle, make_bundle
from dcis.dtn.bpv7.flags import BundleFlags
from dcis.dtn.bpv7.fragment import fragment_bundle
from dcis.dtn.routing.contact import Contact
from tests.unit.agent.helpers import check_locations

C13 = Contact(1, 3, 0.0, float("inf"), 0.0)
NOW = 1_000
LIFE = 60_000
REST = sorted(RESTING)


class DamagedStore(MemoryStore):
    """A memory store whose copies of ``damaged`` keys fail their checksum."""

    def __init__(self) -> None:
        super().__init__()
        self.damaged: set[str] = set()

    def get(self, key: str) -> bytes | None:
        if key in self.damaged:
            raise StoreCorrupt(key, "damaged by the test")
        return super().get(key)


@dataclass
class Case:
    agent: Agent
    key: str
    data: bytes
    tx: int | None = None


def into(loc: Location, *, flags: BundleFlags = BundleFlags.NONE) -> Case:
    """A fresh agent (node 1, no plan; ipn:1.1 and ipn:1.5 registered,
    ipn:1.6 not) holding one bundle at ``loc``."""
    ag = Agent(node=1, store=DamagedStore())
    ag.register("ipn:1.1")
    ag.register("ipn:1.5")
    tx = None
    if loc is Location.REASSEMBLY:
        whole = make_bundle(
            source="ipn:2.1",
            destination="ipn:1.5",
            payload=bytes(range(200)),
            creation_ms=NOW,
            lifetime_ms=LIFE,
        )
        first = fragment_bundle(whole, 100)[0]
        ag.on_receive(
            cla="t", neighbor=2, data=encode_bundle(first), now=NOW, cl_token=1
        )
        key = first.bundle_key
    else:
        if loc in (Location.IN_FLIGHT, Location.QUEUED):
            ag.on_contact_start(C13, NOW)
        dst = {Location.DELIVERING: "ipn:1.5", Location.UNCLAIMED: "ipn:1.6"}.get(
            loc, "ipn:3.1"
        )
        key, acts = ag.send(
            source="ipn:1.1",
            destination=dst,
            payload=b"x",
            lifetime_ms=LIFE,
            now=NOW,
            flags=flags,
        )
        sent = [a.tx_id for a in acts if isinstance(a, Transmit)]
        tx = sent[0] if sent else None
        if loc is Location.QUEUED:
            assert tx is not None
            ag.on_transmit_done(tx, False, NOW)  # link still open: back off
    data = ag.store.get(key)
    assert data is not None
    return Case(ag, key, data, tx)


def apply(c: Case, inp: Input) -> None:
    ag = c.agent
    if inp is Input.TICK:
        ag.on_tick(NOW + 1)
    elif inp is Input.EXPIRE:
        ag.on_tick(NOW + LIFE + 1)
    elif inp is Input.CONTACT_START:
        ag.on_contact_start(C13, NOW)
    elif inp is Input.CONTACT_END:
        ag.on_contact_end(C13, NOW)
    elif inp in (Input.TX_OK, Input.TX_FAIL):
        # A bundle not in flight: an outcome for an unknown transmission.
        tx = c.tx if c.tx is not None else 10**6
        ag.on_transmit_done(tx, inp is Input.TX_OK, NOW)
    elif inp is Input.DELIVERED:
        ag.on_delivered(c.key, NOW)
    elif inp is Input.DUPLICATE:
        ag.on_receive(cla="t", neighbor=2, data=c.data, now=NOW, cl_token=77)
    elif inp is Input.REGISTER:
        ag.register("ipn:1.6", now=NOW)
    elif inp is Input.REDELIVER:
        ag.redeliver([c.key], NOW)
    elif inp is Input.UNREGISTER:
        ag.unregister("ipn:1.5")
        ag.redeliver([c.key], NOW)
    elif inp is Input.RECOVER:
        ag.recover(NOW)


@contextmanager
def recording(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[tuple[Location, Step]]]:
    """Every (location, step) the agent moves an entry by, while open."""
    seen: set[tuple[Location, Step]] = set()
    real = Entry.move

    def move(
        self: Entry, step: Step, *, hop: int | None = None, tx_id: int | None = None
    ) -> None:
        seen.add((self.location, step))
        real(self, step, hop=hop, tx_id=tx_id)

    with monkeypatch.context() as m:
        m.setattr(Entry, "move", move)
        yield seen


def test_the_table_covers_every_pair() -> None:
    assert set(TRANSITIONS) == {(loc, inp) for loc in RESTING for inp in Input}
    assert all(to <= RESTING | {Location.GONE} for to in TRANSITIONS.values())


@pytest.mark.parametrize("loc", REST)
def test_each_location_is_reachable(loc: Location) -> None:
    c = into(loc)
    assert location_of(c.agent, c.key) is loc
    check_locations(c.agent)


@pytest.mark.parametrize("inp", list(Input))
@pytest.mark.parametrize("loc", REST)
def test_every_location_input_pair_follows_the_table(loc: Location, inp: Input) -> None:
    c = into(loc)
    apply(c, inp)
    after = location_of(c.agent, c.key)
    assert after in TRANSITIONS[(loc, inp)], (loc, inp, after)
    # Whatever happened, the store and the agent's memory agree.
    assert (c.key in c.agent.store) == (after is not Location.GONE)
    check_locations(c.agent)


def test_every_move_in_the_table_is_one_the_agent_makes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with recording(monkeypatch) as seen:
        for loc in REST:
            for inp in Input:
                apply(into(loc), inp)
        # A restart after the bundle's lifetime: expired straight from the store.
        c = into(Location.UNROUTED)
        c.agent.recover(NOW + LIFE + 1)
        # A bundle that asked for a deletion report, damaged in the store:
        # the report finds it damaged while it expires (removed twice).
        c = into(Location.UNROUTED, flags=BundleFlags.REPORT_DELETION)
        store = c.agent.store
        assert isinstance(store, DamagedStore)
        store.damaged.add(c.key)
        c.agent.on_tick(NOW + LIFE + 1)
        assert location_of(c.agent, c.key) is Location.GONE
        # A transmission that fails after its contact closed: routed again.
        c = into(Location.IN_FLIGHT)
        assert c.tx is not None
        c.agent.on_contact_end(C13, NOW)
        c.agent.on_transmit_done(c.tx, False, NOW)
        assert location_of(c.agent, c.key) is Location.UNROUTED
        # A dtn: bundle held unroutable until its endpoint is registered here.
        ag = Agent(node=1, store=MemoryStore())
        b = make_bundle(
            source="ipn:2.1",
            destination="dtn://here/app",
            payload=b"d",
            creation_ms=NOW,
            lifetime_ms=LIFE,
        )
        ag.on_receive(cla="t", neighbor=2, data=encode_bundle(b), now=NOW)
        assert location_of(ag, b.bundle_key) is Location.UNROUTED
        ag.register("dtn://here/app", now=NOW)
        assert location_of(ag, b.bundle_key) is Location.DELIVERING
    assert seen == set(MOVES), sorted(set(MOVES) ^ seen)


@pytest.mark.parametrize("step", list(Step))
@pytest.mark.parametrize("loc", list(Location))
def test_a_move_not_in_the_table_raises_and_changes_nothing(
    loc: Location, step: Step
) -> None:
    e = Entry(
        key="k",
        destination="ipn:3.1",
        dest_node=3,
        expiry_ms=LIFE,
        size=1,
        received_ms=NOW,
        prev_node=None,
        location=loc,
        next_hop=3 if loc in (Location.QUEUED, Location.IN_FLIGHT) else None,
        tx_id=9 if loc is Location.IN_FLIGHT else None,
    )
    before = (e.location, e.next_hop, e.tx_id)
    if (loc, step) in MOVES:
        e.move(step, hop=4, tx_id=5)
        assert e.location is MOVES[(loc, step)]
        assert (e.tx_id is not None) == (e.location is Location.IN_FLIGHT)
        return
    with pytest.raises(IllegalMove) as info:
        e.move(step, hop=4, tx_id=5)
    assert (info.value.at, info.value.step) == (loc, step)
    assert (e.location, e.next_hop, e.tx_id) == before


def test_route_and_transmit_need_their_companion() -> None:
    e = Entry(
        key="k",
        destination="ipn:3.1",
        dest_node=3,
        expiry_ms=LIFE,
        size=1,
        received_ms=NOW,
        prev_node=None,
    )
    with pytest.raises(IllegalMove):
        e.move(Step.ROUTE)  # no next hop
    e.move(Step.ROUTE, hop=3)
    with pytest.raises(IllegalMove):
        e.move(Step.TRANSMIT)  # no transmission id
    assert (e.location, e.next_hop, e.tx_id) == (Location.QUEUED, 3, None)
