"""An AWQ checkpoint directory served end to end: a worker started with
--model DIR behind a gateway lists the directory's name and encoding in
/v1/models, names the format and bits in its log and metrics, and serves
mixed-adapter batches over the AWQ base whose every output equals the same
request run alone by the CLI."""
import concurrent.futures
import json
import os
import subprocess
import sys
import urllib.request

import pytest

from conftest import BIN, SOURCE, Stack, free_port

sys.path.insert(0, os.path.join(SOURCE, "tests", "oracle"))
pytest.importorskip("safetensors", reason="pip install -r tools/setup/requirements.txt")
import checkpoints as ck  # noqa: E402

PROMPTS = ["The capital of France is", "Once upon a time", "def fibonacci(n):"]
TARGETS = ["q_proj,v_proj", "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", "gate_proj,up_proj,down_proj",
           "k_proj,o_proj"]
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def awq():
    return ck.quantized("smollm2", ck.bundled_hf("f16"), "awq-g64", method="awq", bits=4, group_size=64)[0]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf-adapters")
    for i, targets in enumerate(TARGETS):
        subprocess.run([sys.executable, os.path.join(SOURCE, "tools", "make_adapter.py"), "--base", ck.MODEL,
                        "--out", str(root / f"ad{i}"), "--rank", str([4, 8, 16, 8][i]), "--targets", targets,
                        "--seed", str(40 + i), "--scale", "0.08"], check=True, capture_output=True)
    return str(root)


@pytest.fixture(scope="module")
def stack(awq, adapters):
    metrics_port = free_port()
    s = Stack(extra_worker_args=["--model", awq, "--adapter-dir", adapters, "--max-loras", "2", "--max-num-seqs", "16",
                                 "--metrics-listen", f"127.0.0.1:{metrics_port}"])
    s.metrics_port = metrics_port
    yield s
    s.stop()


def complete(url, model, prompt):
    req = urllib.request.Request(url + "/v1/completions", data=json.dumps(
        {"model": model, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.load(r)["choices"][0]["text"]


def cli(model, prompt, adapter=None):
    args = [os.path.join(BIN, "tessera-generate"), "--model", model, "--prompt", prompt, "--max-tokens",
            str(MAX_TOKENS), "--format", "json"] + (["--lora", adapter] if adapter else [])
    return json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)["text"]


def test_models_name_the_directory_and_its_encoding(stack, awq):
    with urllib.request.urlopen(stack.url + "/v1/models", timeout=10) as r:
        listed = {m["id"]: m for m in json.load(r)["data"]}
    name = os.path.basename(awq)
    assert listed[name]["weight_type"] == "awq-int4-g64"
    assert listed[name]["parent"] is None
    assert all(listed[f"ad{i}"]["parent"] == name for i in range(len(TARGETS)))


def test_log_and_metrics_name_format_and_bits(stack):
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10) as r:
        page = r.read().decode()
    line = [l for l in page.splitlines() if l.startswith("tessera_worker_model_format{")]
    assert line and 'format="hf"' in line[0] and 'quantization="awq"' in line[0] and 'bits="4"' in line[0], line
    stack.logs[0].flush()
    with open(stack.logs[0].name) as f:
        log = f.read()
    assert "awq int4 g64" in log and "4-bit" in log, log[-2000:]


def test_mixed_adapter_batches_over_awq_equal_each_request_alone(stack, awq, adapters):
    name = os.path.basename(awq)
    jobs = [(f"ad{i}", PROMPTS[(i + k) % len(PROMPTS)]) for i in range(len(TARGETS)) for k in range(2)]
    jobs += [(name, p) for p in PROMPTS]
    expected = {j: cli(awq, j[1], None if j[0] == name else os.path.join(adapters, j[0])) for j in set(jobs)}
    assert len({expected[(f"ad{i}", PROMPTS[i % len(PROMPTS)])] for i in range(3)}) == 3, "adapters must matter"
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        got = list(pool.map(lambda j: complete(stack.url, *j), jobs))
    for job, text in zip(jobs, got):
        assert text == expected[job], job
