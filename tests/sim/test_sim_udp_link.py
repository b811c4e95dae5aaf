"""The simulator's links are the runtime's UDP convergence layer (issue 11,
item 3): one implementation of hop ACKs and retransmission.

Each simulated node sends through :class:`dcis.dtn.cl.udp.UdpLink` -- the
class the trio runtime drives, not a copy -- and its datagrams are real
DCiS DATA/ACK segments; the simulator only adds light time, rate pacing and
seeded loss, duplication and reordering. Checked: the class is the same
object in both drivers and the simulator really calls it; a lost DATA
segment is sent again by the link (``max_tries``) instead of failing back to
the agent; a link's counters add up; link MACs are off by default and on
(derived from the nodes' credentials) with ``link_mac=True``.
"""

from __future__ import annotations

from typing import Any

import pytest

from dcis.consensus.membership.sim import credentials_for
from dcis.dtn.cl import udp
from dcis.dtn.routing.contact import Contact, Range
from dcis.dtn.sim import SimConfig, Simulator, TrafficItem, engine
from tests.sim.fake_agent import FakePlan, fake_factory, fake_store_factory


def lossy_sim(seed: int = 3, **cfg: Any) -> Simulator:
    """1 -> 2 for 400 s at 10 kB/s, 0.1 s light time, 40 bundles, 30% loss."""
    plan = FakePlan([Contact(1, 2, 0, 400, 10_000.0)], [Range(1, 2, 0, 400, 0.1)])
    return Simulator(
        plan,
        SimConfig(**{"seed": seed, "duration_s": 500.0, "loss": 0.3, **cfg}),
        traffic=[TrafficItem(at_s=1, src=1, dst=2, size_bytes=200, count=40)],
        agent_factory=fake_factory({(1, 2): 2}),
        store_factory=fake_store_factory,
    )


def test_the_simulator_and_the_runtime_use_the_same_link_class(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime_node = pytest.importorskip("dcis.dtn.runtime.node")
    assert runtime_node.UdpLink is udp.UdpLink
    assert vars(engine)["UdpLink"] is udp.UdpLink
    # ... and the simulator really goes through it: count the class's calls.
    calls = {"transmit": 0, "on_ack": 0, "on_timer": 0}
    for name in calls:
        real = getattr(udp.UdpLink, name)

        def counting(self: udp.UdpLink, *a: Any, _r: Any = real, _n: str = name) -> Any:
            calls[_n] += 1
            return _r(self, *a)

        monkeypatch.setattr(udp.UdpLink, name, counting)
    sim = lossy_sim()
    s = sim.run()
    link = sim.udp_link(1, 2)
    assert type(link) is udp.UdpLink
    assert calls["transmit"] == s.transmissions > 0
    assert calls["on_ack"] > 0
    assert calls["on_timer"] > 0


def test_a_lost_segment_is_sent_again_by_the_link_not_the_agent() -> None:
    once = lossy_sim(max_tries=1)
    s1 = once.run()
    retried = lossy_sim(max_tries=4)
    s4 = retried.run()
    assert s1.delivered == s4.delivered == 40
    c1 = once.udp_link(1, 2)
    c4 = retried.udp_link(1, 2)
    assert c1 is not None
    assert c4 is not None
    assert c1.counters.retransmits == 0
    assert c4.counters.retransmits > 0
    # Retransmissions by the link spare the agent failed transmissions.
    assert s4.transmit_failures < s1.transmit_failures
    assert s4.transmissions < s1.transmissions
    for s, c in ((s1, c1.counters), (s4, c4.counters)):
        # Every agent transmission ends acknowledged or timed out, once.
        assert c.acked + c.timeouts == s.transmissions
        assert c.timeouts == s.transmit_failures
        assert c.sent_datagrams == s.transmissions + c.retransmits


def test_same_seed_same_trace_and_seed_matters_with_retransmission() -> None:
    a, b, c = (lossy_sim(seed=n).run().trace_sha256 for n in (5, 5, 6))
    assert a == b != c


def test_best_effort_links_send_bare_bundles_unacknowledged() -> None:
    sim = lossy_sim(ack_mode=udp.AckMode.NONE, loss=0.0)
    s = sim.run()
    link = sim.udp_link(1, 2)
    assert link is not None
    assert s.delivered == 40
    assert link.counters.best_effort == 40
    assert link.counters.acked == 0
    assert sim.trace.counts["ack"] == 0


def test_sim_rejects_auto_ack_mode_and_zero_tries() -> None:
    with pytest.raises(ValueError, match="auto"):
        SimConfig(duration_s=1, ack_mode=udp.AckMode.AUTO)
    with pytest.raises(ValueError, match="max_tries"):
        SimConfig(duration_s=1, max_tries=0)


@pytest.mark.parametrize("link_mac", [False, True])
def test_link_macs_only_when_asked_and_keys_match_both_ends(link_mac: bool) -> None:
    plan = FakePlan(
        [Contact(1, 2, 0, 100, 10_000.0), Contact(2, 3, 0, 100, 10_000.0)],
        [Range(1, 2, 0, 100, 0.01), Range(2, 3, 0, 100, 0.01)],
    )
    sim = Simulator(
        plan,
        SimConfig(seed=1, duration_s=100.0, link_mac=link_mac),
        traffic=[TrafficItem(at_s=1, src=1, dst=3, size_bytes=100, count=3)],
        agent_factory=fake_factory({(1, 3): 2, (2, 3): 3}),
        store_factory=fake_store_factory,
        credentials=credentials_for([1, 2], seed=9),  # none for node 3
    )
    s = sim.run()
    assert s.delivered == 3
    l12, l23 = sim.udp_link(1, 2), sim.udp_link(2, 3)
    assert l12 is not None
    assert l23 is not None
    assert l23.mac_key is None  # node 3 has no credentials
    if link_mac:
        assert l12.mac_key is not None
        assert len(l12.mac_key) == 32
        # The receiver derives the same key: its ACKs passed the sender's check.
        assert l12.counters.acked == 3
        assert l12.counters.mac_failures == 0
    else:
        assert l12.mac_key is None
