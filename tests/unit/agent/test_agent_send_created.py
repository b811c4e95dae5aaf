"""Agent.send(created=...): a bundle whose store transaction rolled back is
originated again as the same bundle (spec/node.md, "Failure containment")."""

from __future__ import annotations

import pytest

from dcis.dtn.agent.actions import Action, Deliver
from dcis.dtn.agent.agent import Agent
from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.bpv7.bundle import decode_bundle_untrusted
from dcis.dtn.errors import InvalidArgument


def agent() -> Agent:
    a = Agent(node=1, store=MemoryStore())
    a.register("ipn:1.1")
    a.register("ipn:1.2")
    return a


def test_the_same_bundle_keeps_its_creation_timestamp() -> None:
    a = agent()
    key, actions = a.send(
        source="ipn:1.2",
        destination="ipn:1.1",
        payload=b"p",
        lifetime_ms=1000,
        now=500,
        created=(200, 3),
    )
    assert key == "ipn:1.2|200|3"
    (d,) = [x for x in actions if isinstance(x, Deliver)]
    assert d.bundle_key == key
    bundle = decode_bundle_untrusted(a.store.get(key) or b"")
    assert bundle.primary.creation.time_ms == 200
    assert bundle.primary.lifetime_ms == 1000  # counted from 200


def test_one_still_held_is_left_as_it_is() -> None:
    a = agent()

    def send(
        now: int, created: tuple[int, int] | None = None
    ) -> tuple[str, list[Action]]:
        return a.send(
            source="ipn:1.2",
            destination="ipn:9.1",  # no route: held
            payload=b"p",
            lifetime_ms=1000,
            now=now,
            created=created,
        )

    key, _ = send(200)
    ms, seq = (int(x) for x in key.split("|")[1:])
    assert send(300, (ms, seq)) == (key, [])
    assert a.stored == 1


@pytest.mark.parametrize("created", [(-1, 0), (1, -1), (1.0, 0)])
def test_a_bad_creation_timestamp_is_refused(created: tuple[int, int]) -> None:
    with pytest.raises(InvalidArgument, match="created"):
        agent().send(
            source="ipn:1.2",
            destination="ipn:1.1",
            payload=b"p",
            lifetime_ms=1000,
            now=500,
            created=created,
        )


def test_its_sequence_number_is_not_given_to_a_new_bundle() -> None:
    a = agent()
    kw: dict[str, object] = {"source": "ipn:1.2", "destination": "ipn:9.1"}
    first, _ = a.send(payload=b"a", lifetime_ms=10, now=200, **kw)  # type: ignore[arg-type]
    a.send(payload=b"b", lifetime_ms=10, now=200, created=(200, 5), **kw)  # type: ignore[arg-type]
    new, _ = a.send(payload=b"c", lifetime_ms=10, now=200, **kw)  # type: ignore[arg-type]
    assert (first, new) == ("ipn:1.2|200|0", "ipn:1.2|200|6")
