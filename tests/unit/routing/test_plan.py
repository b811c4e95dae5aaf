"""Contact plans: ionrc and HDTN JSON parsing, errors with line numbers, writing back, updates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dcis.dtn.errors import DtnError, InvalidArgument
from dcis.dtn.routing.contact import Contact, Range
from dcis.dtn.routing.plan import (
    ContactPlan,
    PlanError,
    RoutingError,
    format_hdtn_json,
    format_ionrc,
    parse_hdtn_json,
    parse_ionrc,
    parse_plan,
)
from dcis.dtn.storage.plan_files import load_plan, save_plan

PLANS = Path(__file__).resolve().parents[2] / "vectors" / "plans"


def test_ion_bench_plan_parses_with_tabs_and_management_lines() -> None:
    plan = load_plan(PLANS / "ion_bench-cgr_global.ionrc")
    assert len(plan) == 8
    assert len(plan.ranges) == 4
    assert Contact(3, 4, 35.0, 50.0, 1_000_000.0) in plan.contacts
    assert plan.nodes == frozenset({1, 2, 3, 4})


def test_ion_confidence_field() -> None:
    plan = load_plan(PLANS / "ion_req-0033-prob-CGR_global.ionrc")
    conf = {(c.frm, c.to): c.confidence for c in plan.contacts}
    assert conf[(2, 3)] == 0.9
    assert conf[(5, 7)] == 0.1


def test_ion_range_rule_a_less_than_b_covers_both_directions() -> None:
    plan = parse_ionrc("a range +0 +100 1 2 5\na range +0 +100 4 3 7\n")
    assert plan.owlt_s(1, 2, 50) == 5.0
    assert plan.owlt_s(2, 1, 50) == 5.0  # declared 1<2: applies to 2->1 too
    assert plan.owlt_s(4, 3, 50) == 7.0
    assert plan.owlt_s(3, 4, 50) == 0.0  # declared 4>3: one direction only
    assert plan.owlt_s(1, 2, 101) == 0.0  # outside the range's window
    # an explicit b->a range wins over the implied one
    plan.add_range(Range(2, 1, 0, 100, 9))
    assert plan.owlt_s(2, 1, 50) == 9.0
    assert plan.owlt_s(1, 2, 50) == 5.0


def test_reference_time_and_absolute_times() -> None:
    text = "@ 2026/01/01-00:00:00\na contact +10 2026/01/01-00:01:00 1 2 1000\n"
    plan = parse_ionrc(text)
    c = plan.contacts[0]
    assert (c.start_s, c.end_s) == (10.0, 60.0)
    assert plan.epoch_unix_s == 1767225600.0
    # written back with its reference time, it reads back the same
    assert parse_ionrc(format_ionrc(plan)) == plan


def test_absolute_times_without_reference_count_from_the_dtn_epoch() -> None:
    plan = parse_ionrc("a contact 2000/01/01-00:00:10 2000/01/01-00:00:20 1 2 1\n")
    assert (plan.contacts[0].start_s, plan.contacts[0].end_s) == (10.0, 20.0)


def test_delete_contact_updates_plan() -> None:
    plan = parse_ionrc(
        "a contact +0 +10 1 2 1\na contact +20 +30 1 2 1\nd contact +0 1 2\n"
    )
    assert [c.start_s for c in plan.contacts] == [20.0]


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("a contact +0 +10 1 2 100\na contact +0 1 2 100\n", 2, "fields"),
        ("# c\n\na contact +0 +10 x 2 100\n", 3, "node number"),
        ("a contact +10 +0 1 2 100\n", 1, "before it starts"),
        ("a contact +0 +10 1 2 -5\n", 1, "rate"),
        ("a contact +0 +10 1 2 5 1.5\n", 1, "confidence"),
        ("a range +0 +10 1 2\n", 1, "range"),
        ("a contact 2026/13/01-00:00:00 +10 1 2 5\n", 1, "time"),
        ("a contact +0 +10 1 2 5\na contact +0 +10 1 2 5\n", 2, "duplicate"),
        ("frobnicate\n", 1, "unknown command"),
        ("a bogus 1 2\n", 1, "unknown command"),
        ("d contact +5 1 2\n", 1, "no contact"),
    ],
)
def test_bad_ionrc_lines_name_their_line(text: str, line: int, words: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_ionrc(text, source="p.ionrc")
    assert info.value.line == line
    assert words in str(info.value)
    assert str(info.value).startswith(f"p.ionrc:{line}: ")
    assert isinstance(info.value, RoutingError)
    assert isinstance(info.value, DtnError)


def test_bad_hdtn_json_names_the_line_of_the_bad_contact() -> None:
    good = {
        "contact": 0,
        "source": 1,
        "dest": 2,
        "startTime": 0,
        "endTime": 60,
        "rateBitsPerSec": 8000,
        "owlt": 1,
    }
    bad = dict(good, contact=1, rateBitsPerSec="fast")
    text = json.dumps({"contacts": [good, bad]}, indent=2)
    with pytest.raises(PlanError) as info:
        parse_hdtn_json(text)
    assert "contacts[1]" in str(info.value)
    assert info.value.line == text.splitlines().index("    {", 10) + 1
    with pytest.raises(PlanError, match="missing field 'dest'"):
        parse_hdtn_json(json.dumps({"contacts": [{"source": 1}]}))
    with pytest.raises(PlanError) as info2:
        parse_hdtn_json('{"contacts": [\n {"source": 1,,}]}')
    assert info2.value.line == 2
    with pytest.raises(PlanError, match="contacts"):
        parse_hdtn_json("[1, 2]")


def test_hdtn_rates_are_bits_and_deprecated_rate_is_mbit() -> None:
    plan = parse_hdtn_json(
        '{"contacts":[{"source":1,"dest":2,"startTime":0,"endTime":10,"rate":20,"owlt":2}]}'
    )
    c = plan.contacts[0]
    assert c.rate_bytes_s == 20e6 / 8
    assert plan.owlt_s(1, 2, 5) == 2.0


@pytest.mark.parametrize(
    "name",
    ["hdtn_cgrTutorial.json", "hdtn_10nodes.json", "hdtn_contactPlan_RoutingTest.json"],
)
def test_hdtn_json_round_trips(name: str) -> None:
    plan = load_plan(PLANS / name)
    again = parse_hdtn_json(format_hdtn_json(plan))
    assert again == plan
    # and through ionrc: contacts, ranges (as per-contact ranges) survive
    assert parse_ionrc(format_ionrc(plan)) == plan


@pytest.mark.parametrize(
    "name", ["ion_bench-cgr_global.ionrc", "ion_req-0033-prob-CGR_global.ionrc"]
)
def test_ionrc_round_trips_and_converts(name: str, tmp_path: Path) -> None:
    plan = load_plan(PLANS / name)
    assert parse_ionrc(format_ionrc(plan)) == plan
    # HDTN JSON carries a light time per contact: every contact keeps its own
    save_plan(plan, tmp_path / "p.json")
    j = load_plan(tmp_path / "p.json")
    assert set(j.contacts) == set(plan.contacts)
    for c in plan.contacts:
        assert j.owlt_s(c.frm, c.to, c.start_s) == plan.owlt_s(c.frm, c.to, c.start_s)


def test_format_detection_by_content(tmp_path: Path) -> None:
    p = tmp_path / "plan.txt"
    p.write_text(' {"contacts": []}')
    assert len(load_plan(p)) == 0
    with pytest.raises(PlanError, match="cannot read"):
        load_plan(tmp_path / "missing")
    assert len(parse_plan("a contact +0 +1 1 2 3\n")) == 1


def test_in_place_updates_bump_the_version() -> None:
    plan = ContactPlan()
    v = plan.version
    c = Contact(1, 2, 0.0, 10.0, 100.0)
    plan.add_contact(c)
    assert plan.version > v
    with pytest.raises(InvalidArgument):
        plan.add_contact(c)
    v = plan.version
    plan.remove_contact(c)
    assert plan.version > v
    assert c not in plan
    with pytest.raises(InvalidArgument):
        plan.remove_contact(c)
    newer = ContactPlan([c, Contact(2, 3, 5.0, 6.0, 1.0)])
    plan.update(newer)
    plan.update(newer)  # idempotent
    assert len(plan) == 2


def test_hdtn_light_times_survive_edits() -> None:
    plan = load_plan(PLANS / "hdtn_contactPlan_RoutingTest.json")
    first, second = plan.contacts[0], plan.contacts[1]
    plan.remove_contact(first)
    plan.add_contact(Contact(9, 8, 0.0, 5.0, 1.0))
    assert plan.owlt_s(second.frm, second.to, second.start_s) == 1.0
    assert Range(first.frm, first.to, first.start_s, first.end_s, 1.0) in plan.ranges
    assert plan.owlt_s(9, 8, 1.0) == 0.0


def test_apply_ionrc_updates_in_place_all_or_nothing() -> None:
    from dcis.dtn.routing.cgr import Router
    from dcis.dtn.routing.plan import apply_ionrc

    plan = load_plan(PLANS / "ion_bench-cgr_global.ionrc")
    router = Router(plan)
    assert router.best_route(1, 4, 0, 0) is not None
    before = set(plan.contacts)
    with pytest.raises(PlanError) as info:
        apply_ionrc(
            plan, "d contact +20 1 2\nd contact +40 1 2\na contact +0 +1 1 bad 5\n"
        )
    assert info.value.line == 3
    assert set(plan.contacts) == before
    v = plan.version
    apply_ionrc(plan, "d contact * 1 2\na contact +5 +6 1 4 1000\n")
    assert plan.version > v
    assert not any(c.frm == 1 and c.to == 2 for c in plan.contacts)
    route = router.best_route(1, 4, 0, 0)  # the router sees the update
    assert route is not None
    assert route.hops == (1, 4)
    assert route.arrival_s == 5


@pytest.mark.parametrize("owlt", [-1.0, float("inf"), float("nan")])
def test_a_range_light_time_must_be_a_finite_number_at_least_zero(owlt: float) -> None:
    # An infinite or NaN light time would make a contact group "plain" and
    # routes arrive at inf/NaN; the plan parsers refuse both, so does Range.
    with pytest.raises(InvalidArgument, match="light time"):
        Range(1, 2, 0.0, 10.0, owlt)
    assert Range(1, 2, 0.0, 10.0, 0.0).owlt_s == 0.0
