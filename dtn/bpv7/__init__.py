"""BPv7 (RFC 9171) wire format: endpoint IDs, blocks, bundles, status reports, fragments.

Sans-I/O and pure: every function maps values to bytes or bytes to values.
"""

from __future__ import annotations

from dcis.dtn.bpv7.admin import AdminRecord as AdminRecord
from dcis.dtn.bpv7.admin import StatusAssertion as StatusAssertion
from dcis.dtn.bpv7.admin import StatusKind as StatusKind
from dcis.dtn.bpv7.admin import StatusReason as StatusReason
from dcis.dtn.bpv7.admin import StatusReport as StatusReport
from dcis.dtn.bpv7.admin import UnknownAdminRecord as UnknownAdminRecord
from dcis.dtn.bpv7.admin import (
    decode_admin_record_untrusted as decode_admin_record_untrusted,
)
from dcis.dtn.bpv7.admin import encode_admin_record as encode_admin_record
from dcis.dtn.bpv7.admin import make_status_report as make_status_report
from dcis.dtn.bpv7.admin import status_report_for as status_report_for
from dcis.dtn.bpv7.bundle import MAX_BLOCKS as MAX_BLOCKS
from dcis.dtn.bpv7.bundle import Bundle as Bundle
from dcis.dtn.bpv7.bundle import decode_bundle_untrusted as decode_bundle_untrusted
from dcis.dtn.bpv7.bundle import encode_bundle as encode_bundle
from dcis.dtn.bpv7.bundle import encode_bundle_parts as encode_bundle_parts
from dcis.dtn.bpv7.bundle import make_bundle as make_bundle
from dcis.dtn.bpv7.canonical import KNOWN_BLOCK_TYPES as KNOWN_BLOCK_TYPES
from dcis.dtn.bpv7.canonical import CanonicalBlock as CanonicalBlock
from dcis.dtn.bpv7.canonical import HopCount as HopCount
from dcis.dtn.bpv7.canonical import (
    decode_bundle_age_untrusted as decode_bundle_age_untrusted,
)
from dcis.dtn.bpv7.canonical import (
    decode_hop_count_untrusted as decode_hop_count_untrusted,
)
from dcis.dtn.bpv7.canonical import (
    decode_previous_node_untrusted as decode_previous_node_untrusted,
)
from dcis.dtn.bpv7.canonical import encode_block as encode_block
from dcis.dtn.bpv7.canonical import encode_bundle_age as encode_bundle_age
from dcis.dtn.bpv7.canonical import encode_hop_count as encode_hop_count
from dcis.dtn.bpv7.canonical import encode_previous_node as encode_previous_node
from dcis.dtn.bpv7.eid import DTN_NONE as DTN_NONE
from dcis.dtn.bpv7.eid import IPN_NULL as IPN_NULL
from dcis.dtn.bpv7.eid import DtnEid as DtnEid
from dcis.dtn.bpv7.eid import Eid as Eid
from dcis.dtn.bpv7.eid import IpnEid as IpnEid
from dcis.dtn.bpv7.eid import encode_eid as encode_eid
from dcis.dtn.bpv7.eid import is_null_eid as is_null_eid
from dcis.dtn.bpv7.eid import parse_eid as parse_eid
from dcis.dtn.bpv7.flags import AdminRecordType as AdminRecordType
from dcis.dtn.bpv7.flags import BlockFlags as BlockFlags
from dcis.dtn.bpv7.flags import BlockType as BlockType
from dcis.dtn.bpv7.flags import BundleFlags as BundleFlags
from dcis.dtn.bpv7.flags import CrcType as CrcType
from dcis.dtn.bpv7.fragment import Reassembler as Reassembler
from dcis.dtn.bpv7.fragment import fragment_bundle as fragment_bundle
from dcis.dtn.bpv7.fragment import reassemble as reassemble
from dcis.dtn.bpv7.primary import CreationTimestamp as CreationTimestamp
from dcis.dtn.bpv7.primary import PrimaryBlock as PrimaryBlock
from dcis.dtn.bpv7.primary import encode_primary as encode_primary
from dcis.dtn.bpv7.processing import BlockVerdict as BlockVerdict
from dcis.dtn.bpv7.processing import (
    apply_unprocessable_blocks as apply_unprocessable_blocks,
)
from dcis.dtn.bpv7.processing import hop_limit_exceeded as hop_limit_exceeded
from dcis.dtn.bpv7.processing import lifetime_expired as lifetime_expired
from dcis.dtn.bpv7.processing import update_for_forwarding as update_for_forwarding
