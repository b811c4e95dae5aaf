"""Hostile plan text: the parsers return a plan or raise PlanError, nothing else."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from dcis.dtn.routing.plan import (
    PlanError,
    format_hdtn_json,
    format_ionrc,
    parse_hdtn_json,
    parse_ionrc,
)

TOKENS = st.sampled_from(
    [
        "a",
        "d",
        "contact",
        "range",
        "@",
        "+0",
        "+10",
        "-5",
        "+1e400",
        "nan",
        "inf",
        "1",
        "2",
        "٣",
        "*",
        "0.5",
        "1.5",
        "2026/02/30-00:00:00",
        "2026/01/01-00:00:00",
        "#",
        "m",
        "horizon",
        "x" * 5,
        "99999999999999999999999",
    ]
)


@given(st.lists(st.lists(TOKENS, max_size=8).map(" ".join), max_size=12).map("\n".join))
def test_ionrc_tokens_parse_or_plan_error(text: str) -> None:
    line: int | None = 0
    try:
        plan = parse_ionrc(text)
    except PlanError as exc:
        line = exc.line
    else:
        assert parse_ionrc(format_ionrc(plan)) == plan
        return
    assert line is not None
    assert 1 <= line <= text.count("\n") + 1


@given(st.text(max_size=200))
def test_ionrc_any_text(text: str) -> None:
    with contextlib.suppress(PlanError):
        parse_ionrc(text)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
FIELD = st.sampled_from(
    [
        "contact",
        "source",
        "dest",
        "startTime",
        "endTime",
        "rateBitsPerSec",
        "rate",
        "owlt",
        "confidence",
    ]
)
ITEM = st.dictionaries(
    FIELD,
    JSON_VALUES | st.integers(-(10**400), 10**400) | st.floats(0, 1e6),
    max_size=9,
)


@given(st.lists(ITEM, max_size=5) | JSON_VALUES)
def test_hdtn_json_structures_parse_or_plan_error(contacts: Any) -> None:
    text = json.dumps({"contacts": contacts}, indent=1)
    try:
        plan = parse_hdtn_json(text)
    except PlanError:
        return
    assert parse_hdtn_json(format_hdtn_json(plan)) == plan


@given(st.text(max_size=200))
def test_hdtn_json_any_text(text: str) -> None:
    with contextlib.suppress(PlanError):
        parse_hdtn_json(text)
