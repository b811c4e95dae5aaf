"""Crash and restart with a durable store: nothing acknowledged is lost,
nothing is delivered twice."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from dcis.dtn.agent.actions import Ack, Deliver, Transmit
from dcis.dtn.agent.agent import Agent
from dcis.dtn.bpv7.bundle import encode_bundle, make_bundle
from dcis.dtn.bpv7.fragment import fragment_bundle
from dcis.dtn.storage.sqlite_store import SqliteStore
from tests.unit.agent.helpers import events, link, of

T0 = 1_000_000


def bundle(
    seq: int, dst: str, *, lifetime_ms: int = 600_000, payload: bytes = b"x"
) -> bytes:
    return encode_bundle(
        make_bundle(
            source="ipn:1.1",
            destination=dst,
            payload=payload,
            creation_ms=T0,
            sequence=seq,
            lifetime_ms=lifetime_ms,
        )
    )


def test_restart_resumes_pending_and_never_delivers_twice(tmp_path: Path) -> None:
    path = tmp_path / "node2.db"
    a = Agent(node=2, store=SqliteStore(path))
    a.register("ipn:2.1")
    for i in range(5):
        assert of(
            a.on_receive(
                cla="t", neighbor=1, data=bundle(i, "ipn:3.1"), now=T0, cl_token=i
            ),
            Ack,
        )
    # one delivered and confirmed, one handed over but not confirmed
    (done,) = of(
        a.on_receive(
            cla="t", neighbor=1, data=bundle(10, "ipn:2.1"), now=T0, cl_token=10
        ),
        Deliver,
    )
    a.on_delivered(done.bundle_key, T0 + 1)
    (unconfirmed,) = of(
        a.on_receive(
            cla="t", neighbor=1, data=bundle(11, "ipn:2.1"), now=T0, cl_token=11
        ),
        Deliver,
    )
    # one in flight when the node dies
    a.on_receive(cla="t", neighbor=1, data=bundle(20, "ipn:4.1"), now=T0, cl_token=20)
    (inflight,) = of(a.on_contact_start(link(2, 4), T0 + 2), Transmit)
    # one whose lifetime ends while the node is down
    a.on_receive(
        cla="t",
        neighbor=1,
        data=bundle(30, "ipn:3.1", lifetime_ms=5_000),
        now=T0,
        cl_token=30,
    )
    del a  # crash: no close, no cleanup

    b = Agent(node=2, store=SqliteStore(path))
    b.register("ipn:2.1")
    acts = b.recover(T0 + 10_000)
    assert [d.bundle_key for d in of(acts, Deliver)] == [unconfirmed.bundle_key]
    assert [e.bundle_key for e in events(acts, "expired")] == ["ipn:1.1|1000000|30"]
    b.on_delivered(unconfirmed.bundle_key, T0 + 10_001)
    sent = of(b.on_contact_start(link(2, 3), T0 + 10_002), Transmit)
    assert len(sent) == 5
    for tx in sent:
        b.on_transmit_done(tx.tx_id, True, T0 + 10_003)
    (again,) = of(b.on_contact_start(link(2, 4), T0 + 10_004), Transmit)
    assert again.data == inflight.data
    b.on_transmit_done(again.tx_id, True, T0 + 10_005)
    assert len(b.store) == 0
    # the confirmed bundle arriving again is a duplicate, even after a restart
    for key_seq in (10, 11):
        dup = b.on_receive(
            cla="t",
            neighbor=1,
            data=bundle(key_seq, "ipn:2.1"),
            now=T0 + 10_006,
            cl_token=99,
        )
        assert of(dup, Deliver) == []
        assert of(dup, Ack) == [Ack(1, 99)]


def test_restart_keeps_fragments_for_reassembly(tmp_path: Path) -> None:
    path = tmp_path / "node2.db"
    whole = make_bundle(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=bytes(range(200)),
        creation_ms=T0,
    )
    frags = fragment_bundle(whole, 60)
    a = Agent(node=2, store=SqliteStore(path))
    a.register("ipn:2.1")
    for i, f in enumerate(frags[:-1]):
        assert (
            of(
                a.on_receive(
                    cla="t", neighbor=1, data=encode_bundle(f), now=T0, cl_token=i
                ),
                Deliver,
            )
            == []
        )
    del a
    b = Agent(node=2, store=SqliteStore(path))
    b.register("ipn:2.1")
    assert of(b.recover(T0 + 1), Deliver) == []
    (d,) = of(
        b.on_receive(
            cla="t", neighbor=1, data=encode_bundle(frags[-1]), now=T0 + 2, cl_token=9
        ),
        Deliver,
    )
    assert d.payload == bytes(range(200))
    assert d.bundle_key == whole.bundle_key


def test_send_after_restart_does_not_reuse_a_stored_key(tmp_path: Path) -> None:
    path = tmp_path / "n.db"
    a = Agent(node=1, store=SqliteStore(path))
    k1, _ = a.send(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=b"a",
        lifetime_ms=60_000,
        now=T0,
    )
    del a
    b = Agent(node=1, store=SqliteStore(path))
    b.recover(T0)
    k2, _ = b.send(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=b"b",
        lifetime_ms=60_000,
        now=T0,
    )
    assert k1 != k2
    assert b.holds(k1)
    assert b.holds(k2)


def test_acknowledged_bundles_survive_kill_9(tmp_path: Path) -> None:
    """A child agent acknowledges bundles and is SIGKILLed; every bundle it
    acknowledged is resumed by a new agent on the same file."""
    path = tmp_path / "node2.db"
    child = textwrap.dedent(
        f"""
        import os, signal, sys
        from dcis.dtn.agent.actions import Ack
        from dcis.dtn.agent.agent import Agent, Received
        from dcis.dtn.agent.store import SqliteStore
        from dcis.dtn.bpv7.bundle import encode_bundle, make_bundle
        a = Agent(node=2, store=SqliteStore({str(path)!r}))
        def b(i):
            return encode_bundle(make_bundle(source="ipn:1.1", destination="ipn:3.1", payload=b"k" * 1000,
                                             creation_ms={T0}, sequence=i, lifetime_ms=600_000))
        for i in range(20):
            for act in a.on_receive(cla="t", neighbor=1, data=b(i), now={T0}, cl_token=i):
                if isinstance(act, Ack):
                    sys.stdout.write(f"{{act.cl_token}}\\n")
        acts = a.on_receive_many([Received("t", 1, b(i), i) for i in range(20, 40)], {T0})
        sys.stdout.write("".join(f"{{x.cl_token}}\\n" for x in acts if isinstance(x, Ack)))
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", child],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -9, proc.stderr
    acked = [int(x) for x in proc.stdout.split()]
    assert acked == list(range(40))
    b = Agent(node=2, store=SqliteStore(path))
    b.recover(T0 + 1)
    sent = of(b.on_contact_start(link(2, 3), T0 + 2), Transmit)
    assert len(sent) == 40
