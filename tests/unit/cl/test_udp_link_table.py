"""Every (TxState, TxInput) pair of the UDP CL link machine (h2-style sweep).

Each pair is produced on a real :class:`UdpLink` -- one transmission driven
into the state, then the input applied through the public method a driver
calls -- and the result compared with ``TX_TRANSITIONS``: the next state
(None once the transmission has finished), and the output its effect
promises. A pair the table does not list must change nothing and say
nothing.
"""

from __future__ import annotations

import itertools
import random

import pytest

from dcis.dtn.cl.udp import (
    TX_TRANSITIONS,
    AckMode,
    LinkOutput,
    SendDatagram,
    TxDone,
    TxEffect,
    TxInput,
    TxState,
    UdpLink,
)

BUNDLE = b"\x9f\x89\x07\x00\x01\x82\x02\x82\x02\x01\xff"
LATE_S = 1_000.0  # well past any retransmission timeout


def link_in(state: TxState, event: TxInput) -> tuple[UdpLink, int]:
    """A link whose one transmission (tx_id 7) is in ``state``; set up so
    that ``event`` is possible (auto mode for a legacy peer, one try left
    or more for the timeouts)."""
    link = UdpLink(
        local_node=1,
        neighbor=2,
        ack_mode=AckMode.AUTO if event is TxInput.PEER_LEGACY else AckMode.ON,
        max_tries=1 if event is TxInput.LAST_TIMEOUT else 3,
        rng=random.Random(5),
    )
    (out,) = link.transmit(7, BUNDLE, 0.0)
    assert isinstance(out, SendDatagram)
    assert out.token is not None
    token = out.token
    if state is TxState.QUEUED:
        link.hold(token)
    elif state is TxState.ACKED:
        link.on_ack((token,), 0.1)
    elif state is TxState.FAILED:
        link.close()
    return link, token


def apply(link: UdpLink, token: int, event: TxInput) -> list[LinkOutput]:
    if event is TxInput.HOLD:
        link.hold(token)
        return []
    if event is TxInput.SENT:
        link.on_sent(token, 0.5)
        return []
    if event is TxInput.ACK:
        return link.on_ack((token,), 0.5)
    if event in (TxInput.TIMEOUT, TxInput.LAST_TIMEOUT):
        return link.on_timer(LATE_S)
    if event is TxInput.CLOSE:
        return link.close()
    return link.on_heard_bare(0.5)


@pytest.mark.parametrize(
    ("state", "event"), list(itertools.product(TxState, TxInput)), ids=str
)
def test_every_state_input_pair_follows_the_table(
    state: TxState, event: TxInput
) -> None:
    link, token = link_in(state, event)
    before = link.state_of(token)
    deadline = link.next_deadline()
    outs = apply(link, token, event)
    done = [o for o in outs if isinstance(o, TxDone)]
    sends = [o for o in outs if isinstance(o, SendDatagram)]
    step = TX_TRANSITIONS.get((state, event))
    if step is None:
        assert link.state_of(token) is before
        assert not done
        assert not sends
        assert link.next_deadline() == deadline
        return
    nxt, effect = step
    final = nxt in (TxState.ACKED, TxState.FAILED)
    assert link.state_of(token) is (None if final else nxt)
    assert [(d.tx_id, d.ok) for d in done] == (
        [(7, nxt is TxState.ACKED)] if final else []
    )
    assert [s.token for s in sends] == ([token] if effect is TxEffect.RESEND else [])
    if effect is TxEffect.STOP_TIMER:
        assert link.next_deadline() is None
    if effect in (TxEffect.START_TIMER, TxEffect.RESEND):
        d = link.next_deadline()
        assert d is not None
        assert d > (LATE_S if effect is TxEffect.RESEND else 0.5)


def test_the_table_only_leaves_final_states_through_nothing() -> None:
    # Final states have no way out, and every live state can end.
    for (state, _event), (nxt, _effect) in TX_TRANSITIONS.items():
        assert state not in (TxState.ACKED, TxState.FAILED)
        assert nxt in TxState
    for live in (TxState.QUEUED, TxState.AWAITING_ACK):
        ends = {n for (s, _e), (n, _f) in TX_TRANSITIONS.items() if s is live}
        assert {TxState.ACKED, TxState.FAILED} <= ends
