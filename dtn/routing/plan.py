"""Contact plans: parsing, writing and in-place updates.

Two input formats, both as published by their projects:

- ION's ``ionrc`` (ionrc(5), ionadmin commands): ``a contact <start> <stop>
  <from> <to> <bytes_per_s> [confidence]``, ``a range <start> <stop> <a> <b>
  <owlt_s>``, ``d contact``/``d range`` deletions, ``@ <time>`` to set the
  reference time, times ``+s`` (relative to the reference time) or
  ``yyyy/mm/dd-hh:mm:ss`` (UTC). ION's rule: a range declared with a < b
  also applies to b -> a unless b -> a is declared too.
- HDTN's contact-plan JSON: ``{"contacts": [{"contact", "source", "dest",
  "startTime", "endTime", "rateBitsPerSec" (or the deprecated "rate" in
  Mbit/s), "owlt"}]}``; every contact carries its own one-way light time.

All times in a :class:`ContactPlan` are seconds on the *plan clock*: plan time
0 is the reference time (``epoch_unix_s``). See spec/routing.md.
"""

from __future__ import annotations

import bisect
import calendar
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from dcis.dtn.bpv7.eid import DtnEid, parse_eid
from dcis.dtn.errors import DtnError, InvalidArgument
from dcis.dtn.routing.contact import Contact, Range
from dcis.dtn.time import DTN_EPOCH_UNIX_S

__all__ = [
    "ContactPlan",
    "PlanError",
    "RoutingError",
    "apply_ionrc",
    "check_dtn_routes",
    "format_hdtn_json",
    "format_ionrc",
    "ionrc_owlt_warnings",
    "parse_hdtn_json",
    "parse_ionrc",
    "parse_plan",
]


class RoutingError(DtnError):
    """Base of the errors the routing package raises on purpose."""


class PlanError(RoutingError, ValueError):
    """A contact plan file is malformed; ``line`` is its 1-based line number."""

    def __init__(
        self, what: str, *, line: int | None = None, source: str | None = None
    ) -> None:
        self.what = what
        self.line = line
        self.source = source
        where = source or "plan"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {what}")


SeventhField = Literal["confidence", "owlt"]


def check_dtn_routes(routes: Mapping[str, int]) -> dict[str, int]:
    """Validate static ``dtn:`` routes (node ID ``dtn://name/`` -> ipn node number).

    Returns them keyed by the canonical node ID; raises InvalidArgument for a
    key that is not a ``dtn://name/`` node ID or a node number < 1.
    """
    out: dict[str, int] = {}
    for name, node in routes.items():
        try:
            eid = parse_eid(name)
        except DtnError as exc:
            raise InvalidArgument(f"dtn route {name!r}: {exc}") from None
        if not isinstance(eid, DtnEid) or eid.is_none or eid.node_id != str(eid):
            raise InvalidArgument(
                f"dtn route {name!r}: expected a node ID such as 'dtn://name/'"
            )
        if type(node) is not int or not 1 <= node < _MAX_NODE:
            raise InvalidArgument(
                f"dtn route {name!r}: node must be an ipn node number >= 1, got {node!r}"
            )
        out[eid.node_id] = node
    return out


class ContactPlan:
    """A mutable set of contacts and ranges, versioned so caches can notice changes.

    ``version`` increases by one on every change (add/remove); a router keeps
    the version it built from and rebuilds when it differs. ``epoch_unix_s`` is
    the Unix time of plan time 0 (ION's ``@`` reference time) when known.
    """

    def __init__(
        self,
        contacts: Iterable[Contact] = (),
        ranges: Iterable[Range] = (),
        *,
        epoch_unix_s: float | None = None,
    ) -> None:
        self._contacts: dict[Contact, None] = {}
        # Ranges in insertion order; the set view is built on first need (a
        # 40k-range plan loads faster without hashing every range up front).
        self._range_list_: list[Range] = []
        self._range_set: dict[Range, None] | None = {}
        # HDTN JSON gives one light time per contact: kept as a list aligned
        # with the contacts until something needs Range objects, so a large
        # plan loads without building 40k ranges and their lookup index.
        self._pending_owlt: list[float] | None = None
        self._pending_version = -1
        self._by_pair: dict[tuple[int, int], _PairRanges] | None = None
        self._contacts_view: tuple[Contact, ...] | None = None
        # dcis.dtn.routing.cgr's contact graph for this plan, shared by its Routers
        # (it records the version it was built from).
        self._cgr_graph: object | None = None
        self.epoch_unix_s = epoch_unix_s
        # Static routes from dtn: node IDs to ipn node numbers (issue 17):
        # ionrc "# dcis dtn-route dtn://name/ N" lines, HDTN JSON "dtnRoutes".
        self.dtn_routes: dict[str, int] = {}
        self.version = 0
        # Entries a parser skipped, one line each (e.g. an HDTN contact whose end precedes its start).
        self.warnings: list[str] = []
        for c in contacts:
            self.add_contact(c)
        for r in ranges:
            self.add_range(r)

    # -- views -------------------------------------------------------------
    @property
    def contacts(self) -> tuple[Contact, ...]:
        """Every contact, in insertion order."""
        if self._contacts_view is None:
            self._contacts_view = tuple(self._contacts)
        return self._contacts_view

    @property
    def ranges(self) -> tuple[Range, ...]:
        """Every range, in insertion order."""
        self._rset()  # deduplicate first
        return tuple(self._range_list)

    @property
    def nodes(self) -> frozenset[int]:
        """Every node named by a contact or a range."""
        out: set[int] = set()
        for c in self._contacts:
            out.add(c.frm)
            out.add(c.to)
        for r in self._range_list:
            out.add(r.frm)
            out.add(r.to)
        return frozenset(out)

    def __len__(self) -> int:
        return len(self._contacts)

    def __contains__(self, item: object) -> bool:
        return item in self._contacts or item in self._rset()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ContactPlan):
            return NotImplemented
        return (
            set(self._contacts) == set(other._contacts)
            and self._rset().keys() == other._rset().keys()
            and self.epoch_unix_s == other.epoch_unix_s
            and self.dtn_routes == other.dtn_routes
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"ContactPlan({len(self._contacts)} contacts, {len(self._range_list)} ranges, version={self.version})"

    # -- updates -------------------------------------------------------------
    def _changed(self) -> None:
        self.version += 1
        self._contacts_view = None

    def add_contact(self, contact: Contact) -> None:
        """Add a contact. Raises InvalidArgument if the same contact is already present."""
        self._materialize()
        if contact in self._contacts:
            raise InvalidArgument(f"duplicate contact {_fmt_contact(contact)}")
        self._contacts[contact] = None
        self._changed()

    def remove_contact(self, contact: Contact) -> None:
        """Remove a contact. Raises InvalidArgument if it is not in the plan."""
        self._materialize()
        try:
            del self._contacts[contact]
        except KeyError:
            raise InvalidArgument(f"no such contact {_fmt_contact(contact)}") from None
        self._changed()

    def add_range(self, rng: Range) -> None:
        """Add a range. Raises InvalidArgument if the same range is already present."""
        rset = self._rset()
        if rng in rset:
            raise InvalidArgument(
                f"duplicate range {rng.frm}->{rng.to} {rng.start_s}..{rng.end_s}"
            )
        rset[rng] = None
        self._range_list.append(rng)
        self._by_pair = None
        self._changed()

    def remove_range(self, rng: Range) -> None:
        """Remove a range. Raises InvalidArgument if it is not in the plan."""
        try:
            del self._rset()[rng]
        except KeyError:
            raise InvalidArgument(
                f"no such range {rng.frm}->{rng.to} {rng.start_s}..{rng.end_s}"
            ) from None
        self._range_list = list(self._rset())
        self._by_pair = None
        self._changed()

    @property
    def _range_list(self) -> list[Range]:
        if self._pending_owlt is not None:
            owlts = self._pending_owlt
            self._pending_owlt = None
            self._range_list_ = [
                Range(c.frm, c.to, c.start_s, c.end_s, o)
                for c, o in zip(self.contacts, owlts, strict=True)
            ]
            self._range_set = None
        return self._range_list_

    @_range_list.setter
    def _range_list(self, value: list[Range]) -> None:
        self._range_list_ = value

    def _materialize(self) -> None:
        # per-contact light times must become ranges before the contacts change
        if self._pending_owlt is not None:
            _ = self._range_list

    def _rset(self) -> dict[Range, None]:
        if self._range_set is None:
            self._range_set = dict.fromkeys(self._range_list)
            self._range_list = list(self._range_set)
        return self._range_set

    def update(self, newer: ContactPlan) -> None:
        """Merge a newer plan in place: its contacts, ranges and dtn routes are added, duplicates skipped."""
        if newer.dtn_routes and newer.dtn_routes != self.dtn_routes:
            self.dtn_routes.update(newer.dtn_routes)
            self._changed()
        for c in newer.contacts:
            if c not in self._contacts:
                self.add_contact(c)
        for r in newer.ranges:
            if r not in self._rset():
                self.add_range(r)

    # -- light time -----------------------------------------------------------
    def _pair_index(self) -> dict[tuple[int, int], _PairRanges]:
        if self._by_pair is None:
            groups: dict[tuple[int, int], list[Range]] = {}
            for r in self._range_list:
                groups.setdefault((r.frm, r.to), []).append(r)
            self._by_pair = {k: _PairRanges(v) for k, v in groups.items()}
        return self._by_pair

    def owlt_s(self, frm: int, to: int, at_s: float) -> float:
        """One-way light time in seconds from ``frm`` to ``to`` at plan time ``at_s``.

        Follows ION: a range declared ``frm -> to`` applies; otherwise, when
        frm > to, a range declared ``to -> frm`` (declared with a < b) applies.
        Returns 0.0 when no range applies (ION would ignore the contact; see
        spec/routing.md).
        """
        got = self._find(frm, to, at_s)
        return 0.0 if got is None else got

    def _find(self, frm: int, to: int, at_s: float) -> float | None:
        idx = self._pair_index()
        pr = idx.get((frm, to))
        got = pr.at(at_s) if pr is not None else None
        if got is None and frm > to:
            pr = idx.get((to, frm))
            got = pr.at(at_s) if pr is not None else None
        return got

    def owlt_lookup(self) -> Callable[[int, int, float], float | None]:
        """A lookup ``(frm, to, at_s) -> light time or None`` over this version's ranges.

        A snapshot: later range changes do not reach it (a router rebuilds
        its graph, and so its lookup, when the plan's version changes).
        """
        idx = self._pair_index()

        def find(frm: int, to: int, at_s: float) -> float | None:
            pr = idx.get((frm, to))
            got = pr.at(at_s) if pr is not None else None
            if got is None and frm > to:
                pr = idx.get((to, frm))
                got = pr.at(at_s) if pr is not None else None
            return got

        return find

    def owlt_table(self, contacts: Sequence[Contact]) -> list[float]:
        """``owlt_s(c.frm, c.to, c.start_s)`` for each contact, in one pass (used by routers)."""
        if (
            self._pending_owlt is not None
            and self._pending_version == self.version
            and len(contacts) == len(self._pending_owlt)
            and (
                contacts is self._contacts_view
                or list(contacts) == list(self._contacts)
            )
        ):
            return list(self._pending_owlt)
        idx = self._pair_index()
        out: list[float] = []
        append = out.append
        for c in contacts:
            pr = idx.get((c.frm, c.to))
            got = pr.at(c.start_s) if pr is not None else None
            if got is None and c.frm > c.to:
                pr = idx.get((c.to, c.frm))
                got = pr.at(c.start_s) if pr is not None else None
            append(0.0 if got is None else got)
        return out

    def has_range(self, frm: int, to: int, at_s: float) -> bool:
        """Whether some range (declared or implied by ION's a<b rule) applies."""
        return self._find(frm, to, at_s) is not None


class _PairRanges:
    """The ranges of one ordered node pair, sorted by start, for O(log n) lookups."""

    __slots__ = ("ends_max", "ranges", "starts")

    def __init__(self, ranges: list[Range]) -> None:
        self.ranges = sorted(ranges, key=lambda r: (r.start_s, r.end_s))
        self.starts = [r.start_s for r in self.ranges]
        self.ends_max: list[float] = []
        hi = float("-inf")
        for r in self.ranges:
            hi = max(hi, r.end_s)
            self.ends_max.append(hi)

    def at(self, at_s: float) -> float | None:
        # The latest-starting range covering at_s wins: a later declaration
        # refines an earlier one. Scan back only while an earlier range could
        # still reach at_s (running max of ends).
        i = bisect.bisect_right(self.starts, at_s) - 1
        while i >= 0 and self.ends_max[i] >= at_s:
            r = self.ranges[i]
            if r.end_s >= at_s:
                return r.owlt_s
            i -= 1
        return None


def _fmt_contact(c: Contact) -> str:
    return f"{c.frm}->{c.to} {_num(c.start_s)}..{_num(c.end_s)}"


def _num(x: float) -> str:
    """Format a number as ION/HDTN tools expect: integers without a decimal point."""
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(float(x))


# ---------------------------------------------------------------------------
# ionrc
# ---------------------------------------------------------------------------

_ABS_TIME = re.compile(
    r"^(\d{4})/(\d{1,2})/(\d{1,2})-(\d{1,2}):(\d{1,2}):(\d{1,2}(?:\.\d*)?)$"
)


def _parse_abs_unix(text: str) -> float | None:
    m = _ABS_TIME.match(text)
    if m is None:
        return None
    y, mo, d, h, mi = (int(g) for g in m.groups()[:5])
    sec = float(m.group(6))
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and sec < 61):
        return None
    return calendar.timegm((y, mo, d, h, mi, 0, 0, 0, 0)) + sec


def _format_abs(unix_s: float) -> str:
    whole = int(unix_s // 1)
    frac = unix_s - whole
    tm = datetime.fromtimestamp(whole, tz=UTC)  # a pure conversion, not a clock read
    sec = f"{tm.second:02d}" if frac == 0 else f"{tm.second + frac:09.6f}".rstrip("0")
    return (
        f"{tm.year:04d}/{tm.month:02d}/{tm.day:02d}-{tm.hour:02d}:{tm.minute:02d}:{sec}"
    )


_IGNORED_IONADMIN = frozenset(
    {"1", "s", "x", "m", "e", "v", "i", "l", "h", "w", "r", "t", "q", "?"}
)


class _IonrcParser:
    def __init__(
        self, source: str | None, seventh: SeventhField, epoch_unix_s: float | None
    ) -> None:
        self.source = source
        self.seventh = seventh
        self.plan = ContactPlan(epoch_unix_s=epoch_unix_s)
        self.lineno = 0

    def run(self, text: str) -> None:
        for lineno, raw in enumerate(text.splitlines(), start=1):
            self.lineno = lineno
            try:
                self.line(raw)
            except InvalidArgument as exc:
                raise self.err(str(exc)) from exc

    def err(self, what: str) -> PlanError:
        return PlanError(what, line=self.lineno, source=self.source)

    def time(self, tok: str, what: str) -> float:
        if tok.startswith("+"):
            return self.number(tok[1:], what, minimum=0.0)
        unix = _parse_abs_unix(tok)
        if unix is not None:
            if self.plan.epoch_unix_s is None:
                # No "@" reference yet: the plan clock counts from the DTN epoch,
                # so absolute times become DTN seconds.
                self.plan.epoch_unix_s = float(DTN_EPOCH_UNIX_S)
            return unix - self.plan.epoch_unix_s
        try:
            val = float(int(tok))
        except (ValueError, OverflowError):
            raise self.err(
                f"bad {what} time {tok!r} (want +seconds or yyyy/mm/dd-hh:mm:ss)"
            ) from None
        if not -_BIG < val < _BIG:
            raise self.err(f"{what} time {tok!r} is out of range")
        return val

    def number(self, tok: str, what: str, *, minimum: float | None = None) -> float:
        try:
            val = float(tok)
        except ValueError:
            raise self.err(f"bad {what} {tok!r}") from None
        if val != val or val in (float("inf"), float("-inf")):
            raise self.err(f"bad {what} {tok!r}")
        if minimum is not None and val < minimum:
            raise self.err(f"{what} must be >= {_num(minimum)}, got {tok}")
        return val

    def node(self, tok: str, what: str) -> int:
        try:
            n = int(tok)
        except ValueError:
            raise self.err(f"bad {what} node number {tok!r}") from None
        if not 0 <= n < _MAX_NODE:
            raise self.err(f"{what} node number must be in 0 .. 2^64-1, got {tok}")
        return n

    def line(self, raw: str) -> None:
        text = raw.strip()
        if text.startswith("#"):
            # "# dcis dtn-route dtn://name/ N": a static dtn: route ION skips as a comment
            toks = text[1:].split()
            if toks[:2] == ["dcis", "dtn-route"]:
                if len(toks) != 4:
                    raise self.err(
                        "'# dcis dtn-route' takes a node ID and a node number"
                    )
                try:
                    n = int(toks[3])
                except ValueError:
                    raise self.err(f"bad node number {toks[3]!r}") from None
                self.plan.dtn_routes.update(check_dtn_routes({toks[2]: n}))
            return
        if not text:
            return
        toks = text.split()
        cmd = toks[0]
        if cmd == "@":
            if len(toks) != 2:
                raise self.err("'@' takes one time, yyyy/mm/dd-hh:mm:ss")
            unix = _parse_abs_unix(toks[1])
            if unix is None:
                raise self.err(
                    f"bad reference time {toks[1]!r} (want yyyy/mm/dd-hh:mm:ss)"
                )
            if len(self.plan) or self.plan.ranges:
                raise self.err(
                    "'@' after contacts or ranges would shift them; put it first"
                )
            self.plan.epoch_unix_s = unix
            return
        if cmd in ("a", "d") and len(toks) >= 2 and toks[1] in ("contact", "range"):
            getattr(self, f"{cmd}_{toks[1]}")(toks[2:])
            return
        # Other ionadmin commands (1 initialize, s start, m horizon, ...) configure
        # the node, not the plan: accepted and ignored, as ionadmin would run them.
        if cmd in _IGNORED_IONADMIN:
            return
        raise self.err(f"unknown command {' '.join(toks[:2])!r}")

    def a_contact(self, args: list[str]) -> None:
        if len(args) not in (5, 6):
            raise self.err(
                f"'a contact' takes <start> <stop> <from> <to> <bytes/s> [{self.seventh}], got {len(args)} fields"
            )
        start = self.time(args[0], "start")
        stop = self.time(args[1], "stop")
        frm = self.node(args[2], "from")
        to = self.node(args[3], "to")
        rate = self.number(args[4], "rate", minimum=0.0)
        conf = 1.0
        owlt: float | None = None
        if len(args) == 6:
            if self.seventh == "confidence":
                conf = self.number(args[5], "confidence", minimum=0.0)
                if conf > 1.0:
                    raise self.err(f"confidence must be in [0, 1], got {args[5]}")
            else:
                owlt = self.number(args[5], "light time", minimum=0.0)
        if stop < start:
            raise self.err(f"contact stops ({args[1]}) before it starts ({args[0]})")
        c = Contact(frm, to, start, stop, rate, conf)
        if c in self.plan:
            raise self.err(f"duplicate contact {_fmt_contact(c)}")
        self.plan.add_contact(c)
        if owlt is not None:
            r = Range(frm, to, start, stop, owlt)
            if r not in self.plan:
                self.plan.add_range(r)

    def a_range(self, args: list[str]) -> None:
        if len(args) != 5:
            raise self.err(
                f"'a range' takes <start> <stop> <a> <b> <owlt>, got {len(args)} fields"
            )
        start = self.time(args[0], "start")
        stop = self.time(args[1], "stop")
        a = self.node(args[2], "first")
        b = self.node(args[3], "second")
        owlt = self.number(args[4], "light time", minimum=0.0)
        if stop < start:
            raise self.err(f"range stops ({args[1]}) before it starts ({args[0]})")
        r = Range(a, b, start, stop, owlt)
        if r in self.plan:
            raise self.err(f"duplicate range {a}->{b}")
        self.plan.add_range(r)

    def d_contact(self, args: list[str]) -> None:
        # ION: d contact <start|*> <from> <to>
        if len(args) != 3:
            raise self.err("'d contact' takes <start|*> <from> <to>")
        frm = self.node(args[1], "from")
        to = self.node(args[2], "to")
        start = None if args[0] == "*" else self.time(args[0], "start")
        gone = [
            c
            for c in self.plan.contacts
            if c.frm == frm and c.to == to and (start is None or c.start_s == start)
        ]
        if not gone:
            raise self.err(f"no contact {frm}->{to} to delete")
        for c in gone:
            self.plan.remove_contact(c)

    def d_range(self, args: list[str]) -> None:
        if len(args) != 3:
            raise self.err("'d range' takes <start|*> <a> <b>")
        a = self.node(args[1], "first")
        b = self.node(args[2], "second")
        start = None if args[0] == "*" else self.time(args[0], "start")
        gone = [
            r
            for r in self.plan.ranges
            if r.frm == a and r.to == b and (start is None or r.start_s == start)
        ]
        if not gone:
            raise self.err(f"no range {a}->{b} to delete")
        for r in gone:
            self.plan.remove_range(r)


def parse_ionrc(
    text: str,
    *,
    source: str | None = None,
    seventh_field: SeventhField = "confidence",
    epoch_unix_s: float | None = None,
) -> ContactPlan:
    """Parse ION ``ionrc`` text into a plan.

    ``seventh_field`` says what an optional 6th argument of ``a contact``
    means: ION's ``"confidence"`` (default) or the ``"owlt"`` of pyCGR's
    ION-like plans. Raises :class:`PlanError` naming the line of the first bad line.
    """
    p = _IonrcParser(source, seventh_field, epoch_unix_s)
    p.run(text)
    return p.plan


def apply_ionrc(
    plan: ContactPlan,
    text: str,
    *,
    source: str | None = None,
    seventh_field: SeventhField = "confidence",
) -> None:
    """Apply ionrc commands (``a``/``d contact``/``range``) to an existing plan, in place.

    All or nothing: on a bad line, :class:`PlanError` is raised and the plan
    is unchanged. Routers over the plan see the new ``version`` and rebuild.
    """
    p = _IonrcParser(source, seventh_field, plan.epoch_unix_s)
    p.plan = ContactPlan(plan.contacts, plan.ranges, epoch_unix_s=plan.epoch_unix_s)
    p.plan.dtn_routes = dict(plan.dtn_routes)
    p.run(text)
    new = p.plan
    if new.dtn_routes != plan.dtn_routes:
        plan.dtn_routes = new.dtn_routes
        plan._changed()
    for c in set(plan.contacts) - set(new.contacts):
        plan.remove_contact(c)
    for r in set(plan.ranges) - set(new.ranges):
        plan.remove_range(r)
    old_c = set(plan.contacts)
    for c in new.contacts:
        if c not in old_c:
            plan.add_contact(c)
    old_r = set(plan.ranges)
    for r in new.ranges:
        if r not in old_r:
            plan.add_range(r)


def ionrc_owlt_warnings(plan: ContactPlan) -> list[str]:
    """One warning per range whose light time ION cannot read (it reads whole seconds).

    ``format_ionrc(plan, ion_owlt=True)`` rounds those light times up.
    """
    out = []
    for r in plan.ranges:
        if not float(r.owlt_s).is_integer():
            up = math.ceil(r.owlt_s)
            kind = "sub-second" if r.owlt_s < 1 else "fractional"
            out.append(
                f"range {r.frm}->{r.to} +{_num(r.start_s)}..+{_num(r.end_s)}: {kind} light time "
                f"{_num(r.owlt_s)} s written as {up} s (ION reads whole seconds)"
            )
    return out


def format_ionrc(plan: ContactPlan, *, ion_owlt: bool = False) -> str:
    """Write a plan as ionrc text (``@`` reference time when known, ranges, then contacts).

    With ``ion_owlt`` a light time that is not a whole number of seconds is
    rounded up (ION parses it as an integer; see :func:`ionrc_owlt_warnings`);
    without it the text round-trips through :func:`parse_ionrc` exactly.
    """
    out = ["# contact plan written by dcis"]
    if plan.epoch_unix_s is not None and plan.epoch_unix_s != DTN_EPOCH_UNIX_S:
        out.append(f"@ {_format_abs(plan.epoch_unix_s)}")
    for r in plan.ranges:
        owlt = float(math.ceil(r.owlt_s)) if ion_owlt else r.owlt_s
        out.append(
            f"a range +{_num(r.start_s)} +{_num(r.end_s)} {r.frm} {r.to} {_num(owlt)}"
        )
    for name, node in plan.dtn_routes.items():
        out.append(f"# dcis dtn-route {name} {node}")
    for c in plan.contacts:
        line = f"a contact +{_num(c.start_s)} +{_num(c.end_s)} {c.frm} {c.to} {_num(c.rate_bytes_s)}"
        if c.confidence != 1.0:
            line += f" {_num(c.confidence)}"
        out.append(line)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------
# HDTN JSON
# ---------------------------------------------------------------------------

_BIG = 1e300  # larger "times" or rates are errors, not plans
_MAX_NODE = 2**64  # ipn node numbers are unsigned 64-bit (RFC 9758)

_CONTACTS_KEY = re.compile(r'"contacts"\s*:\s*\[')


def _element_lines(text: str) -> list[int]:
    """1-based line of each element of the top-level "contacts" array (for error messages)."""
    m = _CONTACTS_KEY.search(text)
    if m is None:
        return []
    dec = json.JSONDecoder()
    pos = m.end()
    lines: list[int] = []
    line = text.count("\n", 0, pos) + 1
    last = pos
    n = len(text)
    while pos < n:
        while pos < n and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= n or text[pos] == "]":
            break
        line += text.count("\n", last, pos)
        last = pos
        lines.append(line)
        try:
            _, pos = dec.raw_decode(text, pos)
        except json.JSONDecodeError:
            break
    return lines


def _json_number(obj: dict[str, Any], key: str) -> float:
    val = obj[key]
    if isinstance(val, bool) or not isinstance(val, int | float):
        raise TypeError(f"{key!r} must be a number, got {val!r}")
    if not -_BIG < val < _BIG:  # also false for NaN
        raise TypeError(f"{key!r} must be a finite number below 1e300, got {val!r}")
    return float(val)


def _json_node(obj: dict[str, Any], key: str) -> int:
    val = obj[key]
    if isinstance(val, bool) or not isinstance(val, int) or not 0 <= val < _MAX_NODE:
        raise TypeError(
            f"{key!r} must be an ipn node number (0 .. 2^64-1), got {val!r}"
        )
    return val


def parse_hdtn_json(text: str, *, source: str | None = None) -> ContactPlan:
    """Parse HDTN contact-plan JSON. Raises :class:`PlanError` with the line of the bad contact."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(f"not JSON: {exc.msg}", line=exc.lineno, source=source) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("contacts"), list):
        raise PlanError('want an object with a "contacts" array', line=1, source=source)
    contacts: list[Contact] = []
    owlts: list[float] = []
    warnings: list[str] = []
    lines: list[int] = []
    num_types = (int, float)
    for i, item in enumerate(doc["contacts"]):
        # Fast path for well-formed entries (40k contacts must load in well
        # under 0.5 s); anything unusual goes through the checking path below.
        try:
            frm = item["source"]
            to = item["dest"]
            start = item["startTime"]
            end = item["endTime"]
            bits = item["rateBitsPerSec"]
            owlt = item.get("owlt", 0.0)
            fast = (
                type(frm) is int
                and type(to) is int
                and type(start) in num_types
                and type(end) in num_types
                and type(bits) in num_types
                and type(owlt) in num_types
                and "confidence" not in item
                and 0 <= frm < _MAX_NODE
                and 0 <= to < _MAX_NODE
                and -_BIG < start <= end < _BIG  # false for NaN, inf, huge ints
                and 0 <= bits < _BIG
                and 0 <= owlt < _BIG
            )
        except (KeyError, TypeError):
            fast = False
        try:
            if fast:
                c = Contact(frm, to, float(start), float(end), bits / 8.0)
                o = float(owlt)
            else:
                got = _checked_item(item)
                if got is None:
                    # HDTN loads a contact whose end precedes its start and
                    # never uses it (its window is empty); we drop it and say so.
                    lines = lines or _element_lines(text)
                    at = f"line {lines[i]}: " if i < len(lines) else ""
                    warnings.append(
                        f"{at}contacts[{i}] {item['source']}->{item['dest']} ends ({_num(item['endTime'])}) "
                        f"before it starts ({_num(item['startTime'])}); ignored"
                    )
                    continue
                c, o = got
        except (KeyError, TypeError, InvalidArgument) as exc:
            lines = lines or _element_lines(text)
            what = (
                f"missing field {exc.args[0]!r}"
                if isinstance(exc, KeyError)
                else str(exc)
            )
            raise PlanError(
                f"contacts[{i}]: {what}",
                line=lines[i] if i < len(lines) else None,
                source=source,
            ) from exc
        contacts.append(c)
        owlts.append(o)
    plan = ContactPlan()
    unique = dict.fromkeys(contacts)
    if len(unique) != len(contacts):
        seen: set[Contact] = set()
        for i, c in enumerate(contacts):
            if c in seen:
                lines = lines or _element_lines(text)
                raise PlanError(
                    f"contacts[{i}]: duplicate contact {_fmt_contact(c)}",
                    line=lines[i] if i < len(lines) else None,
                    source=source,
                )
            seen.add(c)
    plan._contacts = unique
    plan._pending_owlt = owlts
    plan._range_set = None
    plan.warnings = warnings
    routes = doc.get("dtnRoutes", {})
    try:
        if not isinstance(routes, dict):
            raise InvalidArgument('"dtnRoutes" must be an object')
        plan.dtn_routes = check_dtn_routes(routes)
    except InvalidArgument as exc:
        raise PlanError(f"dtnRoutes: {exc}", line=1, source=source) from exc
    plan.version = 1
    plan._pending_version = 1
    return plan


def _checked_item(item: Any) -> tuple[Contact, float] | None:
    """One HDTN contact entry, checked field by field; None for an empty (inverted) window."""
    if not isinstance(item, dict):
        raise TypeError("each contact must be an object")
    frm = _json_node(item, "source")
    to = _json_node(item, "dest")
    start = _json_number(item, "startTime")
    end = _json_number(item, "endTime")
    if "rateBitsPerSec" in item:
        rate = _json_number(item, "rateBitsPerSec") / 8.0
    elif "rate" in item:
        # HDTN's deprecated field is in Mbit/s.
        rate = _json_number(item, "rate") * 1e6 / 8.0
    else:
        raise KeyError("rateBitsPerSec")
    owlt = _json_number(item, "owlt") if "owlt" in item else 0.0
    conf = _json_number(item, "confidence") if "confidence" in item else 1.0
    if end < start:
        return None
    return Contact(frm, to, start, end, rate, conf), owlt


def format_hdtn_json(plan: ContactPlan) -> str:
    """Write a plan as HDTN contact-plan JSON (rate in bits/s, owlt at each contact's start)."""
    items = []
    for i, c in enumerate(plan.contacts):
        item: dict[str, Any] = {
            "contact": i,
            "source": c.frm,
            "dest": c.to,
            "startTime": _jnum(c.start_s),
            "endTime": _jnum(c.end_s),
            "rateBitsPerSec": _jnum(c.rate_bytes_s * 8),
            "owlt": _jnum(plan.owlt_s(c.frm, c.to, c.start_s)),
        }
        if c.confidence != 1.0:
            item["confidence"] = c.confidence
        items.append(item)
    doc: dict[str, Any] = {"contacts": items}
    if plan.dtn_routes:
        doc["dtnRoutes"] = dict(plan.dtn_routes)
    return json.dumps(doc, indent=1) + "\n"


def _jnum(x: float) -> int | float:
    return int(x) if float(x).is_integer() and abs(x) < 1e15 else float(x)


# ---------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------


def parse_plan(
    text: str, *, source: str | None = None, seventh_field: SeventhField = "confidence"
) -> ContactPlan:
    """Parse plan text of either format, told apart by content (JSON starts with ``{``)."""
    if text.lstrip().startswith("{"):
        return parse_hdtn_json(text, source=source)
    return parse_ionrc(text, source=source, seventh_field=seventh_field)


def __getattr__(name: str) -> Any:
    # For code written before plan files moved to the edge (issue 11): this
    # module never reads files itself. Import them from dcis.dtn.storage.
    if name in ("load_plan", "save_plan"):
        from dcis.dtn.storage import plan_files

        return getattr(plan_files, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
