"""CPU per ``NodeCore.call_service`` whose service writes two state keys
and sends one bundle, on a SqliteStore (``synchronous=NORMAL``: CPU, not
fsync). Run it from a base and a branch checkout in alternating pairs.

Prints the median CPU microseconds per call of ``--runs`` runs of
``--calls`` calls (one node, one service, one process).

Usage: ``.venv/bin/python bench/state_commit.py [--calls N] [--runs N]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dcis.dtn.agent.agent import Agent
from dcis.dtn.node import EchoService, NodeCore, Send, ServiceContext
from dcis.dtn.storage.sqlite_store import SqliteStore


class Writer(EchoService):
    """Writes a counter and one of 64 entries per call, and says so (the
    echo service's no-op timers and contacts)."""

    service = 30

    def __init__(self) -> None:
        super().__init__()
        self.ctx: ServiceContext | None = None

    def start(self, ctx: ServiceContext, now_ms: int) -> list[Send]:
        self.ctx = ctx
        return []

    def write(self, i: int, now_ms: int) -> list[Send]:
        assert self.ctx is not None
        self.ctx.state.put("n", b"%d" % i)
        self.ctx.state.put(f"e:{i % 64}", b"x" * 32)
        return [Send("ipn:9.1", b"n=%d" % i, lifetime_ms=1000)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=3000)
    p.add_argument("--runs", type=int, default=7)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        store = SqliteStore(Path(d) / "s.db", synchronous="NORMAL")
        core = NodeCore(Agent(node=1, store=store), node=1, services=[Writer()])
        core.start(0)
        now = 1
        runs = []
        for _ in range(args.runs):
            t0 = time.process_time()
            for i in range(args.calls):
                now += 1
                core.call_service(30, "write", i, now=now)
                if i % 200 == 0:  # the sends expire: the store stays small
                    now += 2000
                    core.on_tick(now)
            runs.append((time.process_time() - t0) / args.calls * 1e6)
        store.close()
    print(
        f"median {statistics.median(runs):.1f} us/call, "
        f"runs {[round(x, 1) for x in runs]}"
    )


if __name__ == "__main__":
    main()
