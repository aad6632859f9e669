"""Structured output's cost (issue 17), through the real gateway.

1. Decode throughput at 16 concurrent streamed requests, every row
   constrained by a medium JSON schema (a nested object, an array with
   bounds, enums, bounded strings, numbers), against the same requests
   unconstrained, in one run. To compare equal work, each unconstrained
   round replays the constrained round before it: the same prompts and
   seeds, each request held to the token count its constrained twin
   produced (ignore_eos); prefix caching is off so that the replay gets no
   cached prompts. Rounds alternate (constrained, free, constrained, ...)
   so that drift on a shared machine hits both. Printed: output tok/s of
   each, the ratio (target >= 0.95x), and inter-token latency p50/p99.
2. From the worker's metrics over the constrained rounds: constraints
   compiled, token masks computed (vocabulary trie walks) and their time,
   per decode step.
3. structured-cost (in-process, the bundled vocabulary): compile time
   p50/p99 of the e2e suite's schemas and regexes (spec -> DFA, and as the
   cache compiles them: with the start mask and the masks of the first
   steps), the per-state trie-walk cost of the medium schema, and the
   sampler's time for 16 rows with and without a mask.

    .venv/bin/python tests/bench/bench_structured.py [--rounds 2] [--requests-per-client 2] [--max-tokens 160]
        [--threads N]
"""
import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
sys.path.insert(0, os.path.join(ROOT, "tests", "bench"))
from bench_serving import WORDS, pct, sse_request  # noqa: E402
from conftest import BIN, MODEL_ID, free_port, wait_ready  # noqa: E402

CONCURRENCY = 16

MEDIUM = {
    "type": "object",
    "properties": {
        "id": {"type": "integer", "minimum": 0, "maximum": 99999},
        "status": {"enum": ["open", "closed", "pending"]},
        "title": {"type": "string", "minLength": 8, "maxLength": 60},
        "score": {"type": "number", "minimum": 0, "maximum": 100},
        "owner": {"type": "object",
                  "properties": {"name": {"type": "string", "minLength": 3, "maxLength": 30},
                                 "role": {"enum": ["admin", "user", "guest"]},
                                 "active": {"type": "boolean"}},
                  "required": ["name", "role", "active"]},
        "tags": {"type": "array", "items": {"enum": ["billing", "bug", "feature", "urgent", "question"]},
                 "minItems": 1, "maxItems": 4},
        "notes": {"type": "string", "maxLength": 80},
    },
    "required": ["id", "status", "title", "score", "owner", "tags", "notes"],
    "additionalProperties": False,
}


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        base = re.sub(r"\{.*\}", "", name)
        if base.endswith("_count") and "step_duration" in base or base.startswith("tessera_worker_structured"):
            out[base] = out.get(base, 0.0) + float(value)
    return out


def run_round(port, jobs):
    """jobs: request bodies; CONCURRENCY clients take them in turn. Returns
    (wall seconds, [(ttft, gaps, tokens)] in job order)."""
    results = [None] * len(jobs)
    next_job = [0]
    lock = threading.Lock()

    def client():
        while True:
            with lock:
                i = next_job[0]
                next_job[0] += 1
            if i >= len(jobs):
                return
            results[i] = sse_request(port, "/v1/completions", jobs[i])

    threads = [threading.Thread(target=client) for _ in range(CONCURRENCY)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, results


def structured_cost(specs, apply=False):
    args = [os.path.join(BIN, "structured-cost")] + (["--apply"] if apply else [])
    p = subprocess.run(args, input="".join(json.dumps(s) + "\n" for s in specs), capture_output=True, text=True,
                       timeout=600, check=True)
    return [json.loads(l) for l in p.stdout.splitlines() if l]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2, help="constrained/free round pairs")
    ap.add_argument("--requests-per-client", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--threads", type=int, default=0,
                    help="worker compute threads (0: its default); 1 is steadier on a shared machine")
    a = ap.parse_args()

    wport, hport, mport = free_port(), free_port(), free_port()
    worker = subprocess.Popen([f"{BIN}/tessera-worker", "--listen", f"127.0.0.1:{wport}", "--max-num-seqs", "32",
                               "--enable-prefix-caching=false", "--metrics-listen", f"127.0.0.1:{mport}"]
                              + (["--threads", str(a.threads)] if a.threads else []),
                              stderr=subprocess.DEVNULL)
    gateway = subprocess.Popen([f"{BIN}/tessera-gateway", "--listen", f"127.0.0.1:{hport}", "--worker",
                                f"127.0.0.1:{wport}"], stderr=subprocess.DEVNULL)
    rng = random.Random(0)
    rate = {"constrained": [], "free": []}
    tokens = {"constrained": 0, "free": 0}
    walls = {"constrained": 0.0, "free": 0.0}
    gaps = {"constrained": [], "free": []}
    finish_length = 0
    mask_seconds = masks = steps = compiles = 0.0
    try:
        wait_ready(f"http://127.0.0.1:{hport}/ready", timeout=120)
        sse_request(hport, "/v1/completions", {"model": MODEL_ID, "prompt": "warm up", "max_tokens": 4, "stream": True})
        n = CONCURRENCY * a.requests_per_client
        print(f"{CONCURRENCY} concurrent streamed completions, {n} a round, {a.rounds} round pairs, temperature 0.8, "
              f"at most {a.max_tokens} tokens; free rounds replay each constrained request's token count")
        for r in range(a.rounds):
            prompts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(16, 64))) + "\nAs JSON:" for _ in range(n)]
            constrained = [{"model": MODEL_ID, "prompt": p, "max_tokens": a.max_tokens, "temperature": 0.8,
                            "seed": 1000 * r + i, "stream": True, "stream_options": {"include_usage": True},
                            "response_format": {"type": "json_schema",
                                                "json_schema": {"name": "ticket", "schema": MEDIUM, "strict": True}}}
                           for i, p in enumerate(prompts)]
            before = metrics(mport)
            wall, res = run_round(hport, constrained)
            after = metrics(mport)
            # The first constrained round includes the compile (a cache miss)
            # and every mask's first visit: nothing was warmed for it.
            d = lambda k: after.get(k, 0) - before.get(k, 0)  # noqa: E731
            mask_seconds += d("tessera_worker_structured_mask_seconds_total")
            masks += d("tessera_worker_structured_masks_computed_total")
            compiles += d("tessera_worker_structured_cache_misses_total")
            steps += d("tessera_worker_step_duration_seconds_count")
            counts = [x[2] for x in res]
            finish_length += sum(1 for c in counts if c >= a.max_tokens)
            tokens["constrained"] += sum(counts)
            walls["constrained"] += wall
            rate["constrained"].append(sum(counts) / wall)
            gaps["constrained"] += [g for x in res for g in x[1]]
            free = [{"model": MODEL_ID, "prompt": j["prompt"], "max_tokens": max(1, c), "temperature": 0.8,
                     "seed": j["seed"], "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
                    for j, c in zip(constrained, counts)]
            wall, res = run_round(hport, free)
            assert [x[2] for x in res] == [max(1, c) for c in counts], "the replay produced other token counts"
            tokens["free"] += sum(x[2] for x in res)
            walls["free"] += wall
            rate["free"].append(sum(x[2] for x in res) / wall)
            gaps["free"] += [g for x in res for g in x[1]]
            print(f"  round {r + 1}: constrained {rate['constrained'][-1]:.1f} tok/s, free {rate['free'][-1]:.1f} tok/s")
        tc, tf = tokens["constrained"] / walls["constrained"], tokens["free"] / walls["free"]
        print(f"{'':>12}{'output tok/s':>14}{'ITL p50':>10}{'ITL p99':>10}{'tokens':>9}")
        for k, v in (("free", tf), ("constrained", tc)):
            print(f"{k:>12}{v:>14.1f}{pct(gaps[k], 50) * 1000:>8.1f}ms{pct(gaps[k], 99) * 1000:>8.1f}ms{tokens[k]:>9}")
        print(f"constrained / free: {tc / tf:.3f}x (target >= 0.95x); mean tokens a constrained request "
              f"{tokens['constrained'] / (a.rounds * n):.1f}, {finish_length} cut by max_tokens")
        print(f"worker, constrained rounds: {compiles:.0f} compile(s), {masks:.0f} masks computed in "
              f"{mask_seconds * 1000:.1f} ms over {steps:.0f} steps ({mask_seconds / max(steps, 1) * 1e6:.0f} us a "
              f"step on average, precomputed masks included)")
    finally:
        gateway.terminate()
        worker.terminate()
        gateway.wait(10)
        worker.wait(30)

    import test_structured_output as suite  # the e2e suite's specs
    specs = [{"kind": "schema", "spec": json.dumps(s)} for s in suite.SCHEMAS] + \
            [{"kind": "regex", "spec": p} for p in suite.REGEXES]
    outs = structured_cost(specs)
    ok = [o for o in outs if "error" not in o]
    assert len(ok) == len(specs), [o for o in outs if "error" in o]
    print(f"compile, {len(suite.SCHEMAS)} schemas + {len(suite.REGEXES)} regexes of the e2e suite (bundled vocabulary):")
    for key, label in (("compile_ms", "spec -> DFA"), ("with_start_mask_ms", "+ start mask"),
                       ("precompute_ms", "as served (+ masks of the first 8 steps, <= 100 ms)")):
        xs = [o[key] for o in ok]
        print(f"  {label:<52} p50 {pct(xs, 50):7.2f} ms  p99 {pct(xs, 99):7.2f} ms  max {max(xs):7.2f} ms")
    med, app = structured_cost([{"kind": "schema", "spec": json.dumps(MEDIUM)}], apply=True)
    m = med["mask_us"]
    print(f"medium schema: {med['states']} DFA states; a state's trie walk p50 {m['p50']:.1f} us, p99 {m['p99']:.0f} us, "
          f"max {m['max']:.0f} us, mean {m['mean']:.1f} us; first reached at token steps 1-8: {med['reach']}; "
          f"{med['precomputed_masks']} masks precomputed in {med['precompute_ms']:.1f} ms")
    print(f"sampling {app['apply_rows']} rows at temperature 1 (p50): free {app['free_ms']:.2f} ms, masked by the "
          f"widest state ({app['widest_mask_tokens']} tokens) {app['widest_mask_ms']:.2f} ms, by the start state "
          f"{app['start_mask_ms']:.2f} ms")


if __name__ == "__main__":
    main()
