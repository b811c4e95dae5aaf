"""TCPCLv4 (RFC 9174): wire format (:mod:`.messages`) and session machine (:mod:`.session`).

Sans-I/O like every core; the trio driver is :mod:`dcis.dtn.runtime.tcpcl`.
"""

from __future__ import annotations
