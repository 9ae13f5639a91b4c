"""The inboxes' storage: append-only JSON lines files under the logs folder.

``errors.jsonl`` (frontend error reports and server exceptions), ``support.jsonl`` (support
messages) and ``support-forward.jsonl`` (the outcome of each forward to the support address).
Each line is appended with one ``write`` (O_APPEND), safe across gunicorn workers; a file that
would grow past its size limit is rotated to ``<name>.1`` first.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path


class JsonlFile:
    """Append-only JSON lines with size rotation."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def append(self, obj: dict) -> None:
        line = (json.dumps(obj, ensure_ascii=False, default=str) + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                if self.path.stat().st_size + len(line) > self.max_bytes:
                    os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            except FileNotFoundError:
                pass
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    def writable(self) -> str | None:
        """None when a line could be appended now, else why not."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.close(fd)
        except OSError as e:
            return f"{self.path} is not writable: {e.strerror or type(e).__name__}"
        return None

    def tail(self, n: int = 200) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 256 * 1024))
                lines = f.read().splitlines()[-n:]
        except OSError:
            return []
        out = []
        for raw in lines:
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue
        return out


class InboxFiles:
    """The three files of the error and support inboxes in ``logs_dir``."""

    def __init__(self, logs_dir: Path, max_bytes: int) -> None:
        self.errors = JsonlFile(logs_dir / "errors.jsonl", max_bytes)
        self.support = JsonlFile(logs_dir / "support.jsonl", max_bytes)
        self.forwards = JsonlFile(logs_dir / "support-forward.jsonl", max_bytes)
