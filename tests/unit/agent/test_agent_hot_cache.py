"""Bundles read back from the decoded copy kept when they were stored
(``entries.load_bundle``, issue 18): the bytes sent and delivered are those
the store would give, and the copy is bounded."""

from __future__ import annotations

import pytest

from dcis.dtn.agent import entries
from dcis.dtn.agent.actions import Action, Deliver, Transmit
from dcis.dtn.agent.agent import Agent, AgentConfig
from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.bpv7.bundle import decode_bundle_untrusted, encode_bundle, make_bundle
from dcis.dtn.errors import InvalidArgument

from .helpers import link, of

N = entries.HOT_MAX_BUNDLES + 44
KEEP = AgentConfig(keep_decoded=entries.HOT_MAX_BUNDLES)  # as the daemon


class CountingStore(MemoryStore):
    """Counts reads of stored bytes."""

    reads = 0

    def get(self, key: str) -> bytes | None:
        self.reads += 1
        return super().get(key)


def _queued(*, cold: bool) -> Agent:
    """Node 1 holding N bundles for node 2 (no contact yet); ``cold``: forgets
    the decoded copies first (a restart: every read goes to the store)."""
    a = Agent(node=1, store=CountingStore(), config=KEEP)
    for i in range(N):
        a.send(
            source="ipn:1.1",
            destination="ipn:2.1",
            payload=b"%05d" % i * 100,
            lifetime_ms=3_600_000,
            now=1_000 + i,
        )
    assert len(a._hot) <= entries.HOT_MAX_BUNDLES
    assert a._hot_bytes <= entries.HOT_MAX_BYTES
    if cold:
        a.recover(now=2_000)
        assert not a._hot
        assert isinstance(a.store, CountingStore)
        a.store.reads = 0  # count the reads of the forwarding only
    return a


def _drain(a: Agent, now: int) -> list[bytes]:
    """Open the contact and complete every transmission; the bytes sent."""
    sent: list[bytes] = []
    todo: list[Action] = a.on_contact_start(link(1, 2), now)
    while todo:
        txs = of(todo, Transmit)
        sent += [t.data for t in txs]
        todo = a.on_transmit_done_many([(t.tx_id, True) for t in txs], now)
    return sent


def test_forwarded_bytes_are_the_same_from_the_kept_copy_and_from_the_store() -> None:
    warm = _queued(cold=False)
    cold = _queued(cold=True)
    assert _drain(warm, 3_000) == _drain(cold, 3_000)
    assert warm.stored == 0
    assert not warm._hot
    assert warm._hot_bytes == 0
    # The first HOT_MAX_BUNDLES came from the kept copies, the rest from the store.
    assert isinstance(warm.store, CountingStore)
    assert isinstance(cold.store, CountingStore)
    assert warm.store.reads == N - entries.HOT_MAX_BUNDLES
    assert cold.store.reads >= N  # (and the flags of each, unknown after recover)


def test_a_full_cache_keeps_the_oldest_until_they_are_stale() -> None:
    a = _queued(cold=False)
    first = list(a._hot)
    assert len(first) == entries.HOT_MAX_BUNDLES  # the first ones, in order
    # A bundle stored once the oldest copy is HOT_MAX_AGE_MS old replaces it.
    later = 1_000 + entries.HOT_MAX_AGE_MS
    key, _acts = a.send(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=b"late",
        lifetime_ms=3_600_000,
        now=later,
    )
    assert key in a._hot
    assert first[0] not in a._hot
    assert len(a._hot) == entries.HOT_MAX_BUNDLES


def test_delivered_bundle_is_the_stored_one_and_a_redelivery_reads_no_store() -> None:
    store = CountingStore()
    a = Agent(node=2, store=store, config=KEEP)
    a.register("ipn:2.1")
    b = make_bundle(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=b"payload",
        creation_ms=1_000,
        hop_limit=8,
        previous_node="ipn:1.0",
    )
    (d,) = of(
        a.on_receive(cla="udp", neighbor=1, data=encode_bundle(b), now=1_500), Deliver
    )
    assert store.reads == 0
    stored = store.get(d.bundle_key)
    assert stored is not None
    s = decode_bundle_untrusted(stored)
    assert (d.payload, d.source, d.creation_ms) == (
        s.payload,
        str(s.primary.source),
        s.primary.creation.time_ms,
    )
    # A delivery the driver deferred and asks for again reads the kept copy.
    reads = store.reads
    assert of(a.redeliver([d.bundle_key], 1_550), Deliver) == [d]
    assert store.reads == reads
    assert d.bundle_key in a._hot  # until on_delivered removes the bundle
    a.on_delivered(d.bundle_key, 1_600)
    assert not a._hot
    assert a._hot_bytes == 0


def test_by_default_nothing_is_kept_decoded() -> None:
    # simulations hold many agents: the default keeps no decoded copies
    a = Agent(node=1, store=MemoryStore())
    a.send(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=b"x",
        lifetime_ms=3_600_000,
        now=1_000,
    )
    assert a.stored == 1
    assert not a._hot


def test_fragments_are_kept_decoded_and_forwarded_without_reading_the_store() -> None:
    # A bundle cut to the link's MTU (RFC 9171 5.8) becomes fragments stored
    # as bundles of their own: they are kept decoded like any just-stored
    # bundle, so forwarding them reads nothing back from the store, and the
    # fragments sent are valid (every CRC checked on decode; the payload
    # CRC taken from the stored bytes) and add up to the payload.
    from dataclasses import replace

    payload = bytes(i % 251 for i in range(100_000))
    store = CountingStore()
    a = Agent(node=1, store=store, config=replace(KEEP, max_bundle_bytes=40_000))
    a.send(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=payload,
        lifetime_ms=3_600_000,
        now=1_000,
    )
    sent = [decode_bundle_untrusted(d) for d in _drain(a, 2_000)]
    assert len(sent) >= 3
    assert all(b.is_fragment for b in sent)
    assert all(len(b.payload) >= 16_384 for b in sent[:-1])  # gathered sizes
    assert b"".join(b.payload for b in sent) == payload
    assert store.reads == 0
    assert a.stored == 0
    assert not a._hot


def test_fragments_are_reassembled_and_delivered_without_reading_the_store() -> None:
    # The receiving side: fragments kept decoded when stored are reassembled
    # from those copies, and the whole bundle, stored from its parts and
    # kept decoded too, is delivered without a read; what the store holds
    # is the whole bundle's encoding.
    from dcis.dtn.bpv7.fragment import fragment_bundle

    payload = bytes(i % 251 for i in range(100_000))
    b = make_bundle(
        source="ipn:1.1",
        destination="ipn:2.1",
        payload=payload,
        creation_ms=1_000,
        hop_limit=8,
        previous_node="ipn:1.0",
    )
    store = CountingStore()
    a = Agent(node=2, store=store, config=KEEP)
    a.register("ipn:2.1")
    got: list[Deliver] = []
    for i, f in enumerate(fragment_bundle(b, [40_000, 40_000, 20_000])):
        got += of(
            a.on_receive(cla="udp", neighbor=1, data=encode_bundle(f), now=1_500 + i),
            Deliver,
        )
    (d,) = got
    assert d.payload == payload
    assert store.reads == 0
    assert a.counters["reassembled"] == 1
    stored = store.get(d.bundle_key)
    assert stored is not None
    assert decode_bundle_untrusted(stored).payload == payload
    a.on_delivered(d.bundle_key, 1_600)
    assert not a._hot
    assert len(store) == 0


def _queue_64k(config: AgentConfig, n: int) -> Agent:
    """Node 1 holding ``n`` 64 KB bundles for node 2 (no contact yet)."""
    a = Agent(node=1, store=CountingStore(), config=config)
    for i in range(n):
        a.send(
            source="ipn:1.1",
            destination="ipn:2.1",
            payload=bytes([i % 256]) * 64_000,
            lifetime_ms=3_600_000,
            now=1_000 + i,
        )
    return a


def test_the_byte_bound_of_the_kept_copies_is_configurable() -> None:
    # 48 app sends in flight at 64 KB queue more bundles in node 1 than
    # HOT_MAX_BYTES (4 MiB, ~64 of them) holds: the others were read back
    # from the store and decoded to be forwarded. The daemon's bound
    # (keep_decoded_bytes = DAEMON_HOT_MAX_BYTES) holds them all.
    from dataclasses import replace

    n = 120
    small = _queue_64k(KEEP, n)
    large = _queue_64k(
        replace(KEEP, keep_decoded_bytes=entries.DAEMON_HOT_MAX_BYTES), n
    )
    assert small._hot_bytes <= entries.HOT_MAX_BYTES < large._hot_bytes
    assert len(large._hot) == n
    assert large._hot_bytes <= entries.DAEMON_HOT_MAX_BYTES
    assert _drain(small, 3_000) == _drain(large, 3_000)  # the same bytes sent
    assert isinstance(small.store, CountingStore)
    assert isinstance(large.store, CountingStore)
    assert small.store.reads >= n - entries.HOT_MAX_BYTES // 64_000
    assert large.store.reads == 0
    assert not large._hot
    assert large._hot_bytes == 0


def test_a_negative_byte_bound_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        AgentConfig(keep_decoded=8, keep_decoded_bytes=-1)
