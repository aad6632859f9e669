"""The worker's gRPC service with a real gRPC client: streaming, health,
errors with their status codes, and cancellation at once."""
import os
import subprocess
import sys
import tempfile
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import BIN, compile_protos, free_port


@pytest.fixture(scope="module")
def pb():
    return compile_protos("tessera/worker/v1/worker.proto", "tessera.worker.v1.worker")


@pytest.fixture(scope="module")
def worker(pb):
    port = free_port()
    p = subprocess.Popen([f"{BIN}/tessera-worker", "--listen", f"127.0.0.1:{port}", "--max-waiting", "2", "--max-num-seqs", "1"],
                         stderr=subprocess.DEVNULL)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=60)
    yield pb[1].WorkerStub(channel), channel
    p.terminate()
    p.wait(15)


def test_health_and_model_info(pb, worker):
    stub, channel = worker
    h = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert h.status == health_pb2.HealthCheckResponse.SERVING
    info = stub.GetModelInfo(pb[0].GetModelInfoRequest())
    assert info.model_id == "SmolLM2-135M-Instruct.Q4_1" and info.context_length == 8192 and info.has_chat_template


def test_generate_streams_tokens_then_finish(pb, worker):
    stub, _ = worker
    m = pb[0]
    req = m.GenerateRequest(text="The capital of France is", max_new_tokens=6,
                            sampling=m.SamplingParams(temperature=0, logprobs=True, top_logprobs=2))
    responses = list(stub.Generate(req))
    assert responses[0].queue_ns >= 0 and responses[0].prefill_ns > 0
    assert sum(len(r.token_ids) for r in responses) == 6
    last = responses[-1]
    assert last.finish_reason == m.FINISH_REASON_LENGTH
    assert last.usage.prompt_tokens > 0 and last.usage.completion_tokens == 6
    assert "".join(r.text for r in responses).startswith(" Paris")
    for r in responses[:-1]:
        for lp in r.logprobs:
            assert len(lp.top_logprobs) == 2


def test_errors_have_status_codes(pb, worker):
    stub, _ = worker
    m = pb[0]
    cases = [
        (m.GenerateRequest(text="hi", sampling=m.SamplingParams(top_p=1.5)), grpc.StatusCode.INVALID_ARGUMENT),
        (m.GenerateRequest(text="hi", max_new_tokens=10 ** 6), grpc.StatusCode.INVALID_ARGUMENT),
        (m.GenerateRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        (m.GenerateRequest(token_ids=m.TokenIds(ids=[10 ** 7])), grpc.StatusCode.INVALID_ARGUMENT),
        (m.GenerateRequest(text="hi", sampling=m.SamplingParams(logit_bias={-3: 1.0})), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for req, code in cases:
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Generate(req))
        assert e.value.code() == code, e.value.details()


def test_deadline_cancels_generation_at_once(pb, worker):
    stub, _ = worker
    m = pb[0]
    with pytest.raises(grpc.RpcError) as e:
        list(stub.Generate(m.GenerateRequest(text="hi", max_new_tokens=4000, ignore_eos=True), timeout=0.5))
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    t0 = time.time()
    list(stub.Generate(m.GenerateRequest(text="hi", max_new_tokens=2)))
    assert time.time() - t0 < 2, "the cancelled generation kept the engine busy"


def test_full_queue_is_resource_exhausted(pb, worker):
    stub, _ = worker
    m = pb[0]
    long = m.GenerateRequest(text="hi", max_new_tokens=120, ignore_eos=True)
    calls = [stub.Generate(long, timeout=60) for _ in range(8)]
    codes = []
    for c in calls:
        try:
            list(c)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as e:
            codes.append(e.code())
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert grpc.StatusCode.OK in codes


def test_watch_load_reports_changes_and_heartbeats(pb, worker):
    stub, _ = worker
    m = pb[0]
    reports = []
    stream = stub.WatchLoad(m.WatchLoadRequest(max_interval_ms=100), timeout=30)
    first = next(stream)
    assert first.sequence == 1 and first.model_id == "SmolLM2-135M-Instruct.Q4_1"
    assert first.max_num_seqs == 1 and first.max_waiting == 2 and first.kv_blocks_total > 0
    # A running request shows up in the reports.
    gen = stub.Generate(m.GenerateRequest(text="Count to twenty:", max_new_tokens=40, ignore_eos=True), timeout=60)
    t0 = time.time()
    for r in stream:
        reports.append((time.time() - t0, r))
        if r.running == 1 and r.kv_blocks_used > 0:
            break
        assert time.time() - t0 < 20
    for _ in gen:
        pass
    # Idle again: the drop is reported, then heartbeats at most 100 ms apart.
    for r in stream:
        if r.running == 0:
            break
    times = []
    for r in stream:
        times.append(time.time())
        if len(times) == 4:
            break
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps) < 0.35, gaps
    assert [r.sequence for _, r in reports] == list(range(2, 2 + len(reports)))
    stream.cancel()


def test_prefetch_unknown_adapter_is_not_found(pb, worker):
    stub, _ = worker
    with pytest.raises(grpc.RpcError) as e:
        stub.PrefetchAdapter(pb[0].PrefetchAdapterRequest(name="nope"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_tensor_parallel_worker_serves_and_reports_its_size(pb):
    """A worker with --tensor-parallel-size 2 (two CPU ranks) serves greedy
    text, and says its size in load reports and in its metrics."""
    import urllib.request
    m = pb[0]
    port, metrics_port = free_port(), free_port()
    p = subprocess.Popen([f"{BIN}/tessera-worker", "--listen", f"127.0.0.1:{port}", "--tensor-parallel-size", "2",
                          "--metrics-listen", f"127.0.0.1:{metrics_port}"], stderr=subprocess.PIPE, text=True)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=60)
        stub = pb[1].WorkerStub(channel)
        req = m.GenerateRequest(text="The capital of France is", max_new_tokens=4,
                                sampling=m.SamplingParams(temperature=0))
        assert "".join(r.text for r in stub.Generate(req, timeout=60)).startswith(" Paris")
        report = next(stub.WatchLoad(m.WatchLoadRequest(max_interval_ms=100), timeout=30))
        assert report.tensor_parallel_size == 2
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        assert "tessera_worker_tensor_parallel_size 2" in text
    finally:
        p.terminate()
        _, err = p.communicate(timeout=15)
    assert "tensor-parallel rank 1/2: heads [6, 9), KV heads [2, 3), feed-forward [768, 1536)" in err
