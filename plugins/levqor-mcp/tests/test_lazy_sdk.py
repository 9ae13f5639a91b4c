"""Every host process builds the catalog, but only a process that talks MCP loads the SDK
(it costs about 0.7 s and 40 MB of memory to import)."""

from __future__ import annotations

import subprocess
import sys


def test_the_catalog_and_the_credential_check_do_not_import_the_sdk():
    code = (
        "import sys\n"
        "from levqor_kernel.plugins import make_plugin_manager\n"
        "import levqor_mcp\n"
        "pm = make_plugin_manager(entry_points=False, plugins=[('mcp', levqor_mcp)])\n"
        "assert 'mcp' in pm.catalog, pm.failed if hasattr(pm, 'failed') else 'not loaded'\n"
        "problems = levqor_mcp.validate_credentials('mcp', {'url': 'https://example.com/mcp'}, {})\n"
        "assert problems == {}, problems\n"
        "loaded = sorted(m for m in ('mcp', 'mcp_types', 'pydantic', 'httpx2') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_step_loads_the_sdk_when_it_calls_a_server():
    from levqor_mcp import client

    assert client.Client.__module__.startswith("mcp")
