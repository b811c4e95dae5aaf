"""The simulator engine against a tiny fake agent: event order, link model,
faults, crash/restart, trace hashing and the traffic parser."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.agent.actions import Action, Deliver
from dcis.dtn.errors import InvalidArgument
from dcis.dtn.routing.contact import Contact, Range
from dcis.dtn.sim import (
    Crash,
    NodeSpec,
    Partition,
    SimConfig,
    Simulator,
    TrafficItem,
    parse_traffic,
)
from dcis.dtn.time import DtnTime
from tests.sim.fake_agent import (
    DISKS,
    FakeAgent,
    FakePlan,
    fake_factory,
    fake_store_factory,
)

CHAIN_ROUTES = {(1, 4): 2, (2, 4): 3, (3, 4): 4}


def chain_plan(rate: float = 10_000.0, owlt_s: float = 0.0) -> FakePlan:
    """1 -> 2 -> 3 -> 4, each hop open only after the previous one closed."""
    contacts = [
        Contact(1, 2, 10, 20, rate),
        Contact(2, 3, 30, 40, rate),
        Contact(3, 4, 50, 60, rate),
    ]
    ranges = [Range(c.frm, c.to, 0, 1000, owlt_s) for c in contacts]
    return FakePlan(contacts, ranges)


def make_sim(
    plan: FakePlan, routes: dict[tuple[int, int], int] = CHAIN_ROUTES, **kw: object
) -> tuple[Simulator, list[tuple[int, str, int, tuple[object, ...]]]]:
    records: list[tuple[int, str, int, tuple[object, ...]]] = []
    cfg_kw = {k: v for k, v in kw.items() if k in SimConfig.__dataclass_fields__}
    sim_kw = {k: v for k, v in kw.items() if k not in cfg_kw}
    cfg_kw.setdefault("duration_s", 100.0)
    sim = Simulator(
        plan,
        SimConfig(**cfg_kw),  # type: ignore[arg-type]
        agent_factory=fake_factory(routes),
        store_factory=fake_store_factory,
        trace_listener=lambda t, k, n, f: records.append((t, k, n, f)),
        **sim_kw,  # type: ignore[arg-type]
    )
    return sim, records


def test_store_and_forward_over_three_hops_that_never_coexist() -> None:
    sim, rec = make_sim(
        chain_plan(), traffic=[TrafficItem(at_s=0, src=1, dst=4, size_bytes=100)]
    )
    s = sim.run()
    assert (s.sent, s.delivered, s.pending, s.expired) == (1, 1, 0, 0)
    hops = [(n, f[0]) for t, k, n, f in rec if k == "transmit"]
    assert hops == [(1, 2), (2, 3), (3, 4)]
    (deliver_t,) = [t for t, k, n, f in rec if k == "deliver"]
    assert deliver_t >= 50_000_000  # waited for the last contact
    assert s.latency_p50_s == deliver_t / 1e6


def test_transmissions_serialize_at_the_contact_rate_and_arrive_after_light_time() -> (
    None
):
    plan = FakePlan([Contact(1, 2, 0, 100, 1000.0)], [Range(1, 2, 0, 100, 0.5)])
    traffic = [TrafficItem(at_s=1, src=1, dst=2, size_bytes=900, count=3)]
    sim, rec = make_sim(plan, routes={(1, 2): 2}, traffic=traffic)
    s = sim.run()
    assert s.delivered == 3
    # The datagrams' sizes: each bundle in its UDP CL DATA segment.
    sizes = [int(str(f[-1])) for t, k, n, f in rec if k == "receive"]
    receive_us = [t for t, k, n, f in rec if k == "receive"]
    assert all(s > 900 for s in sizes)
    # Each starts when the previous ends: size / rate seconds each, plus 0.5 s light time.
    expected, end = [], 1_000_000
    for size in sizes:
        end += -(-size * 1_000_000 // 1000)
        expected.append(end + 500_000)
    assert receive_us == expected


def test_a_transmission_that_cannot_finish_in_the_contact_fails_at_its_end() -> None:
    plan = FakePlan([Contact(1, 2, 0, 1, 1000.0)])
    sim, rec = make_sim(
        plan,
        routes={(1, 2): 2},
        traffic=[TrafficItem(at_s=0, src=1, dst=2, size_bytes=5000)],
    )
    s = sim.run()
    assert (s.delivered, s.pending, s.lost, s.transmit_failures) == (0, 1, 0, 1)
    (done,) = [(t, f) for t, k, n, f in rec if k == "tx_done"]
    assert done[0] == 1_000_000
    assert done[1][-1] == 0


def test_lifetime_expires_bundles_that_wait_too_long() -> None:
    sim, rec = make_sim(
        chain_plan(),
        lifetime_s=35.0,
        traffic=[TrafficItem(at_s=0, src=1, dst=4, size_bytes=100)],
    )
    s = sim.run()
    assert (s.delivered, s.expired, s.pending) == (0, 1, 0)
    (t_exp,) = [t for t, k, n, f in rec if k == "expire"]
    assert t_exp == 35_000_000


def test_loss_is_recovered_by_hop_by_hop_retransmission_exactly_once() -> None:
    plan = FakePlan([Contact(1, 2, 0, 500, 10_000.0)], [Range(1, 2, 0, 500, 0.1)])
    traffic = [TrafficItem(at_s=1, src=1, dst=2, size_bytes=200, count=40)]
    sim, _ = make_sim(
        plan,
        routes={(1, 2): 2},
        traffic=traffic,
        loss=0.3,
        duplicate=0.2,
        reorder=0.3,
        seed=7,
        duration_s=500.0,
    )
    s = sim.run()
    assert s.lost_in_flight > 0
    assert s.duplicated > 0
    assert (s.delivered, s.duplicates_delivered, s.pending) == (40, 0, 0)
    assert all(r.deliveries == 1 for r in sim.ledger.values())


def test_same_seed_same_trace_and_different_seed_differs() -> None:
    def run(seed: int) -> str:
        plan = FakePlan([Contact(1, 2, 0, 500, 10_000.0)], [Range(1, 2, 0, 500, 0.1)])
        sim, _ = make_sim(
            plan,
            routes={(1, 2): 2},
            traffic=[TrafficItem(at_s=1, src=1, dst=2, size_bytes=200, count=20)],
            loss=0.3,
            seed=seed,
        )
        return sim.run().trace_sha256

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_partition_cuts_a_planned_link_until_it_heals() -> None:
    plan = FakePlan([Contact(1, 2, 0, 100, 10_000.0)])
    part = Partition(start_s=0, end_s=40, groups=(frozenset({1}), frozenset({2})))
    sim, rec = make_sim(
        plan,
        routes={(1, 2): 2},
        partitions=[part],
        traffic=[TrafficItem(at_s=5, src=1, dst=2, size_bytes=100)],
    )
    s = sim.run()
    assert s.delivered == 1
    (t_deliver,) = [t for t, k, n, f in rec if k == "deliver"]
    (size,) = [int(str(f[-1])) for t, k, n, f in rec if k == "receive"]  # datagram
    assert t_deliver == 40_000_000 + size * 100  # at heal, plus the bytes at 10 kB/s


def test_partition_leaves_links_inside_a_group_up() -> None:
    p = Partition(start_s=0, end_s=1, groups=(frozenset({1, 2}), frozenset({3})))
    assert not p.separates(1, 2)
    assert p.separates(2, 3)
    assert p.separates(1, 4)  # 4 is in the implicit "rest" group
    assert not p.separates(4, 5)
    with pytest.raises(InvalidArgument):
        Partition(start_s=0, end_s=1, groups=(frozenset({1}), frozenset({1, 2})))


@pytest.mark.parametrize(("durable", "delivered"), [(True, 1), (False, 0)])
def test_crash_of_middle_node_keeps_disk_store_and_loses_memory_store(
    tmp_path: Path, durable: bool, delivered: int
) -> None:
    DISKS.clear()
    sim, rec = make_sim(
        chain_plan(),
        traffic=[TrafficItem(at_s=0, src=1, dst=4, size_bytes=100)],
        crashes=[Crash(node=3, at_s=42, restart_at_s=45)],
        node_specs={3: NodeSpec(durable=durable)},
        store_dir=tmp_path,
    )
    s = sim.run()
    assert [k for t, k, n, f in rec if k in ("crash", "restart")] == [
        "crash",
        "restart",
    ]
    assert s.delivered == delivered
    assert (
        s.lost == 1 - delivered
    )  # the memory store's bundle is gone, and the summary says so


def test_crash_mid_transmission_fails_it_and_the_sender_retries_after_restart() -> None:
    plan = FakePlan([Contact(1, 2, 0, 100, 100.0)])  # 1000 B takes 10 s
    sim, rec = make_sim(
        plan,
        routes={(1, 2): 2},
        traffic=[TrafficItem(at_s=0, src=1, dst=2, size_bytes=1000)],
        crashes=[Crash(node=2, at_s=5, restart_at_s=20)],
    )
    s = sim.run()
    dones = [(t, f[-1]) for t, k, n, f in rec if k == "tx_done"]
    assert dones[0] == (5_000_000, 0)
    assert s.delivered == 1


def test_durable_nodes_need_a_store_dir() -> None:
    with pytest.raises(InvalidArgument, match="store_dir"):
        make_sim(chain_plan(), node_specs={3: NodeSpec(durable=True)})


def test_run_until_steps_and_send_injects_at_current_time() -> None:
    sim, _rec = make_sim(chain_plan())
    sim.run_until(12.5)
    assert sim.now_s == 12.5
    key = sim.send(1, 4, 10)
    assert key is not None
    sim.run()
    assert sim.ledger[key].sent_us == 12_500_000
    assert sim.ledger[key].deliveries == 1


def test_trace_sink_gets_one_line_per_record() -> None:
    sink = io.StringIO()
    plan = chain_plan()
    sim = Simulator(
        plan,
        SimConfig(duration_s=100),
        agent_factory=fake_factory(CHAIN_ROUTES),
        store_factory=fake_store_factory,
        trace_sink=sink,
        traffic=[TrafficItem(at_s=0, src=1, dst=4, size_bytes=10)],
    )
    sim.run()
    lines = sink.getvalue().splitlines()
    assert len(lines) == sum(sim.trace.counts.values())
    assert sum(1 for ln in lines if ln.split()[1] == "transmit") == 3


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"duration_s": -1}, "duration"),
        ({"duration_s": 1, "loss": 1.5}, "loss"),
        ({"duration_s": 1, "lifetime_s": 0}, "lifetime"),
    ],
)
def test_bad_config_is_refused(kw: dict[str, float], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        SimConfig(**kw)  # type: ignore[arg-type]


def test_traffic_parser_reads_comments_counts_and_sorts() -> None:
    items = parse_traffic("# header\n\n10 1 2 100 3  # three\n0.5 2 1 7\n")
    assert [(i.at_s, i.src, i.dst, i.size_bytes, i.count, i.line) for i in items] == [
        (0.5, 2, 1, 7, 1, 4),
        (10.0, 1, 2, 100, 3, 3),
    ]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("0 1 2 100\n1 2 3\n", "line 2: expected"),
        ("x 1 2 3\n", "line 1: AT_SECONDS"),
        ("\n\n0 1 b 3\n", "line 3: DST_NODE"),
        ("0 1 1 3\n", "line 1: source and destination"),
        ("0 1 2 0\n", "line 1: size"),
        ("-1 1 2 3\n", "line 1: send time"),
        ("0 1 2 3 0\n", "line 1: count"),
        ("nan 1 2 3\n", "line 1: send time"),
    ],
)
def test_traffic_parser_names_the_bad_line(text: str, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        parse_traffic(text)


def test_an_agent_with_a_deadline_stuck_in_the_past_cannot_spin_the_loop() -> None:
    ticks: list[int] = []

    class Stuck(FakeAgent):
        def next_deadline(self) -> DtnTime | None:
            return DtnTime(0)  # always overdue

        def on_tick(self, now: DtnTime) -> list[Action]:
            ticks.append(now)
            return []

    def factory(
        *, node: int, store: Any, plan: Any, plan_epoch: DtnTime, rng: random.Random
    ) -> Stuck:
        return Stuck(node=node, store=store, routes={}, rng=rng)

    sim = Simulator(
        FakePlan([Contact(1, 2, 0, 1, 1000.0)]),
        SimConfig(duration_s=0.5),
        agent_factory=factory,
        store_factory=fake_store_factory,
    )
    sim.run()
    per_node = len(ticks) // 2
    assert 400 <= per_node <= 501  # at most one tick per node per millisecond
    assert len(set(ticks)) == len(ticks) // 2  # both nodes, each ms once


def test_deliver_listener_sees_real_payloads_and_can_reply() -> None:
    plan = FakePlan([Contact(1, 2, 0, 100, 10_000.0), Contact(2, 1, 0, 100, 10_000.0)])
    got: list[tuple[int, bytes]] = []
    sim: Simulator

    def on_deliver(node: int, d: Deliver) -> None:
        got.append((node, d.payload))
        if d.payload == b"ping":
            sim.send(node, 1, 0, payload=b"pong")

    sim = Simulator(
        plan,
        SimConfig(duration_s=100),
        agent_factory=fake_factory({(1, 2): 2, (2, 1): 1}),
        store_factory=fake_store_factory,
        deliver_listener=on_deliver,
    )
    sim.run_until(1)
    sim.send(1, 2, 0, payload=b"ping")
    s = sim.run()
    assert got == [(2, b"ping"), (1, b"pong")]
    assert (s.sent, s.delivered) == (2, 2)


def test_delivery_at_the_agents_expiry_millisecond_counts_as_late() -> None:
    # Sent 0.5 ms into plan time: the agent stamps creation at ms 0, so its
    # lifetime (10 s) ends at 10.000 s, not at 10.0005 s. The fake agent
    # delivers whatever arrives; arriving at 10.000001 s is after the
    # bundle's lifetime and the summary must say so.
    plan = FakePlan([Contact(1, 2, 10, 20, 1e9)], [Range(1, 2, 0, 1000, 0.0)])
    sim, _ = make_sim(
        plan,
        routes={(1, 2): 2},
        lifetime_s=10.0,
        traffic=[TrafficItem(at_s=0.0005, src=1, dst=2, size_bytes=10)],
    )
    s = sim.run()
    assert s.delivered == 1
    assert s.delivered_after_lifetime == 1


@given(
    steps=st.lists(st.floats(min_value=0.0, max_value=200.0), max_size=8),
    seed=st.integers(min_value=0, max_value=3),
)
def test_stepping_with_run_until_changes_no_event_and_progress_counts_agree(
    steps: list[float], seed: int
) -> None:
    """``run_until`` in any steps processes the same events in the same order
    as one ``run`` (bench/sim_scale's ``--progress`` steps hour by hour), and
    :meth:`Simulator.progress` agrees with the summary at every step."""

    def sim_of() -> Simulator:
        plan = FakePlan([Contact(1, 2, 0, 500, 10_000.0)], [Range(1, 2, 0, 500, 0.1)])
        sim, _ = make_sim(
            plan,
            routes={(1, 2): 2},
            traffic=[TrafficItem(at_s=1, src=1, dst=2, size_bytes=200, count=20)],
            loss=0.3,
            duplicate=0.1,
            seed=seed,
            duration_s=600.0,
        )
        return sim

    whole = sim_of().run()
    stepped = sim_of()
    t = 0.0
    for dt in steps:
        t += dt
        stepped.run_until(t)
        p, s = stepped.progress(), stepped.summary()
        assert p["events"] == s.events
        assert p["sent"] == s.sent
        assert p["delivered"] == s.delivered
        assert p["transmissions"] == s.transmissions
        assert p["stored"] == s.stored
    end = stepped.run()
    assert end.trace_sha256 == whole.trace_sha256
    assert end == whole
    assert stepped.progress()["delivered"] == whole.delivered
