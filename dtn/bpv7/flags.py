"""BPv7 registries: bundle and block processing control flags, CRC and block types.

RFC 9171 section 4.2.3 (bundle flags), 4.2.4 (block flags), 4.2.1 (CRC types),
9.1 (block types). https://www.rfc-editor.org/rfc/rfc9171#section-4.2.3
"""

from __future__ import annotations

from enum import IntEnum, IntFlag


class BundleFlags(IntFlag):
    """Bundle processing control flags (RFC 9171 section 4.2.3).

    Unknown bits received from a peer are kept (``IntFlag`` allows them) so that
    a forwarded bundle keeps its flags byte for byte.
    """

    NONE = 0
    IS_FRAGMENT = 0x000001
    ADMIN_RECORD = 0x000002
    MUST_NOT_FRAGMENT = 0x000004
    ACK_REQUESTED = 0x000020
    STATUS_TIME_REQUESTED = 0x000040
    REPORT_RECEPTION = 0x004000
    REPORT_FORWARDING = 0x010000
    REPORT_DELIVERY = 0x020000
    REPORT_DELETION = 0x040000


# Bits that report status; RFC 9171 4.2.3 says they must be zero for admin records.
STATUS_REPORT_FLAGS = (
    BundleFlags.REPORT_RECEPTION
    | BundleFlags.REPORT_FORWARDING
    | BundleFlags.REPORT_DELIVERY
    | BundleFlags.REPORT_DELETION
)


class BlockFlags(IntFlag):
    """Block processing control flags (RFC 9171 section 4.2.4)."""

    NONE = 0
    MUST_REPLICATE = 0x01
    REPORT_IF_UNPROCESSABLE = 0x02
    DELETE_BUNDLE_IF_UNPROCESSABLE = 0x04
    DISCARD_IF_UNPROCESSABLE = 0x10


class CrcType(IntEnum):
    """CRC type of a block (RFC 9171 section 4.2.1)."""

    NONE = 0
    CRC16 = 1
    CRC32C = 2


class BlockType(IntEnum):
    """Block type codes we know (RFC 9171 section 9.1, RFC 9172 section 11.1)."""

    PAYLOAD = 1
    PREVIOUS_NODE = 6
    BUNDLE_AGE = 7
    HOP_COUNT = 10
    BIB = 11
    BCB = 12


class AdminRecordType(IntEnum):
    """Administrative record type codes (RFC 9171 section 9.2)."""

    STATUS_REPORT = 1
