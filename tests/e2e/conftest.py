"""Fixtures that start real tessera-worker and tessera-gateway processes on
loopback ports and tear them down."""
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

SOURCE = os.environ.get("TESSERA_SOURCE", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("TESSERA_BIN", os.path.join(SOURCE, "build", "bin"))
MODEL_ID = "SmolLM2-135M-Instruct.Q4_1"


def compile_protos(proto, module):
    """Generates Python stubs for one of the project's protos into a temporary
    directory and imports `module` (e.g. 'tessera.worker.v1.worker')."""
    import importlib
    import tempfile

    import grpc_tools
    from grpc_tools import protoc

    out = tempfile.mkdtemp()
    rc = protoc.main(["protoc", f"-I{SOURCE}/proto", f"-I{grpc_tools.__path__[0]}/_proto", f"--python_out={out}",
                      f"--grpc_python_out={out}", f"{SOURCE}/proto/{proto}"])
    assert rc == 0, proto
    sys.path.insert(0, out)
    return importlib.import_module(module + "_pb2"), importlib.import_module(module + "_pb2_grpc")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, timeout=60, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


class Stack:
    def __init__(self, api_keys=(), extra_gateway_args=(), workers=1, extra_worker_args=()):
        self.worker_ports = [free_port() for _ in range(workers)]
        self.http_port = free_port()
        self.procs = []
        self.logs = []
        for p in self.worker_ports:
            self._spawn([os.path.join(BIN, "tessera-worker"), "--listen", f"127.0.0.1:{p}", *extra_worker_args],
                        f"worker-{p}")
        args = [os.path.join(BIN, "tessera-gateway"), "--listen", f"127.0.0.1:{self.http_port}"]
        for p in self.worker_ports:
            args += ["--worker", f"127.0.0.1:{p}"]
        for k in api_keys:
            args += ["--api-key", k]
        args += list(extra_gateway_args)
        self.gateway = self._spawn(args, "gateway")
        wait_ready(f"{self.url}/ready", proc=self.gateway)

    def _spawn(self, args, name):
        log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"tessera-e2e-{name}-{os.getpid()}.log"), "w+")
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        self.logs.append(log)
        return p

    @property
    def url(self):
        return f"http://127.0.0.1:{self.http_port}"

    def gateway_log(self):
        self.logs[-1].flush()
        with open(self.logs[-1].name) as f:
            return f.read()

    def stop(self):
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        for l in self.logs:
            l.close()


@pytest.fixture(scope="module")
def stack():
    s = Stack()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(stack):
    from openai import OpenAI

    return OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0, timeout=120)
