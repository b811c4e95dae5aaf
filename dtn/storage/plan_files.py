"""Contact plan files: read one (ionrc or HDTN JSON, told apart by content)
or write one. An edge module: the parsing and formatting are sans-I/O, in
:mod:`dcis.dtn.routing.plan`; this module only moves the text to and from a
file, which the cores may not do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from dcis.dtn.routing.plan import (
    ContactPlan,
    PlanError,
    SeventhField,
    format_hdtn_json,
    format_ionrc,
    parse_plan,
)

__all__ = ["load_plan", "save_plan"]


def load_plan(
    path: str | Path, *, seventh_field: SeventhField = "confidence"
) -> ContactPlan:
    """Read a plan file (ionrc or HDTN JSON, told apart by content).

    Raises :class:`PlanError` for a malformed or unreadable file.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"cannot read: {exc}", source=str(p)) from exc
    return parse_plan(text, source=str(p), seventh_field=seventh_field)


def save_plan(
    plan: ContactPlan, path: str | Path, *, fmt: Literal["ionrc", "json"] | None = None
) -> None:
    """Write a plan; the format follows ``fmt`` or the file suffix (``.json`` -> HDTN JSON)."""
    p = Path(path)
    kind = fmt or ("json" if p.suffix.lower() == ".json" else "ionrc")
    p.write_text(
        format_hdtn_json(plan) if kind == "json" else format_ionrc(plan),
        encoding="utf-8",
    )
