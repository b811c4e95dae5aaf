"""dfs: the erasure-coded object store (not built yet; see spec/design.md)."""
