"""The object store's sans-I/O core: the pipeline (chunk, encrypt, erasure
code), the manifest, placement, the wire messages between nodes' object
store services, and :class:`~dcis.dfs.core.service.DfsService` (service 18).

Nothing here reads a clock, touches a file or a socket: the share store is
handed in (an in-memory one here, the on-disk one in :mod:`dcis.dfs.sharestore`).
"""
