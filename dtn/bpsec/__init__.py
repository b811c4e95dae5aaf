"""dcis.dtn.bpsec: Bundle Protocol Security (RFC 9172) blocks and security contexts.

- :mod:`dcis.dtn.bpsec.asb` -- the abstract security block carried by BIBs and BCBs.
- :mod:`dcis.dtn.bpsec.rfc9173` -- BIB-HMAC-SHA2 and BCB-AES-GCM (RFC 9173).
- :mod:`dcis.dtn.bpsec.nacl_contexts` -- our X25519/XChaCha20-Poly1305 BCB and
  Ed25519 BIB contexts (experimental ids, spec/security.md).
- :mod:`dcis.dtn.bpsec.process` -- add security blocks to a bundle; verify and
  decrypt them (``unprotect``, ``verify_and_decrypt``).
- :mod:`dcis.dtn.bpsec.policy` -- ``payload_verdict``: may a secure node accept it?

Sans-I/O: nonces and IVs come from the OS CSPRNG (``os.urandom``) unless
passed in, or unless a ``random_bytes`` source is injected -- which only the
simulator does, to replay a run from its seed; its output is not secure.
"""

from __future__ import annotations

from dcis.dtn.bpsec.asb import AbstractSecurityBlock as AbstractSecurityBlock
from dcis.dtn.bpsec.asb import ContextFlags as ContextFlags
from dcis.dtn.bpsec.asb import SecurityBlockType as SecurityBlockType
from dcis.dtn.bpsec.asb import decode_asb_untrusted as decode_asb_untrusted
from dcis.dtn.bpsec.asb import encode_asb as encode_asb
from dcis.dtn.bpsec.nacl_contexts import (
    BCB_X25519_XCHACHA20POLY1305 as BCB_X25519_XCHACHA20POLY1305,
)
from dcis.dtn.bpsec.nacl_contexts import BIB_ED25519 as BIB_ED25519
from dcis.dtn.bpsec.policy import payload_verdict as payload_verdict
from dcis.dtn.bpsec.process import add_bcb_aes_gcm as add_bcb_aes_gcm
from dcis.dtn.bpsec.process import add_bcb_x25519 as add_bcb_x25519
from dcis.dtn.bpsec.process import add_bib_ed25519 as add_bib_ed25519
from dcis.dtn.bpsec.process import add_bib_hmac_sha2 as add_bib_hmac_sha2
from dcis.dtn.bpsec.process import unprotect as unprotect
from dcis.dtn.bpsec.process import verify_and_decrypt as verify_and_decrypt
from dcis.dtn.bpsec.results import KeyRing as KeyRing
from dcis.dtn.bpsec.results import SecurityResult as SecurityResult
from dcis.dtn.bpsec.rfc9173 import BCB_AES_GCM as BCB_AES_GCM
from dcis.dtn.bpsec.rfc9173 import BIB_HMAC_SHA2 as BIB_HMAC_SHA2
from dcis.dtn.bpsec.rfc9173 import AesVariant as AesVariant
from dcis.dtn.bpsec.rfc9173 import ShaVariant as ShaVariant
from dcis.dtn.bpsec.scope import ScopeFlags as ScopeFlags
