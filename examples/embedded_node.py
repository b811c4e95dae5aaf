"""Flight software embedding the DCiS stack: no daemon, just a trio program.

Two nodes run inside this one process (as two satellites' software would run
in two): node 1 sends telemetry to node 2's endpoint ``ipn:2.1`` over UDP on
loopback; node 2 iterates the bundles of its endpoint; both stop cleanly when
the ``async with`` blocks end (bundles not yet forwarded would stay in the
SQLite stores for the next start).

    .venv/bin/python examples/embedded_node.py
"""

from __future__ import annotations

import socket
import sys
import tempfile
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dcis.dtn.runtime import NeighbourConfig, NodeConfig, open_node


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def main(store_dir: Path, count: int = 5) -> list[bytes]:
    p1, p2 = free_port(), free_port()
    # A config object: the same fields as node.toml (dcis.dtn.runtime.config).
    sat1 = NodeConfig(
        node=1,
        listen=("127.0.0.1", p1),
        store_path=str(store_dir / "sat1.db"),
        neighbours=(NeighbourConfig(node=2, address=("127.0.0.1", p2)),),
    )
    sat2 = NodeConfig(
        node=2,
        listen=("127.0.0.1", p2),
        store_path=str(store_dir / "sat2.db"),
        neighbours=(NeighbourConfig(node=1, address=("127.0.0.1", p1)),),
    )
    received: list[bytes] = []
    async with open_node(sat1) as node1, open_node(sat2) as node2:
        async with node2.endpoint("ipn:2.1") as inbox:
            for i in range(count):
                key = await node1.send(
                    "ipn:2.1",
                    f"telemetry frame {i}".encode(),
                    source="ipn:1.1",
                    lifetime_ms=60_000,
                )
                print(f"node 1 sent {key}")
            with trio.fail_after(10):
                async for bundle in inbox:
                    print(f"node 2 got {bundle.payload!r} from {bundle.source}")
                    received.append(bundle.payload)
                    if len(received) == count:
                        break
        print(
            "status of node 2:",
            {k: v for k, v in node2.status()["counters"].items() if v},
        )
    return received


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        trio.run(main, Path(d))
