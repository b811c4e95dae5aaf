"""consensus: gossip membership, partition-tolerant log, state store (not built yet; see spec/design.md)."""
