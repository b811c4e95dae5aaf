"""A node's storage stack for daemons: membership (16), the log (17) and the
object store (18), as one service factory.

    # node.toml
    [services]
    factories = ["dcis.dfs.stack:factory"]

The share store lives on disk under ``$DCIS_DFS_DIR/node-<N>`` (default
``$XDG_DATA_HOME/dcis/dfs/node-<N>``, i.e. ``~/.local/share/...``). Object
keys are sealed to every member whose certificate membership has verified
(and to the node itself), so any node of the constellation can read; a put
is refused (``PlacementError``, retry) while an alive member's certificate
is not verified yet. The
node advertises the free space of that disk with its membership entry.
Membership needs the node's credentials: run the daemon with its keys.
``$DCIS_DFS_MAINTENANCE_MS`` sets the scrub/repair period (default 60 s),
``$DCIS_DFS_FETCH_SLACK_MS`` how long a get waits for a silent holder
before it brings in the next one (default 30 s).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from dcis.consensus.log.service import LogService
from dcis.consensus.membership.service import MembershipService
from dcis.consensus.membership.view import MemberState, Resources
from dcis.dfs.core.errors import PlacementError
from dcis.dfs.core.service import DfsConfig, DfsService
from dcis.dfs.sharestore import DiskShareStore
from dcis.dtn.node.service import Service


def share_dir(node: int) -> Path:
    """Where ``node``'s shares are kept (see the module docstring)."""
    base = os.environ.get("DCIS_DFS_DIR")
    if base is None:
        data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        base = str(Path(data) / "dcis" / "dfs")
    return Path(base) / f"node-{node}"


def member_keys(membership: MembershipService) -> Mapping[int, bytes]:
    """X25519 public keys of every member with a verified certificate."""
    out: dict[int, bytes] = {}
    for node in membership.members():
        key = membership.kx_public(node)
        if key is not None:
            out[node] = key
    return out


def alive_member_keys(membership: MembershipService) -> Mapping[int, bytes]:
    """:func:`member_keys`, but a PlacementError (the put is refused, nothing
    sent) while an alive member's certificate is not verified yet: an object
    put then would stay unreadable there."""
    keys = member_keys(membership)
    missing = sorted(
        n
        for n, info in membership.members().items()
        if info.state == MemberState.ALIVE and n not in keys
    )
    if missing:
        raise PlacementError(f"no verified certificate yet for alive members {missing}")
    return keys


def build(
    node: int, root: Path, *, config: DfsConfig | None = None
) -> tuple[MembershipService, LogService, DfsService]:
    """The three services of one node, shares under ``root``."""
    store = DiskShareStore(root)
    usage = shutil.disk_usage(root)
    membership = MembershipService(
        resources=Resources(store_free_bytes=usage.free, store_total_bytes=usage.total)
    )
    log = LogService(membership)
    dfs = DfsService(
        membership=membership,
        log=log,
        store=store,
        config=config,
        readers=lambda: alive_member_keys(membership),
    )
    return membership, log, dfs


def _env_ms(name: str) -> int | None:
    """The integer in environment variable ``name`` (None when unset)."""
    raw = os.environ.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}: not an integer: {raw!r}") from None


def config_from_env() -> DfsConfig:
    """The object store's tunables: defaults, except
    ``$DCIS_DFS_MAINTENANCE_MS`` (scrub/repair period) and
    ``$DCIS_DFS_FETCH_SLACK_MS`` (how long a get waits for a silent holder
    before it asks the next one); testbeds on loopback shorten both."""
    config = DfsConfig()
    period = _env_ms("DCIS_DFS_MAINTENANCE_MS")
    if period is not None:
        config = replace(config, maintenance_interval_ms=period)
    slack = _env_ms("DCIS_DFS_FETCH_SLACK_MS")
    if slack is not None:
        if slack < 0:
            raise ValueError(f"DCIS_DFS_FETCH_SLACK_MS: negative: {slack}")
        config = replace(config, fetch_slack_ms=slack)
    return config


def factory(node: int, incarnation: int) -> Sequence[Service]:
    """``[services] factories = ["dcis.dfs.stack:factory"]``."""
    return list(build(node, share_dir(node), config=config_from_env()))
