"""Connection handling: many idle connections cost no thread and do not stop
service; clients that are idle or send a request too slowly are cut off."""
import json
import os
import resource
import socket
import tempfile
import time

import pytest

from conftest import MODEL_ID, Stack


@pytest.fixture(scope="module")
def short_timeouts():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    cfg.write("request_read_timeout_s: 2\nidle_timeout_s: 2\nio_threads: 1\n")
    cfg.close()
    s = Stack(extra_gateway_args=["--config", cfg.name])
    yield s
    s.stop()
    os.unlink(cfg.name)


def thread_count(pid):
    with open(f"/proc/{pid}/status") as f:
        return int([l for l in f if l.startswith("Threads:")][0].split()[1])


def test_thousands_of_idle_connections(short_timeouts):
    s = short_timeouts
    n = min(2000, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 200)
    threads_before = thread_count(s.gateway.pid)
    conns = []
    try:
        for _ in range(n):
            conns.append(socket.create_connection(("127.0.0.1", s.http_port), timeout=5))
        time.sleep(0.3)
        assert thread_count(s.gateway.pid) <= threads_before + 2
        c = socket.create_connection(("127.0.0.1", s.http_port), timeout=10)
        body = json.dumps({"model": MODEL_ID, "prompt": "Hi", "max_tokens": 2, "temperature": 0}).encode()
        c.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        assert c.recv(100).startswith(b"HTTP/1.1 200")
        c.close()
    finally:
        for c in conns:
            c.close()
    print(f"{n} idle connections held with {thread_count(s.gateway.pid)} gateway threads")


def test_idle_and_slow_clients_are_cut_off(short_timeouts):
    s = short_timeouts
    idle = socket.create_connection(("127.0.0.1", s.http_port), timeout=10)
    slow = socket.create_connection(("127.0.0.1", s.http_port), timeout=10)
    slow.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
    t0 = time.time()
    for _ in range(5):  # a slowloris keeps trickling header bytes
        time.sleep(0.5)
        try:
            slow.sendall(b"X-Slow: 1\r\n")
        except OSError:
            break
    for c in (idle, slow):
        c.settimeout(10)
        try:
            data = c.recv(100)
        except ConnectionResetError:
            data = b""
        assert data == b"", data
    assert time.time() - t0 < 8
