"""The testbed's ``deleted`` outcome: read from the daemons' JSON log lines."""

from __future__ import annotations

import logging
from pathlib import Path

from dcis.tools.dtn_node import JsonLogFormatter
from dcis.tools.testbed import logged_deletions


def log_line(node: int, event: str, **fields: object) -> str:
    # Exactly what a daemon writes (Node._log -> JsonLogFormatter).
    rec = logging.LogRecord(
        "dcis.dtn.node", logging.WARNING, __file__, 1, event, None, None
    )
    rec.fields = fields
    return JsonLogFormatter(node).format(rec)


def test_deleted_events_of_every_daemon_are_collected_by_whole_bundle(
    tmp_path: Path,
) -> None:
    n1 = tmp_path / "node1.log"
    n2 = tmp_path / "node2.log"
    n1.write_text(
        "\n".join(
            [
                log_line(1, "node_started", udp="127.0.0.1:1"),
                log_line(
                    1, "deleted", bundle="ipn:1.1|100|0", detail="hop limit exceeded"
                ),
                'not json at all, "deleted"',
                log_line(1, "expired", bundle="ipn:1.1|100|1", detail=""),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    # A fragment's key (offset, length) counts for its whole bundle.
    n2.write_text(
        log_line(
            2,
            "deleted",
            bundle="ipn:1.1|100|2|0|500",
            detail="security policy: source not certified",
        )
        + "\n",
        encoding="utf-8",
    )
    got = logged_deletions([n1, n2, tmp_path / "node3.log"])  # node 3: no log yet
    assert got == {"ipn:1.1|100|0": "hop_limit", "ipn:1.1|100|2": "security"}


def test_json_lines_that_are_not_objects_are_skipped(tmp_path: Path) -> None:
    log = tmp_path / "node1.log"
    log.write_text(
        '["deleted"]\n"deleted"\n'
        + log_line(1, "deleted", bundle="ipn:1.1|100|0", detail="hop limit exceeded")
        + "\n",
        encoding="utf-8",
    )
    assert logged_deletions([log]) == {"ipn:1.1|100|0": "hop_limit"}


def test_the_daemons_logged_cause_wins_over_the_wording(tmp_path: Path) -> None:
    # The daemon logs the agent's Deletion.cause; wording is only a fallback.
    log = tmp_path / "node1.log"
    log.write_text(
        log_line(
            1,
            "deleted",
            bundle="ipn:1.1|100|0",
            detail="refused by the security policy (hop_limit_exceeded)",
            cause="security",
        )
        + "\n"
        + log_line(1, "deleted", bundle="ipn:1.1|100|1", detail="x", cause="no_age")
        + "\n"
        + log_line(1, "deleted", bundle="ipn:1.1|100|2", detail="x", cause="bogus")
        + "\n",
        encoding="utf-8",
    )
    assert logged_deletions([log]) == {
        "ipn:1.1|100|0": "security",
        "ipn:1.1|100|1": "no_age",
        "ipn:1.1|100|2": "other",  # an unknown cause: the wording decides
    }


async def test_a_daemon_logs_the_cause_of_a_deletion(tmp_path: Path) -> None:
    import io
    import logging as lg

    from dcis.dtn.agent.actions import Deletion
    from dcis.dtn.runtime import NodeConfig, open_node

    buf = io.StringIO()
    log = lg.getLogger("dcis.dtn.node.test-cause")
    handler = lg.StreamHandler(buf)
    handler.setFormatter(JsonLogFormatter(1))
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel("INFO")
    cfg = NodeConfig(node=1, listen=("127.0.0.1", 0), store_path=":memory:")
    async with open_node(cfg, log=log) as node:
        # Wording that says nothing: only a logged cause can classify it.
        node._apply([Deletion("deleted", "ipn:1.1|5|0", "gone", cause="hop_limit")])
    path = tmp_path / "node1.log"
    path.write_text(buf.getvalue(), encoding="utf-8")
    assert logged_deletions([path]) == {"ipn:1.1|5|0": "hop_limit"}
