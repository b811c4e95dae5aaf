"""The log service (service 17): Raft-style commit over bundles with
Bayou-style tentative entries, and the key-value state store on top.

Theory of operation
-------------------
*Entries.* Any node appends an operation at once (:meth:`LogService.submit`)
as an :class:`~dcis.consensus.log.wire.Entry` of its own: origin = this node, the
next sequence number, a hybrid logical clock reading and, as causal parents,
the newest uncommitted entry it holds of every other origin. The entry is
written to ``ctx.state`` before ``submit`` returns, and gossiped (version
vector anti-entropy, :class:`~dcis.consensus.log.wire.Gossip`) to every member
this node can reach, so it is shared within a partition at once.

*Commit.* A Raft leader, elected by a majority of the voter configuration
(pre-vote first, see :mod:`dcis.consensus.log.roles`), appends the tentative
entries it knows to the replicated log in tentative order, each only after
its origin predecessor and its parents; a record commits once a majority of
voters hold it durably (Raft's rule, current-term records only). Every node
folds committed records through :class:`~dcis.consensus.log.kv.KvState`, which
skips an entry already applied and turns a failed precondition into a
deterministic ``rejected`` record. A minority partition cannot elect, so it
keeps its entries tentative; when it heals, gossip carries them to the
leader, which commits them in one order, exactly once each.

*Durability.* ``ctx.state`` holds ``meta`` (term, vote), ``log/<index>``
records, ``snap`` (the compacted prefix), ``commit``, ``tent/<o>/<s>``
tentative entries and ``own`` (sequence and clock). Every reply that
acknowledges something (a vote, an append) is returned by the same call that
wrote it, so it leaves in the same store transaction: persisted before it is
acknowledged.

*Timeouts from the contact plan.* The election timeout is the base timeout
plus twice the worst one-way light time to a voter, plus half a base per
voter the plan gives no path to within the coming window (so the best
connected node times out first and tends to lead), plus seeded jitter. A
follower whose leader the plan says is out of contact, with the next contact
no later than ``max_gap_ms`` away, waits for that contact instead of calling
an election.

*Configuration.* The voters are the last configuration record in the log
(the boot set, from membership's view at the first start, before any). The
leader moves the configuration toward membership's view (members neither
dead nor left nor revoked) one server at a time, starting a change only once
the previous one committed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from dcis.consensus.log.api import (
    CompareAndSet,
    Delete,
    EntryId,
    Increment,
    Level,
    Op,
    Outcome,
    Put,
    SetAdd,
    SetRemove,
)
from dcis.consensus.log.cbor import Value, dumps, loads_untrusted
from dcis.consensus.log.kv import KvState, decode_kv_untrusted
from dcis.consensus.log.roles import Role, RoleEvent, next_role
from dcis.consensus.log.wire import (
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    Append,
    AppendReply,
    ClientKind,
    ClientReply,
    ClientRequest,
    Entry,
    Gossip,
    Hlc,
    Message,
    Record,
    RecordKind,
    Snapshot,
    VoteReply,
    VoteRequest,
    _bytes,
    _int,
    _list,
    decode_entry_untrusted,
    decode_message_untrusted,
    decode_record_untrusted,
    encode_entry,
    encode_message,
    encode_record,
    signed_part,
)
from dcis.consensus.membership.view import MembershipView, MemberState
from dcis.crypto.certificate import (
    NodeCertificate,
    decode_certificate_untrusted,
    encode_certificate,
    verify_certificate,
)
from dcis.crypto.errors import CryptoError
from dcis.crypto.keys import verify_signature
from dcis.dtn.errors import DecodeError, InvalidArgument
from dcis.dtn.node.service import (
    Inbound,
    NodeCredentials,
    Send,
    ServiceContext,
    ServiceState,
)

log = logging.getLogger(__name__)

SERVICE_NUMBER = 17
"""The log's service number: it serves ``ipn:<node>.17``."""


class LogError(InvalidArgument):
    """A local caller's request the log refuses (bad op, tentative set full)."""


class LogCorrupt(DecodeError):
    """The log's durable state does not decode (raised by ``start``: the
    node must not take part with a damaged Raft log)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LogParams:
    """Tunables, all DTN milliseconds or counts."""

    heartbeat_ms: int = 500
    election_ms: int = 2_000
    gossip_ms: int = 1_000
    max_gap_ms: int = 600_000
    window_ms: int = 60_000
    snapshot_every: int = 256
    max_batch: int = 64
    max_tentative: int = 100_000
    max_voters: int = 7
    boot_voters: tuple[int, ...] = ()
    """The first voter configuration; empty: from the view or the plan (see
    ``LogService._boot_voters``). Every node must start with the same one."""
    """At most this many members vote; the others follow the log as learners."""
    fanout: int = 4
    """Gossip goes to the leader and this many other members drawn at random
    each round (all of them in a small cluster)."""
    lifetime_ms: int = 3_600_000
    max_inflight: int = 4
    """Appends a new proposal may have in flight to one voter before it
    waits: beyond this, what is new goes with the next one that voter's
    replies release (one append of up to ``max_batch`` records per reply), so
    a stream of single submits is replicated in batches, not an append per
    entry per voter. Heartbeats and replies are not held back."""


def _eid(node: int) -> str:
    return f"ipn:{node}.{SERVICE_NUMBER}"


def _source_node(source: str) -> tuple[int, int] | None:
    if not source.startswith("ipn:"):
        return None
    try:
        node, svc = source[4:].split(".", 1)
        return int(node), int(svc)
    except ValueError:
        return None


def validate_op(op: Op) -> None:
    """Raise :class:`LogError` for an op the wire format cannot carry."""
    if not isinstance(
        op, Put | Delete | CompareAndSet | Increment | SetAdd | SetRemove
    ):
        raise LogError(f"not a log operation: {op!r}")
    if len(op.key) > MAX_KEY_BYTES:
        raise LogError(f"key longer than {MAX_KEY_BYTES}")
    if isinstance(op, Put) and len(op.value) > MAX_VALUE_BYTES:
        raise LogError(f"value longer than {MAX_VALUE_BYTES}")
    if isinstance(op, CompareAndSet):
        for v in (op.expected, op.value):
            if v is not None and len(v) > MAX_VALUE_BYTES:
                raise LogError(f"value longer than {MAX_VALUE_BYTES}")
    if isinstance(op, SetAdd | SetRemove) and (
        b"\n" in op.member or len(op.member) > MAX_KEY_BYTES
    ):
        raise LogError("set member holds a newline or is too long")


class LogService:
    """The partition-tolerant log and key-value store of one node; a
    :class:`~dcis.dtn.node.service.Service` and a
    :class:`~dcis.consensus.log.api.KeyValueLog`."""

    service = SERVICE_NUMBER

    def __init__(self, view: MembershipView, params: LogParams | None = None) -> None:
        self.view = view
        self.params = params or LogParams()
        self.ctx: ServiceContext | None = None
        self.node = 0
        self.role = Role.FOLLOWER
        self.term = 0
        self.voted_for: int | None = None
        self.leader: int | None = None
        self.log: list[Record] = []
        self.snap_index = 0
        self.snap_term = 0
        self.snap_voters: tuple[int, ...] = ()
        self.snap_blob = b""
        self.commit_index = 0
        self.applied_index = 0
        self.kv = KvState()
        self.tentative: dict[EntryId, Entry] = {}
        self.own_seq = 0
        self.hlc = Hlc(0)
        self._voters: tuple[int, ...] = ()
        self._votes: set[int] = set()
        self._next: dict[int, int] = {}
        self._match: dict[int, int] = {}
        self._inflight: dict[int, int] = {}  # appends sent, not yet answered
        self._acked_ms: dict[int, int] = {}
        self._progress_ms: dict[int, int] = {}
        self._append_cache: dict[tuple[int, int, int], bytes] = {}
        self._peer_vv: dict[int, dict[int, int]] = {}
        self._election_at = 0
        self._heartbeat_at = 0
        self._gossip_at = 0
        self._quorum_check_at = 0
        self._leader_heard_ms = -(10**15)
        self._urgent = False
        self._outbox: list[Send] = []
        self._view_cache: dict[str, bytes] | None = None
        self._sorted_cache: list[Entry] | None = None
        self._timeout_cache: tuple[int, int] = (-1, 0)
        self._certs: dict[int, NodeCertificate] = {}
        self.dropped = 0
        """Messages dropped as malformed or from non-members (a counter for tests and status)."""

    # -- lifecycle -----------------------------------------------------------

    def start(self, ctx: ServiceContext, now_ms: int) -> list[Send]:
        """Load the durable state and arm the timers."""
        self.ctx = ctx
        self.node = ctx.node
        st = ctx.state
        if ctx.credentials is not None:
            self._certs[self.node] = ctx.credentials.certificate
        try:
            self._load(st)
        except (DecodeError, ValueError) as exc:
            raise LogCorrupt(
                f"log state of node {self.node} is damaged: {exc}"
            ) from exc
        self.own_seq = max(
            [self.own_seq, self.kv.applied.get(self.node, 0)]
            + [e.seq for e in self.tentative.values() if e.origin == self.node]
        )
        self._recompute_voters()
        commit = st.get("commit")
        if commit is not None:
            self._advance_commit(
                min(
                    _int(loads_untrusted(commit, "log commit"), "commit"),
                    self.last_index,
                )
            )
        self.hlc = self.hlc.tick(now_ms)
        self._reset_election(now_ms)
        self._gossip_at = now_ms
        return []

    def _load(self, st: ServiceState) -> None:
        """Read meta, boot voters, snapshot, log records, tentative entries
        and own sequence; DecodeError on damaged records (a damaged
        tentative entry is dropped and logged instead)."""
        meta = st.get("meta")
        if meta is not None:
            m = _list(loads_untrusted(meta, "log meta"), 2, "meta")
            self.term = _int(m[0], "term")
            self.voted_for = None if m[1] is None else _int(m[1], "voted for")
        boot = st.get("boot")
        if boot is None:
            voters = self._boot_voters()
            st.put("boot", dumps(list(voters)))
            self.snap_voters = voters
        else:
            b = _list(loads_untrusted(boot, "log boot"), None, "boot")
            self.snap_voters = tuple(_int(x, "voter") for x in b)
        snap = st.get("snap")
        if snap is not None:
            sv = _list(loads_untrusted(snap, "log snapshot"), 4, "snapshot")
            self.snap_index, self.snap_term = _int(sv[0], "index"), _int(sv[1], "term")
            self.snap_voters = tuple(
                _int(x, "voter") for x in _list(sv[2], None, "voters")
            )
            self.snap_blob = _bytes(sv[3], "state", 1 << 30)
            self.kv = decode_kv_untrusted(self.snap_blob)
        for key in sorted(st.keys("log/")):
            raw = st.get(key)
            if raw is not None and int(key[4:]) > self.snap_index:
                self.log.append(decode_record_untrusted(raw))
        self.commit_index = self.applied_index = self.snap_index
        for key in st.keys("tent/"):
            raw = st.get(key)
            if raw is None:
                continue
            try:
                e = decode_entry_untrusted(raw)
            except DecodeError as exc:
                log.warning("log: dropped damaged tentative entry %s: %s", key, exc)
                st.delete(key)
                continue
            self.tentative[e.id] = e
        own = st.get("own")
        if own is not None:
            o = _list(loads_untrusted(own, "log own"), 3, "own")
            self.own_seq = _int(o[0], "seq")
            self.hlc = Hlc(_int(o[1], "hlc ms"), _int(o[2], "hlc count"))

    def stop(self) -> None:
        """Nothing to flush: every write went to ``ctx.state`` in its call."""

    # -- KeyValueLog ---------------------------------------------------------

    def submit(self, op: Op, now_ms: int) -> EntryId:
        """Append ``op`` as this node's next tentative entry (durable when this
        returns); gossip and proposal follow at the next ``on_tick``.
        Raises :class:`LogError` for a bad op or a full tentative set."""
        validate_op(op)
        if len(self.tentative) >= self.params.max_tentative:
            raise LogError(f"tentative set full ({self.params.max_tentative} entries)")
        st = self._state()
        self.own_seq += 1
        self.hlc = self.hlc.tick(now_ms)
        newest: dict[int, int] = {}
        for e in self.tentative.values():
            if e.origin != self.node and e.seq > newest.get(e.origin, 0):
                newest[e.origin] = e.seq
        entry = Entry(
            origin=self.node,
            seq=self.own_seq,
            hlc=self.hlc,
            op=op,
            parents=tuple(EntryId(o, s) for o, s in sorted(newest.items())),
        )
        creds = self.ctx.credentials if self.ctx is not None else None
        if creds is not None:
            entry = Entry(
                origin=entry.origin,
                seq=entry.seq,
                hlc=entry.hlc,
                op=entry.op,
                parents=entry.parents,
                sig=creds.identity.sign(signed_part(entry)),
            )
        self._store_tentative(entry)
        st.put("own", dumps([self.own_seq, self.hlc.ms, self.hlc.count]))
        self._urgent = True
        return entry.id

    def get(self, key: str, level: Level = Level.COMMITTED) -> bytes | None:
        """The value of ``key`` at ``level``, or None."""
        return self._values(level).get(key)

    def scan(
        self, prefix: str, level: Level = Level.COMMITTED
    ) -> Iterator[tuple[str, bytes]]:
        """Every (key, value) whose key starts with ``prefix``, in key order."""
        values = self._values(level)
        for k in sorted(k for k in values if k.startswith(prefix)):
            yield k, values[k]

    def outcome(self, entry: EntryId) -> Outcome | None:
        """COMMITTED or REJECTED once decided; None while tentative."""
        return self.kv.outcome(entry)

    def rejection(self, entry: EntryId) -> str | None:
        """Why ``entry`` was rejected (the deterministic record), or None."""
        return self.kv.rejected.get(entry)

    def tentative_order(self) -> list[EntryId]:
        """The uncommitted entries this node knows, in tentative order."""
        return [e.id for e in self._tentative_sorted()]

    def state_hash(self) -> str:
        """SHA-256 of the committed state (equal on nodes with equal commits)."""
        return self.kv.state_hash()

    def voters(self) -> tuple[int, ...]:
        """The voter configuration in effect (latest in the log)."""
        return self._voters

    def status(self) -> dict[str, Value]:
        """What ``dcis log status`` prints."""
        return {
            "node": self.node,
            "role": str(self.role),
            "term": self.term,
            "leader": self.leader,
            "commit_index": self.commit_index,
            "last_index": self.last_index,
            "tentative_count": len(self.tentative),
            "members": list(self._voters),
            "state_hash": self.state_hash(),
        }

    def record_at(self, index: int) -> Record | None:
        """The log record at ``index``; None if compacted or beyond the end."""
        if index <= self.snap_index or index > self.last_index:
            return None
        return self.log[index - self.snap_index - 1]

    @property
    def last_index(self) -> int:
        """Index of the last record (compacted or not)."""
        return self.snap_index + len(self.log)

    # -- Service inputs ------------------------------------------------------

    def on_bundle(self, inbound: Inbound, now_ms: int) -> list[Send]:
        """Handle one log message or client request; drops bad ones."""
        src = _source_node(inbound.source)
        if src is None:
            self.dropped += 1
            log.info("log: dropped a bundle from %r: not an ipn EID", inbound.source)
            return []
        try:
            msg = decode_message_untrusted(inbound.payload)
        except DecodeError as exc:
            self.dropped += 1
            log.info("log: dropped a bundle from %s: %s", inbound.source, exc)
            return []
        node, svc = src
        if isinstance(msg, ClientRequest):
            return self._client(msg, inbound.source, now_ms)
        if svc != SERVICE_NUMBER or node == self.node or not self._is_member(node):
            self.dropped += 1
            log.info(
                "log: dropped a %s from %s: not a member's log",
                type(msg).__name__,
                inbound.source,
            )
            return []
        out = self._dispatch(msg, node, now_ms)
        return self._flush(out)

    def on_send_result(
        self, tag: int, bundle_key: str | None, error: str | None, now_ms: int
    ) -> list[Send]:
        """Nothing to do: lost messages are retried by the timers."""
        return []

    def on_contact(self, neighbor: int, up: bool, now_ms: int) -> list[Send]:
        """A contact opening: gossip (and heartbeat, as leader) at once."""
        if up:
            self._gossip_at = min(self._gossip_at, now_ms)
            if self.role == Role.LEADER:
                self._heartbeat_at = min(self._heartbeat_at, now_ms)
        return []

    def on_tick(self, now_ms: int) -> list[Send]:
        """Run whatever timers are due."""
        out: list[Send] = []
        if self.role == Role.LEADER and now_ms >= self._quorum_check_at:
            self._check_quorum(now_ms)
        if self.role == Role.LEADER:
            out += self._propose(now_ms)
            if now_ms >= self._heartbeat_at:
                out += self._heartbeat(now_ms)
        elif now_ms >= self._election_at:
            out += self._election_timeout(now_ms)
        if now_ms >= self._gossip_at or (self._urgent and self.role != Role.LEADER):
            # A leader's urgency is a proposal (above), not a gossip round.
            out += self._gossip(now_ms)
        self._urgent = False
        return self._flush(out)

    def next_deadline(self) -> int | None:
        """The earliest time ``on_tick`` has something to do."""
        if self._urgent or self._outbox:
            return 0
        times = [self._gossip_at]
        if self.role == Role.LEADER:
            times += [self._heartbeat_at, self._quorum_check_at]
        elif self.node in self._voters:
            times.append(self._election_at)
        return min(times)

    # -- helpers -------------------------------------------------------------

    def _state(self) -> ServiceState:
        if self.ctx is None:
            raise LogError("log service not started")
        return self.ctx.state

    def _flush(self, out: list[Send]) -> list[Send]:
        self._append_cache.clear()  # valid within one call only
        if self._outbox:
            out = self._outbox + out
            self._outbox = []
        return out

    def _send(self, node: int, msg: Message) -> Send:
        return Send(
            _eid(node), encode_message(msg), lifetime_ms=self.params.lifetime_ms
        )

    def _is_member(self, node: int) -> bool:
        if node in self._voters:
            return True
        info = self.view.members().get(node)
        if info is None or info.state in (MemberState.DEAD, MemberState.LEFT):
            return False
        creds = self.ctx.credentials if self.ctx is not None else None
        return not (creds is not None and node in creds.revoked)

    def _desired_voters(self) -> tuple[int, ...]:
        """Where the leader moves the configuration: the current voters less
        those membership says are dead or left (or that are revoked), then
        eligible members not yet voting, by node number, up to
        ``max_voters``. A voter membership has not heard of yet stays."""
        creds = self.ctx.credentials if self.ctx is not None else None
        revoked = creds.revoked if creds is not None else frozenset()
        members = self.view.members()
        gone = (MemberState.DEAD, MemberState.LEFT)

        def out(n: int) -> bool:
            info = members.get(n)
            return n in revoked or (info is not None and info.state in gone)

        keep = [n for n in self._voters if not out(n)]
        new = sorted(
            n
            for n, info in members.items()
            if info.state not in gone and not out(n) and n not in self._voters
        )
        return tuple(sorted((keep + new)[: max(self.params.max_voters, len(keep))]))

    def _boot_voters(self) -> tuple[int, ...]:
        """The first configuration, the same on every node: ``boot_voters``
        if set, else the members in membership's view when it knows more than
        this node, else the contact plan's nodes, else this node alone."""
        if self.params.boot_voters:
            return tuple(sorted(self.params.boot_voters))
        view = self._desired_voters()
        if len(view) > 1:
            return view
        plan_nodes = sorted(self.ctx.plan.nodes) if self.ctx is not None else []
        if len(plan_nodes) > 1:
            return tuple(plan_nodes[: self.params.max_voters])
        return (self.node,)

    def _majority(self) -> int:
        return len(self._voters) // 2 + 1

    def _peers(self) -> list[int]:
        peers = set(self._voters) | set(self.view.live())
        peers.discard(self.node)
        return sorted(peers)

    def _persist_meta(self) -> None:
        self._state().put("meta", dumps([self.term, self.voted_for]))

    def _set_role(self, event: RoleEvent) -> bool:
        new = next_role(self.role, event)
        if new is None:
            return False
        self.role = new
        return True

    def _adopt_term(self, term: int, now_ms: int) -> None:
        if term > self.term:
            self.term = term
            self.voted_for = None
            self._persist_meta()
            if self._set_role(RoleEvent.HIGHER_TERM):
                self.leader = None
                self._reset_election(now_ms)

    def term_at(self, index: int) -> int | None:
        """The term of the record at ``index`` (the snapshot's at its last
        index), None if unknown."""
        if index == self.snap_index:
            return self.snap_term
        rec = self.record_at(index)
        return None if rec is None else rec.term

    def _recompute_voters(self) -> None:
        for rec in reversed(self.log):
            if rec.kind == RecordKind.CONFIG:
                self._voters = rec.voters
                return
        self._voters = self.snap_voters

    def _append(self, rec: Record) -> None:
        self.log.append(rec)
        self._state().put(f"log/{self.last_index:012d}", encode_record(rec))
        if rec.kind == RecordKind.CONFIG:
            self._voters = rec.voters

    def _truncate_from(self, index: int) -> None:
        st = self._state()
        for i in range(index, self.last_index + 1):
            st.delete(f"log/{i:012d}")
        del self.log[index - self.snap_index - 1 :]
        self._recompute_voters()

    def _store_tentative(self, entry: Entry) -> None:
        self.tentative[entry.id] = entry
        self._state().put(f"tent/{entry.origin}/{entry.seq}", encode_entry(entry))
        self._view_cache = self._sorted_cache = None

    def _tentative_sorted(self) -> list[Entry]:
        if self._sorted_cache is None:
            self._sorted_cache = sorted(
                self.tentative.values(), key=lambda e: e.order_key
            )
        return self._sorted_cache

    def _values(self, level: Level) -> dict[str, bytes]:
        if level == Level.COMMITTED:
            return self.kv.values
        if self._view_cache is None:
            self._view_cache = self.kv.view(self._tentative_sorted())
        return self._view_cache

    def _timeout(self, now_ms: int) -> int:
        """The election timeout, from the plan (cached per base period)."""
        p = self.params
        bucket = now_ms // p.election_ms
        if self._timeout_cache[0] == bucket:
            return self._timeout_cache[1]
        worst = 0
        unreachable = 0
        if self.ctx is not None:
            for peer in self._voters:
                if peer == self.node:
                    continue
                at = self.ctx.earliest_arrival(peer, at_ms=now_ms)
                if at is None or at - now_ms > p.window_ms:
                    unreachable += 1
                else:
                    worst = max(worst, at - now_ms)
        timeout = p.election_ms + 2 * worst + unreachable * p.election_ms // 2
        self._timeout_cache = (bucket, timeout)
        return timeout

    def _reset_election(self, now_ms: int) -> None:
        jitter = (
            self.ctx.rng.randrange(self.params.election_ms)
            if self.ctx is not None
            else 0
        )
        self._election_at = now_ms + self._timeout(now_ms) + jitter

    # -- elections -----------------------------------------------------------

    def _election_timeout(self, now_ms: int) -> list[Send]:
        if self.node not in self._voters:
            self._reset_election(now_ms)
            return []
        if (
            self.role == Role.FOLLOWER
            and self.leader is not None
            and self.ctx is not None
        ):
            # A silence the plan predicts is waited out, not treated as a crash.
            at = self.ctx.earliest_arrival(self.leader, at_ms=now_ms)
            if (
                at is not None
                and self.params.election_ms < at - now_ms <= self.params.max_gap_ms
            ):
                self._election_at = at + self._timeout(now_ms)
                return []
        self._set_role(RoleEvent.ELECTION_TIMEOUT)
        self.leader = None
        self._votes = {self.node}
        self._reset_election(now_ms)
        if len(self._votes) >= self._majority():
            return self._become_candidate(now_ms)
        req = VoteRequest(
            pre=True,
            term=self.term + 1,
            last_index=self.last_index,
            last_term=self.term_at(self.last_index) or 0,
        )
        return [self._send(p, req) for p in self._voters if p != self.node]

    def _become_candidate(self, now_ms: int) -> list[Send]:
        self._set_role(RoleEvent.PRE_VOTE_QUORUM)
        self.term += 1
        self.voted_for = self.node
        self._persist_meta()
        self._votes = {self.node}
        self._reset_election(now_ms)
        if len(self._votes) >= self._majority():
            return self._become_leader(now_ms)
        req = VoteRequest(
            pre=False,
            term=self.term,
            last_index=self.last_index,
            last_term=self.term_at(self.last_index) or 0,
        )
        return [self._send(p, req) for p in self._voters if p != self.node]

    def _become_leader(self, now_ms: int) -> list[Send]:
        self._set_role(RoleEvent.VOTE_QUORUM)
        self.leader = self.node
        self._inflight.clear()
        for p in self._peers():
            self._next[p] = self.last_index + 1
            self._match[p] = 0
            self._acked_ms[p] = now_ms
            self._progress_ms[p] = now_ms
        self._append(Record(term=self.term, kind=RecordKind.NOOP))
        self._quorum_check_at = now_ms + 2 * self._timeout(now_ms)
        self._leader_commit()
        return self._propose(now_ms) + self._heartbeat(now_ms)

    def _up_to_date(self, last_index: int, last_term: int) -> bool:
        mine = self.term_at(self.last_index) or 0
        return (last_term, last_index) >= (mine, self.last_index)

    def _on_vote_request(self, msg: VoteRequest, frm: int, now_ms: int) -> list[Send]:
        if msg.pre:
            heard_recently = now_ms - self._leader_heard_ms < self.params.election_ms
            granted = (
                msg.term > self.term
                and self._up_to_date(msg.last_index, msg.last_term)
                and not (heard_recently or self.role == Role.LEADER)
            )
            return [
                self._send(
                    frm,
                    VoteReply(
                        pre=True,
                        term=msg.term if granted else self.term,
                        granted=granted,
                    ),
                )
            ]
        self._adopt_term(msg.term, now_ms)
        granted = (
            msg.term == self.term
            and self.voted_for in (None, frm)
            and self._up_to_date(msg.last_index, msg.last_term)
        )
        if granted:
            self.voted_for = frm
            self._persist_meta()
            self._reset_election(now_ms)
        return [self._send(frm, VoteReply(pre=False, term=self.term, granted=granted))]

    def _on_vote_reply(self, msg: VoteReply, frm: int, now_ms: int) -> list[Send]:
        if msg.pre:
            if self.role != Role.PRE_CANDIDATE:
                return []
            if not msg.granted:
                if msg.term > self.term:
                    self._adopt_term(msg.term, now_ms)
                return []
            if msg.term != self.term + 1 or frm not in self._voters:
                return []
            self._votes.add(frm)
            if len(self._votes & set(self._voters)) >= self._majority():
                return self._become_candidate(now_ms)
            return []
        if msg.term > self.term:
            self._adopt_term(msg.term, now_ms)
            return []
        if self.role != Role.CANDIDATE or msg.term != self.term or not msg.granted:
            return []
        self._votes.add(frm)
        if len(self._votes & set(self._voters)) >= self._majority():
            return self._become_leader(now_ms)
        return []

    # -- replication ---------------------------------------------------------

    def _leader_heard(self, term: int, frm: int, now_ms: int) -> None:
        self._adopt_term(term, now_ms)
        self._set_role(RoleEvent.LEADER_HEARD)
        self.leader = frm
        self._leader_heard_ms = now_ms
        self._reset_election(now_ms)

    def _on_append(self, msg: Append, frm: int, now_ms: int) -> list[Send]:
        if msg.term < self.term:
            return [
                self._send(
                    frm,
                    AppendReply(term=self.term, success=False, match=self.last_index),
                )
            ]
        self._leader_heard(msg.term, frm, now_ms)
        prev, records = msg.prev_index, list(msg.records)
        if prev < self.snap_index:
            skip = min(self.snap_index - prev, len(records))
            if prev + len(records) <= self.snap_index:
                return [
                    self._send(
                        frm,
                        AppendReply(
                            term=self.term, success=True, match=prev + len(records)
                        ),
                    )
                ]
            records = records[skip:]
            prev = self.snap_index
        elif self.term_at(prev) != msg.prev_term:
            hint = self.last_index if prev > self.last_index else prev - 1
            return [
                self._send(
                    frm,
                    AppendReply(
                        term=self.term,
                        success=False,
                        match=max(hint, self.commit_index),
                    ),
                )
            ]
        for k, rec in enumerate(records):
            idx = prev + 1 + k
            if idx <= self.last_index:
                if self.term_at(idx) == rec.term:
                    continue
                if idx <= self.commit_index:  # never rewrite the committed prefix
                    log.error(
                        "log: leader %d sent a conflicting committed record at %d",
                        frm,
                        idx,
                    )
                    return []
                self._truncate_from(idx)
            self._append(rec)
        match = prev + len(records)
        self._advance_commit(min(msg.commit, match))
        return [self._send(frm, AppendReply(term=self.term, success=True, match=match))]

    def _on_append_reply(self, msg: AppendReply, frm: int, now_ms: int) -> list[Send]:
        if msg.term > self.term:
            self._adopt_term(msg.term, now_ms)
            return []
        if self.role != Role.LEADER or msg.term != self.term:
            return []
        self._acked_ms[frm] = now_ms
        self._inflight[frm] = max(0, self._inflight.get(frm, 0) - 1)
        if msg.success:
            if msg.match > self.last_index:
                return []
            if msg.match > self._match.get(frm, 0):
                self._progress_ms[frm] = now_ms
            self._match[frm] = max(self._match.get(frm, 0), msg.match)
            self._next[frm] = max(self._next.get(frm, 1), self._match[frm] + 1)
            self._leader_commit()
        else:
            self._next[frm] = max(1, min(self._next.get(frm, 1) - 1, msg.match + 1))
        if self._next[frm] <= self.last_index:
            return [self._replicate(frm)]
        return []

    def _replicate(self, peer: int) -> Send:
        nxt = self._next.get(peer, self.last_index + 1)
        if nxt <= self.snap_index:
            self._next[peer] = self.snap_index + 1
            return self._send(
                peer,
                Snapshot(
                    term=self.term,
                    last_index=self.snap_index,
                    last_term=self.snap_term,
                    voters=self.snap_voters,
                    state=self.snap_blob,
                ),
            )
        prev = nxt - 1
        records = tuple(
            self.log[
                prev - self.snap_index : prev - self.snap_index + self.params.max_batch
            ]
        )
        self._next[peer] = (
            prev + len(records) + 1
        )  # pipelined: the next send goes on from here
        # Peers at the same ``next`` get the same bytes: encoded once per call.
        key = (prev, len(records), self.commit_index)
        payload = self._append_cache.get(key)
        if payload is None:
            payload = encode_message(
                Append(
                    term=self.term,
                    prev_index=prev,
                    prev_term=self.term_at(prev) or 0,
                    records=records,
                    commit=self.commit_index,
                )
            )
            self._append_cache[key] = payload
        self._inflight[peer] = self._inflight.get(peer, 0) + 1
        return Send(_eid(peer), payload, lifetime_ms=self.params.lifetime_ms)

    def _heartbeat(self, now_ms: int) -> list[Send]:
        self._heartbeat_at = now_ms + self.params.heartbeat_ms
        out = []
        for p in self._peers():
            if p not in self._voters and not self._is_member(p):
                continue
            match = self._match.get(p, 0)
            if self._next.get(p, 1) <= match + 1:
                self._progress_ms[p] = now_ms  # nothing in flight
                self._inflight[p] = 0
            elif (
                now_ms - self._progress_ms.setdefault(p, now_ms)
                > self.params.election_ms
            ):
                # Nothing acknowledged for a base election timeout: resend
                # whatever is unacknowledged. Before that the pipeline is
                # left alone: the heartbeat goes at ``next``, and a lost
                # Append shows as a failed one, which backs ``next`` up.
                self._next[p] = match + 1
                self._progress_ms[p] = now_ms
                self._inflight[p] = 0
            out.append(self._replicate(p))
        return out

    def _check_quorum(self, now_ms: int) -> None:
        timeout = 2 * self._timeout(now_ms)
        self._quorum_check_at = now_ms + timeout
        heard = {
            p
            for p in self._voters
            if p == self.node or now_ms - self._acked_ms.get(p, -(10**15)) <= timeout
        }
        if len(heard) < self._majority() and self._set_role(RoleEvent.QUORUM_LOST):
            self.leader = None
            self._reset_election(now_ms)

    def _leader_commit(self) -> None:
        for n in range(self.last_index, self.commit_index, -1):
            if self.term_at(n) != self.term:
                break
            count = sum(
                1
                for v in self._voters
                if (self.last_index if v == self.node else self._match.get(v, 0)) >= n
            )
            if count >= self._majority():
                self._advance_commit(n)
                break

    def _advance_commit(self, index: int) -> None:
        if index <= self.commit_index:
            return
        self.commit_index = index
        self._state().put("commit", dumps(index))
        st = self._state()
        while self.applied_index < self.commit_index:
            self.applied_index += 1
            rec = self.record_at(self.applied_index)
            if rec is None or rec.kind != RecordKind.ENTRY or rec.entry is None:
                continue
            o = rec.entry.origin
            before = self.kv.applied.get(o, 0)
            self.kv.apply(rec.entry)
            # The committed values changed, so the tentative view built on
            # them is stale -- also when this node never held the entry as
            # tentative (it came by AppendEntries before its gossip did).
            self._view_cache = None
            for seq in range(before + 1, self.kv.applied.get(o, 0) + 1):
                if self.tentative.pop(EntryId(o, seq), None) is not None:
                    st.delete(f"tent/{o}/{seq}")
                    self._sorted_cache = None
        if (
            self.role == Role.LEADER
            and self.node not in self._voters
            and self._committed_config()
        ):
            self._set_role(RoleEvent.REMOVED)
            self.leader = None
        if self.applied_index - self.snap_index >= self.params.snapshot_every:
            self._compact()

    def _committed_config(self) -> bool:
        return all(
            rec.kind != RecordKind.CONFIG
            for rec in self.log[self.commit_index - self.snap_index :]
        )

    def _compact(self) -> None:
        st = self._state()
        upto = self.applied_index
        voters = self.snap_voters
        for rec in self.log[: upto - self.snap_index]:
            if rec.kind == RecordKind.CONFIG:
                voters = rec.voters
        term = self.term_at(upto) or 0
        self.snap_blob = self.kv.encode()
        st.put("snap", dumps([upto, term, list(voters), self.snap_blob]))
        for i in range(self.snap_index + 1, upto + 1):
            st.delete(f"log/{i:012d}")
        self.log = self.log[upto - self.snap_index :]
        self.snap_index, self.snap_term, self.snap_voters = upto, term, voters

    def _on_snapshot(self, msg: Snapshot, frm: int, now_ms: int) -> list[Send]:
        if msg.term < self.term:
            return [
                self._send(
                    frm,
                    AppendReply(term=self.term, success=False, match=self.last_index),
                )
            ]
        self._leader_heard(msg.term, frm, now_ms)
        if msg.last_index <= self.commit_index:
            return [
                self._send(
                    frm, AppendReply(term=self.term, success=True, match=msg.last_index)
                )
            ]
        try:
            kv = decode_kv_untrusted(msg.state)
        except DecodeError as exc:
            self.dropped += 1
            log.info("log: dropped a snapshot from %d: %s", frm, exc)
            return []
        st = self._state()
        if self.term_at(msg.last_index) == msg.last_term:
            keep = self.log[msg.last_index - self.snap_index :]
        else:
            keep = []
        for i in range(self.snap_index + 1, self.last_index + 1):
            st.delete(f"log/{i:012d}")
        self.snap_index, self.snap_term, self.snap_voters = (
            msg.last_index,
            msg.last_term,
            msg.voters,
        )
        self.snap_blob = msg.state
        st.put(
            "snap", dumps([msg.last_index, msg.last_term, list(msg.voters), msg.state])
        )
        self.log = []
        for rec in keep:
            self._append(rec)
        self._recompute_voters()
        self.kv = kv
        self.commit_index = self.applied_index = msg.last_index
        st.put("commit", dumps(msg.last_index))
        for eid in [i for i in self.tentative if kv.is_applied(i)]:
            del self.tentative[eid]
            st.delete(f"tent/{eid.origin}/{eid.seq}")
        self._view_cache = self._sorted_cache = None
        return [
            self._send(
                frm, AppendReply(term=self.term, success=True, match=msg.last_index)
            )
        ]

    def _propose(self, now_ms: int) -> list[Send]:
        """As leader: append known tentative entries (origin order and parents
        first) and move the configuration one server toward membership's."""
        appended = False
        if self._committed_config():
            desired = set(self._desired_voters()) | {self.node}
            current = set(self._voters)
            if desired != current:
                add = sorted(desired - current)
                rem = sorted(current - desired)
                new = current | {add[0]} if add else current - {rem[0]}
                self._append(
                    Record(
                        term=self.term,
                        kind=RecordKind.CONFIG,
                        voters=tuple(sorted(new)),
                    )
                )
                for p in self._peers():
                    self._next.setdefault(p, self.last_index)
                    self._acked_ms.setdefault(p, now_ms)
                appended = True
        in_log: set[EntryId] = set()
        for rec in self.log[self.applied_index - self.snap_index :]:
            if rec.entry is not None:
                in_log.add(rec.entry.id)
        room = 4 * self.params.max_batch
        for e in self._tentative_sorted():
            if room <= 0:
                break
            if e.id in in_log or self.kv.is_applied(e.id):
                continue
            deps = list(e.parents)
            if e.seq > 1:
                deps.append(EntryId(e.origin, e.seq - 1))
            if all(d in in_log or self.kv.is_applied(d) for d in deps):
                self._append(Record(term=self.term, kind=RecordKind.ENTRY, entry=e))
                in_log.add(e.id)
                room -= 1
                appended = True
        if not appended:
            return []
        self._leader_commit()
        out = []
        for p in self._peers():
            if p not in self._voters:
                continue
            # Pipelined: everything new goes now, max_batch records a bundle,
            # up to max_inflight appends unanswered; the rest goes when the
            # voter's replies come back (_on_append_reply).
            if self._inflight.get(p, 0) >= self.params.max_inflight:
                continue
            out.append(self._replicate(p))
            while (
                self.snap_index < self._next.get(p, 0) <= self.last_index
                and self._inflight.get(p, 0) < self.params.max_inflight
            ):
                out.append(self._replicate(p))
        return out

    # -- gossip --------------------------------------------------------------

    def version_vector(self) -> dict[int, int]:
        """Per origin, the highest sequence held (committed or tentative) with
        none missing below."""
        vv = dict(self.kv.applied)
        for o in sorted({e.origin for e in self.tentative}):
            s = vv.get(o, 0)
            while EntryId(o, s + 1) in self.tentative:
                s += 1
            vv[o] = s
        return vv

    def _gossip(self, now_ms: int) -> list[Send]:
        self._gossip_at = now_ms + self.params.gossip_ms
        vv = self.version_vector()
        vv_ids = tuple(EntryId(o, s) for o, s in sorted(vv.items()))
        ordered = self._tentative_sorted()
        out = []
        peers = self._peers()
        if len(peers) > self.params.fanout + 1 and self.ctx is not None:
            chosen = set(self.ctx.rng.sample(peers, self.params.fanout))
            if self.leader is not None and self.leader != self.node:
                chosen.add(self.leader)
            peers = sorted(chosen)
        peers = [p for p in peers if self._is_member(p)]
        replicating: set[EntryId] = set()
        if self.role == Role.LEADER:
            # Entries already in the leader's log reach its voters by Append;
            # gossiping them too would send every entry twice. Should this
            # leader fall, they stay tentative here and gossip resumes.
            for rec in self.log[self.commit_index - self.snap_index :]:
                if rec.entry is not None:
                    replicating.add(rec.entry.id)
        encoded: dict[tuple[EntryId, ...], bytes] = {}
        for p in peers:
            theirs = self._peer_vv.get(p, {})
            skip = replicating if p in self._voters else set()
            batch = tuple(
                e
                for e in ordered
                if e.seq > theirs.get(e.origin, 0) and e.id not in skip
            )[: self.params.max_batch]
            # Peers owed the same batch (most often none) share one encoding.
            ids = tuple(e.id for e in batch)
            payload = encoded.get(ids)
            if payload is None:
                payload = encode_message(
                    Gossip(vv=vv_ids, entries=batch, certs=self._certs_for(batch))
                )
                encoded[ids] = payload
            out.append(Send(_eid(p), payload, lifetime_ms=self.params.lifetime_ms))
        return out

    def _certs_for(self, batch: tuple[Entry, ...]) -> tuple[bytes, ...]:
        """Certificates of the batch's origins (none without security)."""
        if self.ctx is None or self.ctx.credentials is None or not batch:
            return ()
        origins = sorted({e.origin for e in batch})
        return tuple(
            encode_certificate(self._certs[o]) for o in origins if o in self._certs
        )

    def _learn_certs(
        self, raws: tuple[bytes, ...], creds: NodeCredentials, now_ms: int
    ) -> None:
        for raw in raws:
            try:
                cert = decode_certificate_untrusted(raw)
                verify_certificate(cert, creds.operator_public, now_ms=now_ms)
            except (CryptoError, DecodeError) as exc:
                self.dropped += 1
                log.info("log: dropped a certificate: %s", exc)
                continue
            if cert.node in creds.revoked:
                continue
            known = self._certs.get(cert.node)
            if known is None or cert.serial > known.serial:
                self._certs[cert.node] = cert

    def _signed_by_origin(self, e: Entry) -> bool:
        """Whether ``e`` carries its origin's valid signature (always true on
        a node without security)."""
        creds = self.ctx.credentials if self.ctx is not None else None
        if creds is None:
            return True
        cert = self._certs.get(e.origin)
        if cert is None or e.origin in creds.revoked:
            return False
        try:
            verify_signature(cert.sign_public, signed_part(e), e.sig)
        except CryptoError:
            return False
        return True

    def _on_gossip(self, msg: Gossip, frm: int, now_ms: int) -> list[Send]:
        theirs = self._peer_vv.setdefault(frm, {})
        for eid in msg.vv:
            if eid.seq > theirs.get(eid.origin, 0):
                theirs[eid.origin] = eid.seq
        creds = self.ctx.credentials if self.ctx is not None else None
        if creds is not None and msg.certs:
            self._learn_certs(msg.certs, creds, now_ms)
        for e in msg.entries:
            if e.id in self.tentative or self.kv.is_applied(e.id):
                continue
            if not self._signed_by_origin(e):
                self.dropped += 1
                log.info(
                    "log: dropped entry %s from %d: not signed by its origin", e.id, frm
                )
                continue
            if len(self.tentative) >= self.params.max_tentative:
                self.dropped += 1
                log.warning(
                    "log: tentative set full; dropped entry %s from %d", e.id, frm
                )
                continue
            self.hlc = self.hlc.merge(e.hlc, now_ms)
            self._store_tentative(e)
            if self.role == Role.LEADER:
                self._urgent = True  # propose at once, not at the next heartbeat
        return []

    # -- dispatch ------------------------------------------------------------

    def _dispatch(self, msg: Message, frm: int, now_ms: int) -> list[Send]:
        if isinstance(msg, VoteRequest):
            return self._on_vote_request(msg, frm, now_ms)
        if isinstance(msg, VoteReply):
            return self._on_vote_reply(msg, frm, now_ms)
        if isinstance(msg, Append):
            return self._on_append(msg, frm, now_ms)
        if isinstance(msg, AppendReply):
            return self._on_append_reply(msg, frm, now_ms)
        if isinstance(msg, Snapshot):
            return self._on_snapshot(msg, frm, now_ms)
        if isinstance(msg, Gossip):
            return self._on_gossip(msg, frm, now_ms)
        self.dropped += 1
        return []

    def _client(self, msg: ClientRequest, source: str, now_ms: int) -> list[Send]:
        reply = self._answer(msg, now_ms)
        return self._flush(
            [Send(source, encode_message(reply), lifetime_ms=self.params.lifetime_ms)]
        )

    def _answer(self, msg: ClientRequest, now_ms: int) -> ClientReply:
        """The reply to one client request (its writes made, not yet durable)."""
        reply: ClientReply
        if msg.kind == ClientKind.APPEND:
            if msg.op is None:
                reply = ClientReply(
                    req_id=msg.req_id, ok=False, error="append without an op"
                )
            else:
                try:
                    eid = self.submit(msg.op, now_ms)
                except LogError as exc:
                    reply = ClientReply(req_id=msg.req_id, ok=False, error=str(exc))
                else:
                    reply = ClientReply(req_id=msg.req_id, ok=True, entry=eid)
        elif msg.kind == ClientKind.GET:
            reply = ClientReply(
                req_id=msg.req_id, ok=True, value=self.get(msg.key, Level(msg.level))
            )
        else:
            reply = ClientReply(
                req_id=msg.req_id, ok=True, status=tuple(self.status().items())
            )
        return reply

    def on_local_requests(
        self, requests: Sequence[bytes], replies: list[bytes], now_ms: int
    ) -> list[Send]:
        """Client requests from an application on this node, without bundles
        (the app API's ``service_request``; see
        :class:`~dcis.dtn.node.service.AnswersLocalRequests`): each encoded
        :class:`ClientRequest` gets its encoded :class:`ClientReply`, in
        order; an undecodable one gets ``ok=False`` with ``req_id`` 0. The
        node's driver answers only once this call's writes are durable, so
        an append's reply still means a durable tentative entry; many
        appends in one call share one transaction and one proposal."""
        out: list[bytes] = []
        for payload in requests:
            try:
                msg = decode_message_untrusted(payload)
            except DecodeError as exc:
                self.dropped += 1
                log.info("log: refused a local request: %s", exc)
                reply = ClientReply(req_id=0, ok=False, error=f"bad request: {exc}")
            else:
                if isinstance(msg, ClientRequest):
                    reply = self._answer(msg, now_ms)
                else:
                    self.dropped += 1
                    reply = ClientReply(
                        req_id=0,
                        ok=False,
                        error=f"{type(msg).__name__} is not a client request",
                    )
            out.append(encode_message(reply))
        replies.extend(out)
        return self._flush([])
