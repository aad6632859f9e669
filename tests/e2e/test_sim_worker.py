"""tessera-worker --engine=sim: the worker's gRPC service without a model,
with batching, adapter slots, load reports and a bounded queue."""
import subprocess
import threading

import grpc
import pytest

from conftest import BIN, compile_protos, free_port


@pytest.fixture(scope="module")
def sim():
    pb, pb_grpc = compile_protos("tessera/worker/v1/worker.proto", "tessera.worker.v1.worker")
    port = free_port()
    p = subprocess.Popen([f"{BIN}/tessera-worker", "--engine", "sim", "--listen", f"127.0.0.1:{port}",
                          "--sim-adapters", "3", "--max-loras", "1", "--max-cpu-loras", "2", "--max-num-seqs", "4",
                          "--max-waiting", "8", "--sim-adapter-load-ms", "50"], stderr=subprocess.DEVNULL)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=30)
    yield pb, pb_grpc.WorkerStub(channel)
    p.terminate()
    assert p.wait(15) == 0


def test_info_and_generation(sim):
    pb, stub = sim
    info = stub.GetModelInfo(pb.GetModelInfoRequest())
    assert info.model_id == "sim" and [a.name for a in info.adapters] == ["a0", "a1", "a2"]
    out = list(stub.Generate(pb.GenerateRequest(text="hello world, hello", max_new_tokens=3)))
    assert sum(len(r.token_ids) for r in out) == 3
    assert out[-1].finish_reason == pb.FINISH_REASON_LENGTH and out[-1].usage.completion_tokens == 3
    with pytest.raises(grpc.RpcError) as e:
        list(stub.Generate(pb.GenerateRequest(text="x", adapter="nope")))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_adapters_share_one_slot_and_reports_follow(sim):
    pb, stub = sim
    results = {}

    def run(name):
        results[name] = sum(len(r.token_ids) for r in stub.Generate(
            pb.GenerateRequest(text="a prompt", adapter=name, max_new_tokens=5), timeout=30))

    threads = [threading.Thread(target=run, args=(f"a{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"a0": 5, "a1": 5, "a2": 5}
    info = stub.GetModelInfo(pb.GetModelInfoRequest())
    assert info.adapter_loads >= 3 and info.adapter_device_evictions >= 2
    report = next(stub.WatchLoad(pb.WatchLoadRequest(), timeout=5))
    assert len(report.device_adapters) == 1 and len(report.host_adapters) == 1  # 2 host slots, 1 of them on device
    assert report.max_loras == 1 and report.max_num_seqs == 4


def test_full_queue_is_refused(sim):
    pb, stub = sim
    calls = [stub.Generate(pb.GenerateRequest(text="x", max_new_tokens=200), timeout=30) for _ in range(14)]
    codes = []
    for c in calls:
        try:
            next(c)
            codes.append("ok")
        except grpc.RpcError as e:
            codes.append(e.code())
        c.cancel()
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes and "ok" in codes


def test_backend_is_a_deprecated_spelling_of_engine():
    # --backend=cpu|sim was renamed --engine=model|sim; the old spelling still
    # works, says so in one line, and the printed configuration names the engine.
    p = subprocess.Popen([f"{BIN}/tessera-worker", "--backend", "sim", "--listen", f"127.0.0.1:{free_port()}"],
                         stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in p.stderr:
            lines.append(line)
            if line.startswith("tessera-worker: serving"):
                break
    finally:
        p.terminate()
        p.communicate(timeout=30)
    out = "".join(lines)
    assert "tessera-worker: --backend is deprecated; use --engine (cpu is now model)\n" in out, out
    assert sum("deprecated" in line for line in lines) == 1, out
    assert "\nengine: sim\n" in out and "backend:" not in out, out
