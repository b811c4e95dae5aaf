"""Shared test configuration: hypothesis profiles.

``dev`` (default) is fast; ``ci`` (HYPOTHESIS_PROFILE=ci, set by .ci/run) runs
more examples. Tests that need a floor of examples in CI (e.g. the bundle
round trip's 2,000) read ``EXAMPLES_SCALE``.
"""

from __future__ import annotations

import importlib.abc
import os
import sys

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile(
    "ci",
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev")
settings.load_profile(PROFILE)
IS_CI = PROFILE == "ci"


@pytest.fixture(scope="session", autouse=True)
def _state_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Daemons keep their store under $XDG_STATE_HOME/dcis/node-N by default:
    point it (for this process and the daemons it starts) at a temp dir, so
    tests never write into the user's home."""
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("xdg-state"))


class _OneNamespace(importlib.abc.MetaPathFinder):
    """The repository root is on sys.path (tests import ``tests.*``), which
    would make ``import dtn`` load a second copy of ``dcis.dtn``: refuse it."""

    NAMES = frozenset({"dtn", "crypto", "consensus", "dfs", "tools"})

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> None:
        if fullname.split(".")[0] in self.NAMES:
            raise ModuleNotFoundError(
                f"import dcis.{fullname}, not {fullname} (one namespace: dcis)",
                name=fullname,
            )
        return None


sys.meta_path.insert(0, _OneNamespace())
