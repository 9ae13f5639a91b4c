"""A server that trickles its body cannot hold a request past the step deadline."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from levqor_kernel.errors import RetryableError
from levqor_kernel.http import Http


def test_trickled_body_stops_at_the_deadline():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def serve():
        c, _ = srv.accept()
        c.recv(65536)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n")
        for _ in range(40):
            try:
                c.sendall(b"x")
                time.sleep(0.1)
            except OSError:
                break
        c.close()

    threading.Thread(target=serve, daemon=True).start()
    http = Http(deadline=time.monotonic() + 0.8)
    t0 = time.monotonic()
    with pytest.raises(RetryableError) as e:
        http.request("GET", f"http://127.0.0.1:{port}/")
    assert e.value.code == "timeout"
    assert time.monotonic() - t0 < 1.5
    srv.close()


def test_a_callers_own_timeout_is_capped_by_the_deadline():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    http = Http(deadline=time.monotonic() + 0.5)
    t0 = time.monotonic()
    with pytest.raises(RetryableError):  # the server accepts but never answers
        http.request("GET", f"http://127.0.0.1:{port}/", timeout=30)
    assert time.monotonic() - t0 < 2
    srv.close()
