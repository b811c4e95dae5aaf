"""BPv7 (RFC 9171) wire format: endpoint IDs, blocks, bundles, status reports, fragments.

Sans-I/O and pure: every function maps values to bytes or bytes to values.
"""

from __future__ import annotations

from dtn.bpv7.bundle import MAX_BLOCKS as MAX_BLOCKS
from dtn.bpv7.bundle import Bundle as Bundle
from dtn.bpv7.bundle import decode_bundle_untrusted as decode_bundle_untrusted
from dtn.bpv7.bundle import encode_bundle as encode_bundle
from dtn.bpv7.bundle import make_bundle as make_bundle
from dtn.bpv7.canonical import CanonicalBlock as CanonicalBlock
from dtn.bpv7.canonical import HopCount as HopCount
from dtn.bpv7.canonical import (
    decode_bundle_age_untrusted as decode_bundle_age_untrusted,
)
from dtn.bpv7.canonical import decode_hop_count_untrusted as decode_hop_count_untrusted
from dtn.bpv7.canonical import (
    decode_previous_node_untrusted as decode_previous_node_untrusted,
)
from dtn.bpv7.canonical import encode_bundle_age as encode_bundle_age
from dtn.bpv7.canonical import encode_hop_count as encode_hop_count
from dtn.bpv7.canonical import encode_previous_node as encode_previous_node
from dtn.bpv7.eid import DTN_NONE as DTN_NONE
from dtn.bpv7.eid import DtnEid as DtnEid
from dtn.bpv7.eid import Eid as Eid
from dtn.bpv7.eid import IpnEid as IpnEid
from dtn.bpv7.eid import parse_eid as parse_eid
from dtn.bpv7.flags import BlockFlags as BlockFlags
from dtn.bpv7.flags import BlockType as BlockType
from dtn.bpv7.flags import BundleFlags as BundleFlags
from dtn.bpv7.flags import CrcType as CrcType
from dtn.bpv7.primary import CreationTimestamp as CreationTimestamp
from dtn.bpv7.primary import PrimaryBlock as PrimaryBlock
