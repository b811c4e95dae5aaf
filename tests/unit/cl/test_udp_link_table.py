"""Every (TxState, TxInput) pair of the UDP CL link machine (h2-style sweep).

Each pair is produced on a real :class:`UdpLink` -- one transmission driven
into the state, then the input applied through the public method a driver
calls -- and the result compared with ``TX_TRANSITIONS``: the next state
(None once the transmission has finished), and the output its effect
promises. A pair the table does not list must change nothing and say
nothing. Swept twice: for a DATA segment, and for a bundle over the MTU sent
whole in PART segments (not under ``auto``: there is no such transfer, so
no PEER_LEGACY) -- a NEED for a DATA segment changes nothing either.
"""

from __future__ import annotations

import itertools
import random

import pytest

from dcis.dtn.cl.udp import (
    MIN_PART_CHUNK_BYTES,
    PART_OVERHEAD_BYTES,
    TX_TRANSITIONS,
    AckMode,
    LinkOutput,
    PartSegment,
    SendDatagram,
    TxDone,
    TxEffect,
    TxInput,
    TxState,
    UdpLink,
    decode_datagram_untrusted,
)

BUNDLE = b"\x9f\x89\x07\x00\x01\x82\x02\x82\x02\x01\xff"
LATE_S = 1_000.0  # well past any retransmission timeout
MTU = MIN_PART_CHUNK_BYTES + PART_OVERHEAD_BYTES
BIG = b"\x9f" * (3 * MIN_PART_CHUNK_BYTES)  # three PART segments
NEEDED = ((0, 1),)  # the first part (the last goes with it)


def link_in(state: TxState, event: TxInput, parts: bool) -> tuple[UdpLink, int]:
    """A link whose one transmission (tx_id 7, in PART segments if
    ``parts``) is in ``state``; set up so that ``event`` is possible (auto
    mode for a legacy peer, one try left or more for the timeouts)."""
    link = UdpLink(
        local_node=1,
        neighbor=2,
        ack_mode=AckMode.AUTO if event is TxInput.PEER_LEGACY else AckMode.ON,
        max_tries=1 if event is TxInput.LAST_TIMEOUT else 3,
        rng=random.Random(5),
        mtu_bytes=MTU,
        max_transfer_bytes=len(BIG),
    )
    *_, out = link.transmit(7, BIG if parts else BUNDLE, 0.0)
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
    if event is TxInput.NEED:
        return link.on_need(token, NEEDED, 0.5)
    return link.on_heard_bare(0.5)


@pytest.mark.parametrize(
    ("state", "event", "parts"),
    [
        pytest.param(state, event, parts, id=f"{state}-{event}-{kind}")
        for parts, kind in ((False, "data"), (True, "parts"))
        for state, event in itertools.product(TxState, TxInput)
        if not (parts and event is TxInput.PEER_LEGACY)
    ],
)
def test_every_state_input_pair_follows_the_table(
    state: TxState, event: TxInput, parts: bool
) -> None:
    link, token = link_in(state, event, parts)
    before = link.state_of(token)
    deadline = link.next_deadline()
    outs = apply(link, token, event)
    done = [o for o in outs if isinstance(o, TxDone)]
    sends = [o for o in outs if isinstance(o, SendDatagram)]
    step = TX_TRANSITIONS.get((state, event))
    if event is TxInput.NEED and not parts:
        step = None  # a NEED names a transfer in PART segments
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
    want: list[int | None] = []
    if effect is TxEffect.RESEND:
        want = [token]
    elif effect is TxEffect.RESEND_NEEDED:
        want = [None, token]
    assert [s.token for s in sends] == want
    if effect is TxEffect.RESEND and parts:  # the last part, a probe
        seg = decode_datagram_untrusted(b"".join(sends[0].data))
        assert isinstance(seg, PartSegment)
        assert seg.end == seg.total
    if effect is TxEffect.RESEND_NEEDED:  # the first part, as NEEDED says
        first, last = (decode_datagram_untrusted(b"".join(s.data)) for s in sends)
        assert isinstance(first, PartSegment)
        assert isinstance(last, PartSegment)
        assert (first.offset, last.end) == (0, last.total)
    if effect is TxEffect.STOP_TIMER:
        assert link.next_deadline() is None
    if effect in (TxEffect.START_TIMER, TxEffect.RESEND, TxEffect.RESEND_NEEDED):
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
