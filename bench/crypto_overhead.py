"""Cost of end-to-end protection (issue 6): bundles/s at 1 KB, MB/s at 1 MB.

1 KB: what a node really does per bundle, through the agent with MemoryStore:
``send`` at the source (protect: BCB -101 when secure) with a contact open to
the destination -> ``Transmit`` bytes (encoded) -> ``on_receive`` at the
destination agent (decode, check: decrypt + verify + replay window) ->
``Deliver`` -> ``on_delivered``; ``on_transmit_done`` at the source. Measured
with ``security=None`` (the reference) and with a ``SecurityPolicy`` on both
nodes, in the same run. Target: protection costs <= 30% of the unprotected
rate (secure rate >= 70% of plain).

1 MB: the security operations on one bundle -- ``protect`` at the source and
``check`` at the destination (one seal, one open) -- next to raw PyNaCl
XChaCha20-Poly1305 encrypt + decrypt of the same payload. Target: >= 80% of
the raw AEAD throughput. Also printed: the same AEAD through the bare
libsodium calls our context makes (PyNaCl's public wrapper zero-fills and
copies, so ours can beat it), and the full agent path at 1 MB.

Medians of REPEATS runs. The agent paths with and without protection run
interleaved in chunks of 50 bundles (one at 1 MB) so that load from other
processes hits both alike; the crypto figures alternate whole runs. The
ratio of each run (or pair) is printed to stderr, so the spread is visible.

    .venv/bin/python bench/crypto_overhead.py [--quick] [--default-malloc]
"""

from __future__ import annotations

import ctypes
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nacl.bindings

from dcis.crypto import NodeIdentity, OperatorKey, issue_certificate
from dcis.crypto.certificate import NodeCertificate
from dcis.dtn.agent.actions import Deliver, Transmit
from dcis.dtn.agent.agent import Agent
from dcis.dtn.agent.security import SecurityPolicy
from dcis.dtn.agent.store import MemoryStore
from dcis.dtn.bpsec._aead import open_detached, seal_detached
from dcis.dtn.bpv7.bundle import make_bundle
from dcis.dtn.routing.contact import Contact

QUICK = "--quick" in sys.argv
REPEATS = 3 if QUICK else 7
N_SMALL = 1000 if QUICK else 3000
N_LARGE = 10 if QUICK else 30
T0 = 800_000_000_000  # DTN ms (2025)
OP = OperatorKey.generate(entropy=b"bench operator key material".ljust(32, b"."))
SRC = NodeIdentity.generate(1, entropy=b"bench node 1 key material".ljust(32, b"."))
DST = NodeIdentity.generate(2, entropy=b"bench node 2 key material".ljust(32, b"."))


def _cert(i: NodeIdentity) -> NodeCertificate:
    return issue_certificate(
        OP,
        node=i.node,
        sign_public=i.sign_public,
        kx_public=i.kx_public,
        not_before_ms=0,
        not_after_ms=T0 * 2,
        serial=i.node,
    )


CERTS = [_cert(SRC), _cert(DST)]


def _policy(ident: NodeIdentity) -> SecurityPolicy:
    return SecurityPolicy(
        identity=ident,
        operator_public=OP.public_key,
        certificates=CERTS,
        replay_window_ms=86_400_000,
        replay_entries_per_source=1 << 20,
    )


class AgentPath:
    """Two agents joined by an open contact, with or without a policy each.

    :meth:`run` pushes bundles through send -> Transmit -> on_receive ->
    Deliver -> on_delivered (and on_transmit_done at the source) and adds
    the time taken to :attr:`elapsed`.
    """

    def __init__(self, size: int, *, secure: bool) -> None:
        src_kw: dict[str, Any] = {"security": _policy(SRC)} if secure else {}
        dst_kw: dict[str, Any] = {"security": _policy(DST)} if secure else {}
        self.a = Agent(node=1, store=MemoryStore(limit_bytes=1 << 34), **src_kw)
        self.b = Agent(node=2, store=MemoryStore(limit_bytes=1 << 34), **dst_kw)
        self.b.register("ipn:2.1")
        self.a.register("ipn:1.1")
        self.a.on_contact_start(Contact(1, 2, 0, float("inf"), 0), T0)
        self.payload = os.urandom(size)
        self.sent = self.delivered = 0
        self.elapsed = 0.0

    def run(self, n: int) -> None:
        a, b, payload = self.a, self.b, self.payload
        t = time.perf_counter()
        for i in range(self.sent, self.sent + n):
            now = T0 + i // 100  # several bundles per ms, as a busy source makes
            _, acts = a.send(
                source="ipn:1.1",
                destination="ipn:2.1",
                payload=payload,
                lifetime_ms=3_600_000,
                now=now,
            )
            for x in acts:
                if isinstance(x, Transmit):
                    for y in b.on_receive(
                        cla="udp", neighbor=1, data=x.data, now=now, cl_token=i
                    ):
                        if isinstance(y, Deliver):
                            self.delivered += 1
                            b.on_delivered(y.bundle_key, now)
                    a.on_transmit_done(x.tx_id, True, now)
        self.elapsed += time.perf_counter() - t
        self.sent += n
        if self.delivered != self.sent:
            raise SystemExit(f"delivered {self.delivered} of {self.sent}")


def agent_paths(n: int, size: int, chunk: int) -> tuple[float, float]:
    """Bundles/s without and with protection, the two interleaved in chunks
    of ``chunk`` bundles so that load from other processes hits both alike."""
    plain, secure = AgentPath(size, secure=False), AgentPath(size, secure=True)
    for _ in range(max(1, n // chunk)):
        plain.run(chunk)
        secure.run(chunk)
    return plain.sent / plain.elapsed, secure.sent / secure.elapsed


def agent_path(n: int, size: int, *, secure: bool) -> float:
    """Bundles/s of one pipeline alone (used by the profiling notes)."""
    p = AgentPath(size, secure=secure)
    p.run(n)
    return p.sent / p.elapsed


def security_ops(n: int, size: int) -> float:
    """Bundles/s for protect (source) + check (destination) on one bundle object."""
    ps, pd = _policy(SRC), _policy(DST)
    payload = os.urandom(size)
    bundles = [
        make_bundle(
            source="ipn:1.1",
            destination="ipn:2.1",
            payload=payload,
            creation_ms=T0,
            sequence=i,
            lifetime_ms=3_600_000,
        )
        for i in range(n)
    ]
    t = time.perf_counter()
    for bundle in bundles:
        # The plaintext is dropped at once, as the references drop theirs.
        if pd.check(ps.protect(bundle), T0)[0] is None:
            raise SystemExit(f"check refused: {pd.last_rejection}")
    return n / (time.perf_counter() - t)


def raw_aead(n: int, size: int) -> float:
    """Messages/s for PyNaCl XChaCha20-Poly1305 encrypt + decrypt (the reference)."""
    key = os.urandom(32)
    nonce = os.urandom(24)
    aad = os.urandom(64)  # about what our context binds (label, primary, headers)
    payload = os.urandom(size)
    enc = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt
    dec = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt
    t = time.perf_counter()
    for _ in range(n):
        dec(enc(payload, aad, nonce, key), aad, nonce, key)
    return n / (time.perf_counter() - t)


def raw_libsodium(n: int, size: int) -> float:
    """Messages/s for the same AEAD through the calls our context makes
    (``dcis.dtn.bpsec._aead``: libsodium directly, detached tag)."""
    key = os.urandom(32)
    nonce = os.urandom(24)
    aad = os.urandom(64)
    payload = os.urandom(size)
    t = time.perf_counter()
    for _ in range(n):
        ct, tag = seal_detached(payload, aad, nonce, key)
        open_detached(ct, tag, aad, nonce, key)
    return n / (time.perf_counter() - t)


def paired(
    ref: Callable[[], float], test: Callable[[], float]
) -> tuple[float, float, float]:
    """Medians of ``ref`` and ``test`` and of their per-pair ratio test/ref.

    The two alternate (ref, test, ref, test, ...) so that load from other
    processes hits both alike; the ratio of each pair is what the targets
    are judged on.
    """
    ref()  # warm-up: caches (agreed keys), allocator
    test()
    refs, tests, ratios = [], [], []
    for _ in range(REPEATS):
        r, t = ref(), test()
        refs.append(r)
        tests.append(t)
        ratios.append(t / r)
    print(
        "    (pair ratios: " + ", ".join(f"{r:.2f}" for r in sorted(ratios)) + ")",
        file=sys.stderr,
    )
    return statistics.median(refs), statistics.median(tests), statistics.median(ratios)


def _keep_heap() -> str:
    """Raise glibc's mmap and trim thresholds (unless ``--default-malloc``).

    With the defaults, each 1 MB buffer comes from a fresh mmap and is given
    back when freed, so every megabyte processed also costs ~256 page faults;
    how many depends on the order in which a loop frees its buffers, which
    swings the 1 MB figures by +-40% between loops doing the same AEAD calls.
    A long-running node's heap keeps its memory; so does this, for every
    measurement alike (the references included).
    """
    if "--default-malloc" in sys.argv:
        return "glibc defaults (--default-malloc)"
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # glibc <malloc.h>
        if libc.mallopt(m_mmap_threshold, 256 << 20) and libc.mallopt(
            m_trim_threshold, 1 << 30
        ):
            return "glibc mmap/trim thresholds raised (heap kept, as in a running node)"
    except OSError:
        pass
    return "allocator defaults (not glibc)"


def main() -> None:
    kb, mb = 1024, 1 << 20
    print(f"malloc: {_keep_heap()}")
    print(f"crypto_overhead: medians of {REPEATS} paired runs")
    runs = [agent_paths(N_SMALL, kb, 50) for _ in range(REPEATS)]
    plain = statistics.median(r[0] for r in runs)
    secure = statistics.median(r[1] for r in runs)
    ratio_kb = statistics.median(r[1] / r[0] for r in runs)
    print(
        "    (run ratios: "
        + ", ".join(
            f"{r[1] / r[0]:.2f}" for r in sorted(runs, key=lambda r: r[1] / r[0])
        )
        + ")",
        file=sys.stderr,
    )
    cost = 1 - ratio_kb
    print(f"1 KB agent path, no security      : {plain:10.0f} bundles/s")
    print(f"1 KB agent path, BCB -101 e2e     : {secure:10.0f} bundles/s")
    print(
        f"  protection costs {cost:6.1%} of the unprotected rate (median pair) "
        f"(target <= 30%: {'met' if cost <= 0.30 else 'NOT met'})"
    )
    raw_kb, ops_kb, _ = paired(
        lambda: raw_aead(N_SMALL, kb), lambda: security_ops(N_SMALL, kb)
    )
    print(f"1 KB protect+check only           : {ops_kb:10.0f} bundles/s")
    print(f"1 KB raw AEAD encrypt+decrypt     : {raw_kb:10.0f} msgs/s")
    raw_mb, ops_mb, ratio = paired(
        lambda: raw_aead(N_LARGE, mb), lambda: security_ops(N_LARGE, mb)
    )
    print(f"1 MB protect+check (seal + open)  : {ops_mb:10.1f} MB/s")
    print(f"1 MB raw PyNaCl AEAD enc+dec      : {raw_mb:10.1f} MB/s")
    print(
        f"  ratio {ratio:6.1%} of raw PyNaCl AEAD "
        f"(target >= 80%: {'met' if ratio >= 0.80 else 'NOT met'})"
    )
    # PyNaCl's wrapper zero-fills its output and copies the tag off: our
    # context calls the same libsodium function without that, so it can beat
    # the reference above. The same calls measured bare:
    bare_mb, _, ratio2 = paired(
        lambda: raw_libsodium(N_LARGE, mb), lambda: security_ops(N_LARGE, mb)
    )
    print(f"1 MB raw libsodium (our calls)    : {bare_mb:10.1f} MB/s")
    print(f"  ratio {ratio2:6.1%} of the bare libsodium calls")
    big = [agent_paths(N_LARGE, mb, 1) for _ in range(REPEATS)]
    ag_plain = statistics.median(r[0] for r in big)
    ag_secure = statistics.median(r[1] for r in big)
    ag_ratio = statistics.median(r[1] / r[0] for r in big)
    print(f"1 MB agent path, no security      : {ag_plain:10.1f} MB/s")
    print(
        f"1 MB agent path, BCB -101 e2e     : {ag_secure:10.1f} MB/s "
        f"({ag_ratio:.1%} of unprotected)"
    )


if __name__ == "__main__":
    main()
