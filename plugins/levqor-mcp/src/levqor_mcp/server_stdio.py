"""``levqor mcp serve``: the MCP server over stdio, for a client that starts it (Claude
Desktop, an IDE, the SDK's stdio client).

It signs in with an API key from the environment (``LEVQOR_API_KEY``, or the variable named by
``--api-key-env``) and refuses to start without a valid one holding ``runs:execute``. The runs
its tool calls start execute in this process when the host's executor is ``embedded`` (its
workers start here, as under ``levqor serve``); with Celery the workers take them. Standard
output carries only the protocol; logs go to standard error.
"""

from __future__ import annotations

import os

import anyio
import click
from levqor_kernel.host import Host, HostCommandGroup, HttpError

from .settings import PREFIXES, McpSettings


def _state() -> Host:
    root = click.get_current_context().find_root().command
    if not isinstance(root, HostCommandGroup):
        raise click.ClickException("this levqor command group offers no levqor_state()")
    return root.levqor_state()


@click.group("mcp")
def mcp_group() -> None:
    """The Model Context Protocol: your pipelines as tools of an MCP client."""


@mcp_group.command("serve")
@click.option(
    "--api-key-env",
    default="LEVQOR_API_KEY",
    show_default=True,
    help="The environment variable holding the API key to sign in with (never pass the key "
    "itself on the command line).",
)
def serve(api_key_env: str) -> None:
    """Serve your pipelines as MCP tools over stdio (for a client that starts this command)."""
    key = (os.environ.get(api_key_env) or "").strip()
    if not key:
        raise click.ClickException(
            f"{api_key_env} is not set: set it to an API key with the scope runs:execute "
            "(levqor keys create, or the dashboard's API keys)"
        )
    st = _state()
    try:
        settings = McpSettings.from_env(st.config.plugin_settings(*PREFIXES))
        user = st.pipeline_calls.user_for_key(key, "runs:execute")
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    except HttpError as e:
        raise click.ClickException(f"{api_key_env}: {e.message}") from None
    if not st.pipeline_calls.start_workers():
        click.echo(
            "warning: no executor takes runs here (LEVQOR_EXECUTOR=off): tool calls will queue "
            "runs that a `levqor worker` elsewhere must run",
            err=True,
        )
    click.echo(f"levqor mcp: serving {user['email']}'s pipelines over stdio", err=True)
    anyio.run(_serve_stdio, st, user, settings)


async def _serve_stdio(st: Host, user: dict, settings: McpSettings) -> None:
    from mcp.server.stdio import stdio_server

    from .server import build_server

    server = build_server(st.pipeline_calls, user, wait_seconds=settings.wait_seconds)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())
