"""The testbed's daemon ports (``dcis.tools.testbed``): taken below the
kernel's ephemeral range, so that a ``bind(0)`` between the pick and the
daemon's own bind -- the emulator's relay sockets, another test's sockets --
cannot be given the same port (a daemon then failed to start with "Address
already in use" in a suite run)."""

from __future__ import annotations

import socket

from dcis.tools import testbed


def test_daemon_ports_are_distinct_and_outside_the_ephemeral_range() -> None:
    low = testbed._ephemeral_low()
    ports = [testbed.free_udp_port("127.0.0.1") for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(testbed._PORT_FLOOR <= p < low for p in ports)
    # Free when picked: a daemon can bind each.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", ports[-1]))
