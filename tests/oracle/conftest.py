"""Shared fixtures for the oracle tests: paths, Tessera's tools, llama.cpp."""
import json
import os
import subprocess

import pytest

SOURCE = os.environ.get("TESSERA_SOURCE", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("TESSERA_BIN", os.path.join(SOURCE, "build", "bin"))
MODEL = os.path.join(SOURCE, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def tool(name):
    return os.path.join(BIN, name)


class JsonLinesTool:
    """A long-running Tessera tool that answers one JSON line per request."""

    def __init__(self, args):
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8")

    def ask(self, obj):
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "tool exited"
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="session")
def model_path():
    assert os.path.exists(MODEL), "run `make setup` first"
    return MODEL


@pytest.fixture(scope="session")
def llama(model_path):
    from llama_cpp import Llama

    return Llama(model_path, n_ctx=2048, n_batch=512, n_threads=2, logits_all=True, verbose=False)


@pytest.fixture(scope="session")
def llama_vocab(model_path):
    from llama_cpp import Llama

    return Llama(model_path, vocab_only=True, verbose=False)


def run_tool(name, *args, timeout=120):
    return subprocess.run([tool(name), *args], capture_output=True, text=True, timeout=timeout)
