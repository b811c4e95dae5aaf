"""The per-hop floor of ``bench/sim_scale.py`` (issue 18): the least work
one store-and-forward hop of this design does, timed by the benchmark as a
reference for the simulator's cost per transmission.

A floor that skipped work would flatter the design, so it is checked to do
the work of a hop: the segment a real agent sends decodes, and a chain of
floor hops carries the bundle on unchanged but for what RFC 9171 5.4 says a
forwarding node changes (previous node, hop count), with every hop's
stored copy gone once it has forwarded it. No timing is asserted here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.bpv7.bundle import Bundle, decode_bundle_untrusted
from dcis.dtn.bpv7.eid import IpnEid
from dcis.dtn.cl.udp import DataSegment, decode_datagram_untrusted, encode_data_segment
from dcis.dtn.sim.engine import SIM_EPOCH

_BENCH = Path(__file__).resolve().parents[2] / "bench" / "sim_scale.py"


def _load_bench() -> ModuleType:
    name = "dcis_bench_sim_scale"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _BENCH)
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


bench = _load_bench()


def _bundle_of(dgram: bytes) -> tuple[DataSegment, Bundle]:
    seg = decode_datagram_untrusted(dgram)
    assert isinstance(seg, DataSegment)
    return seg, decode_bundle_untrusted(seg.bundle)


def test_first_hop_wire_is_what_the_agent_sends() -> None:
    wire = bench.first_hop_wire(1_000)
    b = decode_bundle_untrusted(wire)
    assert b.payload == bytes(1_000)
    assert b.previous_node == IpnEid(1, 0)
    assert str(b.primary.destination) == "ipn:3.1"


@given(
    payload=st.integers(min_value=1, max_value=9_000),
    hops=st.integers(min_value=1, max_value=8),
)
def test_floor_hops_carry_the_bundle_as_forwarding_nodes_do(
    payload: int, hops: int
) -> None:
    dgram = encode_data_segment(sender=1, token=1, bundle=bench.first_hop_wire(payload))
    _, first = _bundle_of(dgram)
    first_hop = first.hop_count
    store = MemoryStore()
    for i in range(hops):
        node = 2 + i
        dgram = bench.floor_hop(dgram, store, node, 100 + i, int(SIM_EPOCH))
        seg, b = _bundle_of(dgram)
        assert seg.sender == node
        assert seg.token == 100 + i
        assert b.previous_node == IpnEid(node, 0)
        assert b.bundle_key == first.bundle_key
        assert b.payload == first.payload
        if first_hop is not None:
            assert b.hop_count is not None
            assert b.hop_count.count == first_hop.count + i + 1
        assert len(store) == 0
        assert store.used_bytes == 0


def test_floor_is_timed_over_real_hops() -> None:
    us = bench.floor_us_per_hop(500, hops=20)
    assert us > 0
