"""What a sync that refuses bundles does with what waits for it
(:func:`dcis.dtn.runtime.after_sync.withdraw`), decided by each entry's
kind and fields alone (spec/agent.md, "A late write that fails"); the
daemon's side is in test_late_write_failure and test_late_write_tcpcl."""

from __future__ import annotations

from dcis.dtn.appapi.wire import encode_key_reply, encode_message
from dcis.dtn.runtime.after_sync import AfterSync, Durable, withdraw

REFUSAL = "store full: its late write failed at the sync (ENOSPC)"


def _ran() -> object:
    raise AssertionError("withdraw never runs an entry's fn")


def test_each_kind_is_withheld_refused_rewritten_or_kept_by_its_fields() -> None:
    refused: list[str] = []
    replies = [
        encode_key_reply(1, "gone"),
        encode_key_reply(2, "kept"),
        encode_message({"type": "ok", "id": 3}),
    ]
    entries = [
        AfterSync(1, _ran, Durable.HOP_ACK, "gone", 7),
        AfterSync(1, _ran, Durable.HOP_ACK, "kept", 7),
        AfterSync(1, _ran, Durable.PIECE_ACK, None, 7),  # from a hop of one
        AfterSync(1, _ran, Durable.PIECE_ACK, None, 8),
        AfterSync(1, _ran, Durable.LTP_ACK, None, 9),
        AfterSync(
            1,
            _ran,
            Durable.TCPCL_ANSWER,
            keys=frozenset({"kept", "gone"}),
            refuse=lambda: refused.append("a"),
        ),
        AfterSync(
            1,
            _ran,
            Durable.TCPCL_ANSWER,
            keys=frozenset({"kept"}),
            refuse=lambda: refused.append("b"),
        ),
        AfterSync(1, _ran, Durable.APP_REPLY, replies=replies),
        AfterSync(2, _ran, Durable.OTHER),
    ]
    kept = withdraw(entries, {"gone"}, {7}, False, REFUSAL)
    assert [entries.index(e) for e in kept] == [1, 3, 4, 6, 7, 8]
    assert refused == ["a"]  # XFER_REFUSE, and only for its bundle
    # The same list, rewritten in place: the entry's fn sends it.
    assert replies[0] == encode_message({"type": "error", "id": 1, "message": REFUSAL})
    assert replies[1:] == [
        encode_key_reply(2, "kept"),
        encode_message({"type": "ok", "id": 3}),
    ]


def test_an_ltp_share_naming_no_bundle_is_withheld_if_a_hop_is_an_ltp_one() -> None:
    entries = [
        AfterSync(1, _ran, Durable.LTP_ACK),
        AfterSync(1, _ran, Durable.HOP_ACK, "kept", 9),
        AfterSync(1, _ran, Durable.PIECE_ACK, None, 8),
    ]
    kept = withdraw(entries, {"gone"}, {9}, True, REFUSAL)
    assert list(kept) == entries[1:]
