"""Issue 11, "Done when": a service written only against ``dcis.dtn.node``
(``examples/gossip_counter.py``) runs unchanged in the simulator (seeded,
same trace hash twice) and on three ``dtn-node`` daemons over UDP, with the
same final state.

The daemons are real processes on loopback (the real-socket set: no timing
assertions, only "eventually, within a generous bound").
"""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
from pathlib import Path

import pytest
import trio

from dcis.dtn.routing.contact import Contact
from dcis.dtn.routing.plan import ContactPlan
from dcis.dtn.sim import SimConfig, Simulator
from examples.gossip_counter import SERVICE, GossipCounter, fast_factory
from tests.runtime.conftest import free_udp_ports, poll_until

ROOT = Path(__file__).resolve().parents[2]
NODES = (1, 2, 3)
LINKS = ((1, 2), (2, 3))


def sim_vectors(seed: int) -> tuple[str, dict[int, dict[int, int]]]:
    """The counter on the daemons' topology (1 - 2 - 3, links always up)."""
    contacts = []
    for a, b in LINKS:
        contacts += [Contact(a, b, 0, 600, 1e6), Contact(b, a, 0, 600, 1e6)]
    sim = Simulator(
        ContactPlan(contacts),
        SimConfig(seed=seed, duration_s=600),
        services=fast_factory,
    )
    summary = sim.run()
    out = {}
    for n in NODES:
        svc = sim.service(n, SERVICE)
        assert isinstance(svc, GossipCounter)
        out[n] = dict(svc.vector)
    return summary.trace_sha256, out


def test_in_the_simulator_twice() -> None:
    h1, v1 = sim_vectors(21)
    h2, v2 = sim_vectors(21)
    assert h1 == h2
    assert v1 == v2 == {n: {1: 3, 2: 3, 3: 3} for n in NODES}


def stored_vector(db: Path) -> dict[int, int] | None:
    """The counter's ctx.state["vector"] in a node's store (read-only; the
    daemon may be running: WAL readers do not block it)."""
    if not db.exists():
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            row = con.execute(
                "SELECT value FROM service_state WHERE service=? AND key='vector'",
                (SERVICE,),
            ).fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    if row is None:
        return None
    return {int(k): int(v) for k, v in json.loads(bytes(row[0])).items()}


@pytest.mark.slow
async def test_on_three_daemons_over_udp_with_the_same_final_state(
    tmp_path: Path,
) -> None:
    ports = dict(zip(NODES, free_udp_ports(3), strict=True))
    neighbours = {
        n: [m for a, b in LINKS for m in (a, b) if n in (a, b) and m != n]
        for n in NODES
    }
    for n in NODES:
        lines = [
            f"node = {n}",
            f'listen = "127.0.0.1:{ports[n]}"',
            f'app_socket = "{tmp_path / f"n{n}.sock"}"',
            "[store]",
            f'path = "{tmp_path / f"n{n}.db"}"',
            "[services]",
            'factories = ["examples.gossip_counter:fast_factory"]',
        ]
        for m in neighbours[n]:
            lines += [
                "[[neighbours]]",
                f"node = {m}",
                f'address = "127.0.0.1:{ports[m]}"',
            ]
        (tmp_path / f"n{n}.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    procs = []
    try:
        for n in NODES:
            log = (tmp_path / f"n{n}.log").open("wb")
            procs.append(
                await trio.lowlevel.open_process(
                    [
                        sys.executable,
                        "-m",
                        "dcis.tools.dtn_node",
                        "--config",
                        str(tmp_path / f"n{n}.toml"),
                    ],
                    stdout=log,
                    stderr=log,
                    cwd=ROOT,
                )
            )
            log.close()
        done = {1: 3, 2: 3, 3: 3}
        await poll_until(
            lambda: all(stored_vector(tmp_path / f"n{n}.db") == done for n in NODES),
            timeout_s=90,
            interval_s=0.2,
        )
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            with trio.move_on_after(20):
                await p.wait()
            if p.poll() is None:
                p.kill()
                await p.wait()
    daemons = {n: stored_vector(tmp_path / f"n{n}.db") for n in NODES}
    _, simulated = sim_vectors(21)
    assert daemons == simulated
    for n in NODES:
        log = (tmp_path / f"n{n}.log").read_text(encoding="utf-8")
        assert "service_failed" not in log
