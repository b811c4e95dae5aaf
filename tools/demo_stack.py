"""``make demo``, the storage stack: membership, the log and the object store
on six ``dtn-node`` daemons.

Theory of operation: one :class:`~dcis.tools.testbed.Testbed` in secure mode (the
testbed makes an operator key and a certified key store per node) runs
``dcis.dfs.stack:factory`` (membership, service 16; the log, 17; the object
store, 18) on six daemons over UDP on loopback, behind the link emulator,
driven by the shipped plan ``tools/plans/stack.ionrc``: every pair of nodes
is in contact, except that from ``CUT_S`` to ``HEAL_S`` the plan cuts the
constellation into ``SMALL`` = {1, 2} and ``BIG`` = {3, 4, 5, 6}. The demo
talks to each daemon only through its app API, as ``dcis members``, ``dcis
log`` and ``dcis put/get`` do, and shows, in order:

1. membership: every node's view converges to six alive members;
2. the object store: node 1 puts a 3-of-6 object (one share per node);
3. the log: writes on every node; node 2 is SIGKILLed; writes on both sides
   of the cut (node 1 alone on its side); after the heal every running node
   has the same commit index and state hash, nothing left tentative, and
   every write is there;
4. membership: every running node holds node 2 dead. Its detection (about
   40-60 s, spec/membership.md) runs during the log's part, which is why
   node 2 dies before the cut and not at the end;
5. the object store again: two more holders are SIGKILLed (n - k = 3 down)
   and node 3 reads the object back intact. A get asks the holders it
   believes alive first; with ``$DCIS_DFS_FETCH_SLACK_MS`` at 2 s it asks
   the next one after 2 s of silence (the default 30 s is for real links).

Each check polls another process's state until it holds or a generous bound
runs out (the machine may be loaded): a check that runs out is a FAIL, and
the demo goes on to the next one (except that the later checks need the
earlier ones' nodes up). :func:`run_stack` returns one ``(what, ok)`` per
check.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import trio

from dcis.consensus.log.api import Increment, Level, Op, Put
from dcis.consensus.log.cbor import Value
from dcis.consensus.logclient import TrioLogClient
from dcis.consensus.membership.service import SERVICE as MEMBERSHIP
from dcis.consensus.membership.wire import (
    Kind,
    MemberRow,
    Message,
    decode_message_untrusted,
    encode_message,
)
from dcis.dfs.api import Dfs
from dcis.dfs.core.errors import DfsError
from dcis.dtn.client import ClientError, open_trio_client
from dcis.dtn.errors import DecodeError
from dcis.tools.cmd_members import row_text
from dcis.tools.testbed import Testbed, TestbedOptions

PLAN = Path(__file__).resolve().parent / "plans" / "stack.ionrc"
NODES = (1, 2, 3, 4, 5, 6)
SMALL, BIG = (1, 2), (3, 4, 5, 6)
CUT_S, HEAL_S = 20.0, 40.0
"""The plan's cut (tools/plans/stack.ionrc)."""
K, N = 3, 6
OBJECT = "demo/telemetry.bin"
OBJECT_BYTES = 200_000
WRITER, CRASHED, READER = 1, 2, 3
"""Node 1 puts the object; node 2 is SIGKILLed before the cut (membership
must find it dead); node 3 reads the object back at the end."""
FETCH_SLACK_MS = 2000
CALL_TIMEOUT_S = 10.0
MEMBERS_BOUND_S = 30.0
PUT_BOUND_S = 20.0
HEAL_BOUND_S = 45.0
GET_BOUND_S = 30.0
DEAD_BOUND_S = 60.0
"""Generous bounds: spec/membership.md states 60 s from a crash to dead
everywhere on the six-node testbed (counted here from the end of the log's
part); the others are several times what the demo measures."""

Check = tuple[str, bool]
Say = Callable[[str], None]


# ------------------------------------------------------------ app API helpers


async def members(tb: Testbed, node: int) -> list[MemberRow]:
    """``node``'s membership view, asked as ``dcis members`` asks it."""
    async with open_trio_client(tb.socket_of(node)) as c:
        rng = random.Random(time.time_ns())
        endpoint = await c.register(f"ipn:{node}.{rng.randrange(10_000, 2**31)}")
        seq = rng.randrange(1, 2**32)
        await c.send(
            f"ipn:{node}.{MEMBERSHIP}",
            encode_message(Message(kind=Kind.QUERY, seq=seq)),
            source=endpoint,
            lifetime_ms=int(CALL_TIMEOUT_S * 1000),
        )
        with trio.fail_after(CALL_TIMEOUT_S):
            while True:
                b = await c.receive()
                try:
                    msg = decode_message_untrusted(b.payload)
                except DecodeError:
                    continue
                if msg.kind == Kind.ANSWER and msg.seq == seq:
                    return list(msg.members)


@contextlib.asynccontextmanager
async def log_of(tb: Testbed, node: int) -> AsyncIterator[TrioLogClient]:
    """A log client on ``node`` (wrap each call in ``trio.fail_after``)."""
    async with open_trio_client(tb.socket_of(node)) as c:
        log = TrioLogClient(c)
        await log.open()
        yield log


async def log_status(tb: Testbed, node: int) -> dict[str, Value]:
    """``dcis log status`` of ``node``."""
    async with log_of(tb, node) as log:
        with trio.fail_after(CALL_TIMEOUT_S):
            return await log.status()


async def log_write(tb: Testbed, node: int, ops: list[Op]) -> None:
    """Append ``ops`` on ``node`` (``dcis log append``)."""
    async with log_of(tb, node) as log:
        for op in ops:
            with trio.fail_after(CALL_TIMEOUT_S):
                await log.append(op)


def dfs_put(tb: Testbed, node: int, name: str, data: bytes) -> dict[str, Any]:
    """``dcis put`` on ``node`` (blocking: run it in a thread), waiting for
    every holder to confirm its share."""
    with Dfs.connect(tb.socket_of(node), timeout_s=CALL_TIMEOUT_S) as fs:
        return fs.put(name, data, k=K, n=N, wait_placed_s=PUT_BOUND_S)


def dfs_get(tb: Testbed, node: int, name: str) -> bytes:
    """``dcis get`` on ``node`` (blocking: run it in a thread)."""
    with Dfs.connect(tb.socket_of(node), timeout_s=CALL_TIMEOUT_S) as fs:
        return fs.get(name)


async def poll(
    check: Callable[[], Awaitable[bool]], bound_s: float, every_s: float = 1.0
) -> bool:
    """Ask ``check`` until it says True (True) or ``bound_s`` runs out
    (False). A check that raises (a daemon busy, a timeout) counts as no."""
    with trio.move_on_after(bound_s):
        while True:
            try:
                if await check():
                    return True
            except (ClientError, DfsError, TimeoutError, trio.TooSlowError, OSError):
                pass
            await trio.sleep(every_s)
    return False


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables (inherited by the daemons) for a while."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ------------------------------------------------------------ the steps


async def membership_converges(tb: Testbed, say: Say) -> Check:
    """Every node sees all six nodes alive."""
    views: dict[int, list[MemberRow]] = {}

    async def converged() -> bool:
        for n in NODES:
            views[n] = await members(tb, n)
        return all(
            sorted(r.node for r in rows if r.state == "alive") == list(NODES)
            for rows in views.values()
        )

    ok = await poll(converged, MEMBERS_BOUND_S)
    say("node 1's view, as `dcis members --node 1` prints it:")
    for r in views.get(1, []):
        print(f"      {row_text(r)}", flush=True)
    for n, rows in sorted(views.items()):
        alive = [r.node for r in rows if r.state == "alive"]
        say(f"  node {n} sees alive: {alive}")
    say(
        f"every node sees all {len(NODES)} nodes alive"
        if ok
        else f"the views did not converge within {MEMBERS_BOUND_S:.0f} s"
    )
    return ("membership: every node's view converges to 6 alive", ok)


async def object_put(tb: Testbed, data: bytes, say: Say) -> dict[str, Any]:
    """Put the demo object on ``WRITER``; the put's result ({} if refused
    until the bound ran out)."""
    put: dict[str, Any] = {}

    async def stored() -> bool:
        put.update(await trio.to_thread.run_sync(dfs_put, tb, WRITER, OBJECT, data))
        return True

    await poll(stored, PUT_BOUND_S)
    if not put:
        say(f"the put was refused for {PUT_BOUND_S:.0f} s (see the daemons' logs)")
        return put
    say(
        f"node {WRITER} puts {OBJECT} ({len(data)} bytes) as k={K} of n={N} shares: "
        f"one on each of nodes {put['holders']}; {put['placed']} of {N} holders "
        "confirmed theirs"
    )
    return put


async def statuses_of(tb: Testbed, nodes: list[int]) -> dict[int, dict[str, Value]]:
    """``dcis log status`` of each of ``nodes``."""
    return {n: await log_status(tb, n) for n in nodes}


async def log_before_cut(tb: Testbed, say: Say) -> None:
    """A put and one increment per node, everyone in contact."""
    await log_write(tb, 1, [Put("demo/before", b"written before the cut")])
    for n in NODES:
        await log_write(tb, n, [Increment("demo/writes", 1)])
    say(
        f"1 put on node 1 and 1 increment of demo/writes on each of the {len(NODES)} nodes"
    )


async def log_heals(tb: Testbed, running: list[int], say: Say) -> Check:
    """Writes on both sides of the cut; after the heal one state on every
    running node, and every write there."""
    increments = len(NODES)
    await tb.sleep_until_plan(CUT_S + 1.0)
    small = [n for n in SMALL if n in running]
    big = [n for n in BIG if n in running]
    say(
        f"the plan cuts the nodes in two: {list(SMALL)} | {list(BIG)} "
        f"(t={CUT_S:.0f} to t={HEAL_S:.0f}); running on each side: {small} | {big}"
    )
    rounds = 2
    for rnd in range(rounds):
        for n in running:
            side = "small" if n in SMALL else "big"
            await log_write(
                tb,
                n,
                [
                    Put(f"demo/cut/{n}/{rnd}", side.encode()),
                    Increment("demo/writes", 1),
                ],
            )
            increments += 1
        await tb.sleep_until_plan(CUT_S + 6.0 * (rnd + 1))
    say(
        "each running node wrote twice (a put of its own key, an increment of "
        "demo/writes) on its side of the cut"
    )
    seen: dict[int, dict[str, Value]] = {}
    for n in (small[0], big[0]):
        s = seen[n] = await log_status(tb, n)
        async with log_of(tb, n) as log:
            with trio.fail_after(CALL_TIMEOUT_S):
                tentative = await log.get("demo/writes", Level.TENTATIVE)
                committed = await log.get("demo/writes")
        say(
            f"  node {n} in the cut: {_text(s['role'])}, leader {_text(s['leader'])}, "
            f"commit index {_text(s['commit_index'])}, {_text(s['tentative_count'])} "
            f"writes tentative; demo/writes is {_text(committed)} committed, "
            f"{_text(tentative)} as this side sees it"
        )
    for gone in (n for n in NODES if n not in running):
        views = {
            n: next((r.state for r in await members(tb, n) if r.node == gone), "?")
            for n in (small[0], big[0])
        }
        say(
            f"  membership in the cut: node {small[0]} holds the killed node {gone} "
            f"{views[small[0]]}, node {big[0]} holds it {views[big[0]]}"
        )
    leader = seen[big[0]]["leader"]
    if leader is None:
        say(
            "  the big side has no leader at the moment: nothing commits until it elects one"
        )
    elif isinstance(leader, int) and leader in BIG:
        say(
            f"  the big side holds 4 of the 6 voters and the leader (node {leader}): "
            "it keeps committing; node 1 keeps its writes tentative"
        )
    else:
        say(
            f"  the leader (node {_text(leader)}) is not on the big side, and the plan says "
            f"the cut ends at t={HEAL_S:.0f}: the big side waits for it rather than "
            "elect, so both sides keep their writes tentative (spec/consensus.md)"
        )
    await tb.sleep_until_plan(HEAL_S)
    say(f"t={HEAL_S:.0f}: the plan heals the cut")
    statuses: dict[int, dict[str, Value]] = {}

    async def healed() -> bool:
        statuses.update(await statuses_of(tb, running))
        same = {(s["commit_index"], s["state_hash"]) for s in statuses.values()}
        return len(same) == 1 and all(
            s["tentative_count"] == 0 for s in statuses.values()
        )

    ok = await poll(healed, HEAL_BOUND_S)
    for n, s in sorted(statuses.items()):
        say(
            f"  node {n}: commit index {_text(s['commit_index'])}, state hash "
            f"{str(s['state_hash'])[:16]}..., {_text(s['tentative_count'])} tentative"
        )
    say(
        "every running node has the same commit index and state hash"
        if ok
        else f"the nodes did not agree within {HEAL_BOUND_S:.0f} s"
    )
    if ok:
        async with log_of(tb, big[-1]) as log:
            with trio.fail_after(CALL_TIMEOUT_S):
                count = await log.get("demo/writes")
                puts = [
                    await log.get(f"demo/cut/{n}/{r}")
                    for n in running
                    for r in range(rounds)
                ]
        ok = count == str(increments).encode() and all(v is not None for v in puts)
        say(
            f"  demo/writes = {_text(count)} (increments accepted: {increments}); "
            f"the {len(puts)} puts made in the cut all committed: "
            + ("yes" if all(v is not None for v in puts) else "NO")
        )
    return (
        "log: writes on both sides of a cut, one state everywhere after the heal",
        ok,
    )


def _text(value: Value) -> str:
    """A log value or status field as plain text."""
    if value is None:
        return "absent"
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


async def dead_seen(
    tb: Testbed, dead: int, running: list[int], killed_at: float, say: Say
) -> Check:
    """Every running node's membership view holds ``dead`` dead."""
    views: dict[int, str] = {}

    async def seen() -> bool:
        for n in running:
            views[n] = next(
                (r.state for r in await members(tb, n) if r.node == dead), "forgotten"
            )
        return all(v == "dead" for v in views.values())

    ok = await poll(seen, DEAD_BOUND_S)
    say(
        f"node {dead} as each running node sees it: "
        + ", ".join(f"node {n}: {v}" for n, v in sorted(views.items()))
    )
    say(
        f"every running node sees node {dead} dead, {tb.plan_s() - killed_at:.0f} s after the SIGKILL"
        if ok
        else f"not every node saw node {dead} dead within {DEAD_BOUND_S:.0f} s"
    )
    return ("membership: the killed node is seen dead", ok)


async def object_survives(
    tb: Testbed, put: dict[str, Any], data: bytes, say: Say
) -> Check:
    """Kill holders until n - k are down; a surviving non-writer reads back."""
    what = f"object store: {K}-of-{N} object read back after {N - K} holders are killed"
    if not put:
        return (what, False)
    others = [h for h in reversed(put["holders"]) if h not in (WRITER, READER, CRASHED)]
    gone = [CRASHED, *others[: N - K - 1]]
    for h in gone[1:]:
        await tb.kill(h)
    say(
        f"SIGKILL nodes {gone[1:]}: with node {CRASHED}, {N - K} of the {N} holders of "
        f"{OBJECT} are down"
    )
    got: list[bytes] = []

    async def read() -> bool:
        got.append(await trio.to_thread.run_sync(dfs_get, tb, READER, OBJECT))
        return True

    t0 = time.monotonic()
    ok = await poll(read, GET_BOUND_S)
    intact = ok and got[-1] == data
    say(
        f"node {READER} gets {OBJECT} from the {K} survivors in "
        f"{time.monotonic() - t0:.1f} s: "
        + ("the same bytes as put" if intact else "FAILED")
    )
    return (what, intact)


async def run_stack(workdir: Path) -> list[Check]:
    """The storage stack part of the demo (see the module docstring)."""
    tb = Testbed(
        TestbedOptions(
            plan_path=PLAN,
            workdir=workdir,
            start_margin_s=3.0,
            log_level="warning",
            secure=True,
            services=("dcis.dfs.stack:factory",),
        )
    )

    def say(msg: str) -> None:
        print(f"   [t={tb.plan_s():5.1f} s] {msg}", flush=True)

    print(
        f"3. the storage stack on six dtn-node daemons over UDP, plan {PLAN.name}:",
        flush=True,
    )
    print(
        f"      every pair of nodes in contact, except {' '.join(map(str, SMALL))} | "
        f"{' '.join(map(str, BIG))} from t={CUT_S:.0f} to t={HEAL_S:.0f} s",
        flush=True,
    )
    checks: list[Check] = []
    data = random.Random(2026).randbytes(OBJECT_BYTES)
    # Loopback answers in milliseconds: a get asks the next holder after 2 s
    # of silence instead of the default 30 s meant for real links.
    with environment(
        DCIS_DFS_DIR=str(workdir / "dfs"), DCIS_DFS_FETCH_SLACK_MS=str(FETCH_SLACK_MS)
    ):
        async with tb.running():
            say(
                f"{len(tb.nodes)} daemons up, each with its node keys (made by the "
                "testbed) and running membership (16), the log (17) and the object store (18)"
            )
            checks.append(await membership_converges(tb, say))
            put = await object_put(tb, data, say)
            await log_before_cut(tb, say)
            await tb.kill(CRASHED)
            crashed_at = tb.plan_s()
            running = [n for n in NODES if n != CRASHED]
            say(
                f"SIGKILL node {CRASHED}: membership should find it dead; the log runs on without it"
            )
            checks.append(await log_heals(tb, running, say))
            checks.append(await dead_seen(tb, CRASHED, running, crashed_at, say))
            checks.append(await object_survives(tb, put, data, say))
    return checks
