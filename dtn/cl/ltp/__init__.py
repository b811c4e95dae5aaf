"""LTP (RFC 5326) over UDP (RFC 7122): segment codec, session state machines,
and the engine that multiplexes them (all sans-I/O). See spec/ltp.md."""

from dcis.dtn.cl.ltp.common import SessionConfig as SessionConfig
from dcis.dtn.cl.ltp.engine import BlockReceived as BlockReceived
from dcis.dtn.cl.ltp.engine import BlockSent as BlockSent
from dcis.dtn.cl.ltp.engine import EngineBusy as EngineBusy
from dcis.dtn.cl.ltp.engine import EngineConfig as EngineConfig
from dcis.dtn.cl.ltp.engine import LtpEngine as LtpEngine
from dcis.dtn.cl.ltp.engine import SendSegment as SendSegment
from dcis.dtn.cl.ltp.engine import SpanConfig as SpanConfig
