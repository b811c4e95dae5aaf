"""Contact Graph Routing after CCSDS SABR (734.3-B-1, section 3.2).

Earliest-arrival routes over a contact plan for a bundle of a given size
ready at a given time, the next best routes (Yen's k shortest loopless paths
over the contact graph), residual-volume bookkeeping and a route cache that a
plan change or a used-up contact invalidates. Sans-I/O: no clock, the caller
passes plan time. Algorithm, complexity and the differences from SABR are in
spec/routing.md.

The search is a time-dependent Dijkstra over *nodes*, which is exact for the
earliest arrival because a contact is FIFO: a bundle ready later never
arrives earlier through the same contact (arrival = max(ready, start) +
size/rate + owlt), and feasibility (transmission ends by the contact's end,
residual volume >= size) only gets harder later. Each node's outgoing
contacts are grouped per neighbour and sorted by start, with a running
maximum of end times, so a relaxation bisects to the first contact that can
still be used and stops at the first one starting after the best arrival
already known for that neighbour.
"""

from __future__ import annotations

import heapq
import math
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import cast

from dcis.dtn.errors import InvalidArgument
from dcis.dtn.routing.contact import Contact
from dcis.dtn.routing.plan import ContactPlan

__all__ = ["Route", "Router", "contact_key", "replay"]

_INF = float("inf")
_MAXH = 1 << 30  # more hops than any route has


# A route's tie-break after arrival and hop count, query-independent and total
# over contact sequences of one length: for contacts c_1..c_h it is the nested
# tuple (-T_h, (-T_{h-1}, (..., (-T_1, (), k_1) ...), k_{h-1}), k_h), where T_i
# is the earliest end among c_1..c_i (T_h is SABR's termination time) and k_i
# is c_i's canonical key. Nested tuples compare -T_h, ..., -T_1, then
# k_1, ..., k_h. The search builds the same order with contact ranks.
Chain = tuple[object, ...]


def contact_key(c: Contact) -> tuple[float, float, int, int, float, float]:
    """A contact's canonical order: start, end, from, to, rate, confidence."""
    return (c.start_s, c.end_s, c.frm, c.to, c.rate_bytes_s, c.confidence)


@dataclass(frozen=True, slots=True)
class Route:
    """A route: the contacts to take in order and when the bundle arrives.

    ``arrival_s`` is plan time at the destination; ``hops`` the nodes from the
    source to the destination (one more than ``contacts``).
    """

    arrival_s: float
    hops: tuple[int, ...]
    contacts: tuple[Contact, ...]
    _key: tuple[float, int, Chain] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if len(self.hops) != len(self.contacts) + 1:
            raise InvalidArgument("a route has one more hop than contacts")
        # sort_key is built on first use: forwarding never sorts its routes

    @property
    def next_hop(self) -> int:
        """The neighbour to hand the bundle to (the destination itself for a direct contact)."""
        return self.hops[1]

    @property
    def hop_count(self) -> int:
        """Number of contacts on the route."""
        return len(self.contacts)

    @property
    def expires_s(self) -> float:
        """The route's termination time: the earliest end among its contacts (SABR's tie-break)."""
        return min(c.end_s for c in self.contacts)

    @property
    def sort_key(self) -> tuple[float, int, Chain]:
        """SABR order, total: earliest arrival, fewest hops, latest termination, then a fixed tie-break.

        After the termination time T_h (the earliest end of the route's
        contacts) come the terminations of the shorter prefixes (T_{h-1} ...
        T_1, latest first) and then the contacts' canonical keys
        (:func:`contact_key`) from the first; none depends on the query, so
        two distinct routes never tie (spec/routing.md, "SABR tie-breaks").
        """
        if self._key is not None:
            return self._key
        chain: Chain = ()
        term = _INF
        for c in self.contacts:
            term = min(term, c.end_s)
            chain = (-term, chain, contact_key(c))
        key = (self.arrival_s, len(self.contacts), chain)
        object.__setattr__(self, "_key", key)
        return key


def replay(
    contacts: Sequence[Contact],
    at_s: float,
    size_bytes: float,
    owlt_s: Sequence[float],
    residual: Sequence[float] | None = None,
    owlt_at: Callable[[int, float], float] | None = None,
) -> float | None:
    """Walk a contact sequence from ``at_s``; the arrival time, or None if some contact cannot carry it.

    ``owlt_s[i]`` is the light time of ``contacts[i]``; ``owlt_at(i, t)``
    (if given) overrides it with the light time in force when transmission
    starts at ``t``. ``residual[i]`` (if given) is its residual volume in
    bytes. A contact's end is exclusive, as in ION: transmission must start
    before it and end by it.
    """
    t = at_s
    for i, c in enumerate(contacts):
        if residual is not None and residual[i] < size_bytes:
            return None
        s = max(t, c.start_s)
        if s >= c.end_s:
            return None
        e = s + _tx_time(size_bytes, c.rate_bytes_s)
        if e > c.end_s:
            return None
        t = e + (owlt_s[i] if owlt_at is None else owlt_at(i, s))
    return t


def _tx_time(size: float, rate: float) -> float:
    if size <= 0:
        return 0.0
    return size / rate if rate > 0 else _INF


# A node's outgoing contacts sorted by start: starts, running max of ends, contact ids, receivers, count
_Out = tuple[list[float], list[float], list[int], list[int], int]

# A shared route suffix (Router.forwarding_route): for a bundle of ``size``
# bytes at ``node`` bound for ``dst``, the contacts ``ids[pos:]`` of a route
# found at an earlier node, best in (arrival, hops) from ``node`` for the
# ready time ``ready``; ``arrival`` is when it arrives then; ``early`` the
# transmission time of ``size`` bytes over the contact into ``node``.
_HintKey = tuple[int, int, float]  # node, dst, size
# ready, early, arrival, ids, pos
_Hint = tuple[float, float, float, tuple[int, ...], int]
# Shared suffixes per plan version, least recently written dropped first: the
# 1,000-node day has ~12k bundles in transit with ~16 hops to go (~200k live).
_HINTS_MAX = 1 << 19
_DEAD_MAX = 1 << 18  # (destination, node) pairs known unreachable, per plan version


def _columns(rows: list[_Label]) -> tuple[array[float] | array[int], ...]:
    """Labels as flat columns, in their order (a source tree's paused heap)."""
    if not rows:
        return tuple(array(code) for code in "didiii")
    # one transpose in C, not a list per column
    return tuple(
        array(code, col)
        for code, col in zip("didiii", zip(*rows, strict=True), strict=True)
    )


class _SourceTree:
    """A source tree (Router.forwarding_route): the search of an empty bundle
    ready at ``t0`` at ``src``, kept to answer later bundles from there.

    ``horizon``: every label arriving before it has left the heap (_INF
    when the search ran out). ``clean``: no contact was skipped for the
    router's bookings (then it is also the tree at full volume). Nodes are
    the graph's dense indices. The expanded labels, in the order they left
    the heap, are columns (``la`` arrival, ``lh`` hops, ``lc`` contact in,
    ``lp`` parent label; -1 for none at the source); ``head``/``lnext``
    chain each node's labels in order of arrival. The heap (by column, in
    heap order), ``settled`` (fewest hops of a node's labels, -1: none),
    ``tail`` and ``seq`` resume the search. Only flat arrays: ~50 KB a tree
    on the 1,000-node plan, nothing for the garbage collector to walk (a
    paused heap kept as a list of label tuples instead: +75 MiB RSS at the
    1,000-node day's first hour and 5-10% slower, issue 18 sixth round).
    """

    __slots__ = (
        "clean",
        "head",
        "heap",
        "horizon",
        "la",
        "lc",
        "lh",
        "lnext",
        "lp",
        "seq",
        "settled",
        "src",
        "src_ix",
        "t0",
        "tail",
    )

    def __init__(self, src: int, src_ix: int, t0: float, n_nodes: int) -> None:
        self.src = src
        self.src_ix = src_ix
        self.t0 = t0
        self.horizon = -_INF
        self.clean = True
        self.la: array[float] = array("d")  # arrival
        self.lh: array[int] = array("i")  # hops
        self.lc: array[int] = array("i")  # contact in (-1 at the source)
        self.lp: array[int] = array("i")  # parent label (-1 at the source)
        self.lnext: array[int] = array("i")  # the node's next label (-1: none)
        self.head: array[int] = array("i", [-1]) * n_nodes
        self.tail: array[int] = array("i", [-1]) * n_nodes
        self.settled: array[int] = array("i", [-1]) * n_nodes
        # the heap by column: arrival, hops, order pushed, node, contact in, parent label
        self.heap = _columns([(t0, 0, 0, src_ix, -1, -1)])
        self.seq = 1


_BEATEN_POPS = (
    4096  # a source tree's check gives up (and searches) after this many labels
)
# Router._walk_back gives up after this many labels (then a new tree is built)
_WALK_POPS = 4096
# A fast search's path back to the source: (contact, parent link), None at the source
_Link = tuple[int, "_Link"] | None
# Per node, per neighbour: (neighbour, starts, running max of ends, contact ids)
_Nbrs = dict[int, list[tuple[int, list[float], list[float], list[int]]]]
# The same by node index
_NbrsIx = list[list[tuple[int, list[float], list[float], list[int]]]]
# The source trees' groups by node index (Router._grow_tree, and into each
# node for Router._beaten and Router._walk_back): :data:`_NbrsIx`'s rows
# with, for a *plain* group, each contact's light time (None: not plain;
# see _Graph.tree_neighbours_ix)
_TreeNbrs = list[
    list[tuple[int, list[float], list[float], list[int], list[float] | None]]
]
# A source tree's label: arrival, hops, order pushed, node, contact in, parent label
_Label = tuple[float, int, int, int, int, int]


class _Graph:
    """The contact graph of one plan version: immutable, shared by every Router on the plan.

    Flat per-contact arrays (start, end, 1/rate, light time, full volume) and,
    per node, its outgoing contacts sorted by start with a running maximum of
    their ends. Routers keep only what differs between them (consumed volume,
    route cache), so N routers over one plan cost one graph.
    """

    __slots__ = (
        "_idx",
        "_ix",
        "_nbrs",
        "_nbrs_ix",
        "_nodes",
        "_plan_ranges",
        "_tree_in_ix",
        "_tree_ix",
        "cs",
        "dead",
        "dead_n",
        "end",
        "forwarders",
        "frm",
        "hints",
        "inv_rate",
        "min_inv_in",
        "out",
        "owlt",
        "rank",
        "rate",
        "start",
        "to",
        "var_owlt",
        "version",
        "volume",
    )

    def __init__(self, plan: ContactPlan) -> None:
        self.version = plan.version
        view = plan.contacts
        cs = list(view)
        self.cs = cs
        self._idx: dict[Contact, int] | None = None  # built on first need
        self.start = [c.start_s for c in cs]
        self.end = [c.end_s for c in cs]
        self.rate = [c.rate_bytes_s for c in cs]
        # seconds per byte; a zero-rate contact carries only empty bundles
        self.inv_rate = [
            1.0 / c.rate_bytes_s if c.rate_bytes_s > 0 else _INF for c in cs
        ]
        self.frm = [c.frm for c in cs]
        self.to = [c.to for c in cs]
        self.owlt = plan.owlt_table(view)
        # contacts whose light time changes inside them: the pair's ranges,
        # looked up at the time a bundle is sent (ION's terms)
        self.var_owlt: dict[int, tuple[int, int]] = _varying_owlt(plan, cs)
        self._plan_ranges = plan.owlt_lookup()
        self.volume = [
            (e - b) * r for b, e, r in zip(self.start, self.end, self.rate, strict=True)
        ]
        per_node: dict[int, list[int]] = {}
        # per node, the least seconds per byte of any contact into it: every
        # route's arrival grows at least this fast with the bundle's size
        min_inv_in: dict[int, float] = {}
        inv_rate = self.inv_rate
        for i, c in enumerate(cs):
            if c.frm != c.to:  # a loopback contact never helps a route
                per_node.setdefault(c.frm, []).append(i)
                if inv_rate[i] < min_inv_in.get(c.to, _INF):
                    min_inv_in[c.to] = inv_rate[i]
        self.min_inv_in = min_inv_in
        # rank[i]: contact i's place in the canonical order (contact_key), the
        # search's last tie-break; plan order is insertion order
        rank = [0] * len(cs)
        keys = [contact_key(c) for c in cs]
        for r, i in enumerate(sorted(range(len(cs)), key=keys.__getitem__)):
            rank[i] = r
        self.rank = rank
        out: dict[int, _Out] = {}
        start = self.start
        end = self.end
        to = self.to
        for frm, ids in per_node.items():
            ids.sort(key=lambda i: (start[i], end[i]))
            maxend: list[float] = []
            hi = -_INF
            for i in ids:
                hi = max(hi, end[i])
                maxend.append(hi)
            out[frm] = (
                [start[i] for i in ids],
                maxend,
                ids,
                [to[i] for i in ids],
                len(ids),
            )
        self.out = out
        # Shared route suffixes (see Router.forwarding_route): the one mutable
        # part, a bounded memo that only ever answers with a re-checked route.
        self.hints: OrderedDict[_HintKey, _Hint] = OrderedDict()
        # nodes that forward with a router on this graph: only they get
        # suffixes and unreachable marks (a daemon's one node gets none)
        self.forwarders: set[int] = set()
        # dead[dst][node] = (since, size): no route from node to dst for a
        # bundle of size or more ready at since or later (a failed search)
        self.dead: OrderedDict[int, dict[int, tuple[float, float]]] = OrderedDict()
        self.dead_n = 0
        self._nbrs: _Nbrs | None = None  # built on first need
        self._nodes: list[int] | None = None
        self._ix: dict[int, int] | None = None
        self._nbrs_ix: _NbrsIx | None = None
        self._tree_ix: _TreeNbrs | None = None
        self._tree_in_ix: _TreeNbrs | None = None

    def neighbours(self) -> _Nbrs:
        """Per node, its outgoing contacts grouped by receiver, each group
        sorted by start with a running maximum of ends (Router._search_fast)."""
        if self._nbrs is None:
            nb: _Nbrs = {}
            for u, (_s, _e, ids, tos, _n) in self.out.items():
                groups: dict[int, list[int]] = {}
                for i, v in zip(ids, tos, strict=True):
                    groups.setdefault(v, []).append(i)
                rows = []
                for v, cis in groups.items():
                    maxend: list[float] = []
                    hi = -_INF
                    for ci in cis:
                        hi = max(hi, self.end[ci])
                        maxend.append(hi)
                    rows.append((v, [self.start[ci] for ci in cis], maxend, cis))
                nb[u] = rows
            self._nbrs = nb
        return self._nbrs

    def node_list(self) -> list[int]:
        """Every node in a contact of the plan, in order: index -> node."""
        if self._nodes is None:
            self._nodes = sorted(set(self.frm) | set(self.to))
        return self._nodes

    def node_index(self) -> dict[int, int]:
        """Node -> its index in :meth:`node_list`."""
        if self._ix is None:
            self._ix = {v: i for i, v in enumerate(self.node_list())}
        return self._ix

    def neighbours_ix(self) -> _NbrsIx:
        """:meth:`neighbours` by node index, both ends (Router._grow_tree)."""
        if self._nbrs_ix is None:
            ix = self.node_index()
            out: _NbrsIx = [[] for _ in ix]
            for u, rows in self.neighbours().items():
                out[ix[u]] = [(ix[v], s, m, c) for v, s, m, c in rows]
            self._nbrs_ix = out
        return self._nbrs_ix

    def tree_neighbours_ix(self) -> _TreeNbrs:
        """:meth:`neighbours_ix` with, per group, its contacts' light times
        when the group is *plain* (else None), for Router._grow_tree.

        A group is plain when no light time changes inside its contacts,
        each opens before it ends, and each opens no earlier than the one
        before it ends plus that one's light time (so the ends are in
        order: the running maximum of ends is each contact's own). Then a
        bundle ready at ``a`` does best on the first contact ``j`` that ends
        after ``a``: it is sent at ``max(a, start)`` before that end, and
        every later contact opens after it has arrived -- the general scan
        would stop at ``j + 1`` with the same answer. (A LEO plan's windows
        of one pair are minutes apart: every group is plain.)
        """
        if self._tree_ix is None:
            end = self.end
            owlt = self.owlt
            var = self.var_owlt
            rows: _TreeNbrs = []
            for groups in self.neighbours_ix():
                row = []
                for v, starts, maxend, cis in groups:
                    offs: list[float] | None = [owlt[ci] for ci in cis]
                    for j, ci in enumerate(cis):
                        if (
                            ci in var
                            or not starts[j] < end[ci]
                            or (j + 1 < len(cis) and starts[j + 1] < end[ci] + owlt[ci])
                        ):
                            offs = None
                            break
                    row.append((v, starts, maxend, cis, offs))
                rows.append(row)
            self._tree_ix = rows
        return self._tree_ix

    def tree_in_neighbours_ix(self) -> _TreeNbrs:
        """The groups of :meth:`tree_neighbours_ix` into each node, keyed by
        the sender (Router._beaten, Router._walk_back).

        Backwards over a plain group, a bundle due at ``v`` by ``d`` does
        best on the last contact opening by ``d`` when it fits there: every
        earlier contact ends before that one opens."""
        if self._tree_in_ix is None:
            inn: _TreeNbrs = [[] for _ in self.node_index()]
            for u, rows in enumerate(self.tree_neighbours_ix()):
                for v, starts, maxend, cis, offs in rows:
                    inn[v].append((u, starts, maxend, cis, offs))
            self._tree_in_ix = inn
        return self._tree_in_ix

    def owlt_at(self, i: int, at_s: float) -> float:
        """Contact ``i``'s light time when a bundle is sent over it at ``at_s``."""
        pair = self.var_owlt.get(i)
        if pair is None:
            return self.owlt[i]
        got = self._plan_ranges(pair[0], pair[1], at_s)
        return 0.0 if got is None else got

    @property
    def idx(self) -> dict[Contact, int]:
        """Contact -> its index in the flat arrays."""
        if self._idx is None:
            self._idx = {c: i for i, c in enumerate(self.cs)}
        return self._idx


def _varying_owlt(
    plan: ContactPlan, cs: Sequence[Contact]
) -> dict[int, tuple[int, int]]:
    """Contacts (by index) inside which some range of their pair starts or ends."""
    edges: dict[tuple[int, int], list[float]] = {}
    for r in plan.ranges:
        for pair in {(r.frm, r.to), (r.to, r.frm)}:
            edges.setdefault(pair, []).extend((r.start_s, r.end_s))
    for v in edges.values():
        v.sort()
    out: dict[int, tuple[int, int]] = {}
    for i, c in enumerate(cs):
        ts = edges.get((c.frm, c.to))
        if ts is None:
            continue
        # a range starting after the contact's start, or ending before its end
        j = bisect_left(ts, c.start_s)
        while j < len(ts) and ts[j] == c.start_s:
            j += 1
        if j < len(ts) and ts[j] < c.end_s:
            out[i] = (c.frm, c.to)
    return out


def _shareable(entry: _Entry, deadline: float) -> bool:
    """An answer served from ``entry`` is also the one with no exclusions,
    no deadline and full volume (see Router.forwarding_route)."""
    return entry[6] and not entry[3] and deadline == _INF and bool(entry[4])


def _graph_of(plan: ContactPlan) -> tuple[_Graph, bool]:
    """The plan's shared graph for its current version, and whether it was built now."""
    g = plan._cgr_graph
    if isinstance(g, _Graph) and g.version == plan.version:
        return g, False
    g = _Graph(plan)
    plan._cgr_graph = g  # the previous version's graph goes once no router holds it
    return g, True


# A cached answer: ready time, size, deadline, excluded first hops it was
# computed for, the routes (contact indices) and their arrivals then, and
# whether the search that found it skipped no contact for want of volume.
_Entry = tuple[
    float,
    float,
    float,
    frozenset[int],
    tuple[tuple[int, ...], ...],
    tuple[float, ...],
    bool,
]
_CacheKey = tuple[int, int, int]  # src, dst, k
_PER_KEY = 16  # cached answers per (src, dst, k): sizes x exclusions in use


class Router:
    """CGR over a :class:`ContactPlan`; rebuilds its contact graph when ``plan.version`` changes.

    The contact graph is shared by every Router over the same plan object and
    version (built once, on first need). Residual volume and the route cache
    are per router: ``consume(contact, size)`` records bytes queued on a
    contact; routes never use a contact with less residual volume than the
    bundle's size. Consumption survives plan changes for contacts that stay in
    the plan. ``cache_size`` bounds the number of cached answers.
    """

    def __init__(self, plan: ContactPlan, *, cache_size: int = 4096) -> None:
        self.plan = plan
        self._built = -1
        self._used: dict[Contact, float] = {}
        # residual volume of consumed contacts by index; others have their full volume
        self._resid: dict[int, float] = {}
        self._cache: OrderedDict[_CacheKey, list[_Entry]] = OrderedDict()
        self._n_cached = 0
        self._max_cached_size = -_INF
        self._cache_size = max(1, cache_size)
        self.stats = {
            "searches": 0,
            "cache_hits": 0,
            "cache_misses": 0,
            "builds": 0,
            "graphs_built": 0,
            "shared_hits": 0,
            "trees": 0,
            "tree_hits": 0,
            "tree_walks": 0,
        }
        self._tree: _SourceTree | None = None  # forwarding_route's source tree
        self._volume_cut = False
        self._build()

    # -- contact graph ---------------------------------------------------------
    def _build(self) -> None:
        g, fresh = _graph_of(self.plan)
        self._g = g
        self._cs = g.cs
        self._start = g.start
        self._end = g.end
        self._rate = g.rate
        self._inv_rate = g.inv_rate
        self._frm = g.frm
        self._to = g.to
        self._owlt = g.owlt
        self._vol = g.volume
        self._out = g.out
        self._resid = {}
        if self._used:
            # consumption carries over for contacts that stay in the plan
            idx = g.idx
            self._used = {c: u for c, u in self._used.items() if c in idx}
            for c, u in self._used.items():
                i = idx[c]
                self._resid[i] = self._vol[i] - u
        self.clear_cache()
        self._built = g.version
        self.stats["builds"] += 1
        if fresh:
            self.stats["graphs_built"] += 1

    @property
    def _idx(self) -> dict[Contact, int]:
        return self._g.idx

    def _check(self) -> None:
        if self._built != self.plan.version:
            self._build()

    def clear_cache(self) -> None:
        """Forget every cached route (the next query of each kind searches afresh)."""
        self._cache.clear()
        self._tree = None
        self._n_cached = 0
        self._max_cached_size = -_INF

    def _residual_of(self, i: int) -> float:
        r = self._resid.get(i)
        return self._vol[i] if r is None else r

    # -- residual volume -------------------------------------------------------
    def consume(self, contact: Contact, size_bytes: float) -> float:
        """Record ``size_bytes`` queued on ``contact``; returns its residual volume afterwards.

        Raises InvalidArgument if the contact is not in the plan. A cached
        answer is re-checked against the residual volume of its contacts
        before each reuse; volume given back (a negative size, or
        :meth:`release`) drops the cached answers it could improve.
        """
        self._check()
        i = self._idx.get(contact)
        if i is None:
            raise InvalidArgument(
                f"contact {contact.frm}->{contact.to} at {contact.start_s} is not in the plan"
            )
        self._used[contact] = self._used.get(contact, 0.0) + size_bytes
        before = self._residual_of(i)
        after = before - size_bytes
        self._resid[i] = after
        if size_bytes < 0 and before < self._max_cached_size:
            # Volume given back can make a contact usable again for answers
            # computed for bundles larger than what was left of it.
            self._drop_cached(lambda e: e[1] > before)
        if size_bytes < 0 and before < 0:
            # the source tree skipped this over-booked contact
            self._tree = None
        return after

    def release(self, contact: Contact, size_bytes: float) -> float:
        """Undo a ``consume`` (e.g. a bundle was re-routed before it was sent)."""
        return self.consume(contact, -size_bytes)

    def residual_bytes(self, contact: Contact) -> float:
        """Residual volume of a contact in bytes (its volume minus what was consumed)."""
        self._check()
        i = self._idx.get(contact)
        if i is None:
            raise InvalidArgument(
                f"contact {contact.frm}->{contact.to} at {contact.start_s} is not in the plan"
            )
        return self._residual_of(i)

    def owlt_of(self, contact: Contact) -> float:
        """The light time in force at ``contact``'s start."""
        self._check()
        return self._owlt[self._idx[contact]]

    def owlt_at(self, contact: Contact, at_s: float) -> float:
        """The light time the router applies to a bundle sent over ``contact`` at ``at_s``."""
        self._check()
        return self._g.owlt_at(self._idx[contact], at_s)

    # -- search ------------------------------------------------------------------
    def _search(
        self,
        src: int,
        dst: int,
        t0: float,
        size: float,
        deadline: float,
        first_hop_excluded: Iterable[int] = (),
        avoid_nodes: Iterable[int] = (),
        avoid_contacts: frozenset[int] | set[int] = frozenset(),
        hops0: int = 0,
        term0: float = _INF,
    ) -> list[int] | None:
        """Best contact sequence from src (ready at t0) to dst in the total SABR order, or None.

        A label is (arrival, hops, chain), ``chain`` the query-independent
        tie-break of :attr:`Route.sort_key` built with contact ranks (it
        starts with -termination). Label X beats Y at a node when it arrives
        no later and (hops, chain) is no greater: every continuation of Y
        is then no better from X (FIFO contacts; the chain compares the
        shared continuation first, then the prefixes). Each node keeps the
        labels no other beats (a Pareto front over arrival and (hops,
        chain)): a later arrival with fewer hops or a later termination can
        still win once both wait for the same contact. Labels leave the heap
        in (arrival, hops, chain) order, so the first label of dst to leave
        it is the minimum of the whole order: exact, not a per-label choice
        (the route cache relies on it: spec/routing.md).
        """
        self.stats["searches"] += 1
        self._volume_cut = False
        out = self._out
        end = self._end
        inv_rate = self._inv_rate
        owlt = self._owlt
        var_owlt = self._g.var_owlt
        owlt_at = self._g.owlt_at
        vol = self._vol
        resid = self._resid
        rank = self._g.rank
        blocked: set[int] = set(avoid_nodes)
        blocked.discard(src)
        first_excl = set(first_hop_excluded)
        # A chain is (-termination, parent chain, rank, contact index); the
        # root's is (-term0,). Chains are compared only between labels with
        # the same hop count, so they share the root.
        root: Chain = (-term0,)
        # front[v]: [(hops, arrival, chain)] sorted by (hops, chain); arrivals strictly fall
        front: dict[int, list[tuple[int, float, Chain]]] = {src: [(hops0, t0, root)]}
        # least (hops, chain) among v's labels already expanded (they left the heap earlier)
        settled: dict[int, tuple[int, Chain]] = {}
        best_dst = _INF
        # Entries (key, kind, hops, chain, node, index, ready time).
        # kind 1: a label (key = arrival). kind 0: a cursor over the node's
        # outgoing contacts sorted by start, waking when contact `index`
        # opens, so contacts that open after the destination is reached are
        # never looked at. Cursors sort before labels of the same time: a
        # contact opening at t can still deliver at t with fewer hops.
        heap: list[tuple[float, int, int, Chain, int, int, float]] = [
            (t0, 1, hops0, root, src, 0, t0)
        ]
        pop = heapq.heappop
        push = heapq.heappush
        sized = size > 0
        while heap:
            key, kind, h, chain, u, j, t = pop(heap)
            su = settled.get(u)
            if kind:
                if su is not None and (h > su[0] or (h == su[0] and chain >= su[1])):
                    continue  # an earlier label of u beats it
                if (h, key, chain) not in front[u]:
                    continue  # beaten by a label found later
                if u == dst:
                    path: list[int] = []
                    while len(chain) == 4:
                        path.append(cast(int, chain[3]))
                        chain = cast(Chain, chain[1])
                    path.reverse()
                    return path
                settled[u] = (h, chain)
                rec = out.get(u)
                if rec is None:
                    continue
                j = bisect_left(rec[1], t)  # skip contacts that all end before t
            else:
                assert su is not None
                if h > su[0] or (h == su[0] and chain > su[1]):
                    continue  # a label of u expanded since beats this cursor's label
                rec = out[u]
            nterm = cast(float, chain[0])
            starts, _, ids, tos, n = rec
            h1 = h + 1
            at_src = u == src
            while j < n:
                st = starts[j]
                if st > key:
                    break
                ci = ids[j]
                v = tos[j]
                j += 1
                if v in blocked or (avoid_contacts and ci in avoid_contacts):
                    continue
                if (resid[ci] if ci in resid else vol[ci]) < size:
                    self._volume_cut = (
                        True  # the answer depends on this router's bookings
                    )
                    continue
                if at_src and (v == src or v in first_excl):
                    continue
                sv = settled.get(v)
                if sv is not None and h1 > sv[0]:
                    continue  # v already expanded with an earlier arrival and fewer hops
                sent = t if t > st else st
                ce = end[ci]
                if sent >= ce:
                    continue  # the end is exclusive (ION)
                e = sent + size * inv_rate[ci] if sized else sent
                if e > ce:
                    continue
                a = e + (owlt[ci] if ci not in var_owlt else owlt_at(ci, sent))
                if a > deadline or a > best_dst:
                    continue
                ch: Chain = (-ce if -ce > nterm else nterm, chain, rank[ci], ci)
                if sv is not None and h1 == sv[0] and ch >= sv[1]:
                    continue  # v already expanded with an earlier arrival and a smaller chain
                fv = front.get(v)
                if fv is None:
                    front[v] = [(h1, a, ch)]
                else:
                    # beaten? the entry with the greatest (hops, chain) <= ours has the earliest such arrival
                    k = len(fv)
                    while k and (
                        fv[k - 1][0] > h1 or (fv[k - 1][0] == h1 and fv[k - 1][2] > ch)
                    ):
                        k -= 1
                    if k and fv[k - 1][1] <= a:
                        continue
                    # drop the labels after it that arrive no earlier: ours beats them
                    hi = k
                    nf = len(fv)
                    while hi < nf and fv[hi][1] >= a:
                        hi += 1
                    fv[k:hi] = [(h1, a, ch)]
                if v == dst and a < best_dst:
                    best_dst = a
                push(heap, (a, 1, h1, ch, v, 0, a))
            if j < n:
                st = starts[j]
                if st <= deadline and st <= best_dst:
                    push(heap, (st, 0, h, chain, u, j, t))
        return None

    def _fast(
        self,
        src: int,
        dst: int,
        t0: float,
        size: float,
        deadline: float,
        excl: frozenset[int],
        k: int,
    ) -> list[tuple[tuple[int, ...], Route]]:
        """:meth:`_yen`'s signature for :meth:`_search_fast` (k = 1, no deadline)."""
        ids = self._search_fast(src, dst, t0, size, excl)
        if ids is None:
            return []
        r = self._route(ids, t0, size)
        return [] if r is None else [(tuple(ids), r)]

    def _search_fast(
        self, src: int, dst: int, t0: float, size: float, excl: frozenset[int]
    ) -> list[int] | None:
        """A contact sequence from src (ready at t0) to dst with the earliest
        arrival and, among those, the fewest hops; None if there is none.

        Node-labelled Dijkstra over (arrival, hops): each node keeps the
        labels no other beats in both (a later arrival with fewer hops may
        still win). A label relaxes each neighbour once, over its contact
        to that neighbour with the earliest arrival (contacts per neighbour
        sorted by start: the scan stops at the first one opening after the
        best arrival so far). Without the termination and the last
        tie-break of :meth:`_search` there are no per-contact labels and no
        cursors: a third of the heap work on the 1,000-node plan.
        """
        self.stats["searches"] += 1
        self._volume_cut = False
        g = self._g
        nbrs = g.neighbours()
        end = self._end
        inv_rate = self._inv_rate
        owlt = self._owlt
        var_owlt = g.var_owlt
        owlt_at = g.owlt_at
        vol = self._vol
        resid = self._resid
        sized = size > 0
        pop = heapq.heappop
        push = heapq.heappush
        settled: dict[int, int] = {}  # node -> fewest hops of its expanded labels
        # node -> its earliest arrival (its first label popped)
        reach: dict[int, float] = {}
        front: dict[int, list[tuple[int, float]]] = {}  # labels pushed: (hops, arrival)
        # (arrival, hops, order pushed, node, (contact, parent link) or None)
        heap: list[tuple[float, int, int, int, _Link]] = [(t0, 0, 0, src, None)]
        seq = 1
        best_dst = _INF
        while heap:
            a, h, _, u, link = pop(heap)
            sh = settled.get(u)
            if sh is not None and sh <= h:
                continue  # an earlier label of u with no more hops beats it
            if sh is None:
                reach[u] = a
            if u == dst:
                path: list[int] = []
                while link is not None:
                    path.append(link[0])
                    link = link[1]
                path.reverse()
                return path
            settled[u] = h
            lst = nbrs.get(u)
            if lst is None:
                continue
            h1 = h + 1
            at_src = u == src
            for v, starts, maxend, ids in lst:
                if at_src and v in excl:
                    continue
                sv = settled.get(v)
                if sv is not None and sv <= h1:
                    continue
                j = bisect_right(maxend, a)  # the contacts before j all end by a
                n = len(ids)
                best = _INF
                bci = -1
                while j < n:
                    st = starts[j]
                    if st >= best:
                        break  # opens after the best arrival so far: no better
                    ci = ids[j]
                    j += 1
                    ce = end[ci]
                    sent = a if a > st else st
                    if sent >= ce:
                        continue  # the end is exclusive (ION)
                    e = sent + size * inv_rate[ci] if sized else sent
                    if e > ce:
                        continue
                    if (resid[ci] if ci in resid else vol[ci]) < size:
                        self._volume_cut = True
                        continue
                    arr = e + (owlt[ci] if ci not in var_owlt else owlt_at(ci, sent))
                    if arr < best:
                        best = arr
                        bci = ci
                if bci < 0 or best > best_dst:
                    continue
                fv = front.get(v)
                if fv is None:
                    front[v] = [(h1, best)]
                else:
                    beaten = beats = False
                    for fh, fa in fv:
                        if fh <= h1 and fa <= best:
                            beaten = True  # by a label already pushed
                            break
                        if fh >= h1 and fa >= best:
                            beats = True
                    if beaten:
                        continue
                    if beats:
                        fv[:] = [x for x in fv if x[0] < h1 or x[1] < best]
                    fv.append((h1, best))
                if v == dst:
                    best_dst = best
                push(heap, (best, h1, seq, v, (bci, link)))
                seq += 1
        if not excl and not self._volume_cut:
            self._publish_dead(dst, size, reach)
        return None

    def _new_tree(self, src: int, t0: float) -> _SourceTree:
        self.stats["trees"] += 1
        g = self._g
        return _SourceTree(src, g.node_index()[src], t0, len(g.node_list()))

    def _grow_tree(self, tree: _SourceTree, dst: int) -> None:
        """Run the tree's search on until ``dst`` (an index) leaves the heap
        (or the heap is empty): :meth:`_search_fast` for an empty bundle
        with no exclusions and no destination to prune with, over node
        indices, keeping its expanded labels (each node's in order of
        arrival) and, to be resumed for a node further away, its heap.
        Every label arriving before the horizon (the last arrival popped)
        is known; a search that runs out has an infinite horizon
        (spec/routing.md, "Source trees").

        The per-node arrays are worked on as lists (indexing a list does
        not box a new int) and written back at the end; the contacts this
        router over-booked are one set (empty, nearly always), so a
        relaxation does not probe the residual volume at all.
        """
        self.stats["searches"] += 1
        g = self._g
        nbrs = g.tree_neighbours_ix()
        end = self._end
        owlt = self._owlt
        var_owlt = g.var_owlt
        fixed = not var_owlt  # no light time changes inside a contact
        owlt_at = g.owlt_at
        over = {ci for ci, r in self._resid.items() if r < 0}
        pop = heapq.heappop
        push = heapq.heappush
        settled = tree.settled.tolist()
        head = tree.head.tolist()
        tail = tree.tail.tolist()
        base = len(tree.la)
        new: list[_Label] = []  # labels expanded now: into the arrays at the end
        append = new.append
        lnext = tree.lnext
        nnext: list[int] = []  # lnext of the labels expanded now
        heap = list(zip(*tree.heap, strict=True))  # in its order: still a heap
        seq = tree.seq
        clean = tree.clean
        horizon = _INF
        while heap:
            lab = pop(heap)
            a, h, _, u, _cin, _par = lab
            sh = settled[u]
            if 0 <= sh <= h:
                continue  # an earlier label of u with no more hops beats it
            me = base + len(new)
            append(lab)
            nnext.append(-1)
            if sh < 0:
                head[u] = me
            else:
                k = tail[u]
                if k >= base:
                    nnext[k - base] = me
                else:
                    lnext[k] = me
            tail[u] = me
            settled[u] = h
            h1 = h + 1
            for v, starts, maxend, ids, offs in nbrs[u]:
                sv = settled[v]
                if 0 <= sv <= h1:
                    continue
                j = bisect_right(maxend, a)  # the contacts before j all end by a
                n = len(ids)
                if offs is not None and j < n:
                    # a plain group: contact j is the best, unless over-booked
                    ci = ids[j]
                    if not (over and ci in over):
                        st = starts[j]
                        push(
                            heap, ((a if a > st else st) + offs[j], h1, seq, v, ci, me)
                        )
                        seq += 1
                        continue
                best = _INF
                bci = -1
                while j < n:
                    st = starts[j]
                    if st >= best:
                        break  # opens after the best arrival so far: no better
                    ci = ids[j]
                    j += 1
                    sent = a if a > st else st
                    if sent >= end[ci]:
                        continue  # the end is exclusive (ION)
                    if over and ci in over:
                        clean = False  # over-booked: not even an empty bundle
                        continue
                    arr = sent + (
                        owlt[ci] if fixed or ci not in var_owlt else owlt_at(ci, sent)
                    )
                    if arr < best:
                        best = arr
                        bci = ci
                if bci >= 0:
                    push(heap, (best, h1, seq, v, bci, me))
                    seq += 1
            if u == dst and sh < 0:
                horizon = a
                break
        tree.horizon = horizon
        tree.seq = seq
        tree.clean = clean
        tree.settled = array("i", settled)
        tree.head = array("i", head)
        tree.tail = array("i", tail)
        lnext.extend(nnext)
        if new:
            cols = list(zip(*new, strict=True))
            tree.la.extend(array("d", cols[0]))
            tree.lh.extend(array("i", cols[1]))
            tree.lc.extend(array("i", cols[4]))
            tree.lp.extend(array("i", cols[5]))
        if horizon < _INF:
            tree.heap = _columns(heap)
        else:
            tree.heap = ()
            if clean:
                # no route even for an empty bundle: none from any node reached
                nodes = g.node_list()
                la = tree.la
                self._publish_dead(
                    nodes[dst],
                    0.0,
                    {nodes[x]: la[i] for x, i in enumerate(head) if i >= 0},
                )

    def _from_tree(
        self,
        tree: _SourceTree,
        src: int,
        dst: int,
        t: float,
        size: float,
        excl: frozenset[int],
    ) -> tuple[Route | None, bool] | None:
        """The answer from a source tree for a bundle of ``size`` bytes ready
        at ``t``, and whether it may be shared; None if the tree cannot
        tell (then search).

        The tree's route to ``dst`` (the tree grows to reach it), re-walked
        now, is the answer when no route arrives earlier, nor at the same
        time with fewer hops (:meth:`_beaten`, twice). Exact in arrival and
        hops (spec/routing.md, "Source trees").
        """
        if t < tree.t0 or src != tree.src:
            return None
        ix = self._g.node_index()
        x = ix.get(dst)
        if x is None:
            return (None, False)  # in no contact
        lab = tree.head[x]
        if lab < 0 and tree.horizon < _INF:
            self._grow_tree(tree, x)
            lab = tree.head[x]
        if lab < 0:
            return (None, False)  # no route then, for any size: none now
        lc = tree.lc
        lp = tree.lp
        ids: list[int] = []
        while lc[lab] >= 0:
            ids.append(lc[lab])
            lab = lp[lab]
        ids.reverse()
        if self._to[ids[0]] in excl:
            return None
        r = self._route(ids, t, size)
        if r is None and t > tree.t0:
            # A contact of it ended since the tree was built. The bundle
            # often still arrives when it would have then, by another way
            # in: look for one backwards from that arrival (any candidate
            # will do: the checks below decide, with the same bounds).
            then = self._route(ids, tree.t0, size)
            if then is not None:
                walk = self._walk_back(tree, x, t, size, then.arrival_s)
                if walk is not None and self._to[walk[0]] not in excl:
                    self.stats["tree_walks"] += 1
                    ids = walk
                    r = self._route(ids, t, size)
        if r is None:
            return None  # a contact of it ended, or is too short or full now
        arr = r.arrival_s
        hops = len(ids)
        if self._beaten(tree, x, t, size, math.nextafter(arr, -_INF), _MAXH):
            return None
        if hops > 1 and self._beaten(tree, x, t, size, arr, hops - 1):
            return None
        return (r, tree.clean)

    def _beaten(
        self,
        tree: _SourceTree,
        dst: int,
        t: float,
        size: float,
        deadline: float,
        max_hops: int,
    ) -> bool:
        """False if no route from the tree's source ready at ``t`` carries
        ``size`` bytes to ``dst`` (an index) by ``deadline`` in at most
        ``max_hops`` contacts (True: there may be one).

        A backward search from ``dst`` over latest departures (full volume,
        walks allowed: both only add routes), where a node is expanded only
        if the tree says a route from the source can reach it by then
        within the hop budget: every route feasible now was feasible for an
        empty bundle at the tree's time with the volume then, so it reaches
        each node no earlier than one of the node's expanded labels with no
        more hops, or than the tree's horizon.
        """
        horizon = tree.horizon
        la = tree.la
        lh = tree.lh
        lnext = tree.lnext
        head = tree.head
        src = tree.src_ix
        inn = self._g.tree_in_neighbours_ix()
        end = self._end
        owlt = self._owlt
        var_owlt = self._g.var_owlt
        inv_rate = self._inv_rate
        sized = size > 0
        hop_free = max_hops >= _MAXH
        # front[v]: [(hops to dst, latest departure)]; heap of (-departure, hops, node)
        front: dict[int, list[tuple[int, float]]] = {dst: [(0, deadline)]}
        heap: list[tuple[float, int, int]] = [(-deadline, 0, dst)]
        pop = heapq.heappop
        push = heapq.heappush
        budget = _BEATEN_POPS
        while heap:
            nd, k, v = pop(heap)
            budget -= 1
            if not budget:
                return True  # too wide to tell: search
            d = -nd
            if v == src:
                if d >= t:
                    return True
                continue
            k1 = k if hop_free else k + 1
            if k1 > max_hops:
                continue
            for w, starts, maxend, cis, offs in inn[v]:
                if w == dst:
                    continue
                # the latest ready time at w that reaches v by d over w -> v
                j = bisect_right(starts, d) - 1
                best = -_INF
                if offs is not None and j >= 0:
                    # a plain group: contact j is the best if the bundle fits
                    tx = size * inv_rate[cis[j]] if sized else 0.0
                    late = d - tx - offs[j]
                    if late > maxend[j] - tx:
                        late = maxend[j] - tx
                    if late >= starts[j]:
                        best = late
                        j = -1
                while j >= 0:
                    if maxend[j] <= best:
                        break  # no contact from j down ends late enough to do better
                    ci = cis[j]
                    ce = end[ci]
                    st = starts[j]
                    tx = size * inv_rate[ci] if sized else 0.0
                    j -= 1
                    # a varying light time counts as 0 here: that only adds routes
                    late = d - tx - (owlt[ci] if ci not in var_owlt else 0.0)
                    if late > ce - tx:
                        late = ce - tx
                    if late >= st and late > best:
                        best = late
                if best < t:
                    continue  # no route is ready at w before t
                # can a route from the source reach w by best, within the hop budget?
                if w != src:
                    rem = max_hops - k1
                    ok = horizon <= best and (hop_free or rem >= 1)
                    lab = head[w]
                    while not ok and lab >= 0:
                        if la[lab] > best:
                            break
                        ok = hop_free or lh[lab] <= rem
                        lab = lnext[lab]
                    if not ok:
                        continue
                fw = front.get(w)
                if fw is None:
                    front[w] = [(k1, best)]
                else:
                    beaten = beats = False
                    for fk, fd in fw:
                        if fk <= k1 and fd >= best:
                            beaten = True
                            break
                        if fk >= k1 and fd <= best:
                            beats = True
                    if beaten:
                        continue
                    if beats:
                        fw[:] = [x for x in fw if x[0] < k1 or x[1] > best]
                    fw.append((k1, best))
                push(heap, (-best, k1, w))
        return False

    def _walk_back(
        self, tree: _SourceTree, dst: int, t: float, size: float, deadline: float
    ) -> list[int] | None:
        """Contacts of a route from the tree's source ready at ``t`` that
        carries ``size`` bytes to ``dst`` (an index) by ``deadline`` at full
        volume, with the fewest hops the search finds (loops cut); None if
        it finds none, or gives up. A candidate only: the caller re-walks
        it with the residual volume and proves it best (:meth:`_beaten`).

        :meth:`_beaten`'s backward search over latest departures, pruned
        by the tree the same way, counting hops and keeping each label's
        contact and parent, in order of hops (then latest departure first):
        the first label of the source to leave the heap has the fewest hops
        of any walk the search admits (a label is beaten only by one with
        no more hops and no earlier departure, and those leave the heap
        before it). Gives up after ``_WALK_POPS`` labels.
        """
        horizon = tree.horizon
        la = tree.la
        lnext = tree.lnext
        head = tree.head
        src = tree.src_ix
        inn = self._g.tree_in_neighbours_ix()
        end = self._end
        owlt = self._owlt
        var_owlt = self._g.var_owlt
        inv_rate = self._inv_rate
        sized = size > 0
        # labels: contact out of the node towards dst (-1 at dst), parent label
        lci: list[int] = [-1]
        lpar: list[int] = [-1]
        front: dict[int, list[tuple[int, float]]] = {dst: [(0, deadline)]}
        # (hops to dst, -latest departure, node, label)
        heap: list[tuple[int, float, int, int]] = [(0, -deadline, dst, 0)]
        pop = heapq.heappop
        push = heapq.heappush
        budget = _WALK_POPS
        best_lab = -1
        while heap:
            k, nd, v, li = pop(heap)
            budget -= 1
            if not budget:
                return None
            if v == src:
                best_lab = li  # ready at t or later (pushed only then)
                break
            d = -nd
            if (k, d) not in front[v]:
                continue  # beaten by a label pushed after it
            k1 = k + 1
            for w, starts, maxend, cis, offs in inn[v]:
                if w == dst:
                    continue
                j = bisect_right(starts, d) - 1
                best = -_INF
                bci = -1
                if offs is not None and j >= 0:
                    # a plain group (see _beaten)
                    ci = cis[j]
                    tx = size * inv_rate[ci] if sized else 0.0
                    late = d - tx - offs[j]
                    if late > maxend[j] - tx:
                        late = maxend[j] - tx
                    if late >= starts[j]:
                        best = late
                        bci = ci
                        j = -1
                while j >= 0:
                    if maxend[j] <= best:
                        break
                    ci = cis[j]
                    ce = end[ci]
                    st = starts[j]
                    tx = size * inv_rate[ci] if sized else 0.0
                    j -= 1
                    late = d - tx - (owlt[ci] if ci not in var_owlt else 0.0)
                    if late > ce - tx:
                        late = ce - tx
                    if late >= st and late > best:
                        best = late
                        bci = ci
                if best < t:
                    continue
                if w != src:
                    ok = horizon <= best
                    lab = head[w]
                    while not ok and lab >= 0:
                        if la[lab] > best:
                            break
                        ok = True
                        lab = lnext[lab]
                    if not ok:
                        continue
                fw = front.get(w)
                if fw is None:
                    front[w] = [(k1, best)]
                else:
                    beaten = beats = False
                    for fk, fd in fw:
                        if fk <= k1 and fd >= best:
                            beaten = True
                            break
                        if fk >= k1 and fd <= best:
                            beats = True
                    if beaten:
                        continue
                    if beats:
                        fw[:] = [x for x in fw if x[0] < k1 or x[1] > best]
                    fw.append((k1, best))
                lci.append(bci)
                lpar.append(li)
                push(heap, (k1, -best, w, len(lci) - 1))
        if best_lab < 0:
            return None
        ids: list[int] = []
        first: dict[int, int] = {}  # node -> where it is left in ids
        to = self._to
        node = self._frm[lci[best_lab]]
        lab = best_lab
        while lci[lab] >= 0:
            at = first.get(node)
            if at is not None:
                # a loop: leave the node the first time the way of the last
                for gone in ids[at:]:
                    first.pop(self._frm[gone], None)
                del ids[at:]
            first[node] = len(ids)
            ci = lci[lab]
            ids.append(ci)
            node = to[ci]
            lab = lpar[lab]
        return ids

    def _publish_dead(self, dst: int, size: float, reach: dict[int, float]) -> None:
        """No route from src to dst at full volume: none from any node the
        search reached either, from when it reached it (spec/routing.md,
        "Shared route suffixes", unreachable destinations)."""
        g = self._g
        known = g.dead.get(dst)
        if known is None:
            known = g.dead[dst] = {}
        before = len(known)
        fw = g.forwarders
        for x, since in reach.items():
            if x not in fw:
                continue
            old = known.get(x)
            if old is None or (since <= old[0] and size <= old[1]):
                known[x] = (since, size)
        g.dead_n += len(known) - before
        while g.dead_n > _DEAD_MAX:
            g.dead_n -= len(g.dead.popitem(last=False)[1])

    def _route(self, ids: Sequence[int], t0: float, size: float) -> Route | None:
        """:func:`replay` of contacts ``ids`` with this router's residual
        volume, and the route if it arrives (the same arithmetic, on the
        graph's flat arrays)."""
        start = self._start
        end = self._end
        rate = self._rate
        owlt = self._owlt
        resid = self._resid
        vol = self._vol
        var_owlt = self._g.var_owlt
        t = t0
        for ci in ids:
            r = resid.get(ci)
            if (vol[ci] if r is None else r) < size:
                return None
            st = start[ci]
            s = t if t > st else st
            ce = end[ci]
            if s >= ce:
                return None
            rt = rate[ci]
            e = s + (size / rt if rt > 0 else _INF) if size > 0 else s + 0.0
            if e > ce:
                return None
            t = e + (owlt[ci] if ci not in var_owlt else self._g.owlt_at(ci, s))
        cs = self._cs
        to = self._to
        hops = (self._frm[ids[0]], *[to[i] for i in ids])
        return Route(arrival_s=t, hops=hops, contacts=tuple([cs[i] for i in ids]))

    @staticmethod
    def _validate(
        src: int, dst: int, at_s: float, size_bytes: float, k: int = 1
    ) -> None:
        if size_bytes < 0:
            raise InvalidArgument(f"size_bytes must be >= 0, got {size_bytes}")
        if at_s != at_s:
            raise InvalidArgument("at_s is NaN")
        if k < 1:
            raise InvalidArgument(f"k must be >= 1, got {k}")
        if src < 0 or dst < 0:
            raise InvalidArgument("node numbers must be >= 0")

    def best_route(
        self,
        src: int,
        dst: int,
        at_s: float,
        size_bytes: float,
        deadline_s: float | None = None,
        excluded: Iterable[int] = (),
    ) -> Route | None:
        """The earliest-arrival route from ``src`` to ``dst`` for a bundle ready at ``at_s``.

        ``size_bytes`` sets the transmission time on each contact (size/rate)
        and the residual volume it needs; ``deadline_s`` (plan time, e.g. the
        bundle's expiry) bounds the arrival; ``excluded`` lists neighbours not
        to use as the first hop (SABR's excluded neighbours, e.g. the node the
        bundle came from). Returns None when ``dst`` cannot be reached, or
        when ``src == dst``. Raises InvalidArgument for a negative size.
        """
        routes = self.routes(
            src, dst, at_s, size_bytes, 1, deadline_s=deadline_s, excluded=excluded
        )
        return routes[0] if routes else None

    def routes(
        self,
        src: int,
        dst: int,
        at_s: float,
        size_bytes: float,
        k: int,
        *,
        deadline_s: float | None = None,
        excluded: Iterable[int] = (),
    ) -> list[Route]:
        """Up to ``k`` best routes, best first (SABR order), pairwise distinct contact sequences.

        Yen's k-shortest loopless paths over the contact graph (no node is
        visited twice on one route). Arguments as for :meth:`best_route`.
        """
        self._validate(src, dst, at_s, size_bytes, k)
        self._check()
        if src == dst:
            return []
        deadline = _INF if deadline_s is None else deadline_s
        return self._answer(
            src, dst, at_s, float(size_bytes), k, deadline, frozenset(excluded)
        )[0]

    def _answer(
        self,
        src: int,
        dst: int,
        at_s: float,
        size: float,
        k: int,
        deadline: float,
        excl: frozenset[int],
        fast: bool = False,
    ) -> tuple[list[Route], bool]:
        """The exact answer, and whether it is also the answer with no
        exclusions, no deadline and full volume (then it may be shared:
        :meth:`forwarding_route`). ``fast`` (k = 1, no deadline): best in
        arrival and hops only (:meth:`_search_fast`), cached apart."""
        key: _CacheKey = (src, dst, 0 if fast else k)
        entries = self._cache.get(key)
        if entries is not None:
            for n in range(len(entries) - 1, -1, -1):
                got = self._reuse(entries, n, dst, at_s, size, deadline, excl, k)
                if got is not None:
                    self._cache.move_to_end(key)
                    self.stats["cache_hits"] += 1
                    return got, _shareable(entries[n], deadline)
        self.stats["cache_misses"] += 1
        none: frozenset[int] = frozenset()
        # Search without the exclusions first: when no route of that answer
        # starts towards an excluded neighbour it is the answer, and cached
        # without exclusions it serves any exclusion set.
        search = self._fast if fast else self._yen
        found = search(src, dst, at_s, size, deadline, none, k)
        e = self._remember(key, at_s, size, deadline, none, found)
        if excl and any(self._to[ids[0]] in excl for ids, _ in found):
            found = search(src, dst, at_s, size, deadline, excl, k)
            self._remember(key, at_s, size, deadline, excl, found)
            return [r for _, r in found], False
        return [r for _, r in found], _shareable(e, deadline)

    # -- shared route suffixes ----------------------------------------------------
    def forwarding_route(
        self,
        src: int,
        dst: int,
        at_s: float,
        size_bytes: float,
        excluded: Iterable[int] = (),
    ) -> Route | None:
        """A route from ``src`` to ``dst`` as good as :meth:`best_route`'s in
        arrival and hop count (SABR's first two criteria), shared between the
        routers over one plan; None when there is none.

        For forwarding hop by hop: a route found here at one node (best in
        arrival and hops, with no exclusions, and no contact skipped for this
        router's bookings) is left in the plan's graph as a *suffix* for
        every later node on it. At such a node, for the same destination and
        size, the suffix is the answer when the bundle is ready no earlier
        than the route reached that node (or earlier, with no other usable
        contact of the node open in between), its first hop is not excluded,
        and re-walked with this router's residual volume it still arrives
        when it did. It is then the earliest-arrival route with the fewest
        hops (spec/routing.md, "Shared route suffixes", has the proof).

        One approximation, for the agent's rounded sizes: a bundle ready
        earlier than planned by less than the transmission time of
        ``size_bytes`` over the contact that brought it (it is smaller than
        the size it was routed with, so it arrived sooner) is taken as ready
        when planned: the answer is then the best for a ready time at most
        that much later than ``at_s`` (still feasible from ``at_s``).

        Without a usable suffix this searches (:meth:`_search_fast`, cached
        as :meth:`best_route` is). No deadline: check the arrival against it.
        """
        self._validate(src, dst, at_s, size_bytes)
        self._check()
        if src == dst:
            return None
        size = float(size_bytes)
        excl = frozenset(excluded)
        self._g.forwarders.add(src)
        dead = self._g.dead.get(dst)
        if dead is not None:
            since = dead.get(src)
            if since is not None and at_s >= since[0] and size >= since[1]:
                self.stats["shared_hits"] += 1
                return None
        hint = self._g.hints.get((src, dst, size))
        if hint is not None:
            got = self._from_hint(hint, src, at_s, size, excl)
            if got is not None:
                self.stats["shared_hits"] += 1
                return got
        tree = self._tree
        told = None
        if tree is not None:
            told = self._from_tree(tree, src, dst, at_s, size, excl)
            if told is not None:
                self.stats["tree_hits"] += 1
        if (
            told is None
            and (tree is None or tree.t0 < at_s or tree.src != src)
            and src in self._g.node_index()
        ):
            tree = self._tree = self._new_tree(src, at_s)
            told = self._from_tree(tree, src, dst, at_s, size, excl)
        if told is not None:
            route, share = told
            if route is None:
                return None
        else:
            # the tree's route is not provably best now, or starts towards
            # an excluded neighbour: search for this destination
            found, share = self._answer(src, dst, at_s, size, 1, _INF, excl, fast=True)
            if not found:
                return None
            route = found[0]
        if share and len(route.contacts) > 1:
            idx = self._idx
            self._publish(
                tuple(idx[c] for c in route.contacts), at_s, size, dst, route.arrival_s
            )
        return route

    def _from_hint(
        self, hint: _Hint, src: int, t: float, size: float, excl: frozenset[int]
    ) -> Route | None:
        ready, early, arrival, ids, pos = hint
        if self._to[ids[pos]] in excl:
            return None
        if t < ready - early and not self._quiet(src, t, ready, excl):
            return None
        # Ready by the plan the suffix was found for: still arriving then?
        planned = self._route(ids[pos:], max(t, ready), size)
        if planned is None or planned.arrival_s != arrival:
            return None
        return planned if t >= ready else self._route(ids[pos:], t, size)

    def _quiet(self, node: int, t: float, ready: float, excl: frozenset[int]) -> bool:
        """True if no contact from ``node`` to a node not in ``excl`` can be
        used when ready at ``t`` and not when ready at ``ready`` (or is used
        at another time): then both ready times have the same routes, with
        the same arrivals."""
        rec = self._out.get(node)
        if rec is None:
            return True
        starts, maxend, ids, tos, n = rec
        end = self._end
        j = bisect_right(maxend, t)  # contacts before j all end by t
        while j < n and starts[j] < ready:
            if end[ids[j]] > t and tos[j] not in excl:
                return False
            j += 1
        return True

    def _publish(
        self,
        ids: tuple[int, ...],
        t0: float,
        size: float,
        dst: int,
        arrival: float,
    ) -> None:
        """Leave the suffixes of an exact, shareable route for its later nodes."""
        g = self._g
        hints = g.hints
        fw = g.forwarders
        start = self._start
        rate = self._rate
        to = self._to
        t = t0
        for i in range(len(ids) - 1):
            ci = ids[i]
            sent = t if t > start[ci] else start[ci]
            tx = _tx_time(size, rate[ci])
            t = sent + tx + g.owlt_at(ci, sent)
            if to[ci] not in fw:
                continue
            key = (to[ci], dst, size)
            hints[key] = (t, tx, arrival, ids, i + 1)
            hints.move_to_end(key)  # a newer suffix goes to the back of the queue
        while len(hints) > _HINTS_MAX:
            hints.popitem(
                last=False
            )  # O(1), unlike next(iter(dict)) after many deletions

    # -- route cache -------------------------------------------------------------
    # An answer (routes p_1..p_m, SABR order) computed for ready time t_c,
    # size s_c, deadline d_c, excluded first hops E_c and residual volume R_c
    # serves a query (t, s, d, E) with t >= t_c, s >= s_c, E >= E_c, volume
    # only consumed since (volume given back drops what it could change), and
    # d <= d_c unless the answer was full (m == k). Then every route feasible
    # for the query was feasible for the cached search, and its arrival is at
    # least its arrival then plus (s - s_c) / (fastest rate into dst): FIFO in
    # the ready time, and the last contact alone adds the extra bytes at its
    # rate. So no route outside the answer arrives before
    # B = arrival(p_m then) + (s - s_c) * min_inv_in[dst] (if m == k; none
    # exists otherwise), and the rest of the SABR key (hops, termination,
    # the fixed tie-break) does not depend on the query, and the search is
    # exact in that total order. If every cached route is
    # feasible for the query and arrives before B (or exactly at B and it
    # tied with p_m then), the cached routes, re-sorted, are still the k best.
    # spec/routing.md has the argument in full.
    def _reuse(
        self,
        entries: list[_Entry],
        n: int,
        dst: int,
        at_s: float,
        size: float,
        deadline: float,
        excl: frozenset[int],
        k: int,
    ) -> list[Route] | None:
        t_c, s_c, d_c, e_c, cached, arrivals, _ = entries[n]
        if at_s < t_c or size < s_c or not e_c <= excl:
            return None
        full = len(cached) >= k
        if deadline > d_c and not full:
            return None  # a later deadline may admit routes the cached search cut off
        for ids, then in zip(cached, arrivals, strict=True):
            if then > deadline or self._to[ids[0]] in excl:
                return None  # still a valid answer for other queries
        if not full:
            bound = _INF
        elif size == s_c:
            bound = arrivals[-1]
        else:
            bound = arrivals[-1] + (size - s_c) * self._g.min_inv_in.get(dst, _INF)
        last = arrivals[-1] if arrivals else _INF
        out: list[Route] = []
        moved = False
        for ids, then in zip(cached, arrivals, strict=True):
            now = self._route(ids, at_s, size)
            if now is None or not (
                now.arrival_s < bound or (now.arrival_s == bound and then == last)
            ):
                if (
                    now is not None and now.arrival_s > bound and size == s_c
                ) or self._route(ids, at_s, s_c) is None:
                    # stale: it fails its own size now, so at every later
                    # ready time and for every larger bundle too
                    del entries[n]
                    self._n_cached -= 1
                return None
            if now.arrival_s > deadline:
                return None
            moved = moved or now.arrival_s != then
            out.append(now)
        if moved:
            out.sort(key=lambda r: r.sort_key)
        return out

    def _remember(
        self,
        key: _CacheKey,
        at_s: float,
        size: float,
        deadline: float,
        excl: frozenset[int],
        found: list[tuple[tuple[int, ...], Route]],
    ) -> _Entry:
        entries = self._cache.get(key)
        if entries is None:
            entries = self._cache[key] = []
        else:
            self._cache.move_to_end(key)
            # a newer answer for the same size, deadline and exclusions supersedes the older one
            keep = [e for e in entries if (e[1], e[2], e[3]) != (size, deadline, excl)]
            self._n_cached -= len(entries) - len(keep)
            entries[:] = keep
            if len(entries) >= _PER_KEY:
                del entries[0]
                self._n_cached -= 1
        entry: _Entry = (
            at_s,
            size,
            deadline,
            excl,
            tuple(ids for ids, _ in found),
            tuple(r.arrival_s for _, r in found),
            not self._volume_cut and key[2] <= 1,
        )
        entries.append(entry)
        self._n_cached += 1
        if size > self._max_cached_size:
            self._max_cached_size = size
        while self._n_cached > self._cache_size:
            old_key, old = next(iter(self._cache.items()))
            if old:
                del old[0]
                self._n_cached -= 1
            if not old:
                del self._cache[old_key]
        return entry

    def _drop_cached(self, doomed: Callable[[_Entry], bool]) -> None:
        for key in list(self._cache):
            entries = self._cache[key]
            keep = [e for e in entries if not doomed(e)]
            self._n_cached -= len(entries) - len(keep)
            if keep:
                entries[:] = keep
            else:
                del self._cache[key]

    def _yen(
        self,
        src: int,
        dst: int,
        t0: float,
        size: float,
        deadline: float,
        excl: frozenset[int],
        k: int,
    ) -> list[tuple[tuple[int, ...], Route]]:
        first = self._search(src, dst, t0, size, deadline, excl)
        if first is None:
            return []
        r0 = self._route(first, t0, size)
        if r0 is None:  # cannot happen: the search checked every contact
            return []
        accepted: list[tuple[tuple[int, ...], Route, int]] = [(tuple(first), r0, 0)]
        if k == 1:
            return [(a, r) for a, r, _ in accepted]
        seen: set[tuple[int, ...]] = {tuple(first)}
        cands: list[tuple[tuple[float, int, Chain], tuple[int, ...], int, Route]] = []
        frm = self._frm
        to = self._to
        while len(accepted) < k:
            prev_ids, _, dev = accepted[-1]
            # Ready time and termination at each node of prev, to start spur searches from.
            t = t0
            term = _INF
            times = [t0]
            terms = [_INF]
            for ci in prev_ids:
                s = max(t, self._start[ci])
                t = s + _tx_time(size, self._rate[ci]) + self._g.owlt_at(ci, s)
                times.append(t)
                term = min(term, self._end[ci])
                terms.append(term)
            # Lawler: spur only at or after the index where prev left its parent.
            for i in range(dev, len(prev_ids)):
                root = prev_ids[:i]
                spur_node = frm[prev_ids[i]]
                banned = {
                    ids[i] for ids, _, _ in accepted if len(ids) > i and ids[:i] == root
                }
                avoid = {frm[c] for c in root}
                spur = self._search(
                    spur_node,
                    dst,
                    times[i],
                    size,
                    deadline,
                    excl if i == 0 else (),
                    avoid,
                    banned,
                    i,
                    terms[i],
                )
                if spur is None:
                    continue
                total = (*root, *spur)
                if total in seen:
                    continue
                if len({frm[c] for c in total} | {to[total[-1]]}) != len(total) + 1:
                    continue  # not loopless in nodes
                r = self._route(total, t0, size)
                if r is None:
                    continue
                seen.add(total)
                heapq.heappush(cands, (r.sort_key, total, i, r))
            if not cands:
                break
            _, ids_best, dev_best, r_best = heapq.heappop(cands)
            accepted.append((ids_best, r_best, dev_best))
        # Each search is exact in the total order, so Yen's yields the routes in
        # that order already; the sort keeps the list's order explicit.
        accepted.sort(key=lambda x: x[1].sort_key)
        return [(a, r) for a, r, _ in accepted]
