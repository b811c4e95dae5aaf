"""A seeded orbit model of what a satellite advertises: sunlight, battery,
temperature, storage and CPU load, as functions of (seed, node, time).

Theory of operation
-------------------
Each node flies a circular orbit of ``period_s`` with a seeded phase; the
first ``1 - eclipse_fraction`` of each orbit is sunlit. The battery charges
in sunlight and drains in eclipse (linear, clamped to 20..100 %), the
temperature swings between ``cold_c`` and ``hot_c`` with the sun, the store
fills slowly at a seeded rate, and CPU load is a seeded value per 60 s slot.
Everything is a pure function of its arguments: the simulator calls it with
virtual time and the same seed always gives the same advertisements.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from dcis.consensus.membership.view import Resources

__all__ = ["OrbitModel"]


@dataclass(frozen=True, slots=True, kw_only=True)
class OrbitModel:
    """Seeded resource model (see the module docstring)."""

    seed: int = 0
    period_s: float = 5_700.0
    eclipse_fraction: float = 0.35
    store_total_bytes: int = 64 << 30
    cold_c: float = -10.0
    hot_c: float = 35.0

    def _node_rng(self, node: int, salt: str) -> random.Random:
        return random.Random(f"orbit:{self.seed}:{node}:{salt}")

    def resources(self, node: int, t_s: float) -> Resources:
        """What ``node`` advertises at plan time ``t_s`` (seconds)."""
        r = self._node_rng(node, "static")
        phase0 = r.uniform(0.0, 1.0)
        fill_rate = r.uniform(0.0, 200_000.0)  # bytes per second
        used0 = r.uniform(0.05, 0.5) * self.store_total_bytes
        phase = (t_s / self.period_s + phase0) % 1.0
        sunlit_part = 1.0 - self.eclipse_fraction
        sunlit = phase < sunlit_part
        if sunlit:
            battery = 60.0 + 40.0 * (phase / sunlit_part)
            temp = self.cold_c + (self.hot_c - self.cold_c) * min(
                1.0, phase / (sunlit_part / 2)
            )
        else:
            into = (phase - sunlit_part) / self.eclipse_fraction
            battery = 100.0 - 40.0 * into
            temp = self.hot_c - (self.hot_c - self.cold_c) * into
        used = min(self.store_total_bytes, int(used0 + fill_rate * max(0.0, t_s)))
        slot = int(max(0.0, t_s) // 60)
        cpu = round(self._node_rng(node, f"cpu:{slot}").uniform(0.0, 1.0), 3)
        return Resources(
            store_free_bytes=self.store_total_bytes - used,
            store_total_bytes=self.store_total_bytes,
            cpu_load=cpu,
            battery_pct=round(max(20.0, min(100.0, battery)), 1),
            sunlit=sunlit,
            temperature_c=round(temp, 1),
        )
