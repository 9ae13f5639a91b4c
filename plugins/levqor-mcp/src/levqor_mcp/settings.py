"""levqor-mcp's settings, read through the host's configuration (never ``os.environ``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: the variables this plugin reads (docs/mcp.md)
PREFIXES = ("LEVQOR_MCP_",)


@dataclass(frozen=True)
class McpSettings:
    #: seconds a tool call waits for its run before answering with the run id (0-300)
    wait_seconds: float = 60.0
    #: the largest JSON-RPC message /mcp reads
    max_body_bytes: int = 1_048_576

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> McpSettings:
        """The settings of ``LEVQOR_MCP_*``; a bad value is a ``ValueError`` naming it."""
        wait = _number(env, "LEVQOR_MCP_WAIT_SECONDS", cls.wait_seconds, 0, 300)
        body = int(_number(env, "LEVQOR_MCP_MAX_BODY_BYTES", cls.max_body_bytes, 1024, 16 << 20))
        return cls(wait_seconds=wait, max_body_bytes=body)


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {raw}")
    return value
