"""ION's TCPCL version 3 meeting our TCPCLv4, from bytes recorded live.

ION 4.1.3 has no TCPCLv4 (tests/vectors/ion_tcpcl3_contact.hex): whichever
side connects, our session machine must see ION's version-3 contact header,
answer with our version-4 header and SESS_TERM "version mismatch" (RFC 9174
4.2) -- exactly the bytes ION got -- and end the session, never deliver,
never hang.
"""

from __future__ import annotations

import pytest

from dcis.dtn.cl.tcpcl4.session import (
    BundleReceived,
    Session,
    SessionClosed,
    SessionConfig,
)
from tests.interop.ion_vectors import entry, load

pytestmark = pytest.mark.interop

V = load("ion_tcpcl3_contact.hex")


def test_ion_connects_to_us_and_gets_version_mismatch() -> None:
    s = Session(SessionConfig(node_id="ipn:2.0"), active=False)
    s.start(0)
    events = s.receive_data(entry(V, "tcp-01"), 0)
    assert not any(isinstance(e, BundleReceived) for e in events)
    assert isinstance(events[-1], SessionClosed)
    assert "version 3" in events[-1].reason
    assert s.data_to_send() == entry(V, "tcp-02")
    assert s.closed


def test_we_connect_to_ion_and_end_with_version_mismatch() -> None:
    s = Session(SessionConfig(node_id="ipn:2.0"), active=True)
    s.start(0)
    assert s.data_to_send() == entry(V, "tcp-03")
    # ION's header may come in any pieces: byte by byte here.
    events = []
    for i, byte in enumerate(entry(V, "tcp-04")):
        if s.closed:
            break
        events += s.receive_data(bytes([byte]), i)
    assert isinstance(events[-1], SessionClosed)
    assert s.data_to_send() == entry(V, "tcp-05")
    assert s.closed


@pytest.mark.parametrize("active", [True, False])
@pytest.mark.parametrize("split", range(1, 16))
def test_ions_header_split_anywhere_gets_the_same_answer(
    split: int, active: bool
) -> None:
    """TCP may deliver the contact header in any pieces; 5 bytes (the magic
    and the version) once made us take ION for a non-TCPCL peer and close
    without a word."""
    header = entry(V, "tcp-01")
    s = Session(SessionConfig(node_id="ipn:2.0"), active=active)
    s.start(0)
    s.data_to_send()
    first = s.receive_data(header[:split], 0)
    assert not s.closed or split >= 6
    events = first if s.closed else s.receive_data(header[split:], 1)
    assert isinstance(events[-1], SessionClosed)
    assert "version 3" in events[-1].reason
    answer = s.data_to_send()
    assert answer == (entry(V, "tcp-05") if active else entry(V, "tcp-02"))
