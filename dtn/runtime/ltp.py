"""node.toml ``[ltp]`` and the names the runtime uses of the LTP
convergence layer (:mod:`dcis.dtn.cl.ltp.link`, shared with the simulator)."""

from __future__ import annotations

from dcis.dtn.cl.ltp.link import LTP_FIRST_BYTES as LTP_FIRST_BYTES
from dcis.dtn.cl.ltp.link import LtpCl as LtpCl
from dcis.dtn.cl.ltp.link import LtpConfig as LtpConfig
from dcis.dtn.cl.ltp.link import LtpResult as LtpResult

_INT_KEYS = (
    "engine_id",
    "max_sessions",
    "max_receive_sessions",
    "max_block_bytes",
    "max_buffered_bytes",
    "margin_ms",
    "max_retries",
    "aggregate_bytes",
    "aggregate_ms",
    "report_delay_ms",
)


def parse_ltp(table: object) -> LtpConfig:
    """Validate ``[ltp]``; raises ``ConfigError`` naming the key."""
    from dcis.dtn.runtime.config import ConfigError

    if not isinstance(table, dict):
        raise ConfigError("ltp: expected a table")
    values: dict[str, int] = {}
    for key, value in table.items():
        if key not in _INT_KEYS:
            raise ConfigError(f"ltp.{key}: unknown key")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"ltp.{key}: expected int, got {value!r}")
        low = 0 if key in ("max_retries", "aggregate_ms", "report_delay_ms") else 1
        if value < low:
            raise ConfigError(f"ltp.{key}: must be >= {low}, got {value}")
        values[key] = value
    return LtpConfig(**values)
