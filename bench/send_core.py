"""Node 1's per-bundle work with no trio, no sockets and no other process:
CPU per app send on its way through the sending daemon, for comparing
trees on a shared machine where the daemon pair's figures swing with the
load (spec/performance.md, "Seventh round").

Per batch of ``--batch`` sends (one app read, as ``dtn-node`` takes it): the
frames decoded (``PushReader``), the sends originated in one FULL
transaction (``NodeCore.send_many`` where the tree has it, else
``NodeCore.send`` per bundle), a reply encoded per send, the group-commit
sync (``begin_sync``/``end_sync``, on this thread), then every transmission
reported done (``on_transmit_done_many``: the forwarded bundles leave the
store) -- the agent and store configured as ``dtn-node`` configures them.

Prints CPU microseconds per bundle (process time, best and median of
``--repeats``). ``--callgrind`` runs the same loop under valgrind's
callgrind and prints the user-space instructions per bundle executed in
the loop (no kernel time, no start-up): the same count run after run
(within ~0.3%), so two trees compare on a loaded machine. Run with
another checkout's Python to measure that checkout (its editable ``dcis``).

    .venv/bin/python bench/send_core.py --size 1000 --batch 64
    .venv/bin/python bench/send_core.py --size 64000 --batch 48 --count 480 --callgrind
    /work/main/.venv/bin/python bench/send_core.py --callgrind
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import core_bench


def _loop(args: argparse.Namespace, count: int = 0) -> tuple[Any, int]:
    """Build node 1 as ``dtn-node`` does and return (one batch, bundles per
    batch); ``count`` is unused (the sends are made as the loop runs)."""
    from dcis.dtn import appapi
    from dcis.dtn.agent.actions import Transmit
    from dcis.dtn.appapi.wire import encode_message
    from dcis.dtn.client.push_reader import PushReader

    now = [800_000_000_000]
    store, core = core_bench.node_core(1, 2, now[0], mtu_by_neighbour={2: 16 << 20})
    payload = os.urandom(args.size)
    frames = b"".join(
        encode_message(
            {
                "type": "send",
                "id": i,
                "destination": "ipn:2.1",
                "payload": payload,
                "source": "ipn:1.1",
                "lifetime_ms": 3_600_000,
            }
        )
        for i in range(args.batch)
    )
    reader = PushReader(max_message_bytes=64 << 20)
    from dcis.dtn import agent as agent_pkg

    send_request = getattr(agent_pkg, "SendRequest", None)
    key_reply = getattr(appapi.wire, "encode_key_reply", None)

    def reply(mid: int, key: str) -> bytes:
        if key_reply is not None:
            return bytes(key_reply(mid, key))
        return encode_message({"type": "ok", "id": mid, "bundle_key": key})

    def one_batch() -> None:
        msgs = reader.feed(frames)
        now[0] += 1
        actions: list[Any] = []
        out = []
        with store.transaction(durable=True):
            if send_request is not None:
                keys, actions = core.send_many(
                    [
                        send_request(
                            m["source"],
                            m["destination"],
                            m["payload"],
                            m["lifetime_ms"],
                        )
                        for m in msgs
                    ],
                    now[0],
                )
            else:
                keys = []
                for m in msgs:
                    key, more = core.send(
                        source=m["source"],
                        destination=m["destination"],
                        payload=m["payload"],
                        lifetime_ms=m["lifetime_ms"],
                        now=now[0],
                    )
                    keys.append(key)
                    actions += more
            for m, key in zip(msgs, keys, strict=True):
                out.append(reply(m["id"], key))
        tx = [a.tx_id for a in actions if isinstance(a, Transmit)]
        assert len(tx) == len(msgs), "every send forwarded at once"
        sync = store.begin_sync()
        sync()
        store.end_sync()
        core.on_transmit_done_many([(t, True) for t in tx], now[0])

    return one_batch, args.batch


def main() -> int:
    return core_bench.main(
        __file__, "send_core", __doc__ or "", "sends per app read", _loop
    )


if __name__ == "__main__":
    sys.exit(main())
