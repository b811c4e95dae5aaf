"""Delivery to local endpoints, and reassembly of fragments for them
(RFC 9171 sections 5.7 and 5.9).

Theory of operation
-------------------
A bundle for a registered endpoint is handed over as one ``Deliver``
(:func:`hand_over`) and stays stored until ``Agent.on_delivered`` confirms;
one for an endpoint not registered yet waits in ``Agent._unclaimed``.
Fragments of a bundle for this node are grouped by the whole bundle's key
(:class:`~dcis.dtn.agent.entries.FragmentGroup`); once their pieces cover
the payload, :func:`reassemble_group` replaces them by the whole bundle,
trying a bounded number of combinations when copies of a fragment differ.
The security policy, if any, checks each whole bundle once before it is
stored for delivery.

Functions take the ``Agent`` as ``self`` (bound as its private methods; see
:mod:`dcis.dtn.agent.entries`).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Final

from dcis.dtn.agent.actions import (
    Action,
    Event,
    trusted_inbound,
)
from dcis.dtn.agent.entries import (
    Entry,
    FragmentGroup,
    variant_base,
)
from dcis.dtn.agent.location import Location, Step
from dcis.dtn.agent.store import (
    BundleState,
    StoreFull,
)
from dcis.dtn.bpv7.admin import StatusReason
from dcis.dtn.bpv7.bundle import (
    Bundle,
    decode_bundle_untrusted,
    encode_bundle_parts,
)
from dcis.dtn.bpv7.fragment import reassemble
from dcis.dtn.errors import DecodeError, InvalidArgument

if TYPE_CHECKING:
    from dcis.dtn.agent.agent import Agent

# Enum members read for every bundle, bound once (on Python 3.11 a member
# read off its class goes through EnumType's __getattr__ hook: ~4x a
# global's cost; see entries.py).
_HAND_OVER: Final = Step.HAND_OVER

_MAX_COMBINATIONS = 16


def security_check(
    self: Agent,
    bundle: Bundle,
    key: str,
    now: int,
    actions: list[Action],
    room_for: int | None,
) -> Bundle | None:
    """The plaintext bundle if the security policy accepts ``bundle``,
    else None (deleted with the policy's reason, RFC 9172 5.1.2).

    Room in the store for ``room_for`` bytes is checked first (raises
    StoreFull): the policy records an accepted bundle against replay, so
    one it accepted and we then refused could never be accepted again
    when its sender retries.
    """
    assert self.security is not None
    store = self.store
    if room_for is not None and store.used_bytes + room_for > store.limit_bytes:
        raise StoreFull(
            needed_bytes=room_for,
            used_bytes=store.used_bytes,
            limit_bytes=store.limit_bytes,
        )
    plain, reason = self.security.check(bundle, now)
    if plain is None:
        why = StatusReason(reason) if reason is not None else StatusReason.NO_INFO
        self._delete(
            key,
            bundle,
            "security",
            f"refused by the security policy ({why.name.lower()})",
            why,
            now,
            actions,
        )
        return None
    return plain


def hand_over(self: Agent, key: str, actions: list[Action], now: int | None) -> None:
    e = self._entries.get(key)
    if e is None:
        return
    if now is not None and e.expiry_ms <= now:
        # Never deliver after the lifetime (the tick may be late).
        self._expire(e, now, actions)
        return
    if e.destination not in self._endpoints:
        self._unclaimed.setdefault(e.destination, {})[key] = None
        e.move(Step.WAIT_ENDPOINT)
        return
    try:
        b = self._load_bundle(key, actions, now)
    except DecodeError as exc:
        self._corrupt(e, exc, actions)
        return
    if b is None:
        return
    e.move(_HAND_OVER)
    c = b.primary.creation
    actions.append(
        trusted_inbound(
            e.destination, str(b.primary.source), b.payload, c.time_ms, c.sequence, key
        )
    )


def make_local(self: Agent, e: Entry, now: int | None, actions: list[Action]) -> None:
    """Held bundle ``e`` (not in flight) turns out to be for a local
    endpoint registered since it came: deliver (or reassemble) it
    (``now`` None: ``register`` was not told the time)."""
    if e.location is Location.UNROUTED:
        self._unrouted.get(e.dest_node, {}).pop(e.key, None)
        e.move(Step.RELEASE)
    self._unbook(e)
    data = self._load(e.key, actions, now)
    if data is None:
        return
    try:
        fragment = decode_bundle_untrusted(data).is_fragment
    except DecodeError as exc:
        self._corrupt(e, exc, actions)
        return
    if fragment:
        self.store.set_state(e.key, BundleState.REASSEMBLY)
        self._recover_fragment(e, e.received_ms if now is None else now, actions)
    else:
        self.store.set_state(e.key, BundleState.DELIVERING)
        self._hand_over(e.key, actions, now)


def add_fragment(self: Agent, e: Entry, now: int, actions: list[Action]) -> None:
    assert e.frag_group is not None
    assert e.frag_range is not None
    e.move(Step.COLLECT)
    off, length, total = e.frag_range
    g = self._groups.get(e.frag_group)
    if g is None:
        g = self._groups[e.frag_group] = FragmentGroup(total=total)
    old = g.parts.get(e.key)
    g.length_sum += length - (old[1] if old is not None else 0)
    g.parts[e.key] = (off, length)
    if g.length_sum < g.total:
        return  # O(1) per fragment until the pieces could cover the ADU
    # Covered? Sort the (few) parts; fragments overlap legitimately
    # after refragmentation, so check the union.
    reach = 0
    for o, n in sorted(g.parts.values()):
        if o > reach:
            return
        reach = max(reach, o + n)
    if reach < g.total:
        return
    self._reassemble(e.frag_group, g, now, actions)


def reassemble_group(
    self: Agent, group: str, g: FragmentGroup, now: int, actions: list[Action]
) -> None:
    """All fragments of ``group`` are here: replace them by the whole
    bundle (RFC 9171 5.9) and hand it over.

    Where copies of one fragment differ (variants: one forged or
    broken), each choice is tried -- the copy held first, first -- up to
    ``_MAX_COMBINATIONS``; with a security policy the first whole
    bundle it accepts wins. When none reassembles (or passes), nothing
    is deleted: the fragments wait for more copies, or expire."""
    frags: list[tuple[Bundle, Entry]] = []
    for key in list(g.parts):
        fe = self._entries.get(key)
        if fe is None:
            return
        # The copy kept decoded when the fragment was stored, if any (not
        # read back and decoded again); else the stored bytes, decoded.
        try:
            b = self._load_bundle(key, actions, now)
        except DecodeError as exc:
            self._corrupt(fe, exc, actions)
            return
        if b is None:
            return
        frags.append((b, fe))
    slots: dict[tuple[int, int], list[tuple[Bundle, Entry]]] = {}
    for b, fe in frags:
        rng = (b.primary.fragment_offset or 0, len(b.payload))
        slots.setdefault(rng, []).append((b, fe))
    for alts in slots.values():
        alts.sort(key=lambda t: variant_base(t[1].key) is not None)
    whole: Bundle | None = None
    reason = "no combination of fragments"
    for combo in itertools.islice(
        itertools.product(*slots.values()), _MAX_COMBINATIONS
    ):
        try:
            cand = reassemble([b for b, _ in combo])
        except InvalidArgument as exc:
            reason = str(exc)
            continue
        key = cand.bundle_key
        if key in self._entries or self.store.is_delivered(key):
            whole = cand
            break
        if self.security is not None:
            plain, why = self.security.check(cand, now)
            if plain is None:
                reason = f"refused by the security policy ({why!r})"
                continue
            cand = plain
        whole = cand
        break
    if whole is None:
        # Fragments that agree on the key but not on their contents (a
        # forged or broken sender): keep waiting, they expire in time.
        actions.append(Event("dropped", group, f"reassembly failed: {reason}"))
        return
    key = whole.bundle_key
    entries = [fe for _, fe in frags]
    del self._groups[group]
    # The copies that lost are of a bundle now whole here: duplicates.
    for fe in entries:
        self._remove(fe)
    if key in self._entries or self.store.is_delivered(key):
        self.counters["duplicates"] += 1
        actions.append(Event("duplicate", key, "reassembled again"))
        return
    # Stored from its parts (the payload not joined into a copy of the
    # bundle) and kept decoded: its delivery reads nothing back.
    data = encode_bundle_parts(whole)
    p = whole.primary
    # force: the whole bundle replaces fragments already accepted.
    self._store_new(
        key,
        data,
        destination=str(p.destination),
        dest_node=self._dest_of(p.destination),
        expiry_ms=max(fe.expiry_ms for fe in entries),
        state=BundleState.DELIVERING,
        received_ms=now,
        prev_node=None,
        flags=int(p.flags),
        force=True,
        bundle=whole,
    )
    self.counters["reassembled"] += 1
    actions.append(Event("reassembled", key, f"from {len(frags)} fragments"))
    self._hand_over(key, actions, now)


def recover_fragment(self: Agent, e: Entry, now: int, actions: list[Action]) -> None:
    data = self._load(e.key, actions, now)
    if data is None:
        return
    try:
        b = decode_bundle_untrusted(data)
    except DecodeError as exc:
        self._corrupt(e, exc, actions)
        return
    p = b.primary
    if p.fragment_offset is None or p.total_adu_length is None:
        self._corrupt(e, DecodeError("stored fragment is not a fragment"), actions)
        return
    e.frag_group = b.original_key
    e.frag_range = (p.fragment_offset, len(b.payload), p.total_adu_length)
    self._add_fragment(e, now, actions)
