"""`levqor connector check` against installed connector distributions (levqor-notion,
levqor-slack): needs the host and those plugins together."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from e2e_support import clean_env
from levqor_host.scaffold import scaffold


def levqor(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "levqor_host.cli", *args],
        cwd=cwd,
        env={**clean_env(), "LEVQOR_CACHE_DIR": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_check_a_good_project_and_an_installed_distribution(tmp_path):
    proj = scaffold("quokka", tmp_path)
    r = levqor("connector", "check", str(proj), "--json")
    report = json.loads(r.stdout)
    assert r.returncode == 0 and report["ok"], report
    assert report["distribution"] == "levqor-quokka" and report["modules"] == ["levqor_quokka"]
    assert any("429 with Retry-After" in c for c in report["checks"])
    assert any("pytest -k levqor_contract" in c for c in report["checks"])
    r = levqor("connector", "check", "levqor-notion")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "nothing to fix" in r.stdout
    r = levqor("connector", "check", "levqor-no-such-thing")
    assert r.returncode == 1 and "no installed distribution" in r.stdout


def test_check_points_an_endpoint_credential_at_the_fake():
    # levqor-slack's credential is the webhook URL itself (endpoint_field): the check points it
    # at its fake and allows the fake's host, so the network checks run instead of being skipped
    r = levqor("connector", "check", "levqor-slack", "--json")
    report = json.loads(r.stdout)
    assert r.returncode == 0 and report["ok"], report
    assert report["notes"] == [], report["notes"]
    assert any("429 with Retry-After" in c for c in report["checks"]), report["checks"]
    assert any("missing credentials fail closed" in c for c in report["checks"])
