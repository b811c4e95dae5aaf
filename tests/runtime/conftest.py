"""Helpers for the multi-process runtime tests."""

from __future__ import annotations

from pathlib import Path


def write_plan(path: Path, lines: list[str]) -> Path:
    """Write an ionrc plan and return its path."""
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def rss_kib(pid: int) -> int:
    """Resident set size of process ``pid`` in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")
