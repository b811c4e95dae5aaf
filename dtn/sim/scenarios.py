"""Seeded scenario generators: a LEO-like constellation plan and random traffic.

Used by ``bench/sim_scale.py`` and by tests that want a realistic plan; the
same arguments always give the same plan (a seeded ``random.Random``).

The constellation is a Walker-like grid: ``planes`` orbital planes of
``per_plane`` satellites each, ipn node numbers ``1 .. planes * per_plane``
(plane-major). Links are intermittent, which is what makes it a DTN:

- in-plane neighbours (ahead/behind) get one window of ``in_plane_window_s``
  per orbit, at a seeded phase (pointing and power budgets share the
  terminal between neighbours);
- cross-plane neighbours (same slot, adjacent plane; the last plane wraps to
  the first) get two windows of ``cross_plane_window_s`` per orbit, half an
  orbit apart (near the poles, where planes converge).

Each window is a pair of contacts (both directions) at ``rate_bytes_s``; each
linked pair has one range for the whole plan with a seeded light time of
2-20 ms.
"""

from __future__ import annotations

import random

from dcis.dtn.routing.contact import Contact, Range
from dcis.dtn.routing.plan import ContactPlan
from dcis.dtn.sim.traffic import TrafficItem

__all__ = ["leo_constellation", "random_traffic"]


def leo_constellation(
    *,
    planes: int = 10,
    per_plane: int = 10,
    duration_s: float = 86_400.0,
    period_s: float = 5_700.0,
    in_plane_window_s: float = 900.0,
    cross_plane_window_s: float = 420.0,
    in_plane_rate_bytes_s: float = 125_000.0,
    cross_plane_rate_bytes_s: float = 62_500.0,
    seed: int = 0,
) -> ContactPlan:
    """A seeded LEO-like contact plan (see the module docstring). Node count is
    ``planes * per_plane``; contacts cover plan time ``[0, duration_s]``."""
    rng = random.Random(seed)
    contacts: list[Contact] = []
    ranges: list[Range] = []

    def node(p: int, s: int) -> int:
        return p * per_plane + s + 1

    def link(a: int, b: int, window_s: float, per_orbit: int, rate: float) -> None:
        phase = rng.uniform(0.0, period_s)
        owlt = round(rng.uniform(0.002, 0.020), 4)
        ranges.append(Range(a, b, 0.0, duration_s, owlt))
        ranges.append(Range(b, a, 0.0, duration_s, owlt))
        k = -1
        while True:
            k += 1
            base = phase + k * period_s - period_s
            if base >= duration_s:
                break
            for j in range(per_orbit):
                start = base + j * period_s / per_orbit
                end = start + window_s
                start, end = max(start, 0.0), min(end, duration_s)
                if end <= start:
                    continue
                start, end = round(start, 3), round(end, 3)
                contacts.append(Contact(a, b, start, end, rate))
                contacts.append(Contact(b, a, start, end, rate))

    for p in range(planes):
        for s in range(per_plane):
            if per_plane > 1 and (per_plane > 2 or s == 0):
                link(
                    node(p, s),
                    node(p, (s + 1) % per_plane),
                    in_plane_window_s,
                    1,
                    in_plane_rate_bytes_s,
                )
            if planes > 1 and (planes > 2 or p == 0):
                link(
                    node(p, s),
                    node((p + 1) % planes, s),
                    cross_plane_window_s,
                    2,
                    cross_plane_rate_bytes_s,
                )
    contacts.sort(key=lambda c: (c.start_s, c.frm, c.to))
    return ContactPlan(contacts, ranges)


def random_traffic(
    *,
    nodes: list[int],
    bundles: int,
    until_s: float,
    min_size: int = 512,
    max_size: int = 8_192,
    start_s: float = 0.0,
    seed: int = 0,
) -> list[TrafficItem]:
    """``bundles`` single-bundle items between random distinct nodes at
    uniformly random times in ``[start_s, until_s)``, sorted by time."""
    rng = random.Random(seed)
    items = []
    for _ in range(bundles):
        src, dst = rng.sample(nodes, 2)
        at = round(rng.uniform(start_s, until_s), 3)
        items.append(
            TrafficItem(
                at_s=at, src=src, dst=dst, size_bytes=rng.randint(min_size, max_size)
            )
        )
    items.sort(key=lambda it: it.at_s)
    return items
