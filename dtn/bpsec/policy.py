"""The acceptance check a secure node applies after :func:`dcis.dtn.bpsec.unprotect`.

RFC 9172 section 5 leaves security policy to the node. Ours (issue 6,
spec/security.md section 3): a bundle from another node is accepted only if
a security block of an accepted context verified over the payload (target
1) and its security source is the bundle source's node -- a certified node X
could otherwise seal a bundle that merely *claims* source S.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from dcis.dtn.bpsec.results import SecurityResult
from dcis.dtn.bpv7.admin import StatusReason
from dcis.dtn.bpv7.bundle import Bundle
from dcis.dtn.bpv7.eid import Eid, IpnEid


def _node(eid: Eid) -> int | str:
    # ipn: the node number; dtn: the "dtn://node/" part.
    return eid.node if isinstance(eid, IpnEid) else eid.node_id


def payload_verdict(
    received: Bundle,
    results: Sequence[SecurityResult],
    accepted_contexts: Collection[int],
) -> StatusReason | None:
    """None when the payload is acceptably protected, else the RFC 9172 11.2 reason.

    ``received`` is the bundle as it arrived (before ``unprotect``), for its
    primary block; ``results`` what ``unprotect`` reported.

    - UNKNOWN_SECURITY_OPERATION (13): a block covering the payload uses a
      context we do not implement.
    - FAILED_SECURITY_OPERATION (15): blocks cover the payload but none
      verified by the bundle's source node with an accepted context (no key,
      uncertified source, or sealed by another node).
    - MISSING_SECURITY_OPERATION (12): nothing covers the payload.
    """
    covering = [r for r in results if 1 in r.targets]
    if not covering:
        return StatusReason.MISSING_SECURITY_OPERATION
    source = _node(received.primary.source)
    for r in covering:
        if r.verified and r.context in accepted_contexts and _node(r.source) == source:
            return None
    if any(r.reason == "unsupported context" for r in covering):
        return StatusReason.UNKNOWN_SECURITY_OPERATION
    return StatusReason.FAILED_SECURITY_OPERATION
