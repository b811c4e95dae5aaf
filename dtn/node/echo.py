"""The echo service (``ipn:N.7``): every node answers a bundle with its own
payload, back to the source (``dcis ping``).

Theory of operation
-------------------
Stateless: ``on_bundle`` returns one :class:`~dcis.dtn.node.service.Send` to the
bundle's source with the same payload, unless the source is another echo
endpoint (two echo services would bounce a bundle between them forever) or
the anonymous ``dtn:none``. No timers, no state; a restart loses nothing.
"""

from __future__ import annotations

from dcis.dtn.node.service import DEFAULT_LIFETIME_MS, IdleService, Inbound, Send

__all__ = ["ECHO_SERVICE", "EchoService"]

ECHO_SERVICE = 7
"""Service number of every node's echo endpoint."""


class EchoService(IdleService):
    """Answer every bundle with its own payload (a :class:`~dcis.dtn.node.Service`).

    ``lifetime_ms`` is the lifetime of each reply (default one hour)."""

    service = ECHO_SERVICE

    def __init__(self, *, lifetime_ms: int = DEFAULT_LIFETIME_MS) -> None:
        self.lifetime_ms = lifetime_ms
        self.answered = 0
        """Replies sent by this incarnation."""

    def on_bundle(self, inbound: Inbound, now_ms: int) -> list[Send]:
        """Send the payload back to its source (never to an echo endpoint
        nor to ``dtn:none``)."""
        src = inbound.source
        if src.endswith(f".{ECHO_SERVICE}") or src.startswith("dtn:none"):
            return []
        self.answered += 1
        return [Send(src, inbound.payload, lifetime_ms=self.lifetime_ms)]
