"""The seeded orbit resource model and the dcis members output shapes."""

from __future__ import annotations

from dcis.consensus.membership.orbit import OrbitModel
from dcis.consensus.membership.view import Resources
from dcis.consensus.membership.wire import MemberRow
from dcis.tools.cmd_members import row_json, row_text


def test_orbit_model_is_seeded_and_follows_the_sun() -> None:
    m = OrbitModel(seed=3)
    samples = [m.resources(5, t) for t in range(0, 5_700, 60)]
    assert samples == [OrbitModel(seed=3).resources(5, t) for t in range(0, 5_700, 60)]
    assert samples != [OrbitModel(seed=4).resources(5, t) for t in range(0, 5_700, 60)]
    sunlit = sum(1 for r in samples if r.sunlit)
    assert 0.55 * len(samples) < sunlit < 0.75 * len(samples)  # 65 % of an orbit
    for r in samples:
        assert r.battery_pct is not None
        assert 20.0 <= r.battery_pct <= 100.0
        assert 0 <= r.store_free_bytes <= r.store_total_bytes
        assert 0.0 <= r.cpu_load <= 1.0
    eclipse = [r.temperature_c for r in samples if not r.sunlit]
    assert eclipse
    assert min(eclipse) < max(r.temperature_c for r in samples if r.sunlit)  # type: ignore[type-var]


def test_members_json_shape_and_text() -> None:
    r = MemberRow(
        node=3,
        state="dead",
        incarnation=4,
        heard_ago_ms=1500,
        resources=Resources(
            store_free_bytes=1,
            store_total_bytes=2,
            cpu_load=0.5,
            battery_pct=80.0,
            sunlit=False,
            temperature_c=-3.5,
        ),
    )
    assert row_json(r) == {
        "node": 3,
        "state": "dead",
        "incarnation": 4,
        "last_heard_s": 1.5,
        "resources": {
            "store_free_bytes": 1,
            "store_total_bytes": 2,
            "cpu_load": 0.5,
            "battery_pct": 80.0,
            "sunlit": False,
            "temperature_c": -3.5,
        },
    }
    text = row_text(r)
    assert "dead" in text
    assert "inc=4" in text
    assert "eclipse" in text
    assert "1.5s ago" in text
    never = MemberRow(
        node=9, state="alive", incarnation=1, heard_ago_ms=None, resources=Resources()
    )
    assert row_json(never)["last_heard_s"] is None
    assert "never" in row_text(never)
