"""CGR on ION's terms (issue 17): light time at transmission, exclusive contact ends,
millisecond route times in JSON, whole-second light times in ionrc."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

import dcis.tools.cmd_plan
import dcis.tools.cmd_route
from dcis.dtn.routing.cgr import Router, replay
from dcis.dtn.routing.contact import Contact, Range
from dcis.dtn.routing.plan import (
    ContactPlan,
    format_ionrc,
    ionrc_owlt_warnings,
    parse_ionrc,
)
from dcis.dtn.storage.plan_files import load_plan


def main(argv: list[str]) -> int:
    """``dcis route`` / ``dcis plan`` alone (the commands under test, not the whole CLI)."""
    p = argparse.ArgumentParser(prog="dcis")
    sub = p.add_subparsers(required=True)
    dcis.tools.cmd_route.register(sub)
    dcis.tools.cmd_plan.register(sub)
    args = p.parse_args(argv)
    return int(args.func(args))


def test_light_time_is_the_one_in_force_when_the_bundle_is_sent() -> None:
    # the range changes from 5 s to 1 s at t=50, inside the contact 0..100
    c = Contact(1, 2, 0, 100, 1000.0)
    plan = ContactPlan([c], [Range(1, 2, 0, 50, 5.0), Range(1, 2, 50, 100, 1.0)])
    router = Router(plan)
    early = router.best_route(1, 2, 10, 0)
    late = router.best_route(1, 2, 60, 0)
    assert early is not None
    assert late is not None
    assert early.arrival_s == 15.0
    assert late.arrival_s == 61.0  # the start's 5 s would give 65
    assert router.owlt_of(c) == 5.0
    assert router.owlt_at(c, 60) == 1.0


def test_light_time_change_on_a_later_hop() -> None:
    plan = ContactPlan(
        [Contact(1, 2, 0, 100, 1000.0), Contact(2, 3, 0, 100, 1000.0)],
        [
            Range(1, 2, 0, 100, 30.0),
            Range(2, 3, 0, 20, 2.0),
            Range(2, 3, 20, 100, 7.0),
        ],
    )
    r = Router(plan).best_route(1, 3, 0, 0)
    assert r is not None
    assert r.arrival_s == 37.0  # sent on 2->3 at 30, when 7 s is in force
    # the same through k routes (Yen's spur bookkeeping uses the same times)
    routes = Router(plan).routes(1, 3, 0, 0, 3)
    assert [x.arrival_s for x in routes] == [37.0]


def test_contact_end_is_exclusive() -> None:
    c = Contact(1, 2, 0, 10, 100.0)
    router = Router(ContactPlan([c]))
    assert router.best_route(1, 2, 10, 0) is None  # ready exactly at the end
    assert router.best_route(1, 2, 9.5, 0) is not None
    assert replay([c], 10, 0, [0.0]) is None
    assert replay([c], 9, 100, [0.0]) == 10.0  # ends exactly at the end: fits


def test_a_chained_hop_arriving_at_the_next_contacts_end_is_not_routed() -> None:
    plan = ContactPlan([Contact(1, 2, 0, 10, 100.0), Contact(2, 3, 0, 5, 100.0)])
    plan.add_range(Range(1, 2, 0, 10, 5.0))
    assert Router(plan).best_route(1, 3, 0, 0) is None  # reaches 2 at 5 = end of 2->3


def test_route_json_rounds_to_the_millisecond(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = tmp_path / "p.ionrc"
    plan.write_text("a contact +0 +100 1 2 100\na range +0 +100 1 2 2.12\n")
    assert (
        main(
            [
                "route",
                "--plan",
                str(plan),
                "--from",
                "1",
                "--to",
                "2",
                "--at",
                "10",
                "--json",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    arrival = json.loads(out)["routes"][0]["arrival"]
    assert 10 + 2.12 != 12.12  # the float noise the rounding hides
    assert arrival == 12.12
    assert "12.12000" not in out


def test_plan_convert_to_ionrc_rounds_sub_second_light_times_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "p.json"
    src.write_text(
        json.dumps(
            {
                "contacts": [
                    {
                        "contact": 1,
                        "source": 1,
                        "dest": 2,
                        "startTime": 0,
                        "endTime": 10,
                        "rateBitsPerSec": 800,
                        "owlt": 0.25,
                    },
                    {
                        "contact": 2,
                        "source": 2,
                        "dest": 1,
                        "startTime": 0,
                        "endTime": 10,
                        "rateBitsPerSec": 800,
                        "owlt": 3,
                    },
                ]
            }
        )
    )
    out = tmp_path / "p.ionrc"
    assert main(["plan", "convert", str(src), "--to", "ionrc", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "sub-second light time 0.25 s written as 1 s" in err
    assert err.count("warning:") == 1
    back = load_plan(out)
    assert sorted(r.owlt_s for r in back.ranges) == [1.0, 3.0]


def test_exact_ionrc_round_trip_is_kept_without_ion_rounding() -> None:
    plan = ContactPlan([Contact(1, 2, 0, 10, 100.0)], [Range(1, 2, 0, 10, 0.5)])
    assert parse_ionrc(format_ionrc(plan)) == plan
    assert len(ionrc_owlt_warnings(plan)) == 1
    assert "a range +0 +10 1 2 1\n" in format_ionrc(plan, ion_owlt=True)
