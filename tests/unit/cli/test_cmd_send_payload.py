"""``dcis send --payload``: the payload is the bytes given on the command line."""

from __future__ import annotations

import argparse
import os

from dcis.tools.cmd_send import payloads


def _args(payload: str) -> argparse.Namespace:
    return argparse.Namespace(payload=payload, file=[], files=[], lines=False)


def test_payload_text_is_sent_as_utf8() -> None:
    assert payloads(_args("héllo")) == [("--payload", "héllo".encode())]


def test_payload_argv_bytes_that_are_not_utf8_are_sent_as_given() -> None:
    # Python decodes argv with surrogateescape: b"\x80ok" arrives as
    # "\udc80ok"; it used to end in an internal error (UnicodeEncodeError).
    arg = os.fsdecode(b"\x80ok")
    assert payloads(_args(arg)) == [("--payload", b"\x80ok")]
