"""Backups and restore: a backup taken during live runs restores into a new data folder with
every run finished at backup time; corrupt, foreign and tampered archives are refused."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from e2e_support import LiveServer, backend_env, clean_env, make_app
from levqor_host.backup.common import BackupError, list_backups
from levqor_host.backup.create import create_backup, prune
from levqor_host.backup.restore import restore_backup
from levqor_host.config import Config
from levqor_kernel import hookimpl
from sqlalchemy import select

# scripts/test-backends runs this file on PostgreSQL, and on Celery: its apps start workers
pytestmark = [pytest.mark.backends, pytest.mark.workers]

FINAL = ("succeeded", "failed", "cancelled")


class Slow:
    """A connector that takes a little time, so runs are in flight while the backup is taken."""

    @hookimpl
    def describe_schema(self):
        return [
            {
                "name": "slow",
                "title": "Slow",
                "description": "test connector",
                "actions": {
                    "nap": {
                        "title": "Nap",
                        "payload": {"type": "object", "properties": {"n": {}}},
                        "output": {"type": "object"},
                        "example": {"n": 1},
                    }
                },
            }
        ]

    @hookimpl
    def run_task(self, connector, action, payload, credentials, context):
        time.sleep(0.02)
        return {"n": payload.get("n")}


DOC = {
    "levqor": 1,
    "trigger": {"type": "manual"},
    "steps": [
        {"id": "a", "connector": "slow", "action": "nap", "payload": {"n": "{{ trigger.n }}"}},
        {"id": "b", "connector": "slow", "action": "nap", "payload": {"n": "{{ trigger.n }}"}},
    ],
}


def _env(tmp_path: Path, data: Path, **extra) -> dict:
    env = clean_env()
    env.update({"LEVQOR_DATA_DIR": str(data), **extra})
    return env


def _cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "levqor_host.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _finished_ids(store) -> set[str]:
    from levqor_host.store.tables import runs

    with store.read() as conn:
        return {r.id for r in conn.execute(select(runs.c.id).where(runs.c.status.in_(FINAL)))}


@pytest.fixture
def srv(tmp_path):
    s = LiveServer(make_app(tmp_path / "live", plugins=[("slow", Slow())], executor={"workers": 4}))
    yield s
    s.stop()


def test_backup_during_live_runs_restores_every_finished_run(srv, tmp_path):
    user, key = srv.user_with_key("ops@example.com")
    c = srv.client(key)
    p = c.post("/api/v1/pipelines", json={"name": "slow", "pipeline": DOC}).json()
    c.post("/api/v1/support", json={"email": "x@example.com", "subject": "s", "message": "kept"})
    stop = threading.Event()
    started: list[str] = []

    def feeder():
        cl = srv.client(key)
        n = 0
        while not stop.is_set():
            n += 1
            r = cl.post("/api/v1/run", json={"pipeline_id": p["id"], "input": {"n": n}})
            started.append(r.json()["run_id"])
            time.sleep(0.005)

    threads = [threading.Thread(target=feeder) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 20
        while len(_finished_ids(srv.state.store)) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        finished_before = _finished_ids(srv.state.store)
        qs = srv.state.store.runs.queue_stats()
        res = create_backup(srv.state.store, srv.state.config)  # while runs are written
        still = srv.state.store.runs.queue_stats()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert (
        len(finished_before) >= 20
        and (qs["queued"] + qs["running"] + still["queued"] + still["running"]) > 0
    )
    m = res["manifest"]
    dialect = srv.state.store.dialect  # sqlite, or postgresql (pg_dump) when the suite runs on it
    assert m["format"] == "levqor-backup" and m["dialect"] == dialect and m["alembic_revision"]
    assert m["row_counts"]["runs"] >= len(finished_before) and m["row_counts"]["users"] == 1
    assert "files/logs/support.jsonl" in m["files"] and "files/secret.key" in m["files"]
    assert any(n.startswith("files/data/pipelines/") for n in m["files"])
    assert oct(res["path"].stat().st_mode & 0o777) == "0o600"

    # restore with the CLI into a new, empty data folder
    new = tmp_path / "restored" / "data"  # make_app's data folder under tmp_path / "restored"
    target = backend_env(tmp_path / "restored")  # and its (empty) PostgreSQL database, if any
    out = _cli(["restore", str(res["path"]), "--data-dir", str(new)], _env(tmp_path, new, **target))
    assert out.returncode == 0, out.stderr
    assert "restored" in out.stdout
    app = make_app(tmp_path / "restored", start_workers=False)
    try:
        st = app.extensions["levqor"]  # the restored vault key opens the restored database
        restored = {r["id"]: r for r in st.store.runs.list(user["id"], limit=200)[0]}
        cursor = None
        all_ids: set[str] = set()
        while True:
            items, cursor = st.store.runs.list(user["id"], limit=200, cursor=cursor)
            all_ids |= {r["id"] for r in items}
            restored.update({r["id"]: r for r in items})
            if not cursor:
                break
        assert finished_before <= all_ids  # every run finished at backup time is there
        for rid in finished_before:
            run = st.store.runs.get(user["id"], rid)
            assert run["status"] in FINAL
            if run["status"] == "succeeded":
                assert [s["status"] for s in run["steps"]] == ["succeeded", "succeeded"]
        assert st.store.pipelines.get(user["id"], p["id"])["doc"] == DOC
        assert (new / "logs" / "support.jsonl").read_text().count("kept") == 1
        assert (new / "data" / "pipelines" / f"{p['id']}.json").exists()
    finally:
        app.extensions["levqor"].store.close()

    # a second restore over it is refused without --force
    again = _cli(
        ["restore", str(res["path"]), "--data-dir", str(new)], _env(tmp_path, new, **target)
    )
    assert again.returncode != 0 and "--force" in again.stderr


def _tar_gz(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_restore_refuses_corrupt_foreign_and_tampered_archives(srv, tmp_path):
    srv.user_with_key("a@example.com")
    good = create_backup(srv.state.store, srv.state.config)["path"]
    entries = _members(good)
    manifest = json.loads(entries["manifest.json"])
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()

    def refused(name: str, data: bytes, expect: str) -> None:
        f = bad_dir / name
        f.write_bytes(data)
        target = tmp_path / f"target-{name}"
        cfg = Config.from_env({}, data_dir=target)
        with pytest.raises(BackupError) as e:
            restore_backup(f, cfg)
        assert expect in str(e.value), str(e.value)
        assert not (target / "levqor.db").exists()  # nothing was written

    raw = good.read_bytes()
    refused("random.tar.gz", os.urandom(4096), "not a gzip tar")
    refused("truncated.tar.gz", raw[: len(raw) // 2], "")
    refused("foreign.tar.gz", _tar_gz({"etc/passwd": b"root:x:0:0"}), "no manifest.json")
    refused(
        "other-manifest.tar.gz",
        _tar_gz({"manifest.json": b'{"format": "something"}'}),
        "not a levqor-backup",
    )
    db_name = manifest["database"]
    tampered = dict(entries)
    db = bytearray(tampered[db_name])
    db[len(db) // 2] ^= 0xFF
    tampered[db_name] = bytes(db)
    refused("tampered.tar.gz", _tar_gz(tampered), "checksum mismatch")
    missing = {k: v for k, v in entries.items() if k != db_name}
    refused("missing.tar.gz", _tar_gz(missing), "missing")
    refused("extra.tar.gz", _tar_gz({**entries, "files/evil.sh": b"rm -rf /"}), "does not list")
    refused("escape.tar.gz", _tar_gz({**entries, "../escape": b"x"}), "unexpected entry")
    newer = dict(manifest, alembic_revision="9999_from_the_future")
    newer_entries = {**entries, "manifest.json": json.dumps(newer).encode()}
    refused("newer.tar.gz", _tar_gz(newer_entries), "unknown to Levqor")
    # and the CLI says so
    out = _cli(
        ["restore", str(bad_dir / "foreign.tar.gz"), "--data-dir", str(tmp_path / "t2")],
        _env(tmp_path, tmp_path / "t2"),
    )
    assert out.returncode != 0 and "restore refused" in out.stderr and "manifest" in out.stderr
    assert gzip.decompress(raw)[:0] == b""  # the good archive itself is a real gzip


def test_force_restore_refuses_a_database_in_use_and_moves_files_aside(tmp_path):
    live = LiveServer(make_app(tmp_path / "live", plugins=[("slow", Slow())], start_scheduler=True))
    try:
        live.user_with_key("b@example.com")
        deadline = time.monotonic() + 10
        while not live.state.scheduler.is_leader and time.monotonic() < deadline:
            time.sleep(0.05)
        archive = create_backup(live.state.store, live.state.config)["path"]
        cfg = Config.from_env(backend_env(tmp_path / "live"), data_dir=live.state.config.data_dir)
        with pytest.raises(BackupError, match="in use .*scheduler lock"):
            restore_backup(archive, cfg, force=True)
    finally:
        live.stop()
    res = restore_backup(archive, cfg, force=True)  # stopped: the lock is released
    aside = Path(res["moved_aside"])
    assert (aside / "secret.key").exists()
    if res["dialect"] == "sqlite":  # PostgreSQL: pg_restore --clean replaced the tables
        assert (aside / "levqor.db").exists()
    assert res["vault_key_restored"] is True


def test_retention_keeps_seven_days_and_the_newest(tmp_path):
    cfg = Config.from_env({"LEVQOR_BACKUP_RETENTION_DAYS": "7"}, data_dir=tmp_path / "d")
    cfg.backups_dir.mkdir(parents=True)
    now = datetime.now(UTC)
    for days in (1, 3, 6, 8, 30):
        stamp = (now - timedelta(days=days)).strftime("%Y%m%dT%H%M%S%fZ")
        (cfg.backups_dir / f"levqor-backup-{stamp}-abcd.tar.gz").write_bytes(b"x")
    removed = prune(cfg, now=now)
    assert len(removed) == 2 and len(list_backups(cfg)) == 3
    # when every archive is old, the newest one stays
    removed = prune(cfg, now=now + timedelta(days=60))
    assert len(list_backups(cfg)) == 1 and len(removed) == 2


def test_the_leader_schedules_the_daily_backup_and_health_reports_it(tmp_path):
    live = LiveServer(
        make_app(tmp_path / "live", start_scheduler=True, env={"LEVQOR_BACKUP_CRON": "30 3 * * *"})
    )
    try:
        sched = live.state.scheduler
        deadline = time.monotonic() + 10
        while not sched.is_leader and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sched.next_backup().endswith("T03:30:00+00:00")
        job = sched.sched.get_job(sched.BACKUP_JOB)
        assert str(job.trigger) == "cron['30 3 * * *', UTC]"
        c = live.client()
        b = c.get("/api/v1/ops/health").json()["checks"]["backup"]
        assert b["ok"] and b["latest"] is None and b["next_fire"].endswith("T03:30:00+00:00")
        res = sched.run_backup()  # what APScheduler calls at 03:30 UTC
        assert res["path"].exists()
        b = c.get("/api/v1/ops/health").json()["checks"]["backup"]
        assert b["ok"] and b["latest"] == res["path"].name and b["age_seconds"] < 60
        assert b["last_run"]["ok"] is True
        assert 'levqor_backups_total{outcome="succeeded"} 1.0' in c.get("/metrics").text
        # a follower never backs up
        sched.is_leader = False
        assert sched.run_backup() is None
        sched.is_leader = True
        # a failing backup shows in health: the backup folder's place is taken by a file
        backups = live.state.config.backups_dir
        backups.rename(backups.with_name("backups-moved"))
        backups.write_text("a file where the backup folder should be")
        assert sched.run_backup() is None
        r = c.get("/api/v1/ops/health")
        assert r.status_code == 503 and r.json()["failing"] == ["backup"]
        assert "not writable" in r.json()["checks"]["backup"]["error"]
        assert 'levqor_backups_total{outcome="failed"} 1.0' in c.get("/metrics").text
    finally:
        live.stop()


def test_backup_cli_writes_a_verified_archive(tmp_path):
    data = tmp_path / "data"
    app = make_app(tmp_path, start_workers=False)
    st = app.extensions["levqor"]
    st.store.users.create("c@example.com")
    st.store.close()
    out = _cli(["backup"], _env(tmp_path, data, **backend_env(tmp_path)))
    assert out.returncode == 0, out.stderr
    assert "backup " in out.stdout and "revision" in out.stdout
    archives = list((data / "backups").glob("levqor-backup-*.tar.gz"))
    assert len(archives) == 1
    assert json.loads((data / "backups" / "last-run.json").read_text())["ok"] is True


@pytest.mark.services
def test_postgresql_backup_and_restore_with_pg_dump(tmp_path, pg_database_url, request):
    app = make_app(tmp_path / "pg", start_workers=False, env={"DATABASE_URL": pg_database_url})
    st = app.extensions["levqor"]
    try:
        u = st.store.users.create("pg@example.com")
        p = st.store.pipelines.create(u["id"], "pg", DOC)
        archive = create_backup(st.store, st.config)["path"]
        m = json.loads(_members(archive)["manifest.json"])
        assert m["dialect"] == "postgresql" and m["database"] == "db/levqor.pgdump"
        assert m["row_counts"]["users"] == 1 and m["row_counts"]["pipelines"] == 1
        # without pg_dump on PATH, health names the backup part
        key = (tmp_path / "pg" / "data" / "secret.key").read_text().strip()
        broken = make_app(
            tmp_path / "pg2",
            start_workers=False,
            env={
                "PATH": str(tmp_path / "empty-bin"),
                "LEVQOR_SECRET_KEY": key,
                "DATABASE_URL": pg_database_url,
            },
        )
        try:
            b = broken.extensions["levqor"]
            with broken.test_client() as tc:
                r = tc.get("/api/v1/ops/health")
            assert r.status_code == 503 and "backup" in r.json["failing"]
            assert "pg_dump not found" in r.json["checks"]["backup"]["error"]
        finally:
            b.store.close()
        st.store.pipelines.archive(u["id"], p["id"])
    finally:
        st.store.close()
    cfg = Config.from_env({"DATABASE_URL": pg_database_url}, data_dir=tmp_path / "pg-restored")
    with pytest.raises(BackupError, match="not empty"):
        restore_backup(archive, cfg)
    restore_backup(archive, cfg, force=True)
    from levqor_host.security.vault import Vault
    from levqor_host.store import Store

    s = Store(pg_database_url, Vault([Vault.generate_key()]))
    try:
        assert s.pipelines.get(u["id"], p["id"])["archived"] is False  # as it was at backup time
    finally:
        s.close()
