#!/usr/bin/env python3
"""Writes Tessera's Grafana dashboards (gateway, workers, adapters) to
helm/tessera/files/dashboards/. The JSON files are generated so that every
panel has the same shape and every query is listed in one place; the test
tests/observability/test_prometheus.py checks that the committed files match
this script and runs each query against a real Prometheus.

    python3 tools/make_dashboards.py [--check]
"""
import argparse
import json
import os
import sys

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "helm", "tessera", "files", "dashboards")
R = "$__rate_interval"


def panel(title, unit, *targets, kind="timeseries", description=""):
    return {"title": title, "unit": unit, "kind": kind, "description": description,
            "targets": [{"expr": e, "legendFormat": l} for e, l in targets]}


def q(quantile, metric, by="le"):
    return f"histogram_quantile({quantile}, sum by ({by}) (rate({metric}_bucket[{R}])))"


GATEWAY = ("tessera-gateway", "Tessera / Gateway", [
    panel("Requests by status", "reqps",
          (f"sum by (status) (rate(tessera_gateway_requests_total[{R}]))", "{{status}}")),
    panel("5xx ratio", "percentunit",
          (f"(sum(rate(tessera_gateway_requests_total{{status=~\"5..\"}}[{R}])) or vector(0)) / "
           f"sum(rate(tessera_gateway_requests_total[{R}]))", "5xx")),
    panel("Time to first token", "s",
          (q(0.5, "tessera_gateway_time_to_first_token_seconds"), "p50"),
          (q(0.99, "tessera_gateway_time_to_first_token_seconds"), "p99")),
    panel("Time per output token", "s",
          (q(0.5, "tessera_gateway_time_per_output_token_seconds"), "p50"),
          (q(0.99, "tessera_gateway_time_per_output_token_seconds"), "p99")),
    panel("End-to-end latency", "s",
          (q(0.5, "tessera_gateway_e2e_request_latency_seconds"), "p50"),
          (q(0.99, "tessera_gateway_e2e_request_latency_seconds"), "p99")),
    panel("Requests in flight", "short", ("sum(tessera_gateway_requests_in_flight)", "in flight"),
          ("sum(tessera_gateway_worker_waiting_sequences)", "queued at workers")),
    panel("Tokens per second", "short",
          (f"sum(rate(tessera_gateway_generation_tokens_total[{R}]))", "generated"),
          (f"sum(rate(tessera_gateway_prompt_tokens_total[{R}]))", "prompt")),
    panel("Routing decisions by residency", "reqps",
          (f"sum by (residency) (rate(tessera_gateway_routing_decisions_total[{R}]))", "{{residency}}")),
    panel("Retries by cause", "short",
          (f"sum by (reason) (increase(tessera_gateway_retries_total[{R}]))", "{{reason}}"),
          (f"sum(increase(tessera_gateway_retry_budget_exhausted_total[{R}]))", "budget exhausted")),
    panel("Workers by state", "short", ("sum by (state) (tessera_gateway_workers)", "{{state}}")),
    panel("Worker ejections", "short",
          (f"sum by (worker, reason) (increase(tessera_gateway_worker_ejections_total[{R}]))", "{{worker}} {{reason}}")),
    panel("Streams per worker", "short",
          ("sum by (worker) (tessera_gateway_worker_requests_in_flight)", "{{worker}}")),
])

WORKERS = ("tessera-workers", "Tessera / Workers", [
    panel("Running and waiting sequences", "short",
          ("sum by (instance) (tessera_worker_running_sequences)", "{{instance}} running"),
          ("sum by (instance) (tessera_worker_waiting_sequences)", "{{instance}} waiting")),
    panel("KV cache usage", "percentunit", ("max by (instance) (tessera_worker_kv_cache_usage_ratio)", "{{instance}}")),
    panel("Prefix cache hit rate", "percentunit",
          (f"sum by (instance) (rate(tessera_worker_prefix_cache_hits_total[{R}])) / "
           f"sum by (instance) (rate(tessera_worker_prefix_cache_queries_total[{R}]))", "{{instance}}")),
    panel("Tokens per second", "short",
          (f"sum by (instance) (rate(tessera_worker_generation_tokens_total[{R}]))", "{{instance}} generated"),
          (f"sum by (instance) (rate(tessera_worker_prompt_tokens_total[{R}]))", "{{instance}} prompt")),
    panel("Step time by phase (p50, p99)", "s",
          (q(0.5, "tessera_worker_step_duration_seconds", "phase, le"), "{{phase}} p50"),
          (q(0.99, "tessera_worker_step_duration_seconds", "phase, le"), "{{phase}} p99")),
    panel("Mean batch size by phase", "short",
          (f"sum by (phase) (rate(tessera_worker_step_batch_size_sum[{R}])) / "
           f"sum by (phase) (rate(tessera_worker_step_batch_size_count[{R}]))", "{{phase}}")),
    panel("Queue time p99", "s", (q(0.99, "tessera_worker_request_queue_time_seconds", "instance, le"), "{{instance}}")),
    panel("Finished requests by reason", "reqps",
          (f"sum by (finish_reason) (rate(tessera_worker_requests_total[{R}]))", "{{finish_reason}}")),
    panel("Preemptions", "short", (f"sum by (instance) (increase(tessera_worker_preemptions_total[{R}]))", "{{instance}}")),
    panel("Model load time", "s", ("max by (instance) (tessera_worker_model_load_seconds)", "{{instance}}")),
    panel("Structured output: constraint compile time (p50, p99)", "s",
          (q(0.5, "tessera_worker_structured_compile_seconds"), "p50"),
          (q(0.99, "tessera_worker_structured_compile_seconds"), "p99"),
          description="Cache misses and refused specs; the cache hit ratio is hits / (hits + misses)."),
    panel("Structured output: compiled-constraint cache", "ops",
          (f"sum(rate(tessera_worker_structured_cache_hits_total[{R}]))", "hits"),
          (f"sum(rate(tessera_worker_structured_cache_misses_total[{R}]))", "misses (compiles)"),
          (f"sum(rate(tessera_worker_structured_compile_errors_total[{R}]))", "refused specs")),
])

ADAPTERS = ("tessera-adapters", "Tessera / LoRA adapters", [
    panel("Adapter requests and device hits", "reqps",
          (f"sum(rate(tessera_worker_adapter_requests_total[{R}]))", "requests"),
          (f"sum(rate(tessera_worker_adapter_device_hits_total[{R}]))", "already on device")),
    panel("Device hit ratio", "percentunit",
          (f"sum(rate(tessera_worker_adapter_device_hits_total[{R}])) / "
           f"sum(rate(tessera_worker_adapter_requests_total[{R}]))", "hit ratio")),
    panel("Loads and evictions", "ops",
          (f"sum(rate(tessera_worker_adapter_loads_total[{R}]))", "disk -> host"),
          (f"sum(rate(tessera_worker_adapter_uploads_total[{R}]))", "host -> device"),
          (f"sum(rate(tessera_worker_adapter_device_evictions_total[{R}]))", "device evictions"),
          (f"sum(rate(tessera_worker_adapter_host_evictions_total[{R}]))", "host evictions")),
    panel("Resident adapters per worker", "short",
          ("sum by (instance) (tessera_worker_adapters_on_device)", "{{instance}} device"),
          ("sum by (instance) (tessera_worker_adapter_device_slots)", "{{instance}} device slots"),
          ("sum by (instance) (tessera_worker_adapters_in_host)", "{{instance}} host")),
    panel("Latest cold load", "s", ("max by (instance) (tessera_worker_adapter_last_load_seconds)", "{{instance}}")),
    panel("Load failures", "short", (f"sum by (instance) (increase(tessera_worker_adapter_load_failures_total[{R}]))",
                                     "{{instance}}")),
    panel("Gateway routing by residency", "percentunit",
          (f"sum by (residency) (rate(tessera_gateway_routing_decisions_total[{R}])) / "
           f"ignoring(residency) group_left sum(rate(tessera_gateway_routing_decisions_total[{R}]))", "{{residency}}")),
])


def dashboard(uid, title, panels):
    out = []
    for i, p in enumerate(panels):
        out.append({
            "id": i + 1,
            "type": p["kind"],
            "title": p["title"],
            "description": p["description"],
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": p["unit"]}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
            "targets": [{"refId": chr(ord("A") + k), "expr": t["expr"], "legendFormat": t["legendFormat"],
                         "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                        for k, t in enumerate(p["targets"])],
        })
    return {
        "uid": uid,
        "title": title,
        "tags": ["tessera"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus",
                                 "label": "Data source", "current": {}}]},
        "panels": out,
    }


def render():
    return {f"{uid}.json": json.dumps(dashboard(uid, title, panels), indent=2) + "\n"
            for uid, title, panels in (GATEWAY, WORKERS, ADAPTERS)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed files differ")
    args = ap.parse_args()
    stale = []
    for name, text in render().items():
        path = os.path.join(OUT, name)
        if args.check:
            if not os.path.exists(path) or open(path).read() != text:
                stale.append(name)
            continue
        os.makedirs(OUT, exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    if stale:
        print("stale dashboards (run tools/make_dashboards.py):", ", ".join(stale))
        sys.exit(1)


if __name__ == "__main__":
    main()
