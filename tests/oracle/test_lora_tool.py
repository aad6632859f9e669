"""tools/make_adapter.py writes PEFT-layout adapters that the worker's own
loader (tessera-lora) accepts, for several ranks, target sets and dtypes;
and the loader refuses what it must."""
import json
import os
import subprocess
import sys

import pytest

from conftest import SOURCE, run_tool


def make(tmp_path, name, *args):
    out = str(tmp_path / name)
    subprocess.run([sys.executable, os.path.join(SOURCE, "tools", "make_adapter.py"), "--base",
                    os.path.join(SOURCE, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"), "--out", out, *args],
                   check=True, capture_output=True)
    return out


@pytest.mark.parametrize("args,summary", [
    (["--rank", "4", "--targets", "q_proj,v_proj"], "rank 4, alpha 8, 60 adapted projections"),
    (["--rank", "16", "--targets", "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", "--dtype", "F16"],
     "rank 16, alpha 32, 210 adapted projections"),
    (["--rank", "8", "--alpha", "8", "--rslora", "--targets", "down_proj"], "rank 8, alpha 8 (rsLoRA), 30 adapted"),
])
def test_generated_adapters_load(tmp_path, args, summary):
    out = make(tmp_path, "a", *args)
    cfg = json.load(open(os.path.join(out, "adapter_config.json")))
    assert cfg["peft_type"] == "LORA"
    r = run_tool("tessera-lora", out)
    assert r.returncode == 0, r.stderr
    assert summary in r.stdout


def test_loader_refusals(tmp_path):
    big = make(tmp_path, "big", "--rank", "96")
    r = run_tool("tessera-lora", big)
    assert r.returncode == 1 and "exceeds --max-lora-rank 64" in r.stderr
    pickled = make(tmp_path, "pickled")
    os.rename(os.path.join(pickled, "adapter_model.safetensors"), os.path.join(pickled, "adapter_model.bin"))
    r = run_tool("tessera-lora", pickled)
    assert r.returncode == 1 and "pickle" in r.stderr
    bad = make(tmp_path, "corrupt")
    with open(os.path.join(bad, "adapter_model.safetensors"), "r+b") as f:
        f.truncate(1000)
    r = run_tool("tessera-lora", bad)
    assert r.returncode == 1 and "truncated" in r.stderr
