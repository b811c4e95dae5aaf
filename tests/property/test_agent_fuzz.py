"""Hostile input to the agent: on_receive never raises, whatever the bytes,
and the ledger of an exchange over a lossy, duplicating link balances."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.agent.actions import Ack, Action, Deliver, Transmit
from dcis.dtn.agent.agent import Agent, AgentConfig
from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.bpv7.bundle import encode_bundle, make_bundle
from dcis.dtn.bpv7.flags import BundleFlags
from dcis.dtn.routing.contact import Contact
from dcis.dtn.storage.sqlite_store import SqliteStore

T0 = 1_000_000
VALID = encode_bundle(
    make_bundle(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=b"payload",
        creation_ms=T0,
        hop_limit=5,
        previous_node="ipn:1.0",
        report_to="ipn:1.1",
        flags=BundleFlags.REPORT_RECEPTION,
    )
)


def fresh() -> Agent:
    a = Agent(node=2, store=MemoryStore(limit_bytes=10_000))
    a.register("ipn:2.1")
    return a


@given(st.binary(max_size=512))
def test_junk_never_raises(data: bytes) -> None:
    a = fresh()
    acts = a.on_receive(cla="udp", neighbor=1, data=data, now=T0, cl_token=1)
    assert a.counters["dropped"] + a.counters["received"] == 1
    if a.counters["dropped"]:
        assert not any(isinstance(x, Ack) for x in acts)


@given(
    st.lists(
        st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=6,
    )
)
def test_mutated_bundles_never_raise(edits: list[tuple[int, int]]) -> None:
    data = bytearray(VALID)
    for pos, val in edits:
        data[pos] = val
    a = fresh()
    a.on_receive(cla="udp", neighbor=1, data=bytes(data), now=T0, cl_token=1)
    # whatever was accepted can be forwarded or delivered without raising
    a.on_contact_start(Contact(2, 3, 0, float("inf"), 0), T0 + 1)
    a.on_tick(T0 + 10_000_000)


@given(
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.sampled_from(["ipn:2.1", "ipn:3.1"]),
)
def test_extreme_fields_never_raise_with_sqlite(
    creation: int, lifetime: int, prev: int, dst: str
) -> None:
    """u64 times and node numbers a peer may send fit the SQLite store
    (signed 64-bit): nothing raises, and what is held can be recovered."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "s.db"
        a = Agent(node=2, store=SqliteStore(path))
        a.register("ipn:2.1")
        data = encode_bundle(
            make_bundle(
                source="ipn:1.1",
                destination=dst,
                payload=b"x",
                creation_ms=creation,
                lifetime_ms=lifetime,
                previous_node=f"ipn:{prev}.0",
                bundle_age_ms=0,
            )
        )
        a.on_receive(cla="udp", neighbor=None, data=data, now=T0, cl_token=1)
        for act in a.on_receive(
            cla="udp", neighbor=None, data=data, now=T0, cl_token=2
        ):
            if isinstance(act, Deliver):
                a.on_delivered(act.bundle_key, T0)
        a.store.close()
        b = Agent(node=2, store=SqliteStore(path))
        b.register("ipn:2.1")
        b.recover(T0)
        b.on_contact_start(Contact(2, 3, 0, float("inf"), 0), T0)
        b.on_tick(T0 + 1)
        b.store.close()


@given(
    st.integers(0, 2**32),
    st.integers(1, 12),
    st.sampled_from([None, 200, 400]),
    st.sampled_from([0, 3, 1024]),
)
def test_lossy_duplicating_exchange_delivers_each_bundle_once(
    seed: int, n: int, mtu: int | None, keep: int
) -> None:
    """1 -> 2 over a link that drops, duplicates, reorders and loses acks,
    with retries:
    every bundle is delivered exactly once, and both stores end empty
    (with and without decoded copies kept, ``keep_decoded``: 3 fills up)."""
    rng = random.Random(seed)
    cfg = AgentConfig(max_bundle_bytes=mtu, retry_delay_ms=100, keep_decoded=keep)
    a = Agent(node=1, store=MemoryStore(), config=cfg, rng=random.Random(seed))
    b = Agent(node=2, store=MemoryStore(), config=cfg)
    b.register("ipn:2.1")
    keys = []
    now = T0
    for i in range(n):
        k, _ = a.send(
            source="ipn:1.1",
            destination="ipn:2.1",
            payload=bytes([i]) * rng.randint(0, 900),
            lifetime_ms=10**9,
            now=now,
        )
        keys.append(k)
    delivered: list[str] = []
    pending: list[tuple[int, Action]] = [
        (1, x) for x in a.on_contact_start(Contact(1, 2, 0, float("inf"), 0), now)
    ]
    for _ in range(10_000):
        if not pending:
            if a.stored == 0:
                break
            now += 200  # let the backoff timers fire
            pending = [(1, x) for x in a.on_tick(now)]
            continue
        node, act = pending.pop(rng.randrange(len(pending)))  # reordering
        if node == 1 and isinstance(act, Transmit):
            fate = rng.random()
            if fate < 0.2:
                pending.extend(
                    (1, x) for x in a.on_transmit_done(act.tx_id, False, now)
                )
                continue
            copies = 2 if fate > 0.85 else 1
            ok = False
            for _c in range(copies):
                out = b.on_receive(
                    cla="t", neighbor=1, data=act.data, now=now, cl_token=act.tx_id
                )
                ok = ok or any(isinstance(x, Ack) for x in out)
                pending.extend((2, x) for x in out)
            if fate < 0.3:
                ok = False  # the ack is lost: 1 sends it again later
            pending.extend((1, x) for x in a.on_transmit_done(act.tx_id, ok, now))
        elif node == 2 and isinstance(act, Deliver):
            delivered.append(act.bundle_key)
            pending.extend((2, x) for x in b.on_delivered(act.bundle_key, now))
    assert sorted(delivered) == sorted(keys)
    assert a.stored == 0
    assert b.stored == 0
    assert not a._hot  # decoded copies leave with their bundles
    assert not b._hot
    assert len(b.store) == 0
