"""The installed version of DCiS, for ``--version``."""

from __future__ import annotations

from importlib import metadata


def version_string(prog: str) -> str:
    """``PROG VERSION`` (``unknown`` when the package is not installed)."""
    try:
        v = metadata.version("dcis")
    except metadata.PackageNotFoundError:
        v = "unknown (not installed)"
    return f"{prog} {v}"
