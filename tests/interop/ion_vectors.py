"""Loading the bytes recorded from a live ION node (tests/vectors/ion_*.hex).

Each file says where its bytes come from (ION commit, configuration, the
command that made each datagram, the capture). Entries are named
``<run>-<NN> <from>><to> <what>``, e.g. ``udp-07 ion>dcis bptrace ...``.
"""

from __future__ import annotations

from pathlib import Path

VECTORS = Path(__file__).resolve().parent.parent / "vectors"


def load(name: str) -> dict[str, bytes]:
    """``{entry name: bytes}`` of ``tests/vectors/<name>``, in file order."""
    out: dict[str, list[str]] = {}
    current = None
    for line in (VECTORS / name).read_text().splitlines():
        if line.startswith("#"):
            continue
        if line.startswith("== "):
            current = line[3:].strip()
            out[current] = []
        elif line.strip() and current is not None:
            out[current].append(line.strip())
    return {k: bytes.fromhex("".join(v)) for k, v in out.items()}


def entry(vectors: dict[str, bytes], tag: str) -> bytes:
    """The one entry whose name starts with ``tag`` (e.g. ``"udp-07"``)."""
    (hit,) = [v for k, v in vectors.items() if k.split()[0] == tag]
    return hit


def direction(name: str) -> str:
    """``"ion>dcis"`` or ``"dcis>ion"`` of an entry name."""
    return name.split()[1]
