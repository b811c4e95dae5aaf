"""LTP (RFC 5326) over UDP (RFC 7122): segment codec, session state machines,
and the engine that multiplexes them (all sans-I/O). See spec/ltp.md."""

from dtn.cl.ltp.common import SessionConfig as SessionConfig
from dtn.cl.ltp.engine import BlockReceived as BlockReceived
from dtn.cl.ltp.engine import BlockSent as BlockSent
from dtn.cl.ltp.engine import EngineBusy as EngineBusy
from dtn.cl.ltp.engine import EngineConfig as EngineConfig
from dtn.cl.ltp.engine import LtpEngine as LtpEngine
from dtn.cl.ltp.engine import SendSegment as SendSegment
from dtn.cl.ltp.engine import SpanConfig as SpanConfig
