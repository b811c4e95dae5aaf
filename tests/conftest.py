"""Shared test configuration: hypothesis profiles.

``dev`` (default) is fast; ``ci`` (HYPOTHESIS_PROFILE=ci, set by .ci/run) runs
more examples. Tests that need a floor of examples in CI (e.g. the bundle
round trip's 2,000) read ``EXAMPLES_SCALE``.
"""

from __future__ import annotations

import os

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
