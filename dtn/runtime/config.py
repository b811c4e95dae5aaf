"""Node configuration: ``node.toml`` (TOML, read with :mod:`tomllib`).

Example (every key but ``node`` optional; spec/config.md lists each key with
its type, default and meaning; examples/node1.toml is a commented node)::

    node = 2                          # ipn node number (or eid = "ipn:2.0")
    listen = "127.0.0.1:4556"         # UDP CL address (default 0.0.0.0:4556, IANA's port)
    state_dir = "state/node2"         # default $XDG_STATE_HOME/dcis/node-2 (created 0700)
    app_socket = "/tmp/node2.sock"    # local application API (Unix socket)
    plan = "plan.ionrc"               # contact plan (ionrc or HDTN JSON)
    plan_epoch_unix_s = 1764000000.0  # Unix time of plan time 0 (default: the plan's own
                                      # reference time, else node start -- set it when
                                      # daemons restart and must agree on the plan clock)
    log_level = "info"                # debug | info | warning | error
    mtu_bytes = 65000                 # largest bundle per UDP datagram (bigger ones go in PART
                                      # segments to ack = "on" peers, else are fragmented)
    lifetime_ms = 86400000            # default lifetime of bundles sent through the app API
    mtcp_listen = "127.0.0.1:4224"    # accept MTCP (draft-ietf-dtn-mtcpcl) connections
    tcpcl_listen = "127.0.0.1:4556"   # accept TCPCLv4 (RFC 9174) sessions

    [tcpcl]                           # TCPCLv4 sessions (spec/interop.md)
    keepalive_s = 30
    segment_mru = 1048576             # largest segment we accept
    transfer_mru = 268435456          # largest bundle we accept
    max_sessions = 64                 # passive sessions held at once
    tls_cert = "certs/node2.pem"      # offer TLS with this chain and key (PEM)
    tls_key = "certs/node2.key"
    tls_ca = "certs/ca.pem"           # verify peers against this CA
    require_tls = false

    [dtn_routes]                      # static routes for dtn: destinations (issue 17)
    "dtn://ground/" = 1               # dtn://ground/... goes where ipn node 1 does

    [store]
    path = "node2.db"                 # SQLite bundle store (default STATE_DIR/bundles.db;
                                      # ":memory:" keeps nothing across restarts)
    limit_bytes = 1000000000
    synchronous = "FULL"              # FULL (fsynced before ACKs) | NORMAL

    [udp]
    ack_timeout_s = 1.0               # added to 2 x light time for the retransmission timeout
    max_tries = 4

    [ltp]                             # the LTP engine (spec/ltp.md), every key optional
    engine_id = 2                     # this node's engine id (default: node)
    max_sessions = 64                 # outbound sessions at once; see dtn/runtime/ltp.py
    [limits]                          # resources a peer or client can make us hold
    app_max_connections = 128         # app API connections at once (more are closed at once)
    mtcp_max_connections = 128        # MTCP connections accepted at once
    fd_reserve = 64                   # file descriptors kept free for the store
    app_max_message_bytes = 16777216  # largest app API message (per connection)
    mtcp_max_frame_bytes = 16777216   # largest MTCP frame (per connection)
    max_buffered_bytes = 134217728    # all partly received frames together
    delivery_queue = 256              # bundles pushed to one client and not yet confirmed
    max_forward_lifetime_ms = 2592000000  # longest lifetime accepted for others' bundles (30 days)
    max_tombstone_ms = 2592000000     # longest a delivered key is remembered
    disk_reserve_bytes = 4194304      # free space kept on the store's file system
    max_bundles = 200000              # bundles held at once (each costs RAM too)
    decoded_cache_bytes = 33554432    # bundles just stored kept decoded in memory (0: none)
    udp_max_transfer_bytes = 4194304  # largest bundle sent whole over UDP in PART segments
                                      # (ack = "on" peers; larger ones fragmented; 0: none)
    udp_max_partial_bytes = 67108864  # bundles partly received in PART segments, all peers

    [security]                        # end-to-end security (spec/security.md section 9)
    keystore = "keys/node2"           # node.key, node.cert, operator.pub, certs/, revocations.cbor
    accepted_contexts = [-101, -102]  # see dtn/runtime/security.py for every key

    [services]                        # node services (spec/node.md); echo (ipn:N.7) always runs
    factories = ["examples.gossip_counter:factory"]   # "module:callable", called (node, incarnation)

    [[neighbours]]
    node = 3
    address = "127.0.0.1:4557"
    cla = "udp"                       # udp | mtcp | tcpcl | ltp
    ack = "on"                        # on | none | off | auto (udp only; see spec/udpcl.md)
    engine_id = 3                     # ltp only: the remote LTP engine (default: node)
    ltp_mtu_bytes = 1400              # ltp only: largest segment datagram
    ltp_aggregate = false             # ltp only: several bundles per block (ION) or one (HDTN)
    ltp_green = false                 # ltp only: blocks all green (best effort)
    always_on = false                 # default: true when there is no plan
    rate_bytes_s = 0                  # pacing for always-on links (0: unpaced)

A bad file raises :class:`ConfigError` whose message is one line naming the key.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dcis.dtn.agent.entries import DAEMON_HOT_MAX_BYTES
from dcis.dtn.cl.udp import MAX_NODE, MAX_TRANSFER_BYTES, AckMode
from dcis.dtn.errors import DtnError
from dcis.dtn.routing.plan import check_dtn_routes
from dcis.dtn.runtime.tcpcl import TcpclSettings

if TYPE_CHECKING:
    from dcis.dtn.runtime.ltp import LtpConfig
    from dcis.dtn.runtime.security import SecurityConfig

LOG_LEVELS = ("debug", "info", "warning", "error")
UDP_CL_PORT = 4556
"""IANA's port for the bundle protocol over UDP (RFC 7122): ``listen``'s default."""
DEFAULT_LISTEN = ("0.0.0.0", UDP_CL_PORT)
"""Where a ``node.toml`` without ``listen`` receives bundles."""
STORE_FILE = "bundles.db"
"""The store's file name in the state directory, when ``[store] path`` is not set."""


class ConfigError(DtnError, ValueError):
    """A node configuration is invalid; the message names the key."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NeighbourConfig:
    """One configured neighbour."""

    node: int
    address: tuple[str, int]
    cla: str = "udp"
    ack: AckMode = AckMode.ON
    always_on: bool | None = None
    rate_bytes_s: float = 0.0
    engine_id: int | None = None
    ltp_mtu_bytes: int = 1400
    ltp_aggregate: bool = False
    ltp_green: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """``[limits]``: every resource a peer or a client can make the node hold,
    with safe defaults (see the module docstring; counters in ``dcis status``)."""

    app_max_connections: int = 128
    mtcp_max_connections: int = 128
    fd_reserve: int = 64
    app_max_message_bytes: int = 16 << 20
    mtcp_max_frame_bytes: int = 16 << 20
    max_buffered_bytes: int = 128 << 20
    delivery_queue: int = 256
    max_forward_lifetime_ms: int = 30 * 86_400_000
    max_tombstone_ms: int = 30 * 86_400_000
    disk_reserve_bytes: int = 4 << 20
    max_bundles: int = 200_000
    decoded_cache_bytes: int = DAEMON_HOT_MAX_BYTES
    udp_max_transfer_bytes: int = 4 << 20
    """Largest bundle carried whole over UDP in PART segments (to and from
    neighbours with ``ack = "on"``); a larger one is fragmented to this
    size. 0: none, every bundle over ``mtu_bytes`` is fragmented."""
    udp_max_partial_bytes: int = 64 << 20
    """Bundles partly received in PART segments, all senders together."""


LIMIT_KEYS = frozenset(Limits.__dataclass_fields__)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    """Everything a node needs to run (see the module docstring for keys).

    ``plan_epoch_unix_s`` None means "when the node starts". The defaults
    here suit a node embedded in a program (ephemeral port, in-memory store);
    a ``node.toml`` read by :func:`config_from_dict` gets the daemon's safe
    defaults instead (port 4556, a store file under ``state_dir``).
    """

    node: int
    listen: tuple[str, int] = ("127.0.0.1", 0)
    app_socket: str | None = None
    plan: str | None = None
    plan_epoch_unix_s: float | None = None
    log_level: str = "info"
    mtu_bytes: int = 65_000
    lifetime_ms: int = 86_400_000
    mtcp_listen: tuple[str, int] | None = None
    store_path: str = ":memory:"
    state_dir: str | None = None
    store_limit_bytes: int = 1 << 30
    store_synchronous: str = "FULL"
    ack_timeout_s: float = 1.0
    max_tries: int = 4
    neighbours: tuple[NeighbourConfig, ...] = field(default_factory=tuple)
    security: SecurityConfig | None = None
    ltp: LtpConfig | None = None
    service_factories: tuple[str, ...] = ()
    """``[services] factories``: ``"module:callable"`` names of service
    factories (imported when the node starts)."""
    limits: Limits = field(default_factory=lambda: Limits())
    app_socket_group: str | None = None
    dtn_routes: dict[str, int] = field(default_factory=dict)
    tcpcl_listen: tuple[str, int] | None = None
    tcpcl: TcpclSettings = field(default_factory=TcpclSettings)

    @property
    def eid(self) -> str:
        """The node's administrative endpoint, ``ipn:N.0``."""
        return f"ipn:{self.node}.0"


def parse_address(text: object, key: str) -> tuple[str, int]:
    """Parse ``"host:port"``; raises :class:`ConfigError` naming ``key``."""
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError(f'{key}: expected "host:port", got {text!r}')
    host, _, port_s = text.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_s)
    except ValueError:
        raise ConfigError(f"{key}: port must be an integer, got {port_s!r}") from None
    if not 0 <= port <= 65535 or not host:
        raise ConfigError(
            f'{key}: expected "host:port" with port 0..65535, got {text!r}'
        )
    return host, port


def _take(
    table: dict[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    prefix: str,
    default: Any = None,
) -> Any:
    if key not in table:
        return default
    value = table[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int in Python; a TOML `true` is never a valid number here.
    if isinstance(value, bool) and bool not in kinds:
        raise ConfigError(
            f"{prefix}{key}: expected {'/'.join(k.__name__ for k in kinds)}, got {value!r}"
        )
    if not isinstance(value, kinds):
        raise ConfigError(
            f"{prefix}{key}: expected {'/'.join(k.__name__ for k in kinds)}, got {value!r}"
        )
    return value


def _check_keys(table: dict[str, Any], allowed: set[str], prefix: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{prefix}{key}: unknown key")


def config_from_dict(
    doc: dict[str, Any], *, base_dir: Path | None = None
) -> NodeConfig:
    """Validate a parsed TOML document. Relative paths are resolved against
    ``base_dir`` (the config file's directory). Raises :class:`ConfigError`."""
    base = base_dir or Path(".")
    _check_keys(
        doc,
        {
            "node",
            "eid",
            "listen",
            "app_socket",
            "plan",
            "plan_epoch_unix_s",
            "log_level",
            "mtu_bytes",
            "lifetime_ms",
            "mtcp_listen",
            "state_dir",
            "store",
            "udp",
            "neighbours",
            "security",
            "ltp",
            "services",
            "limits",
            "app_socket_group",
            "dtn_routes",
            "tcpcl_listen",
            "tcpcl",
        },
        "",
    )
    node = _take(doc, "node", int, "")
    eid = _take(doc, "eid", str, "")
    if node is None and eid is None:
        raise ConfigError('node: missing (an ipn node number, or eid = "ipn:N.0")')
    if eid is not None:
        if not eid.startswith("ipn:") or not eid[4:].partition(".")[0].isdigit():
            raise ConfigError(f'eid: expected "ipn:N.0", got {eid!r}')
        eid_node = int(eid[4:].partition(".")[0])
        if node is not None and node != eid_node:
            raise ConfigError(f"eid: {eid!r} does not match node = {node}")
        node = eid_node
    if not 1 <= node <= MAX_NODE:
        raise ConfigError(f"node: must be in 1..{MAX_NODE}, got {node}")

    def path_of(value: str | None) -> str | None:
        if value is None or value == ":memory:":
            return value
        return str(base / value)

    log_level = _take(doc, "log_level", str, "", "info").lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError(
            f"log_level: expected one of {', '.join(LOG_LEVELS)}, got {log_level!r}"
        )
    mtu = _take(doc, "mtu_bytes", int, "", 65_000)
    if not 64 <= mtu <= 65_000:
        raise ConfigError(f"mtu_bytes: must be in 64..65000, got {mtu}")
    lifetime = _take(doc, "lifetime_ms", int, "", 86_400_000)
    if lifetime <= 0:
        raise ConfigError(f"lifetime_ms: must be > 0, got {lifetime}")
    epoch = _take(doc, "plan_epoch_unix_s", (int, float), "")
    plan = _take(doc, "plan", str, "")
    mtcp_listen = doc.get("mtcp_listen")
    state_dir = _take(doc, "state_dir", str, "")
    if state_dir is not None and not state_dir:
        raise ConfigError("state_dir: must not be empty")
    state_dir = str(base / state_dir) if state_dir else default_state_dir(node)

    store = _take(doc, "store", dict, "", {})
    _check_keys(store, {"path", "limit_bytes", "synchronous"}, "store.")
    limit = _take(store, "limit_bytes", int, "store.", 1 << 30)
    if limit <= 0:
        raise ConfigError(f"store.limit_bytes: must be > 0, got {limit}")
    sync = _take(store, "synchronous", str, "store.", "FULL").upper()
    if sync not in ("FULL", "NORMAL"):
        raise ConfigError(f"store.synchronous: expected FULL or NORMAL, got {sync!r}")

    udp = _take(doc, "udp", dict, "", {})
    _check_keys(udp, {"ack_timeout_s", "max_tries"}, "udp.")
    ack_timeout = float(_take(udp, "ack_timeout_s", (int, float), "udp.", 1.0))
    if not (ack_timeout > 0 and math.isfinite(ack_timeout)):
        raise ConfigError(f"udp.ack_timeout_s: must be > 0, got {ack_timeout}")
    max_tries = _take(udp, "max_tries", int, "udp.", 4)
    if max_tries < 1:
        raise ConfigError(f"udp.max_tries: must be >= 1, got {max_tries}")

    neighbours: list[NeighbourConfig] = []
    raw_nbs = _take(doc, "neighbours", list, "", [])
    seen: set[int] = set()
    for i, nb in enumerate(raw_nbs):
        p = f"neighbours[{i}]."
        if not isinstance(nb, dict):
            raise ConfigError(f"neighbours[{i}]: expected a table")
        _check_keys(
            nb,
            {"node", "address", "cla", "ack", "always_on", "rate_bytes_s"}
            | {"engine_id", "ltp_mtu_bytes", "ltp_aggregate", "ltp_green"},
            p,
        )
        nb_node = _take(nb, "node", int, p)
        if nb_node is None or not 1 <= nb_node <= MAX_NODE:
            raise ConfigError(f"{p}node: missing or not in 1..{MAX_NODE}")
        if nb_node == node or nb_node in seen:
            raise ConfigError(f"{p}node: {nb_node} is this node or listed twice")
        seen.add(nb_node)
        if "address" not in nb:
            raise ConfigError(f"{p}address: missing")
        cla = _take(nb, "cla", str, p, "udp")
        if cla not in ("udp", "mtcp", "tcpcl", "ltp"):
            raise ConfigError(f"{p}cla: expected udp, mtcp, tcpcl or ltp, got {cla!r}")
        engine_id = _take(nb, "engine_id", int, p)
        if engine_id is not None and engine_id < 1:
            raise ConfigError(f"{p}engine_id: must be >= 1, got {engine_id}")
        ltp_mtu = _take(nb, "ltp_mtu_bytes", int, p, 1400)
        if not 128 <= ltp_mtu <= 65_507:
            raise ConfigError(f"{p}ltp_mtu_bytes: must be in 128..65507, got {ltp_mtu}")
        ack_s = _take(nb, "ack", (str, bool), p, "on")
        ack_s = (
            {True: "on", False: "off"}.get(ack_s, ack_s)
            if isinstance(ack_s, bool)
            else ack_s
        )
        try:
            ack = AckMode(ack_s)
        except ValueError:
            raise ConfigError(
                f"{p}ack: expected on, none, off or auto, got {ack_s!r}"
            ) from None
        rate = float(_take(nb, "rate_bytes_s", (int, float), p, 0.0))
        if rate < 0:
            raise ConfigError(f"{p}rate_bytes_s: must be >= 0, got {rate}")
        neighbours.append(
            NeighbourConfig(
                node=nb_node,
                address=parse_address(nb["address"], f"{p}address"),
                cla=cla,
                ack=ack,
                always_on=_take(nb, "always_on", bool, p),
                rate_bytes_s=rate,
                engine_id=engine_id,
                ltp_mtu_bytes=ltp_mtu,
                ltp_aggregate=_take(nb, "ltp_aggregate", bool, p, False),
                ltp_green=_take(nb, "ltp_green", bool, p, False),
            )
        )
    services = _take(doc, "services", dict, "", {})
    _check_keys(services, {"factories"}, "services.")
    factories = _take(services, "factories", list, "services.", [])
    for i, f in enumerate(factories):
        if (
            not isinstance(f, str)
            or f.count(":") != 1
            or f.startswith(":")
            or f.endswith(":")
        ):
            raise ConfigError(
                f'services.factories[{i}]: expected "module:callable", got {f!r}'
            )
    tcpcl = _parse_tcpcl(_take(doc, "tcpcl", dict, "", {}), base)
    tcpcl_listen = doc.get("tcpcl_listen")
    lim = _take(doc, "limits", dict, "", {})
    _check_keys(lim, set(LIMIT_KEYS), "limits.")
    lim_values: dict[str, int] = {}
    for name in LIMIT_KEYS:
        v = _take(lim, name, int, "limits.")
        if v is None:
            continue
        floor = (
            0
            if name
            in (
                "fd_reserve",
                "disk_reserve_bytes",
                "decoded_cache_bytes",
                "udp_max_transfer_bytes",
            )
            else 1
        )
        if not floor <= v < 2**63:
            raise ConfigError(f"limits.{name}: must be in {floor}..2**63-1, got {v}")
        if name == "udp_max_transfer_bytes" and v > MAX_TRANSFER_BYTES:
            raise ConfigError(
                f"limits.{name}: must be in 0..{MAX_TRANSFER_BYTES} (a PART's"
                f" largest total), got {v}"
            )
        lim_values[name] = v
    limits = Limits(**lim_values)
    if limits.udp_max_transfer_bytes > limits.udp_max_partial_bytes:
        raise ConfigError(
            "limits.udp_max_transfer_bytes: must be at most limits."
            f"udp_max_partial_bytes ({limits.udp_max_partial_bytes}), got"
            f" {limits.udp_max_transfer_bytes} (a peer with the same limits"
            " could never hold such a transfer)"
        )
    group = _take(doc, "app_socket_group", str, "")
    raw_routes = _take(doc, "dtn_routes", dict, "", {})
    try:
        dtn_routes = check_dtn_routes(raw_routes)
    except DtnError as exc:
        raise ConfigError(f"dtn_routes: {exc}") from None
    security = None
    if "security" in doc:
        # Imported here: dcis.dtn.runtime.security imports ConfigError from us.
        from dcis.dtn.runtime.security import parse_security

        security = parse_security(doc["security"], base_dir=base)
    ltp = None
    if "ltp" in doc or any(nb.cla == "ltp" for nb in neighbours):
        from dcis.dtn.runtime.ltp import parse_ltp

        ltp = parse_ltp(doc.get("ltp", {}))
    return NodeConfig(
        node=node,
        listen=parse_address(doc["listen"], "listen")
        if "listen" in doc
        else DEFAULT_LISTEN,
        app_socket=path_of(_take(doc, "app_socket", str, "")),
        plan=path_of(plan),
        plan_epoch_unix_s=None if epoch is None else float(epoch),
        log_level=log_level,
        mtu_bytes=mtu,
        lifetime_ms=lifetime,
        mtcp_listen=None
        if mtcp_listen is None
        else parse_address(mtcp_listen, "mtcp_listen"),
        store_path=path_of(_take(store, "path", str, "store.", None))
        or str(Path(state_dir) / STORE_FILE),
        state_dir=state_dir,
        store_limit_bytes=limit,
        store_synchronous=sync,
        ack_timeout_s=ack_timeout,
        max_tries=max_tries,
        neighbours=tuple(neighbours),
        security=security,
        ltp=ltp,
        service_factories=tuple(factories),
        limits=limits,
        app_socket_group=group,
        dtn_routes=dtn_routes,
        tcpcl_listen=None
        if tcpcl_listen is None
        else parse_address(tcpcl_listen, "tcpcl_listen"),
        tcpcl=tcpcl,
    )


_TCPCL_INTS = {
    "keepalive_s": (0, 0xFFFF),
    "segment_mru": (64, 1 << 32),
    "transfer_mru": (64, 1 << 40),
    "max_segment_bytes": (64, 1 << 32),
    "max_sessions": (1, 1 << 16),
}


def _parse_tcpcl(t: dict[str, Any], base: Path) -> TcpclSettings:
    """The ``[tcpcl]`` table (TLS files resolved against ``base``)."""
    p = "tcpcl."
    _check_keys(
        t,
        {
            "keepalive_s",
            "segment_mru",
            "transfer_mru",
            "max_segment_bytes",
            "max_sessions",
            "tls_cert",
            "tls_key",
            "tls_ca",
            "require_tls",
        },
        "tcpcl.",
    )
    kw: dict[str, Any] = {}
    for key, (lo, hi) in _TCPCL_INTS.items():
        v = _take(t, key, int, p)
        if v is not None:
            if not lo <= v <= hi:
                raise ConfigError(f"{p}{key}: must be in {lo}..{hi}, got {v}")
            kw[key] = v
    for key in ("tls_cert", "tls_key", "tls_ca"):
        v = _take(t, key, str, p)
        if v is not None:
            path = base / v
            if not path.is_file():
                raise ConfigError(f"{p}{key}: no such file {path}")
            kw[key] = str(path)
    if ("tls_cert" in kw) != ("tls_key" in kw):
        raise ConfigError(f"{p}tls_cert: tls_cert and tls_key go together")
    req = _take(t, "require_tls", bool, p, False)
    if req and "tls_cert" not in kw:
        raise ConfigError(f"{p}require_tls: needs tls_cert and tls_key")
    kw["require_tls"] = req
    return TcpclSettings(**kw)


def load_config(path: str | Path) -> NodeConfig:
    """Read and validate ``node.toml``. Raises :class:`ConfigError` (one line)."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not valid TOML: not UTF-8 text") from None
    return config_from_dict(doc, base_dir=p.parent)


def default_state_dir(node: int) -> str:
    """Where a node without ``state_dir`` keeps its store:
    ``$XDG_STATE_HOME`` (else ``~/.local/state``) ``/dcis/node-N``."""
    import os

    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(base, "dcis", f"node-{node}")


def prepare_state_dir(config: NodeConfig) -> None:
    """Create the node's state directory (mode 0700: the store is nobody
    else's business). An explicit ``[store] path`` elsewhere is not created:
    its directory must exist. Raises :class:`ConfigError` naming ``state_dir``."""
    import os

    if config.state_dir is not None:
        try:
            os.makedirs(config.state_dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"state_dir: cannot create {config.state_dir}: {exc.strerror or exc}"
            ) from None


def default_app_socket(node: int) -> str:
    """Where a node without ``app_socket`` listens: ``$XDG_RUNTIME_DIR``, else
    ``/run/dtn-node`` (never a predictable name in a shared temp dir),
    ``/dtn-node-N.sock``."""
    import os

    base = os.environ.get("XDG_RUNTIME_DIR") or "/run/dtn-node"
    return os.path.join(base, f"dtn-node-{node}.sock")
