"""Shared dcis argument converters: bad values are usage errors, not tracebacks."""

from __future__ import annotations

import argparse

import pytest

from dcis.tools.argtypes import (
    finite_float,
    node_number,
    non_negative_float,
    positive_int,
)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "abc", ""])
def test_finite_float_rejects_non_numbers(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        finite_float(text)


def test_converters_accept_good_values() -> None:
    assert finite_float("-1.5") == -1.5
    assert non_negative_float("0") == 0.0
    assert node_number("42") == 42
    assert positive_int("3") == 3


@pytest.mark.parametrize(
    ("conv", "text"),
    [
        (non_negative_float, "-1"),
        (node_number, "-3"),
        (node_number, "0x10"),
        (positive_int, "0"),
    ],
)
def test_out_of_range_values_are_refused(conv: object, text: str) -> None:
    assert callable(conv)
    with pytest.raises(argparse.ArgumentTypeError):
        conv(text)


def test_dcis_route_turns_them_into_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from dcis.tools.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["route", "--plan", "x", "--from", "1", "--to", "nan"])
    assert exc.value.code == 2
    assert "not a node number" in capsys.readouterr().err
