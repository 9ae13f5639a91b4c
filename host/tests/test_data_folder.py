"""A data folder that cannot be written costs the file copies written after a commit (the
pipeline export, the jobs.jsonl audit line), never a truthful answer: a saved pipeline is a
201, and a client's retry with its Idempotency-Key creates nothing twice."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import LiveServer, make_app

# scripts/test-backends runs this file on PostgreSQL, and on Celery: its apps start workers
pytestmark = [pytest.mark.backends, pytest.mark.workers]


def _writable(folder: Path) -> bool:
    probe = folder / ".probe"
    try:
        probe.write_text("x")
    except OSError:
        return False
    probe.unlink()
    return True


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` made read-only for real: permission bits for a normal user; for root (who
    ignores them) the immutable attribute, else a read-only bind mount. Skips when neither
    is possible here."""
    undo: list[list[str]] = []
    if os.geteuid() != 0:
        folder.chmod(0o555)
        undo_mode = True
    else:
        undo_mode = False
        if (
            shutil.which("chattr")
            and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
        ):
            undo.append(["chattr", "-i", str(folder)])
        elif (
            shutil.which("mount")
            and subprocess.run(
                ["mount", "--bind", str(folder), str(folder)], capture_output=True
            ).returncode
            == 0
        ):
            undo.append(["umount", str(folder)])
            subprocess.run(
                ["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True, check=False
            )
    try:
        if _writable(folder):
            pytest.skip("cannot make a folder read-only here (no chattr, no mount)")
        yield
    finally:
        for cmd in undo:
            subprocess.run(cmd, capture_output=True, check=False)
        if undo_mode:
            folder.chmod(0o755)


def test_a_read_only_data_folder_never_turns_a_saved_pipeline_into_an_error(tmp_path):
    s = LiveServer(make_app(tmp_path))
    try:
        _, key = s.user_with_key("ro@example.com")
        c = s.client(key)
        cfg = s.state.config
        folder = cfg.pipelines_dir.parent  # <data dir>/data: pipeline copies and jobs.jsonl
        folder.mkdir(parents=True, exist_ok=True)
        doc = {
            "levqor": 1,
            "trigger": {"type": "manual"},
            "steps": [
                {"id": "a", "connector": "core", "action": "transform", "payload": {"value": 1}}
            ],
        }
        body = {"name": "read-only", "pipeline": doc}
        with read_only(folder):
            first = c.post("/api/v1/pipelines", json=body, headers={"Idempotency-Key": "ro-1"})
            assert first.status_code == 201, first.text  # saved: the answer says so
            retry = c.post("/api/v1/pipelines", json=body, headers={"Idempotency-Key": "ro-1"})
            assert retry.status_code == 201 and retry.json()["id"] == first.json()["id"]
            assert len(c.get("/api/v1/pipelines").json()["items"]) == 1
            pid = first.json()["id"]
            run = c.post("/api/v1/run?wait=10", json={"pipeline_id": pid})
            assert run.status_code == 200 and run.json()["status"] == "succeeded", run.text
            assert not cfg.pipelines_dir.exists() and not cfg.jobs_log.exists()
        # writable again: the next save writes its copy
        r = c.put(f"/api/v1/pipelines/{pid}", json=body)
        assert r.status_code == 200
        assert (cfg.pipelines_dir / f"{pid}.json").exists()
    finally:
        s.stop()
