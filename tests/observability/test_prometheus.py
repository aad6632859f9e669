"""A real Prometheus (Debian's package) scrapes a running gateway and worker
on loopback while they serve traffic: the key series exist and move; every
PromQL expression of the Grafana dashboards and of the alert rules runs
without error; `promtool check metrics` passes on both /metrics pages;
`promtool check rules` and `promtool test rules` pass on the shipped rules."""
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

import pytest
import requests
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get("TESSERA_SOURCE", os.path.abspath(os.path.join(HERE, "..", "..")))
sys.path.insert(0, os.path.join(SOURCE, "tests", "e2e"))
from conftest import BIN, MODEL_ID, free_port, wait_ready  # noqa: E402
from test_failover import Procs, wait_worker  # noqa: E402

RULES = os.path.join(SOURCE, "helm", "tessera", "files", "tessera-alerts.yaml")
DASHBOARDS = sorted(glob.glob(os.path.join(SOURCE, "helm", "tessera", "files", "dashboards", "*.json")))
MODEL = os.path.join(SOURCE, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMETHEUS is None or PROMTOOL is None,
                                reason="skipped: Debian's prometheus package (prometheus, promtool) is not installed")


def promtool(*args, stdin=None, cwd=None):
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, text=True, cwd=cwd, timeout=60)


@pytest.fixture(scope="module")
def cluster():
    procs = Procs()
    tmp = tempfile.mkdtemp()
    adapters = os.path.join(tmp, "adapters")
    for i, name in enumerate(("support", "sql")):
        subprocess.run([sys.executable, os.path.join(SOURCE, "tools", "make_adapter.py"), "--base", MODEL, "--out",
                        os.path.join(adapters, name), "--rank", "4", "--targets", "q_proj,v_proj", "--seed",
                        str(i + 1)], check=True, capture_output=True)
    worker, worker_metrics, gateway_metrics, http, prom = (free_port() for _ in range(5))
    procs.start("worker", [f"{BIN}/tessera-worker", "--listen", f"127.0.0.1:{worker}", "--metrics-listen",
                           f"127.0.0.1:{worker_metrics}", "--adapter-dir", adapters, "--max-loras", "1"])
    wait_worker(f"127.0.0.1:{worker}")
    procs.start("gateway", [f"{BIN}/tessera-gateway", "--listen", f"127.0.0.1:{http}", "--worker",
                            f"127.0.0.1:{worker}", "--metrics-listen", f"127.0.0.1:{gateway_metrics}"])
    url = f"http://127.0.0.1:{http}"
    wait_ready(f"{url}/ready", proc=procs.procs["gateway"])
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [RULES],
        "scrape_configs": [
            {"job_name": "tessera-gateway", "static_configs": [{"targets": [f"127.0.0.1:{gateway_metrics}"]}]},
            {"job_name": "tessera-worker", "static_configs": [{"targets": [f"127.0.0.1:{worker_metrics}"]}]},
        ],
    }
    with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
        yaml.safe_dump(config, f)
    procs.start("prometheus", [PROMETHEUS, f"--config.file={tmp}/prometheus.yml", f"--storage.tsdb.path={tmp}/data",
                               f"--web.listen-address=127.0.0.1:{prom}"])
    api = f"http://127.0.0.1:{prom}/api/v1"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            up = requests.get(f"{api}/query", params={"query": "sum(up)"}, timeout=2).json()
            if up["data"]["result"] and float(up["data"]["result"][0]["value"][1]) == 2:
                break
        except (requests.RequestException, ValueError, KeyError):
            pass
        time.sleep(0.2)
    else:
        pytest.fail("Prometheus never saw both targets up:\n" + procs.log("prometheus")[-2000:])
    yield {"url": url, "api": api, "gateway_metrics": f"http://127.0.0.1:{gateway_metrics}/metrics",
           "worker_metrics": f"http://127.0.0.1:{worker_metrics}/metrics", "procs": procs}
    procs.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def query(api, expr):
    r = requests.get(f"{api}/query", params={"query": expr}, timeout=10).json()
    assert r["status"] == "success", (expr, r)
    return r["data"]["result"]


def scalar(api, expr):
    result = query(api, expr)
    return float(result[0]["value"][1]) if result else 0.0


def wait_for(api, expr, predicate, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = scalar(api, expr)
        if predicate(v):
            return v
        time.sleep(0.5)
    pytest.fail(f"{expr} never satisfied the condition (last value {v})")


def chat(url, model, stream=False, headers=None):
    body = {"model": model, "max_tokens": 8, "temperature": 0, "stream": stream,
            "messages": [{"role": "user", "content": "Say hello."}]}
    r = requests.post(f"{url}/v1/chat/completions", json=body, headers=headers or {}, timeout=120)
    return r.status_code


def test_key_series_exist_and_move(cluster):
    api, url = cluster["api"], cluster["url"]
    before_requests = scalar(api, "sum(tessera_gateway_requests_total)")
    before_tokens = scalar(api, "sum(tessera_worker_generation_tokens_total)")
    assert chat(url, MODEL_ID) == 200
    assert chat(url, MODEL_ID, stream=True) == 200
    for _ in range(2):  # two adapters, one device slot: loads and an eviction
        assert chat(url, "support") == 200
        assert chat(url, MODEL_ID, headers={"X-Lora-Adapter": "sql"}) == 200
    assert chat(url, "no-such-model") == 404
    wait_for(api, "sum(tessera_gateway_requests_total)", lambda v: v >= before_requests + 7)
    wait_for(api, "sum(tessera_worker_generation_tokens_total)", lambda v: v >= before_tokens + 6 * 8)
    assert scalar(api, 'sum(tessera_gateway_requests_total{status="404",model="-"})') >= 1
    assert scalar(api, 'sum(tessera_gateway_requests_total{adapter="support",status="200"})') >= 2
    assert scalar(api, "sum(tessera_gateway_time_to_first_token_seconds_count)") >= 6
    assert scalar(api, "sum(tessera_gateway_time_per_output_token_seconds_count)") >= 6
    assert scalar(api, 'sum(tessera_gateway_routing_decisions_total{residency="base"})') >= 2
    assert scalar(api, 'sum(tessera_gateway_workers{state="routable"})') == 1
    assert scalar(api, "sum(tessera_worker_adapter_loads_total)") >= 2
    assert scalar(api, "sum(tessera_worker_adapter_device_evictions_total)") >= 1
    assert scalar(api, "sum(tessera_worker_adapter_requests_total)") >= 4
    assert scalar(api, 'sum(tessera_worker_step_duration_seconds_count{phase="decode"})') > 0
    assert scalar(api, "sum(tessera_worker_kv_blocks_capacity)") > 0
    assert scalar(api, "max(tessera_worker_model_load_seconds)") > 0
    assert scalar(api, 'sum(tessera_worker_requests_total{finish_reason="length"})') >= 6
    info = query(api, "tessera_worker_info")
    assert info and info[0]["metric"]["model"] == MODEL_ID


def dashboard_queries():
    for path in DASHBOARDS:
        for p in json.load(open(path))["panels"]:
            for t in p["targets"]:
                yield os.path.basename(path), p["title"], t["expr"].replace("$__rate_interval", "1m")


def test_every_dashboard_and_alert_expression_runs(cluster):
    api = cluster["api"]
    time.sleep(2.5)  # two more scrapes: every series the traffic created has the two samples rate() needs
    exprs = list(dashboard_queries())
    assert len(DASHBOARDS) == 3 and len(exprs) > 30
    empty = []
    for name, title, expr in exprs:
        if not query(api, expr):
            empty.append(f"{name}: {title}: {expr}")
    # Queries over series this test's traffic produced return data; the few
    # that need events it cannot cause here (retries, ejections) may be empty.
    allowed_empty = ("retries", "ejections", "budget", "preemptions", "failures", "prefix cache",
                     "structured output")  # no structured-output traffic here
    assert all(any(a in e.lower() for a in allowed_empty) for e in empty), "\n".join(empty)
    rules = yaml.safe_load(open(RULES))
    n = 0
    for group in rules["groups"]:
        for rule in group["rules"]:
            query(api, rule["expr"])
            n += 1
    assert n == 6
    # Prometheus itself loaded the rule file and evaluates it.
    r = requests.get(f"{api}/rules", timeout=10).json()
    loaded = [rule["name"] for g in r["data"]["groups"] for rule in g["rules"]]
    assert sorted(loaded) == sorted(rule["alert"] for g in rules["groups"] for rule in g["rules"])
    assert all(rule["health"] == "ok" for g in r["data"]["groups"] for rule in g["rules"]), r


def test_promtool_checks_metrics_and_rules(cluster):
    for name in ("gateway_metrics", "worker_metrics"):
        text = requests.get(cluster[name], timeout=10).text
        res = promtool("check", "metrics", stdin=text)
        assert res.returncode == 0, (name, res.stdout, res.stderr)
    res = promtool("check", "rules", RULES)
    assert res.returncode == 0, res.stdout + res.stderr
    res = promtool("test", "rules", "alerts_test.yaml", cwd=HERE)
    assert res.returncode == 0, res.stdout + res.stderr


def test_dashboards_match_their_generator():
    res = subprocess.run([sys.executable, os.path.join(SOURCE, "tools", "make_dashboards.py"), "--check"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
