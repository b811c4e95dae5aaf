"""Node services in the simulator (issue 11): ``Simulator(..., services=)``.

The gossip counter of ``examples/gossip_counter.py`` (written only against
``dcis.dtn.node``) runs on three nodes in a line whose links come and go, under
loss and a crash; every node ends with the same vector, and the same seed
gives the same trace hash. Smaller tests pin the pieces: incarnations,
state surviving a crash, seeded ``ctx.rng``, ``ctx.earliest_arrival``,
``ctx.credentials``, app traffic to a service endpoint, ``dcis sim
--services``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from dcis.crypto import NodeIdentity, OperatorKey
from dcis.dtn.agent.actions import Deliver
from dcis.dtn.node import (
    EchoService,
    IdleService,
    Inbound,
    NodeCredentials,
    Send,
    Service,
    ServiceContext,
)
from dcis.dtn.routing.contact import Contact, Range
from dcis.dtn.routing.plan import ContactPlan
from dcis.dtn.sim import SIM_EPOCH, Crash, NodeSpec, SimConfig, Simulator
from dcis.tools.cli import main
from examples.gossip_counter import SERVICE, GossipCounter
from tests.unit.bpsec.helpers import certify

RATE = 100_000.0


def line_plan(period_s: int = 60, up_s: int = 20, duration_s: int = 900) -> ContactPlan:
    """1 - 2 - 3: each hop up ``up_s`` of every ``period_s``, the two hops
    never at the same time."""
    contacts = []
    for t in range(0, duration_s, period_s):
        for a, b, off in ((1, 2, 0), (2, 3, period_s // 2)):
            contacts.append(Contact(a, b, t + off, t + off + up_s, RATE))
            contacts.append(Contact(b, a, t + off, t + off + up_s, RATE))
    ranges = [
        Range(a, b, 0, duration_s, 0.01) for a, b in ((1, 2), (2, 1), (2, 3), (3, 2))
    ]
    return ContactPlan(contacts, ranges)


def run_counter(
    seed: int,
    *,
    loss: float = 0.1,
    crashes: Sequence[Crash] = (),
    specs: dict[int, NodeSpec] | None = None,
    store_dir: Path | None = None,
) -> tuple[str, dict[int, dict[int, int]], list[tuple[int, int]]]:
    calls: list[tuple[int, int]] = []

    def factory(node: int, incarnation: int) -> Sequence[Service]:
        calls.append((node, incarnation))
        return [GossipCounter(limit=5, period_ms=10_000)]

    sim = Simulator(
        line_plan(),
        SimConfig(seed=seed, duration_s=900, loss=loss, store_dir=store_dir),
        services=factory,
        crashes=crashes,
        node_specs=specs,
    )
    summary = sim.run()
    vectors = {}
    for n in (1, 2, 3):
        svc = sim.service(n, SERVICE)
        assert isinstance(svc, GossipCounter)
        vectors[n] = dict(svc.vector)
    sim.close()
    return summary.trace_sha256, vectors, calls


def test_gossip_counter_converges_under_loss_and_replays_exactly() -> None:
    h1, v1, _ = run_counter(11)
    h2, v2, _ = run_counter(11)
    assert h1 == h2
    assert v1 == v2
    assert all(v == {1: 5, 2: 5, 3: 5} for v in v1.values()), v1
    h3, _, _ = run_counter(12)
    assert h3 != h1  # the seed matters (loss, jitter from ctx.rng)


def test_crash_drops_service_memory_but_keeps_state() -> None:
    # Node 2 (the only path between 1 and 3) crashes at 100 s, back at 200 s;
    # its store is in memory (its bundles die) but ctx.state survives.
    crash = [Crash(node=2, at_s=100, restart_at_s=200)]
    h1, v1, calls = run_counter(5, crashes=crash)
    h2, _, _ = run_counter(5, crashes=crash)
    assert h1 == h2
    assert (2, 1) in calls
    assert (2, 2) in calls
    assert calls.count((1, 1)) == 1
    assert all(v == {1: 5, 2: 5, 3: 5} for v in v1.values()), v1


def test_durable_node_keeps_state_in_its_sqlite_store(tmp_path: Path) -> None:
    crash = [Crash(node=2, at_s=100, restart_at_s=200)]
    _, v, calls = run_counter(
        5,
        crashes=crash,
        specs={2: NodeSpec(durable=True)},
        store_dir=tmp_path,
    )
    assert (2, 2) in calls
    assert all(x == {1: 5, 2: 5, 3: 5} for x in v.values()), v


class Probe(IdleService):
    """Records what its context says; counts starts."""

    service = 30

    def __init__(self, log: list[tuple[str, object]]) -> None:
        self.log = log
        self.ctx: ServiceContext | None = None

    def start(self, ctx: ServiceContext, now_ms: int) -> list[Send]:
        self.ctx = ctx
        seen = ctx.state.get("starts")
        n = 0 if seen is None else int(seen)
        ctx.state.put("starts", str(n + 1).encode())
        self.log.append(("start", (ctx.node, ctx.incarnation, n + 1)))
        self.log.append(("rng", ctx.rng.random()))
        self.log.append(("eta", ctx.earliest_arrival(3, at_ms=now_ms, size=100)))
        self.log.append(("cred", ctx.credentials))
        return []

    def on_bundle(self, inbound: Inbound, now_ms: int) -> list[Send]:
        self.log.append(("bundle", inbound))
        return []

    def on_contact(self, neighbor: int, up: bool, now_ms: int) -> list[Send]:
        self.log.append(("contact", (neighbor, up, now_ms)))
        return []


def probe_run(
    seed: int, **kw: object
) -> tuple[Simulator, dict[int, list[tuple[str, object]]]]:
    logs: dict[int, list[tuple[str, object]]] = {}

    def factory(node: int, incarnation: int) -> Sequence[Service]:
        return [Probe(logs.setdefault(node, [])), EchoService()]

    sim = Simulator(
        line_plan(),
        SimConfig(seed=seed, duration_s=300),
        services=factory,
        **kw,  # type: ignore[arg-type]
    )
    return sim, logs


def test_context_rng_eta_contacts_and_incarnations() -> None:
    sim, logs = probe_run(3, crashes=[Crash(node=1, at_s=50, restart_at_s=70)])
    sim.run()
    l1 = logs[1]
    starts = [v for k, v in l1 if k == "start"]
    assert starts == [(1, 1, 1), (1, 2, 2)]  # state survived the crash
    rngs = [v for k, v in l1 if k == "rng"]
    assert rngs[0] != rngs[1]  # a new stream per incarnation
    sim2, logs2 = probe_run(3, crashes=[Crash(node=1, at_s=50, restart_at_s=70)])
    sim2.run()
    assert [v for k, v in logs2[1] if k == "rng"] == rngs
    # CGR from 1 to 3 at plan time 0: the 2-3 hop opens at 30 s.
    eta = next(v for k, v in l1 if k == "eta")
    assert isinstance(eta, int)
    assert SIM_EPOCH + 30_000 <= eta < SIM_EPOCH + 31_000
    # Contacts from node 1: up at 0, down at 20 (once per neighbour), and
    # after the restart the contact at 60..80 is announced again at 70.
    contacts = [v for k, v in l1 if k == "contact"]
    assert contacts[:2] == [(2, True, SIM_EPOCH), (2, False, SIM_EPOCH + 20_000)]
    assert (2, True, SIM_EPOCH + 70_000) in contacts
    assert [v for k, v in l1 if k == "cred"] == [None, None]


def test_credentials_come_from_the_simulator() -> None:
    op = OperatorKey.generate(entropy=b"svc op".ljust(32, b"."))
    ident = NodeIdentity.generate(1, entropy=b"svc node 1".ljust(32, b"."))
    cert = certify(op, ident, not_after_ms=SIM_EPOCH + 10**9, serial=1)
    creds = NodeCredentials(
        identity=ident, certificate=cert, operator_public=op.public_key
    )
    sim, logs = probe_run(1, credentials={1: creds})
    sim.run_until(1)
    assert [v for k, v in logs[1] if k == "cred"] == [creds]
    assert [v for k, v in logs[2] if k == "cred"] == [None]


def test_app_traffic_to_a_service_endpoint_and_echo_back() -> None:
    got: list[tuple[int, Deliver]] = []
    logs: dict[int, list[tuple[str, object]]] = {}

    def factory(node: int, incarnation: int) -> Sequence[Service]:
        return [Probe(logs.setdefault(node, [])), EchoService()]

    sim = Simulator(
        line_plan(),
        SimConfig(seed=2, duration_s=300),
        services=factory,
        deliver_listener=lambda n, d: got.append((n, d)),
    )
    key = sim.send(1, 3, 0, payload=b"to the probe", dest_service=30)
    ping = sim.send(1, 3, 0, payload=b"ping", dest_service=7)
    summary = sim.run()
    inbound = [v for k, v in logs[3] if k == "bundle"]
    assert [(i.bundle_key, i.payload, i.source) for i in inbound] == [  # type: ignore[attr-defined]
        (key, b"to the probe", "ipn:1.1")
    ]
    # The echo reply comes back to the app endpoint ipn:1.1.
    assert [(n, d.payload, d.source) for n, d in got] == [(1, b"ping", "ipn:3.7")]
    assert summary.delivered == 2
    assert summary.misdelivered == 0
    assert ping is not None


def test_failing_service_is_contained() -> None:
    class Bad(Probe):
        def on_contact(self, neighbor: int, up: bool, now_ms: int) -> list[Send]:
            raise RuntimeError("boom")

    def factory(node: int, incarnation: int) -> Sequence[Service]:
        return [Bad([]), EchoService()]

    lines: list[str] = []
    sim = Simulator(
        line_plan(),
        SimConfig(seed=2, duration_s=100),
        services=factory,
        trace_listener=lambda t, kind, node, fields: lines.append(f"{kind} {fields}"),
    )
    sim.send(1, 2, 0, payload=b"x", dest_service=7)
    summary = sim.run()
    assert any(x.startswith("service_failed") and "boom" in x for x in lines)
    assert summary.delivered == 1


def test_factory_errors_are_typed() -> None:
    def factory(node: int, incarnation: int) -> Sequence[Service]:
        raise KeyError(node)

    from dcis.dtn.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="services factory failed for node 1"):
        Simulator(line_plan(), SimConfig(seed=0, duration_s=1), services=factory)


def test_dcis_sim_services_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = tmp_path / "plan.ionrc"
    lines = []
    for t in range(0, 300, 60):
        lines += [
            f"a contact +{t} +{t + 20} 1 2 100000",
            f"a contact +{t} +{t + 20} 2 1 100000",
        ]
    lines.append("a range +0 +300 1 2 0.01")
    plan.write_text("\n".join(lines) + "\n", encoding="utf-8")
    traffic = tmp_path / "traffic.txt"
    traffic.write_text("", encoding="utf-8")
    args = [
        "sim", "--plan", str(plan), "--seed", "4", "--duration", "300",
        "--traffic", str(traffic), "--json",
        "--services", "examples.gossip_counter:fast_factory",
    ]  # fmt: skip
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["trace_sha256"] == first["trace_sha256"]
    assert main(args[:-2]) == 0
    assert json.loads(capsys.readouterr().out)["trace_sha256"] != first["trace_sha256"]
    assert main([*args[:-1], "examples.gossip_counter:nope"]) == 2
    assert "--services" in capsys.readouterr().err


def test_rng_is_not_the_global_one() -> None:
    # Drawing from the global generator must not change a run.
    h1, _, _ = run_counter(7, loss=0.0)
    random.random()
    h2, _, _ = run_counter(7, loss=0.0)
    assert h1 == h2


def test_readme_ten_line_service_runs_in_the_simulator() -> None:
    """README.md's ten-line service, extracted as written, answers in the
    simulator: what the README promises a newcomer works."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    block = readme.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    exec(compile(block, "README.md", "exec"), namespace)
    shout = namespace["Shout"]
    got: list[tuple[int, Deliver]] = []
    sim = Simulator(
        line_plan(),
        SimConfig(seed=3, duration_s=300),
        services=lambda node, incarnation: [shout()],  # type: ignore[operator]
        deliver_listener=lambda n, d: got.append((n, d)),
    )
    sim.send(1, 3, 0, payload=b"hello", dest_service=21)
    sim.run()
    sim.close()
    assert [(n, d.payload, d.source) for n, d in got] == [(1, b"HELLO", "ipn:3.21")]
