"""Overload is not failover: with a single worker whose queue is full, the
gateway passes the 429 to the client and counts it as a shed request; it
counts a retry only when another worker actually takes the request."""
import concurrent.futures
import json
import os
import urllib.error
import urllib.request

import pytest

from conftest import BIN, Stack, free_port


def metric(url, name, **labels):
    with urllib.request.urlopen(url, timeout=10) as r:
        page = r.read().decode()
    total = 0.0
    for line in page.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module")
def overloaded():
    metrics_port = free_port()
    s = Stack(extra_worker_args=["--engine", "sim", "--max-num-seqs", "1", "--max-waiting", "1",
                                 "--sim-decode-us-per-seq", "20000"],
              extra_gateway_args=["--metrics-listen", f"127.0.0.1:{metrics_port}"])
    s.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    yield s
    s.stop()


def post(url):
    req = urllib.request.Request(url + "/v1/completions", data=json.dumps(
        {"model": "sim", "prompt": "hello", "max_tokens": 8}).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_refusals_by_a_full_single_worker_are_shed_not_retried(overloaded):
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda _: post(overloaded.url), range(16)))
    assert 200 in codes and 429 in codes, codes
    refused = codes.count(429)
    assert metric(overloaded.metrics_url, "tessera_gateway_retries_total") == 0
    assert metric(overloaded.metrics_url, "tessera_gateway_requests_shed_total", reason="queue_full") == refused
