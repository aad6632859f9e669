"""Continuous batching: greedy outputs of many concurrent requests of mixed
prompt and output lengths equal the same requests run one at a time, token
for token, also when the KV cache is small enough to force preemption, when
prompts are prefilled in chunks, and when prefixes hit the cache."""
import concurrent.futures
import os
import re
import subprocess
import sys
import tempfile

import grpc
import pytest

from conftest import BIN, compile_protos, free_port

SYSTEM = ("You are a careful assistant. Answer briefly and precisely. " * 12).strip()
TOPICS = ["the moon", "rivers", "prime numbers", "bread", "volcanoes", "chess", "owls", "glass", "tides",
          "copper", "maps", "bees"]


def requests(pb):
    out = []
    for i in range(36):
        topic = TOPICS[i % len(TOPICS)]
        if i % 3 == 0:  # shared long prefix: prefix-cache hits
            prompt = pb.GenerateRequest(chat=pb.ChatPrompt(
                messages=[pb.ChatMessage(role="system", content=SYSTEM),
                          pb.ChatMessage(role="user", content=f"Tell me about {topic}.")],
                add_generation_prompt=True))
        elif i % 3 == 1:
            prompt = pb.GenerateRequest(text=f"Here is a short story about {topic}:" + " Once upon a time" * (i % 7))
        else:
            prompt = pb.GenerateRequest(text=f"{i}. A list of facts about {topic}:\n1.")
        prompt.max_new_tokens = 8 + (i * 7) % 57
        prompt.sampling.temperature = 0
        out.append(prompt)
    return out


@pytest.fixture(scope="module")
def pb():
    return compile_protos("tessera/worker/v1/worker.proto", "tessera.worker.v1.worker")


class Worker:
    def __init__(self, rpc, *args):
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        self.proc = subprocess.Popen([f"{BIN}/tessera-worker", "--listen", f"127.0.0.1:{self.port}", *args],
                                     stderr=self.log, stdout=self.log)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        grpc.channel_ready_future(self.channel).result(timeout=60)
        self.stub = rpc.WorkerStub(self.channel)

    def generate(self, req):
        return [t for r in self.stub.Generate(req, timeout=300) for t in r.token_ids]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        self.log.seek(0)
        text = self.log.read()
        os.unlink(self.log.name)
        m = re.search(r"steps=(\d+) preemptions=(\d+) prefix_hit_tokens=(\d+)", text)
        return {"steps": int(m[1]), "preemptions": int(m[2]), "prefix_hit_tokens": int(m[3])}


@pytest.fixture(scope="module")
def reference(pb):
    w = Worker(pb[1], "--max-num-seqs", "1", "--enable-prefix-caching=false")
    try:
        return [w.generate(r) for r in requests(pb[0])]
    finally:
        w.stop()


@pytest.mark.parametrize("name,args,expect", [
    ("batched", [], {"prefix_hit_tokens": 1}),
    ("preempting", ["--kv-cache-memory", "14"], {"preemptions": 1}),
    ("chunked-prefill", ["--max-num-batched-tokens", "48", "--max-num-seqs", "16"], {}),
])
def test_concurrent_equals_one_at_a_time(pb, reference, name, args, expect):
    w = Worker(pb[1], *args)
    try:
        reqs = requests(pb[0])
        with concurrent.futures.ThreadPoolExecutor(len(reqs)) as ex:
            got = list(ex.map(w.generate, reqs))
    finally:
        stats = w.stop()
    print(name, stats)
    for i, (g, want) in enumerate(zip(got, reference)):
        assert g == want, f"request {i} differs under {name}"
    for key, minimum in expect.items():
        assert stats[key] >= minimum, (key, stats)
    assert stats["steps"] < sum(len(r) for r in reference), "requests did not share steps"
