"""Helpers for the multi-process runtime tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dcis.dtn.runtime import NodeConfig
from dcis.tools.testbed import free_udp_port


def write_plan(path: Path, lines: list[str]) -> Path:
    """Write an ionrc plan and return its path."""
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def free_udp_ports(n: int) -> list[int]:
    """``n`` distinct loopback UDP ports that were free a moment ago, below
    the ephemeral range (as the testbed's: no ``bind(0)`` of another test
    can be given one before the node binds it)."""
    return [free_udp_port("127.0.0.1") for _ in range(n)]


def app_node_config(tmp: Path, **fields: Any) -> NodeConfig:
    """Node 1 on a free loopback UDP port, with its app socket and store in
    ``tmp`` (``n1.sock``, ``n1.db``); ``fields`` sets the rest."""
    (port,) = free_udp_ports(1)
    return NodeConfig(
        node=1,
        listen=("127.0.0.1", port),
        app_socket=str(tmp / "n1.sock"),
        store_path=str(tmp / "n1.db"),
        **fields,
    )


def rss_kib(pid: int) -> int:
    """Resident set size of process ``pid`` in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def poll_until(
    pred: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.05
) -> None:
    """Wait until ``pred()`` is true (another process's state: no event to wait on).

    Bounded: raises AssertionError after ``timeout_s``.
    """
    import trio

    for _ in range(max(1, int(timeout_s / interval_s))):  # >= timeout_s under load
        if pred():
            return
        await trio.sleep(interval_s)
    assert pred(), f"condition not met within {timeout_s} s"
