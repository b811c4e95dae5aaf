"""h2-style sweep: a real agent is driven into every Location a stored bundle
can have, every Input is applied, and the bundle must end where
dcis.dtn.agent.location.TRANSITIONS says (issue 11)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from dcis.dtn.agent.actions import Transmit
from dcis.dtn.agent.agent import Agent
from dcis.dtn.agent.location import TRANSITIONS, Input, Location, location_of
from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.bpv7.bundle import encode_bundle, make_bundle
from dcis.dtn.bpv7.fragment import fragment_bundle
from dcis.dtn.routing.contact import Contact

C13 = Contact(1, 3, 0.0, float("inf"), 0.0)
NOW = 1_000
LIFE = 60_000
STORED = [loc for loc in Location if loc not in (Location.GONE, Location.WAITING)]


@dataclass
class Case:
    agent: Agent
    key: str
    data: bytes
    tx: int | None = None


def into(loc: Location) -> Case:
    """A fresh agent (node 1, no plan) holding one bundle at ``loc``."""
    ag = Agent(node=1, store=MemoryStore())
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
        dst = "ipn:1.5" if loc is Location.DELIVERING else "ipn:3.1"
        key, acts = ag.send(
            source="ipn:1.1", destination=dst, payload=b"x", lifetime_ms=LIFE, now=NOW
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
    elif inp is Input.RECOVER:
        ag.recover(NOW)


def test_the_table_covers_every_pair() -> None:
    assert set(TRANSITIONS) == {(loc, inp) for loc in STORED for inp in Input}


@pytest.mark.parametrize("loc", STORED)
def test_each_location_is_reachable(loc: Location) -> None:
    c = into(loc)
    assert location_of(c.agent, c.key) is loc


@pytest.mark.parametrize("inp", list(Input))
@pytest.mark.parametrize("loc", STORED)
def test_every_location_input_pair_follows_the_table(loc: Location, inp: Input) -> None:
    c = into(loc)
    apply(c, inp)
    after = location_of(c.agent, c.key)
    assert after in TRANSITIONS[(loc, inp)], (loc, inp, after)
    # Whatever happened, the store and the agent's memory agree.
    assert (c.key in c.agent.store) == (after is not Location.GONE)
