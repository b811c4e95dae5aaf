"""The Verifier's memos, shared by every node of a simulation: a member's
certificate is decoded once however many nodes meet it, an update's
signature is checked once -- and neither memo lets a forged or malformed
update through to a node that did not see it checked."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dcis.consensus.membership import service as service_mod
from dcis.consensus.membership.service import Verifier
from dcis.consensus.membership.view import MemberState
from dcis.consensus.membership.wire import Status
from tests.unit.consensus.membership.helpers import make, sign


def test_nodes_sharing_a_verifier_decode_a_certificate_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded: list[bytes] = []
    real = service_mod.decode_certificate_untrusted

    def counting(raw: bytes) -> object:
        decoded.append(raw)
        return real(raw)

    monkeypatch.setattr(service_mod, "decode_certificate_untrusted", counting)
    shared = Verifier()
    nodes = [make(node=n, verifier=shared) for n in (1, 3, 4)]
    good = sign(2, 1, Status.ALIVE)
    for h in nodes:
        h.push(2, good)
        assert h.svc.state_of(2) == MemberState.ALIVE
    assert len(decoded) == 1  # (main: once per node)


def test_a_shared_verifier_lets_no_forged_or_malformed_update_through() -> None:
    shared = Verifier()
    first, second = make(node=1, verifier=shared), make(node=3, verifier=shared)
    good = sign(2, 3, Status.ALIVE)
    first.push(2, good)
    assert first.svc.state_of(2) == MemberState.ALIVE
    forged = replace(good, incarnation=4)  # the signature no longer matches
    newer = sign(2, 4, Status.ALIVE)
    assert newer.cert is not None
    garbled = replace(newer, cert=newer.cert[:-1])  # signed, but no certificate
    for h in (first, second):
        for _ in range(2):  # and again, with both memos warm
            h.push(2, forged)
            h.push(2, garbled)
    assert first.svc.counters["dropped_forged"] == 4
    assert second.svc.counters["dropped_forged"] == 4
    assert 2 not in second.svc.members()
    assert first.svc.members()[2].incarnation == 3
