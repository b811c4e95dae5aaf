"""Helpers for the multi-process runtime tests."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path


def write_plan(path: Path, lines: list[str]) -> Path:
    """Write an ionrc plan and return its path."""
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def free_udp_ports(n: int) -> list[int]:
    """``n`` distinct loopback UDP ports that were free a moment ago."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [int(s.getsockname()[1]) for s in socks]
    for s in socks:
        s.close()
    return ports


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
