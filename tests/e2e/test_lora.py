"""Multi-LoRA serving end to end: a worker with 9 adapters under its
--adapter-dir and only 3 device slots, behind a gateway with an admin key.

- every request run concurrently (8 adapters and the base model mixed in the
  same batches, more adapters than slots, so adapters are evicted and
  reloaded while others run) returns exactly what the single-sequence CLI
  returns for that adapter alone;
- selection by model name and by X-Lora-Adapter; /v1/models lists adapters
  with their parent;
- refusals: unknown adapters, bad names, traversal (../, absolute paths
  outside the roots, symlinks leaving a root), pickle files, ranks above the
  limit, corrupt weights; admin routes need the admin key.
"""
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from conftest import BIN, MODEL_ID, SOURCE, Stack, compile_protos

MODEL = os.path.join(SOURCE, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
ADMIN = "admin-secret"
TARGET_SETS = ["q_proj,v_proj", "q_proj,k_proj,v_proj,o_proj", "gate_proj,up_proj,down_proj",
               "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"]
PROMPTS = ["The capital of France is", "Once upon a time", "def fibonacci(n):", "The best way to learn is"]
MAX_TOKENS = 12


def make_adapter(out, rank, targets, seed, *extra):
    subprocess.run([sys.executable, os.path.join(SOURCE, "tools", "make_adapter.py"), "--base", MODEL, "--out", out,
                    "--rank", str(rank), "--targets", targets, "--seed", str(seed), "--scale", "0.08", *extra],
                   check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("lora")
    root, outside = base / "adapters", base / "outside"
    root.mkdir()
    outside.mkdir()
    for i in range(9):
        make_adapter(str(root / f"ad{i}"), [4, 8, 16][i % 3], TARGET_SETS[i % 4], 100 + i)
    make_adapter(str(root / "staging" / "late"), 8, "q_proj,v_proj", 200)  # not an adapter dir itself: staging/
    make_adapter(str(outside / "escapee"), 4, "q_proj", 300)
    os.symlink(outside / "escapee", root / "symlinked")  # a symlink that leaves the root
    big = make_adapter(str(root / "bigrank"), 96, "q_proj", 301)
    pickled = make_adapter(str(root / "pickled"), 4, "q_proj", 302)
    os.rename(os.path.join(pickled, "adapter_model.safetensors"), os.path.join(pickled, "adapter_model.bin"))
    corrupt = make_adapter(str(root / "corrupt"), 4, "q_proj", 303)
    with open(os.path.join(corrupt, "adapter_model.safetensors"), "r+b") as f:
        f.truncate(4096)
    return {"root": str(root), "outside": str(outside), "big": big}


@pytest.fixture(scope="module")
def lora_stack(dirs):
    s = Stack(extra_worker_args=["--adapter-dir", dirs["root"], "--max-loras", "3", "--max-cpu-loras", "4",
                                 "--max-num-seqs", "16"],
              extra_gateway_args=["--admin-api-key", ADMIN])
    yield s
    s.stop()


def post(url, path, body, headers=None):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def complete(url, model, prompt, headers=None):
    status, body = post(url, "/v1/completions", {"model": model, "prompt": prompt, "max_tokens": MAX_TOKENS,
                                                 "temperature": 0}, headers)
    assert status == 200, body
    return json.loads(body)["choices"][0]["text"]


def cli(prompt, adapter_dir=None, *extra):
    args = [os.path.join(BIN, "tessera-generate"), "--prompt", prompt, "--max-tokens", str(MAX_TOKENS), "--format",
            "json", *extra]
    if adapter_dir:
        args += ["--lora", adapter_dir]
    r = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(r.stdout)["text"]


def models(url):
    with urllib.request.urlopen(url + "/v1/models", timeout=10) as r:
        return {m["id"]: m for m in json.load(r)["data"]}


def test_models_lists_adapters_with_parent(lora_stack):
    listed = models(lora_stack.url)
    assert listed[MODEL_ID]["parent"] is None
    for i in range(9):
        assert listed[f"ad{i}"]["parent"] == MODEL_ID
    # Not adapters of this worker: a subdirectory, a symlink leaving the root.
    assert "staging" not in listed and "symlinked" not in listed


def test_mixed_adapter_batches_equal_each_request_alone(lora_stack, dirs):
    jobs = [(f"ad{i}", PROMPTS[i % len(PROMPTS)]) for i in range(9)]
    jobs += [(f"ad{i}", PROMPTS[(i + 1) % len(PROMPTS)]) for i in range(8)]
    jobs += [(MODEL_ID, p) for p in PROMPTS]
    expected = {}
    for model, prompt in jobs:
        adapter = None if model == MODEL_ID else os.path.join(dirs["root"], model)
        expected[(model, prompt)] = cli(prompt, adapter)
    # The adapters must matter, or the comparison proves nothing.
    assert len({expected[(f"ad{i}", PROMPTS[i % len(PROMPTS)])] for i in range(4)} |
               {expected[(MODEL_ID, PROMPTS[0])]}) == 5
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        got = list(pool.map(lambda j: complete(lora_stack.url, *j), jobs))
    for (model, prompt), text in zip(jobs, got):
        assert text == expected[(model, prompt)], (model, prompt)
    # 9 adapters through 3 device slots: adapters were evicted under load.
    import grpc
    pb, pb_grpc = compile_protos("tessera/worker/v1/worker.proto", "tessera.worker.v1.worker")
    with grpc.insecure_channel(f"127.0.0.1:{lora_stack.worker_ports[0]}") as ch:
        info = pb_grpc.WorkerStub(ch).GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    assert info.max_loras == 3
    assert info.adapter_device_evictions > 0 and info.adapter_loads >= 9, info


def test_header_selects_adapter_of_base_model(lora_stack, dirs):
    want = cli(PROMPTS[0], os.path.join(dirs["root"], "ad2"))
    assert complete(lora_stack.url, MODEL_ID, PROMPTS[0], {"X-Lora-Adapter": "ad2"}) == want
    status, body = post(lora_stack.url, "/v1/completions", {"model": "ad1", "prompt": "x", "max_tokens": 2},
                        {"X-Lora-Adapter": "ad2"})
    assert status == 400, body


@pytest.mark.parametrize("model,status,fragment", [
    ("no-such-adapter", 404, "does not exist"),
    ("symlinked", 404, "does not exist"),
    ("../ad1", 404, "does not exist"),
    ("bigrank", 400, "exceeds --max-lora-rank"),
    ("pickled", 400, "pickle"),
    ("corrupt", 400, "truncated"),
])
def test_refused_adapters(lora_stack, model, status, fragment):
    code, body = post(lora_stack.url, "/v1/completions", {"model": model, "prompt": "Hello", "max_tokens": 4})
    assert code == status, body
    err = json.loads(body)["error"]
    assert fragment in err["message"], err
    # A refused adapter leaves nothing behind: the service keeps serving.
    assert complete(lora_stack.url, "ad0", "Hello")


def test_admin_load_and_unload(lora_stack, dirs):
    url, auth = lora_stack.url, {"Authorization": f"Bearer {ADMIN}"}
    late = os.path.join(dirs["root"], "staging", "late")
    body = {"lora_name": "late", "lora_path": late}
    assert post(url, "/v1/load_lora_adapter", body)[0] == 401
    assert post(url, "/v1/load_lora_adapter", body, {"Authorization": "Bearer wrong"})[0] == 401
    status, text = post(url, "/v1/load_lora_adapter", body, auth)
    assert status == 200 and "late" in text, text
    assert post(url, "/v1/load_lora_adapter", body, auth)[0] == 409  # already loaded
    deadline = time.time() + 5
    while "late" not in models(url) and time.time() < deadline:
        time.sleep(0.1)
    assert models(url)["late"]["parent"] == MODEL_ID
    assert complete(url, "late", PROMPTS[1]) == cli(PROMPTS[1], late)

    status, text = post(url, "/v1/unload_lora_adapter", {"lora_name": "late"}, auth)
    assert status == 200, text
    assert post(url, "/v1/unload_lora_adapter", {"lora_name": "late"}, auth)[0] == 404
    code, body = post(url, "/v1/completions", {"model": "late", "prompt": "x", "max_tokens": 2})
    deadline = time.time() + 5
    while code != 404 and time.time() < deadline:  # the gateway's view refreshes within a second
        time.sleep(0.2)
        code, body = post(url, "/v1/completions", {"model": "late", "prompt": "x", "max_tokens": 2})
    assert code == 404, body


@pytest.mark.parametrize("name,path_key,suffix,status", [
    ("t1", "root", "/../outside/escapee", 403),
    ("t2", "outside", "/escapee", 403),
    ("t3", "root", "/symlinked", 403),
    ("t4", None, "/etc", 403),
    ("t5", "root", "/missing", 404),
    # Outside the roots, existing or not: the same 403 (no existence oracle).
    ("t9", "outside", "/no-such-dir", 403),
    ("t10", None, "/no/such/place", 403),
    ("../t6", "root", "/ad1", 400),
    ("t7", "root", "/pickled", 400),
    ("t8", "root", "/bigrank", 400),
])
def test_admin_refusals(lora_stack, dirs, name, path_key, suffix, status):
    path = (dirs[path_key] if path_key else "") + suffix
    code, body = post(lora_stack.url, "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path},
                      {"Authorization": f"Bearer {ADMIN}"})
    assert code == status, body
    assert "error" in json.loads(body)


def test_admin_routes_disabled_without_admin_key(stack):
    code, body = post(stack.url, "/v1/load_lora_adapter", {"lora_name": "x", "lora_path": "/tmp"})
    assert code == 403 and "disabled" in body


def test_tensor_parallel_mixed_adapter_batches_equal_each_request_alone(dirs):
    """The same mix on a worker split over 2 CPU ranks, each holding its
    slice of every adapter (B by output features for q/k/v/gate/up, A by
    input features for o/down). With two ranks each all-reduced element is
    one addition, the same whichever rank's part comes first, so batching
    changes no bit and each request must equal the CLI at the same size."""
    s = Stack(extra_worker_args=["--adapter-dir", dirs["root"], "--max-loras", "3", "--max-cpu-loras", "4",
                                 "--max-num-seqs", "16", "--tensor-parallel-size", "2"])
    try:
        jobs = [(f"ad{i}", PROMPTS[i % len(PROMPTS)]) for i in range(4)] + [(MODEL_ID, PROMPTS[0])]
        expected = {}
        for model, prompt in jobs:
            adapter = None if model == MODEL_ID else os.path.join(dirs["root"], model)
            expected[(model, prompt)] = cli(prompt, adapter, "--tensor-parallel-size", "2")
        assert len(set(expected.values())) == len(jobs), "the adapters must matter"
        with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
            got = list(pool.map(lambda j: complete(s.url, *j), jobs))
        for (model, prompt), text in zip(jobs, got):
            assert text == expected[(model, prompt)], (model, prompt)
    finally:
        s.stop()
