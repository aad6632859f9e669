"""Failover, health and discovery in the gateway's worker pool, with real
processes on loopback: a worker killed with SIGKILL under steady load, a hung
worker (SIGSTOP: it keeps its connections but never answers), every worker
down, and DNS discovery adding and removing workers (a small DNS server in
this test answers the gateway's queries)."""
import collections
import json
import sys
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time

import requests
import pytest

from conftest import BIN, MODEL_ID, free_port, wait_ready

TMP = os.environ.get("TMPDIR", "/tmp")


class Procs:
    """Processes of one test, each with a log file; all are killed at the end."""

    def __init__(self):
        self.procs = {}
        self.logs = {}

    def start(self, name, args, env=None):
        log = open(os.path.join(TMP, f"tessera-failover-{name}-{os.getpid()}.log"), "a+")
        self.logs[name] = log
        self.procs[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        return self.procs[name]

    def log(self, name):
        self.logs[name].flush()
        with open(self.logs[name].name) as f:
            return f.read()

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                p.kill()
                p.wait(10)
        for l in self.logs.values():
            l.close()


@pytest.fixture
def procs():
    p = Procs()
    yield p
    p.stop()


def worker_args(listen, sim=False):
    if sim:
        return [f"{BIN}/tessera-worker", "--engine", "sim", "--listen", listen, "--sim-step-ms", "2"]
    return [f"{BIN}/tessera-worker", "--listen", listen, "--max-num-seqs", "4"]


def wait_worker(address, timeout=120):
    import grpc

    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=timeout)
    channel.close()


def start_sim_workers(procs, n):
    """n simulated workers w0.. on loopback, serving; their addresses."""
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(n)]
    for i, a in enumerate(addresses):
        procs.start(f"w{i}", worker_args(a, sim=True))
    for a in addresses:
        wait_worker(a, 30)
    return addresses


def gateway(procs, port, workers=(), extra=()):
    args = [f"{BIN}/tessera-gateway", "--listen", f"127.0.0.1:{port}"]
    for w in workers:
        args += ["--worker", w]
    return procs.start("gateway", args + list(extra))


def complete(url, model, stream, max_tokens=12, timeout=90):
    """One request; returns ('ok'|'error_event'|'http_<code>', seconds)."""
    body = {"model": model, "max_tokens": max_tokens, "temperature": 0, "stream": stream,
            "messages": [{"role": "user", "content": "Name three colors."}]}
    t0 = time.time()
    if not stream:
        r = requests.post(f"{url}/v1/chat/completions", json=body, timeout=timeout)
        return ("ok" if r.status_code == 200 else f"http_{r.status_code}"), time.time() - t0
    with requests.post(f"{url}/v1/chat/completions", json=body, timeout=timeout, stream=True) as r:
            if r.status_code != 200:
                return f"http_{r.status_code}", time.time() - t0
            outcome = "truncated"  # the stream ended without [DONE]: a protocol violation
            for line in r.iter_lines(decode_unicode=True):
                if not line or not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    outcome = "ok" if outcome == "truncated" else outcome
                    break
                if "error" in json.loads(data):
                    outcome = "error_event"
            return outcome, time.time() - t0


def routes_to(log, address):
    return len(re.findall(r"route model=.* -> " + re.escape(address) + " ", log))


def test_kill_one_of_three_workers_under_load(procs):
    ports = [free_port() for _ in range(3)]
    addresses = [f"127.0.0.1:{p}" for p in ports]
    for i, a in enumerate(addresses):
        procs.start(f"w{i}", worker_args(a))
    for a in addresses:
        wait_worker(a)
    http = free_port()
    url = f"http://127.0.0.1:{http}"
    gateway(procs, http, addresses, ["--routing-policy", "least-loaded", "--log-routing=true",
                                     "--health-check-interval-ms", "200"])
    wait_ready(f"{url}/ready", proc=procs.procs["gateway"])

    results = []  # (outcome, seconds, stream)
    stop = threading.Event()
    lock = threading.Lock()

    def client(i):
        n = 0
        while not stop.is_set():
            stream = (n + i) % 2 == 0
            outcome, seconds = complete(url, MODEL_ID, stream)
            with lock:
                results.append((outcome, seconds, stream))
            n += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    victim = addresses[1]
    deadline = time.time() + 60
    while routes_to(procs.log("gateway"), victim) < 3 and time.time() < deadline:
        time.sleep(0.1)
    assert routes_to(procs.log("gateway"), victim) >= 3, "the victim never received traffic"
    procs.procs["w1"].kill()
    ready_codes = []
    for _ in range(30):  # 3 s of load without the victim; the gateway must stay ready
        ready_codes.append(requests.get(f"{url}/ready", timeout=5).status_code)
        time.sleep(0.1)
    assert set(ready_codes) == {200}

    # The worker comes back on its address and must receive traffic again.
    routed_before = routes_to(procs.log("gateway"), victim)
    procs.start("w1-restarted", worker_args(victim))
    deadline = time.time() + 90
    while routes_to(procs.log("gateway"), victim) <= routed_before + 2 and time.time() < deadline:
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(120)
        assert not t.is_alive(), "a client hung"
    log = procs.log("gateway")
    assert f"worker {victim} is serving" in log.split("is unavailable")[-1] or \
        log.count(f"worker {victim} is serving") >= 2
    assert routes_to(log, victim) > routed_before + 2, "the restarted worker got no traffic"

    outcomes = [r[0] for r in results]
    # Nothing hangs or breaks off without a word: a request either succeeds
    # or (a stream whose tokens already reached the client) ends with an
    # error event.
    unexpected = [r for r in results if r[0] not in ("ok", "error_event")]
    assert not unexpected, (unexpected, collections.Counter(outcomes))
    assert max(r[1] for r in results) < 90
    # Non-streamed requests never show the failure: they run again elsewhere.
    assert all(o == "ok" for o, _, stream in results if not stream), outcomes
    interrupted = outcomes.count("error_event") + log.count("retrying a request that failed on " + victim)
    assert interrupted >= 1, "the kill hit no request: the test proved nothing"
    # Only streams running on the victim when it died may fail: at most one
    # per client.
    assert outcomes.count("error_event") <= 6 and outcomes.count("ok") >= 6, outcomes


def test_hung_worker_is_ejected_and_readmitted(procs):
    addresses = start_sim_workers(procs, 2)
    http = free_port()
    url = f"http://127.0.0.1:{http}"
    # Slow probes, so that requests meet the hung worker before a probe does.
    gateway(procs, http, addresses, ["--routing-policy", "round-robin", "--first-response-timeout-ms", "800",
                                     "--health-check-interval-ms", "4000", "--base-ejection-ms", "500"])
    wait_ready(f"{url}/ready", proc=procs.procs["gateway"])
    assert complete(url, "sim", False)[0] == "ok"
    hung = addresses[0]
    os.kill(procs.procs["w0"].pid, signal.SIGSTOP)
    times = []
    for i in range(6):
        outcome, seconds = complete(url, "sim", i % 2 == 0)
        assert outcome == "ok"
        times.append(seconds)
    log = procs.log("gateway")
    assert re.search(f"worker {re.escape(hung)} ejected for \\d+ ms: accepted no request within 800 ms", log), log
    assert max(times) < 5, times  # one wait of the first-response timeout, then a retry
    assert sorted(times)[-2] < 0.7, times  # once ejected, no request waits for it again
    os.kill(procs.procs["w0"].pid, signal.SIGCONT)
    deadline = time.time() + 20
    while f"worker {hung} re-admitted" not in procs.log("gateway") and time.time() < deadline:
        time.sleep(0.2)
    assert f"worker {hung} re-admitted" in procs.log("gateway")


def test_all_workers_down_is_503_within_the_connect_timeout(procs):
    addresses = start_sim_workers(procs, 2)
    http = free_port()
    url = f"http://127.0.0.1:{http}"
    gateway(procs, http, addresses, ["--connect-timeout-ms", "1000", "--health-check-interval-ms", "60000"])
    wait_ready(f"{url}/ready", proc=procs.procs["gateway"])
    for name in ("w0", "w1"):
        procs.procs[name].kill()
        procs.procs[name].wait()
    for stream in (False, True, False):
        outcome, seconds = complete(url, "sim", stream)
        assert outcome == "http_503" and seconds < 1.5, (outcome, seconds)
    r = requests.post(f"{url}/v1/completions", json={"model": "sim", "prompt": "x"}, timeout=10)
    assert r.status_code == 503 and r.json()["error"]["message"]
    assert requests.get(f"{url}/ready", timeout=5).status_code == 503

    # A gateway whose workers never existed: not ready, and 503 at once.
    http2 = free_port()
    p = subprocess.Popen([f"{BIN}/tessera-gateway", "--listen", f"127.0.0.1:{http2}", "--worker",
                          f"127.0.0.1:{free_port()}", "--connect-timeout-ms", "1000"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                code = requests.get(f"http://127.0.0.1:{http2}/ready", timeout=2).status_code
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert code == 503
        outcome, seconds = complete(f"http://127.0.0.1:{http2}", "sim", False)
        assert outcome == "http_503" and seconds < 1.5
    finally:
        p.kill()
        p.wait()


class FakeDns:
    """A DNS server on loopback UDP answering A queries for one name from a
    list the test changes; other names get NXDOMAIN. mode 'silent' drops
    queries, 'garbage' answers with a malformed message."""

    def __init__(self, name):
        self.name = name.lower().rstrip(".")
        self.addresses = []
        self.mode = "answer"
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(512)
            except OSError:
                return
            if len(data) < 12 or self.mode == "silent":
                continue
            qid, _flags, qdcount = struct.unpack(">HHH", data[:6])
            labels, i = [], 12
            while i < len(data) and data[i] != 0:
                n = data[i]
                labels.append(data[i + 1:i + 1 + n].decode("ascii", "replace"))
                i += 1 + n
            question = data[12:i + 5]
            qtype = struct.unpack(">H", data[i + 1:i + 3])[0]
            if self.mode == "garbage":
                self.sock.sendto(struct.pack(">HHHHHH", qid, 0x8180, 1, 5, 0, 0) + question + b"\xc0", peer)
                continue
            known = ".".join(labels).lower() == self.name
            answers = [a for a in self.addresses] if known and qtype == 1 else []
            rcode = 0 if known else 3
            msg = struct.pack(">HHHHHH", qid, 0x8180 | rcode, 1, len(answers), 0, 0) + question
            for a in answers:
                msg += b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 5, 4) + socket.inet_aton(a)
            self.sock.sendto(msg, peer)

    def close(self):
        self.sock.close()


def test_dns_discovery_adds_and_removes_workers(procs):
    port = free_port()
    ips = ["127.0.0.2", "127.0.0.3"]
    for i, ip in enumerate(ips):
        procs.start(f"w{i}", worker_args(f"{ip}:{port}", sim=True))
    for ip in ips:
        wait_worker(f"{ip}:{port}", 30)
    dns = FakeDns("workers.tessera.test")
    try:
        dns.addresses = [ips[0]]
        http = free_port()
        url = f"http://127.0.0.1:{http}"
        gateway(procs, http, [], ["--worker-dns", f"workers.tessera.test:{port}", "--dns-server",
                                  f"127.0.0.1:{dns.port}", "--dns-refresh-ms", "200", "--health-check-interval-ms",
                                  "200", "--routing-policy", "round-robin", "--log-routing=true"])
        wait_ready(f"{url}/ready", proc=procs.procs["gateway"])
        a, b = f"{ips[0]}:{port}", f"{ips[1]}:{port}"

        def spread(n=6):
            log_before = procs.log("gateway")
            for _ in range(n):
                assert complete(url, "sim", False)[0] == "ok"
            log = procs.log("gateway")[len(log_before):]
            return routes_to(log, a), routes_to(log, b)

        assert spread() == (6, 0)
        dns.addresses = ips
        deadline = time.time() + 10
        while f"worker {b} is serving" not in procs.log("gateway") and time.time() < deadline:
            time.sleep(0.1)
        assert f"worker discovery: added {b}" in procs.log("gateway")
        to_a, to_b = spread()
        assert to_a > 0 and to_b > 0

        # No answer from DNS (timeouts, garbage) keeps the workers it had.
        for mode in ("silent", "garbage"):
            dns.mode = mode
            time.sleep(1.5)
            assert sum(spread(4)) == 4
        assert "keeping the current workers" in procs.log("gateway")
        assert "malformed DNS answer" in procs.log("gateway")
        dns.mode = "answer"

        dns.addresses = [ips[1]]
        deadline = time.time() + 10
        while f"worker discovery: removed {a}" not in procs.log("gateway") and time.time() < deadline:
            time.sleep(0.1)
        assert f"worker discovery: removed {a}" in procs.log("gateway")
        assert spread() == (0, 6)

        dns.addresses = []  # the Service has no ready pods
        deadline = time.time() + 10
        while requests.get(f"{url}/ready", timeout=5).status_code != 503 and time.time() < deadline:
            time.sleep(0.1)
        assert complete(url, "sim", False)[0] == "http_503"
    finally:
        dns.close()


def test_runtime_adapter_comes_back_with_a_restarted_worker(procs, tmp_path):
    source = os.environ.get("TESSERA_SOURCE", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
    model = os.path.join(source, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
    root = tmp_path / "adapters"
    late = root / "staging" / "late"  # inside the root, not in its catalog
    subprocess.run([sys.executable, os.path.join(source, "tools", "make_adapter.py"), "--base", model, "--out",
                    str(late), "--rank", "4", "--targets", "q_proj,v_proj", "--seed", "5"], check=True,
                   capture_output=True)
    address = f"127.0.0.1:{free_port()}"
    worker = worker_args(address) + ["--adapter-dir", str(root)]
    procs.start("w0", worker)
    wait_worker(address)
    http = free_port()
    url = f"http://127.0.0.1:{http}"
    gateway(procs, http, [address], ["--admin-api-key", "k", "--health-check-interval-ms", "200"])
    wait_ready(f"{url}/ready", proc=procs.procs["gateway"])
    r = requests.post(f"{url}/v1/load_lora_adapter", json={"lora_name": "late", "lora_path": str(late)},
                      headers={"Authorization": "Bearer k"}, timeout=60)
    assert r.status_code == 200, r.text
    assert complete(url, "late", False)[0] == "ok"

    procs.procs["w0"].kill()
    procs.procs["w0"].wait()
    procs.start("w0-restarted", worker)
    wait_worker(address)
    deadline = time.time() + 30
    outcome = None
    while time.time() < deadline:
        outcome = complete(url, "late", False)[0]
        if outcome == "ok":
            break
        time.sleep(0.3)
    assert outcome == "ok", procs.log("gateway")[-3000:]
    assert f"worker {address} lacks runtime adapter 'late'" in procs.log("gateway")


def test_tensor_parallel_rank_failure_ends_the_worker_and_the_gateway_fails_over(procs):
    """A tensor-parallel worker (2 CPU ranks) whose rank 1 vanishes mid-step
    (the test hook TESSERA_TEST_TP_RANK_EXIT ends that rank's thread without
    a word, as a dead device or process would): rank 0's all-reduce times out,
    the worker exits non-zero with the reason within the collective timeout,
    and the gateway serves every request on the other worker."""
    tp_address, other = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    # An explicit step budget: no step-cost measurement at start, so the
    # hook's step count is the requests' own steps.
    tp_args = worker_args(tp_address) + ["--tensor-parallel-size", "2", "--tensor-parallel-timeout-ms", "2000",
                                         "--max-num-batched-tokens", "64"]
    procs.start("tp", tp_args, env=dict(os.environ, TESSERA_TEST_TP_RANK_EXIT="1:30"))
    procs.start("other", worker_args(other))
    wait_worker(tp_address)
    wait_worker(other)
    http = free_port()
    url = f"http://127.0.0.1:{http}"
    gateway(procs, http, [tp_address, other], ["--routing-policy", "round-robin", "--log-routing=true",
                                               "--health-check-interval-ms", "200"])
    wait_ready(f"{url}/ready", proc=procs.procs["gateway"])
    outcomes = []
    t_dead = None
    for _ in range(12):
        outcomes.append(complete(url, MODEL_ID, stream=False))
        if t_dead is None and procs.procs["tp"].poll() is not None:
            t_dead = time.time()
    code = procs.procs["tp"].wait(30)
    log = procs.log("tp")
    assert code == 3, log[-2000:]
    assert "tensor-parallel group failed" in log and "exiting" in log, log[-2000:]
    # Non-streamed requests never show the failure: they ran again elsewhere.
    assert [o for o, _ in outcomes] == ["ok"] * len(outcomes), outcomes
    # No request waited much beyond the collective timeout (2 s, and rank 0
    # waits at most twice that for its peers).
    assert max(s for _, s in outcomes) < 30, outcomes
    assert routes_to(procs.log("gateway"), tp_address) >= 2, "the tensor-parallel worker never served"
