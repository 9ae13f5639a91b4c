"""levqor-mcp: Levqor and the Model Context Protocol, on the official ``mcp`` SDK.

The server side offers the caller's pipelines as MCP tools (:mod:`levqor_mcp.server`): over
streamable HTTP at ``/mcp`` under the host (host hook ``register_blueprints``,
:mod:`levqor_mcp.server_http`) and over stdio with ``levqor mcp serve`` (host hook
``register_commands``, :mod:`levqor_mcp.server_stdio`). It never imports the host: it works
through the kernel's typed face of the host (:class:`levqor_kernel.host.PipelineCalls`).

The client side is the connector ``mcp`` (:mod:`levqor_mcp.client`): a step calls a tool of
another MCP server.
"""

from __future__ import annotations

from typing import Any

from levqor_kernel import hookimpl
from levqor_kernel.host import Host

__version__ = "0.1.0"


# host hooks: optional, so that the connector loads where only the kernel's hooks are declared
# (the contract kit, a kernel-only plugin manager)
@hookimpl(optionalhook=True)
def register_blueprints(app: Any, state: Host) -> None:
    """``POST /mcp``: the MCP server over streamable HTTP."""
    from .server_http import bp
    from .settings import PREFIXES, McpSettings

    app.extensions["levqor_mcp"] = McpSettings.from_env(state.config.plugin_settings(*PREFIXES))
    app.register_blueprint(bp)


@hookimpl(optionalhook=True)
def register_commands(cli: Any) -> None:
    """``levqor mcp serve``: the MCP server over stdio."""
    from .server_stdio import mcp_group

    cli.add_command(mcp_group)


# the connector `mcp`: a step calls a tool of an external MCP server (levqor_mcp.connector, whose
# hooks import the SDK only when they talk to a server: levqor_mcp.client)
from .connector import (  # noqa: E402,F401
    check_credentials,
    describe_schema,
    load_options,
    run_task,
    validate_credentials,
)
