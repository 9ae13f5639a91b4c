"""levqor-mcp: Levqor and the Model Context Protocol, on the official ``mcp`` SDK.

The server side (:mod:`levqor_mcp.server`) offers the caller's pipelines as MCP tools. It
never imports the host: it works through the kernel's typed face of the host
(:mod:`levqor_kernel.host`).
"""

from __future__ import annotations

__version__ = "0.1.0"

# the connector `mcp`: a step calls a tool of an external MCP server (levqor_mcp.client)
from .client import check_credentials, describe_schema, load_options, run_task, validate_credentials  # noqa: E402,F401
