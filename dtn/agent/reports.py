"""Bundle status reports (RFC 9171 section 6.1): the agent reports
reception, forwarding, delivery and deletion of a bundle to its report-to
endpoint when the bundle's flags ask.

Theory of operation
-------------------
:func:`report_entry` reports on a stored bundle (call it before removing the
bundle); it decodes the stored copy only when the entry's flags are not
known or ask for that report, so the common case costs nothing.
:func:`report_bundle` builds the report (never about an administrative
record) and accepts it like any bundle this node originates; a full store
skips it, counted.

Functions take the ``Agent`` as ``self`` (bound as its private methods; see
:mod:`dcis.dtn.agent.entries`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dcis.dtn.agent.actions import (
    Action,
    Event,
)
from dcis.dtn.agent.entries import (
    Entry,
)
from dcis.dtn.agent.store import (
    StoreFull,
)
from dcis.dtn.bpv7.admin import StatusKind, StatusReason, make_status_report
from dcis.dtn.bpv7.bundle import (
    Bundle,
    decode_bundle_untrusted,
    encode_bundle,
)
from dcis.dtn.bpv7.eid import DTN_NONE
from dcis.dtn.bpv7.flags import BundleFlags
from dcis.dtn.errors import DecodeError

if TYPE_CHECKING:
    from dcis.dtn.agent.agent import Agent

REPORT_FLAGS = (
    BundleFlags.REPORT_RECEPTION
    | BundleFlags.REPORT_FORWARDING
    | BundleFlags.REPORT_DELIVERY
    | BundleFlags.REPORT_DELETION
)


KIND_FLAG = {
    StatusKind.RECEIVED: BundleFlags.REPORT_RECEPTION,
    StatusKind.FORWARDED: BundleFlags.REPORT_FORWARDING,
    StatusKind.DELIVERED: BundleFlags.REPORT_DELIVERY,
    StatusKind.DELETED: BundleFlags.REPORT_DELETION,
}
# The same as ints: an IntFlag's & builds a new flag object (~1.5 us), and
# these run for every bundle received, forwarded and delivered.
_KIND_BIT = {kind: int(flag) for kind, flag in KIND_FLAG.items()}


def report_entry(
    self: Agent,
    e: Entry,
    kind: StatusKind,
    reason: StatusReason,
    now: int,
    actions: list[Action],
) -> None:
    """Report ``kind`` about stored bundle ``e`` if it asked (call before removing it)."""
    if e.flags is not None and not e.flags & _KIND_BIT[kind]:
        return  # the common case: no report wanted, no decode needed
    data = self._load(e.key, actions, now)
    if data is None:
        return
    try:
        b = decode_bundle_untrusted(data)
    except DecodeError:
        return
    e.flags = int(b.primary.flags)
    self._report_bundle(b, kind, reason, now, actions)


def report_bundle(
    self: Agent,
    bundle: Bundle,
    kind: StatusKind,
    reason: StatusReason,
    now: int,
    actions: list[Action],
    *,
    force: bool = False,
) -> None:
    """Send a status report asserting ``kind`` about ``bundle`` to its
    report-to endpoint if its flags ask (or ``force``). Never about an
    administrative record; silently skipped (counted) if the store is full."""
    p = bundle.primary
    if not force and not int(p.flags) & _KIND_BIT[kind]:
        return
    if bundle.is_admin_record or p.report_to == DTN_NONE:
        return
    seq = self._next_seq(str(self.eid), now)
    report = make_status_report(
        bundle,
        {kind},
        reason=reason,
        now_ms=now,
        source=self.eid,
        sequence=seq,
        lifetime_ms=self.config.status_report_lifetime_ms,
        crc_type=self.config.crc_type,
    )
    if report is None:
        return
    key = report.bundle_key
    try:
        self._accept(
            report,
            encode_bundle(report),
            key,
            prev_node=None,
            now=now,
            actions=actions,
        )
    except StoreFull as exc:
        self.counters["refused"] += 1
        actions.append(Event("refused", key, f"status report: {exc}"))
        return
    self.counters["status_reports"] += 1
    actions.append(
        Event(
            "status_report",
            key,
            f"{kind.name.lower()} ({reason.name.lower()}) about {bundle.bundle_key} to {p.report_to}",
        )
    )
