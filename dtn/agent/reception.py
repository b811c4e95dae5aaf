"""Reception: a bundle from a convergence layer or from ``send`` enters
the agent (RFC 9171 section 5.6), or is refused, deleted or recognised as a
duplicate.

Theory of operation
-------------------
:func:`receive_one` decodes (bad bytes: a ``dropped`` event, no Ack), tells
copies of held or delivered bundles apart from bundles that only share their
key (:func:`variant_key`, bounded by ``MAX_VARIANTS``), applies the lifetime,
hop-limit and unprocessable-block rules, then :func:`accept` stores the
bundle and sends it on its way: to delivery (local endpoint), reassembly (a
fragment of a local bundle) or forwarding. The Ack to the previous hop is
emitted only after the bundle is held, deliberately deleted or known as a
duplicate.

Functions take the ``Agent`` as ``self`` (bound as its private methods; see
:mod:`dcis.dtn.agent.entries`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from dcis.dtn.agent.actions import (
    Ack,
    Action,
    Event,
    EventKind,
    trusted_ack,
    trusted_event,
)
from dcis.dtn.agent.entries import (
    MAX_VARIANTS,
    content_digest,
    fragment_of,
)
from dcis.dtn.agent.store import (
    MAX_INT64,
    BundleState,
    StoreFull,
    Wire,
    wire_size,
)
from dcis.dtn.bpv7.admin import StatusKind, StatusReason
from dcis.dtn.bpv7.bundle import (
    Bundle,
    decode_bundle_untrusted,
    encode_bundle,
)
from dcis.dtn.bpv7.canonical import ZERO_BLOCK_NUMBER
from dcis.dtn.bpv7.eid import IpnEid
from dcis.dtn.bpv7.flags import BlockType
from dcis.dtn.bpv7.processing import apply_unprocessable_blocks
from dcis.dtn.errors import DecodeError

if TYPE_CHECKING:
    from dcis.dtn.agent.agent import Agent, Received

# Enum members read for every bundle, bound once (on Python 3.11 a member
# read off its class goes through EnumType's __getattr__ hook: ~4x a
# global's cost; see entries.py).
_PENDING: Final = BundleState.PENDING
_DELIVERING: Final = BundleState.DELIVERING
_REASSEMBLY: Final = BundleState.REASSEMBLY
_RECEIVED: Final = StatusKind.RECEIVED
_NO_INFO: Final = StatusReason.NO_INFO
_RECEIVED_EVENT: Final = EventKind.RECEIVED

# Block types the agent processes itself, plus BPSec's BIB/BCB which the
# security layer above handles: none of them is "unprocessable" here.
KNOWN_BLOCK_TYPES = frozenset(
    {
        BlockType.PAYLOAD,
        BlockType.PREVIOUS_NODE,
        BlockType.BUNDLE_AGE,
        BlockType.HOP_COUNT,
        BlockType.BIB,
        BlockType.BCB,
    }
)


def decode_all(
    self: Agent, items: list[Received]
) -> tuple[list[Bundle | None], set[str]]:
    """The bundles of ``items`` decoded (None where the plain decode fails:
    :func:`receive_one` then takes its own way with them), and which of
    their whole bundles' keys the store has delivered (one
    ``delivered_among`` for the batch)."""
    decoded: list[Bundle | None] = []
    for item in items:
        try:
            decoded.append(decode_bundle_untrusted(item.data))
        except DecodeError:
            decoded.append(None)
    keys = [b.original_key for b in decoded if b is not None]
    return decoded, self.store.delivered_among(keys) if keys else set()


def receive_one(
    self: Agent,
    cla: str,
    neighbor: int | None,
    data: bytes | memoryview,
    now: int,
    cl_token: int | None,
    actions: list[Action],
    decoded: Bundle | None = None,
    delivered: set[str] | None = None,
) -> None:
    """Take one received bundle (module docstring). ``decoded``: ``data``
    decoded already (:func:`decode_all`); ``delivered``: the delivered
    keys among the batch's whole bundles, looked up together (else the
    store is asked)."""
    ack = (
        trusted_ack(neighbor, cl_token)
        if neighbor is not None and cl_token is not None
        else None
    )
    renumbered = False
    try:
        try:
            bundle = decoded if decoded is not None else decode_bundle_untrusted(data)
        except DecodeError as exc:
            # ION 4.1.3's fragments number every extension block 0
            # (spec/interop.md): take them, renumbered, rather than
            # lose every fragmented bundle an ION node sends.
            if exc.what != ZERO_BLOCK_NUMBER:
                raise
            bundle = decode_bundle_untrusted(data, renumber_zero_blocks=True)
            data = encode_bundle(bundle)
            renumbered = True
        prev = bundle.previous_node
        hop = bundle.hop_count
        age = bundle.bundle_age_ms
    except DecodeError as exc:
        self.counters["dropped"] += 1
        actions.append(
            Event(
                "dropped",
                "",
                f"undecodable bundle from {cla} neighbour {neighbor}: {exc}",
            )
        )
        return
    key = bundle.bundle_key
    # The whole bundle's key: the same string unless it is a fragment.
    whole_key = bundle.original_key if bundle.is_fragment else key
    self.counters["received"] += 1
    # Node numbers are stored as signed 64-bit integers: a larger one
    # (a hostile or foreign sender) is "unknown", never a crash.
    prev_node = neighbor if neighbor is None or neighbor <= MAX_INT64 else None
    if prev_node is None and isinstance(prev, IpnEid) and prev.node <= MAX_INT64:
        prev_node = prev.node
    p = bundle.primary
    # Duplicates: a bundle we hold (the same content), or one delivered
    # here already. A copy with the key of one we hold but other content
    # is kept apart (bounded), never taken for a duplicate: a forger who
    # saw the key must not get the genuine bundle dropped.
    if key in self._entries or (bundle.is_fragment and whole_key in self._entries):
        variant = self._variant_key(bundle, key, now, actions)
        if variant is None:
            self._duplicate(key, ack, actions)
            return
        if not variant:
            self.counters["refused"] += 1
            actions.append(
                Event("refused", key, f"more than {MAX_VARIANTS} copies differ")
            )
            return
        actions.append(Event("variant", variant, "same key, other content"))
        self.counters["variants"] += 1
        key = variant
    dest_node = self._dest_of(p.destination)
    local = dest_node == self.node or str(p.destination) in self._endpoints
    # Delivered keys are whole-bundle keys: original_key == key unless a fragment.
    if local and (
        whole_key in delivered
        if delivered is not None and decoded is not None
        else self.store.is_delivered(whole_key)
    ):
        self._duplicate(key, ack, actions)
        return
    actions.append(
        trusted_event(
            _RECEIVED_EVENT,  # the member, as trusted_event needs
            key,
            f"from {cla} neighbour {prev_node}"
            + (" (extension blocks numbered 0 renumbered)" if renumbered else ""),
        )
    )
    if p.creation.time_ms == 0 and age is None:
        self._delete(
            key,
            bundle,
            "no_age",
            "no creation time and no bundle age block",
            StatusReason.NO_INFO,
            now,
            actions,
            ack=ack,
        )
        return
    expiry = self._expiry_of(bundle, age, now)
    cap = self.config.max_forward_lifetime_ms
    if cap is not None and not local:
        expiry = min(expiry, now + cap)
    if expiry <= now:
        self.counters["expired"] += 1
        actions.append(Event("expired", key, "lifetime over on arrival"))
        self._report_bundle(
            bundle, StatusKind.DELETED, StatusReason.LIFETIME_EXPIRED, now, actions
        )
        if ack is not None:
            actions.append(ack)
        return
    if hop is not None and hop.exceeded:
        self._delete(
            key,
            bundle,
            "hop_limit",
            f"hop limit exceeded ({hop.count} > {hop.limit})",
            StatusReason.HOP_LIMIT_EXCEEDED,
            now,
            actions,
            ack=ack,
        )
        return
    # RFC 9171 5.6 step 3 (4.2.4 flags): blocks we cannot process. The
    # common case -- every block known -- builds no verdict (~1 us a hop).
    # ``data`` may be a view into the driver's read buffer (Received.data):
    # it goes to the store as it is (which copies what it keeps, a large
    # payload only into its segment file) and is not kept here.
    if not _all_known(bundle):
        verdict = apply_unprocessable_blocks(bundle, KNOWN_BLOCK_TYPES)
        if verdict.report:
            self._report_bundle(
                bundle,
                StatusKind.RECEIVED,
                StatusReason.BLOCK_UNSUPPORTED,
                now,
                actions,
                force=True,
            )
        if verdict.bundle is None:
            self._delete(
                key,
                bundle,
                "unprocessable_block",
                f"unprocessable block(s) {list(verdict.unprocessable)} ask for deletion",
                StatusReason.BLOCK_UNSUPPORTED,
                now,
                actions,
                ack=ack,
            )
            return
        if verdict.discarded:
            bundle = verdict.bundle
            data = encode_bundle(bundle)
    if (
        ack is not None
        and local
        and bundle.is_fragment
        and key == bundle.bundle_key  # not a variant
        and bundle.original_key not in self._groups  # none of it stored
    ):
        hold_ms = self.config.hold_fragments_ms.get(cla)
        if hold_ms and self._hold_fragment(
            bundle, wire_size(data), ack, hold_ms, prev_node, expiry, now, actions
        ):
            return  # held in memory: acknowledged once its bundle is stored whole
    try:
        self._accept(
            bundle,
            data,
            key,
            prev_node=prev_node,
            now=now,
            actions=actions,
            expiry=expiry,
            received=True,
            # The previous hop keeps it until our Ack, which a driver with
            # group commit sends after its sync: its bytes may wait for it.
            write_later=ack is not None,
        )
    except StoreFull as exc:
        self.counters["refused"] += 1
        actions.append(Event("refused", key, str(exc)))
        return
    self._report_bundle(bundle, _RECEIVED, _NO_INFO, now, actions)
    if ack is not None:
        # Names the bundle stored: a driver may hold it until its delivery
        # is confirmed (every other Ack here names none: see Ack).
        actions.append(Ack(ack.neighbor, ack.cl_token, key))


def _all_known(bundle: Bundle) -> bool:
    """True if the agent processes every block of ``bundle`` itself."""
    # A loop, not all() of a generator: ~0.3 us less a bundle.
    for blk in bundle.blocks:  # noqa: SIM110
        if blk.type_code not in KNOWN_BLOCK_TYPES:
            return False
    return True


def variant_key(
    self: Agent, bundle: Bundle, key: str, now: int, actions: list[Action]
) -> str | None:
    """For a bundle whose key (or whole bundle's key) we hold: None if it
    is a copy of what we hold; else the key to keep it apart under
    (``""`` when the bound of variants for ``key`` is reached)."""
    digest = content_digest(bundle)
    variant = f"{key}#{digest.hex()}"
    if variant in self._entries:
        return None
    held = self._entries.get(key)
    if held is not None:
        if self._held_digest(held, actions, now) == digest:
            return None
    else:
        whole = self._entries[bundle.original_key]
        data = self._load(whole.key, actions, now)
        if data is None:
            return variant
        try:
            if fragment_of(bundle, decode_bundle_untrusted(data)):
                return None
        except DecodeError:
            return variant
    return "" if self._variants.get(key, 0) >= MAX_VARIANTS else variant


def duplicate(self: Agent, key: str, ack: Ack | None, actions: list[Action]) -> None:
    self.counters["duplicates"] += 1
    actions.append(Event("duplicate", key))
    if ack is not None:
        actions.append(ack)


def expiry_of(self: Agent, bundle: Bundle, age: int | None, now: int) -> int:
    p = bundle.primary
    if p.creation.time_ms == 0:
        # No clock at the source: the bundle age block says how old it is.
        expiry = now + p.lifetime_ms - (age or 0)
    else:
        expiry = p.creation.time_ms + p.lifetime_ms
    # Lifetimes are u64 on the wire; the store keeps signed 64-bit times
    # (2**63 ms is 292 million years: "never" either way).
    return min(expiry, MAX_INT64)


def accept(
    self: Agent,
    bundle: Bundle,
    data: Wire,
    key: str,
    *,
    prev_node: int | None,
    now: int,
    actions: list[Action],
    expiry: int | None = None,
    received: bool = False,
    own_encoding: bool = False,
    write_later: bool = False,
) -> None:
    """Store ``bundle`` (raises StoreFull) and route/deliver it.

    ``received``: it came from the network, so a whole bundle for this
    node passes the security policy's check (if any) first.
    ``own_encoding``: ``data`` is ``encode_bundle_parts(bundle)`` (see
    ``entries.store_new``); never with ``received``.
    ``write_later``: the store may write its bytes at its next sync (see
    ``BundleStore.put``): only for a bundle nobody is told is held before.
    """
    p = bundle.primary
    if expiry is None:
        expiry = self._expiry_of(bundle, bundle.bundle_age_ms, now)
    dest_node = self._dest_of(p.destination)
    destination = str(p.destination)
    local = dest_node == self.node or destination in self._endpoints
    group: str | None = None
    if local:
        state = _REASSEMBLY if bundle.is_fragment else _DELIVERING
        if bundle.is_fragment:
            group = bundle.original_key
    else:
        state = _PENDING
    if local and bundle.is_admin_record and destination not in self._endpoints:
        # Status reports for an endpoint nobody registered: log, do not hold.
        self.counters["status_reports"] += 1
        actions.append(Event("admin_record", key, f"for unregistered {destination}"))
        return
    digest = None
    if received and state == _DELIVERING and self.security is not None:
        checked = self._security_check(bundle, key, now, actions, wire_size(data))
        if checked is None:
            return
        if checked is not bundle:
            # Stored decrypted: remember what the received copy was.
            digest = content_digest(bundle)
            bundle, data = checked, encode_bundle(checked)
    verify = getattr(self.security, "verify", None)
    if received and state == _PENDING and verify is not None:
        # RFC 9172 verifier role on the path (RFC 9173 rules): a bundle
        # whose block fails is not forwarded; the blocks stay.
        ok, why = verify(bundle, now)
        if ok is None:
            self._delete(
                key,
                bundle,
                "security",
                "failed a verifier rule",
                why or StatusReason.FAILED_SECURITY_OPERATION,
                now,
                actions,
            )
            return
    e = self._store_new(
        key,
        data,
        destination=destination,
        dest_node=dest_node,
        expiry_ms=expiry,
        state=state,
        received_ms=now,
        prev_node=prev_node,
        flags=int(p.flags),
        frag_group=group,
        bundle=bundle,
        # (a bundle delivered here is never forwarded: no splice made)
        own_encoding=own_encoding and not received and state == _PENDING,
        write_later=write_later,
    )
    e.digest = digest
    if state == _DELIVERING:
        self._hand_over(key, actions, now)
    elif state == _REASSEMBLY:
        p = bundle.primary
        assert p.fragment_offset is not None
        assert p.total_adu_length is not None
        e.frag_range = (p.fragment_offset, len(bundle.payload), p.total_adu_length)
        self._add_fragment(e, now, actions)
    else:
        self._forward(e, now, actions)
