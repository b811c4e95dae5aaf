"""dtn: BPv7 bundles, the bundle agent, its store, contact plans and routing,
convergence layers, the trio runtime and the deterministic simulator.

Protocol cores are sans-I/O (see spec/design.md): they take bytes and ``now`` and
return actions. Only ``dcis.dtn.runtime`` (trio) and ``dcis.dtn.sim`` drive them.
"""
