"""NodeCore: what a service sent, and was handed, in a store transaction
that rolled back after its state commit joined it (spec/node.md, "Failure
containment"). A send is made again as the same bundle (its key kept), its
tag's result is reported once, and a service that has a bundle durably is
not handed it again when it comes back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dcis.dtn.agent.actions import Action, Event, EventKind, Schedule
from dcis.dtn.agent.agent import Agent
from dcis.dtn.agent.store import StoreError
from dcis.dtn.bpv7.bundle import decode_bundle_untrusted
from dcis.dtn.node import Inbound, NodeCore, Send
from dcis.dtn.storage.sqlite_store import SqliteStore
from tests.unit.node.test_core import Svc, link
from tests.unit.node.test_core_commit_failure import keeping
from tests.unit.node.test_core_outer_rollback import (
    chunk_fails,
    faulty,
    receive_fails,
    retry,
    transmits,
    writer_node,
)


def keys(actions: list[Action]) -> list[str]:
    """The keys of the bundles ``actions`` transmit."""
    return [decode_bundle_untrusted(t.data).bundle_key for t in transmits(actions)]


def send_failed(actions: list[Action]) -> list[Event]:
    return [
        e
        for e in actions
        if isinstance(e, Event) and e.kind == EventKind.SERVICE_SEND_FAILED
    ]


def tagged(svc: Svc, tag: int = 7) -> None:
    """``svc.write(value, now)``: writes ``v``, tells node 1 with a tag."""

    def write(value: bytes, now_ms: int) -> list[Send]:
        assert svc.ctx is not None
        svc.ctx.state.put("v", value)
        return [Send("ipn:1.1", b"wrote " + value, tag=tag)]

    svc.write = write  # type: ignore[attr-defined]


def results(svc: Svc) -> list[tuple[Any, ...]]:
    return [x for x in svc.log if x[0] == "result"]


def test_a_send_is_made_again_as_the_same_bundle(tmp_path: Path) -> None:
    # A receiver that has the first copy (the runtime sent it before the
    # COMMIT failed, say) must see the second as a duplicate: same key.
    _, core, store, conn = writer_node(tmp_path)
    first = keys(chunk_fails(core, store, conn, b"1"))
    core.recover(5)
    again = keys(retry(core))
    assert len(first) == 1
    assert again == first
    store.close()


def test_local_send_between_two_joined_services_is_applied_once(
    tmp_path: Path,
) -> None:
    # 30 writes and forwards the payload to local service 31, which counts
    # what it got. Both commits join node 2's transaction; its COMMIT fails.
    # After the retries 30's send comes again -- the same bundle, which 31
    # has (durably since its own retry): confirmed, not handed over again.
    log: list[tuple[Any, ...]] = []
    s30, s31 = Svc(30, log), Svc(31, log)

    def fwd(inbound: Inbound, now_ms: int) -> list[Send]:
        assert s30.ctx is not None
        s30.ctx.state.put("a", inbound.payload)
        return [Send("ipn:2.31", b"fwd " + inbound.payload)]

    def count(inbound: Inbound, now_ms: int) -> list[Send]:
        assert s31.ctx is not None
        n = int(s31.ctx.state.get("n") or b"0") + 1
        s31.ctx.state.put("n", b"%d" % n)
        return []

    s30.on_bundle_hook = fwd
    s31.on_bundle_hook = count
    b, store, t = receive_fails(tmp_path, [s30, s31])
    assert b.commit_failing(30)
    assert b.commit_failing(31)
    b.on_receive(cla="test", neighbor=1, data=t.data, now=6, cl_token=t.tx_id)
    retry(b)
    assert not b.commit_failing(30)
    assert not b.commit_failing(31)
    assert store.service_get(30, "a") == b"x"
    got = [x[2] for x in log if x[0] == "bundle" and x[1] == 31]
    assert (got, store.service_get(31, "n")) == ([b"fwd x"], b"1")
    assert b.agent.stored == 0  # type: ignore[attr-defined]  # all confirmed
    # (a restart does not hand it over again either)
    b.recover(7)
    assert [x[2] for x in log if x[0] == "bundle" and x[1] == 31] == [b"fwd x"]
    store.close()


def test_a_bundle_sent_again_after_the_retry_is_not_handed_over_again(
    tmp_path: Path,
) -> None:
    # The sender had no Ack for the bundle whose transaction rolled back;
    # it sends it again only after the service's retried commit made the
    # service's write (and so its having the bundle) durable.
    log: list[tuple[Any, ...]] = []
    svc = Svc(30, log)
    keeping(svc)
    b, store, t = receive_fails(tmp_path, [svc])
    retry(b)
    assert store.service_get(30, "last") == b"x"
    b.on_receive(cla="test", neighbor=1, data=t.data, now=500, cl_token=t.tx_id)
    assert [x[2] for x in log if x[0] == "bundle"] == [b"x"]
    assert b.agent.stored == 0  # type: ignore[attr-defined]
    store.close()


def test_a_tagged_send_in_a_rolled_back_transaction_has_one_result(
    tmp_path: Path,
) -> None:
    # on_send_result ran in the transaction (its writes are staged again
    # with the rest): the bundle sent again has the key it was told of.
    svc, core, store, conn = writer_node(tmp_path)
    tagged(svc)
    reported: list[str | None] = []

    def on_send_result(
        tag: int, key: str | None, error: str | None, now_ms: int
    ) -> list[Send]:
        reported.append(key)
        return Svc.on_send_result(svc, tag, key, error, now_ms)

    svc.on_send_result = on_send_result  # type: ignore[method-assign]
    chunk_fails(core, store, conn, b"1")
    core.recover(5)
    out = retry(core)
    assert not core.commit_failing(30)
    assert results(svc) == [("result", 30, 7, True, None)]
    assert reported == keys(out)
    store.close()


def test_a_send_refused_in_a_rolled_back_transaction_is_not_made_again(
    tmp_path: Path,
) -> None:
    # The service was told the send failed (and may have acted on that:
    # its writes are staged again with the rest); it is not sent after all.
    svc, core, store, conn = writer_node(tmp_path)

    def write(value: bytes, now_ms: int) -> list[Send]:
        assert svc.ctx is not None
        svc.ctx.state.put("v", value)
        return [Send("dtn:none", b"nowhere", tag=7), Send("dtn:none", b"x")]

    svc.write = write  # type: ignore[attr-defined]
    chunk_fails(core, store, conn, b"1")
    core.recover(5)
    out = retry(core)
    assert store.service_get(30, "v") == b"1"
    assert not send_failed(out)
    assert core.event_counts[EventKind.SERVICE_SEND_FAILED] == 1
    (got,) = results(svc)
    assert got[:4] == ("result", 30, 7, False)
    store.close()


class _RollingAgent(Agent):
    """An agent whose store write for a bundle with payload ``boom`` makes
    SQLite roll the whole transaction back (the disk full under it)."""

    boom: bytes | None = None

    def send(self, **kw: Any) -> tuple[str, list[Action]]:
        if kw["payload"] == self.boom:
            self.store.service_put(99, "k", kw["payload"])
        return super().send(**kw)


@pytest.mark.parametrize("tag", [None, 7])
def test_a_send_whose_own_write_rolls_the_transaction_back_is_held_not_failed(
    tmp_path: Path, tag: int | None
) -> None:
    svc = Svc(30, [])
    tagged(svc, tag)  # type: ignore[arg-type]
    store = SqliteStore(tmp_path / "b.db")
    agent = _RollingAgent(node=2, store=store)
    core = NodeCore(agent, node=2, services=[svc])
    core.start(0)
    core.on_contact_start(link(2, 1), 0)
    conn = faulty(store)
    conn.poison = agent.boom = b"wrote 1"
    out: list[Action] = []
    with pytest.raises(StoreError, match="rolled back"):
        out += core.call_service(30, "write", b"1", now=5)
    out += core.recover(5)
    # (counted although the failed input's actions were lost)
    assert core.event_counts[EventKind.SERVICE_SEND_FAILED] == 0
    assert not send_failed(out)
    assert not results(svc)
    assert core.commit_failing(30)
    conn.poison = None
    out = retry(core)
    assert store.service_get(30, "v") == b"1"
    assert len(transmits(out)) == 1
    assert not send_failed(out)
    assert results(svc) == ([] if tag is None else [("result", 30, 7, True, None)])
    store.close()


def test_a_rollback_announces_the_deadline_again(tmp_path: Path) -> None:
    # Service 31's deadline went out (a Schedule) with the input whose
    # transaction rolled back: the driver never saw it. The next step
    # announces it again although it did not change.
    svc = Svc(30, [])
    tagged(svc)
    other = Svc(31, [])

    def arm(now_ms: int) -> list[Send]:
        other.due = 50
        return []

    other.arm = arm  # type: ignore[attr-defined]
    store = SqliteStore(tmp_path / "b.db")
    core = NodeCore(Agent(node=2, store=store), node=2, services=[svc, other])
    core.start(0)
    conn = faulty(store)
    out: list[Action] = []

    def chunk() -> None:
        with store.transaction():
            out.extend(core.call_service(30, "write", b"1", now=5))
            out.extend(core.call_service(31, "arm", now=5))
            conn.commit = True

    with pytest.raises(StoreError):
        chunk()
    assert Schedule(50) in out
    assert core.next_deadline() == 50
    assert Schedule(50) in core.recover(5)
    store.close()


def test_tagged_sends_dropped_at_the_bound_after_a_rollback_name_their_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two calls' tagged sends rolled back with only room for one: the
    # dropped one was reported sent (tag 7, a key): the drop names that
    # key and tag.
    monkeypatch.setattr("dcis.dtn.node.core.MAX_HELD_SENDS", 1)
    svc, core, store, conn = writer_node(tmp_path)
    tagged(svc)
    sent = keys(chunk_fails(core, store, conn, b"1", b"2"))
    (dropped,) = send_failed(core.recover(5))
    assert dropped.bundle_key == sent[1]
    assert "tag 7 was told" in dropped.detail
    assert keys(retry(core)) == sent[:1]
    store.close()
