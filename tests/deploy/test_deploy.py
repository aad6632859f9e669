"""The Helm chart and the plain manifests.

- The chart goes through Helm's own engine (`helm lint`: every template
  rendered with the values, checked against values.schema.json) with its
  defaults and with GPU, monitoring, adapter and gRPC values; values the
  schema forbids must fail.
- `helm install` of the chart against a stand-in API server gives the
  objects Helm renders: they are validated against the Kubernetes schemas,
  checked for the wiring the chart promises, and compared with deploy/k8s.
- deploy/k8s (base and the cpu/gpu overlays built with kustomize) is
  validated against the Kubernetes 1.30 schemas with kubernetes-validate.
- The configuration files in the ConfigMaps are accepted by the real
  binaries (a misspelt key would stop a pod at start).
"""
import copy
import glob
import os
import shutil
import subprocess
import sys
import tempfile

import socket

import kubernetes_validate
import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from helm_engine import LIBRARY, HelmEngine  # noqa: E402

SOURCE = os.environ.get("TESSERA_SOURCE", os.path.abspath(os.path.join(HERE, "..", "..")))
BIN = os.environ.get("TESSERA_BIN", os.path.join(SOURCE, "build", "bin"))
CHART = os.path.join(SOURCE, "helm", "tessera")
K8S = os.path.join(SOURCE, "deploy", "k8s")
KUBERNETES_VERSION = "1.30.0"
MODEL = os.path.join(SOURCE, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def helm():
    if not os.path.exists(LIBRARY):
        pytest.skip(f"skipped: no Helm engine at {LIBRARY} (tools/setup/setup.sh fetches it from PyPI)")
    return HelmEngine()


def merged(base, override):
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def lint_with(helm, override):
    tmp = tempfile.mkdtemp()
    try:
        chart = os.path.join(tmp, "tessera")
        shutil.copytree(CHART, chart)
        values = yaml.safe_load(open(os.path.join(CHART, "values.yaml")))
        with open(os.path.join(chart, "values.yaml"), "w") as f:
            yaml.safe_dump(merged(values, override), f)
        return helm.lint(chart)
    finally:
        shutil.rmtree(tmp)


GOOD_VALUES = {
    "defaults": {},
    "gpu": {"worker": {"device": "cuda", "tensorParallelSize": 2, "nodeSelector": {"nvidia.com/gpu.present": "true"},
                       "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                       "model": {"path": "/models/llama3-8b.Q4_K.gguf",
                                 "volume": {"persistentVolumeClaim": {"claimName": "models"}}}}},
    "everything on": {"gateway": {"grpcPort": 9000, "apiKeysSecret": "tessera-keys", "autoscaling": {"enabled": False},
                                  "extraConfig": {"log_routing": True}},
                      "worker": {"adapters": {"enabled": True,
                                              "volume": {"persistentVolumeClaim": {"claimName": "adapters"}}}},
                      "monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
                                     "prometheusRule": {"enabled": True}},
                      "networkPolicy": {"metricsFrom": {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}}},
    "everything off": {"networkPolicy": {"enabled": False},
                       "gateway": {"podDisruptionBudget": {"enabled": False}},
                       "worker": {"podDisruptionBudget": {"enabled": False}},
                       "monitoring": {"dashboards": {"enabled": False}}},
}

BAD_VALUES = {
    "unknown device": {"worker": {"device": "tpu"}},
    "unknown routing policy": {"gateway": {"routingPolicy": "random"}},
    "port out of range": {"worker": {"port": 70000}},
    "misspelt key": {"worker": {"maxLora": 4}},
    "relative mount path": {"worker": {"adapters": {"mountPath": "adapters"}}},
}


@pytest.mark.parametrize("name", list(GOOD_VALUES))
def test_chart_renders_and_passes_helm_lint(helm, name):
    ok, messages = lint_with(helm, GOOD_VALUES[name])
    assert ok, (helm.version(), messages)


@pytest.mark.parametrize("name", list(BAD_VALUES))
def test_chart_refuses_values_its_schema_forbids(helm, name):
    ok, messages = lint_with(helm, BAD_VALUES[name])
    assert not ok, messages


def test_a_broken_template_fails_lint(helm):
    tmp = tempfile.mkdtemp()
    try:
        chart = os.path.join(tmp, "tessera")
        shutil.copytree(CHART, chart)
        with open(os.path.join(chart, "templates", "worker.yaml"), "a") as f:
            f.write("\n{{ .Values.worker.nothing.here }}\n")
        assert not helm.lint(chart)[0]
    finally:
        shutil.rmtree(tmp)


def documents(paths):
    for p in paths:
        for doc in yaml.safe_load_all(open(p)):
            if doc:
                yield p, doc


def validate(path, doc):
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        pytest.fail(f"{path}: {doc['kind']} {doc['metadata'].get('name')}: {e.message} at {list(e.path)}")


def test_base_manifests_validate_against_kubernetes_schemas():
    paths = [p for p in glob.glob(os.path.join(K8S, "base", "*.yaml")) if not p.endswith("kustomization.yaml")]
    kinds = set()
    for path, doc in documents(paths):
        validate(path, doc)
        kinds.add(doc["kind"])
    assert {"Deployment", "StatefulSet", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "NetworkPolicy", "ConfigMap"} <= kinds


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_overlays_build_and_validate(overlay):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("skipped: kubectl (for kustomize) is not installed; the base manifests are validated alone")
    out = subprocess.run([kubectl, "kustomize", os.path.join(K8S, "overlays", overlay)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    for doc in docs:
        validate(f"overlays/{overlay}", doc)
    worker = next(d for d in docs if d["kind"] == "StatefulSet")
    limits = worker["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert ("nvidia.com/gpu" in limits) == (overlay == "gpu")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_maps():
    for path, doc in documents(glob.glob(os.path.join(K8S, "base", "*.yaml"))):
        if doc["kind"] == "ConfigMap":
            for key, text in doc["data"].items():
                yield key, text
    yield "worker.yaml", open(os.path.join(K8S, "overlays", "gpu", "worker.yaml")).read()


def check_config(tmp_path, key, text):
    path = tmp_path / key
    path.write_text(text)
    binary = "tessera-gateway" if key == "gateway.yaml" else "tessera-worker"
    # Flags win over the file: loopback ports, and the bundled model.
    args = [os.path.join(BIN, binary), "--config", str(path), "--listen", f"127.0.0.1:{free_port()}",
            "--metrics-listen", f"127.0.0.1:{free_port()}"]
    if binary == "tessera-worker":
        args += ["--model", MODEL]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = p.communicate(timeout=3)
    except subprocess.TimeoutExpired:
        p.terminate()
        out, _ = p.communicate(timeout=30)
    assert "unknown key" not in out and "cannot" not in out, out
    if "device: cuda" in text:
        # Here, without a GPU, the GPU configuration is read, then refused
        # with a message that says why.
        assert "effective configuration" in out and ("no CUDA device" in out or "CUDA backend" in out), out
    else:
        assert "effective configuration" in out, out


def test_configuration_files_are_accepted_by_the_binaries(tmp_path):
    seen = set()
    for key, text in config_maps():
        check_config(tmp_path, key, text)
        seen.add(key)
    assert seen == {"gateway.yaml", "worker.yaml"}


def render(helm, values):
    return helm.render(CHART, values)


def by_kind(objects, kind, name_suffix=""):
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, (kind, name_suffix, [o["metadata"]["name"] for o in objects if o["kind"] == kind])
    return found[0]


@pytest.mark.parametrize("name", list(GOOD_VALUES))
def test_rendered_chart_validates_against_kubernetes_schemas(helm, name):
    objects = render(helm, GOOD_VALUES[name])
    assert objects
    for o in objects:
        if o["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # custom resources: checked in test_rendered_chart_wiring
        validate(f"chart[{name}]", o)


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def test_rendered_chart_wiring(helm, tmp_path):
    objects = render(helm, {})
    gateway = by_kind(objects, "Deployment", "-gateway")
    worker = by_kind(objects, "StatefulSet", "-worker")
    gw_labels = gateway["spec"]["template"]["metadata"]["labels"]
    wk_labels = worker["spec"]["template"]["metadata"]["labels"]
    # Discovery: the gateway resolves the headless Service that selects the workers.
    headless = by_kind([o for o in objects if o["kind"] == "Service"], "Service", "-worker")
    assert headless["spec"]["clusterIP"] == "None" and matches(headless["spec"]["selector"], wk_labels)
    assert worker["spec"]["serviceName"] == headless["metadata"]["name"]
    gw_config = yaml.safe_load(by_kind(objects, "ConfigMap", "-gateway")["data"]["gateway.yaml"])
    assert gw_config["worker_dns"] == [f"{headless['metadata']['name']}.tessera.svc.cluster.local:50051"]
    # Drain: grace = preStop + drain timeout + margin, in both.
    wk_config = yaml.safe_load(by_kind(objects, "ConfigMap", "-worker")["data"]["worker.yaml"])
    for pod, config in ((gateway, gw_config), (worker, wk_config)):
        spec = pod["spec"]["template"]["spec"]
        assert spec["terminationGracePeriodSeconds"] == config["drain_timeout_s"] + 15
        assert spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    probes = worker["spec"]["template"]["spec"]["containers"][0]
    assert probes["startupProbe"]["grpc"]["port"] == 50051
    assert probes["startupProbe"]["periodSeconds"] * probes["startupProbe"]["failureThreshold"] >= 600
    # Only gateways reach the workers' gRPC port.
    policy = by_kind(objects, "NetworkPolicy")
    assert matches(policy["spec"]["podSelector"]["matchLabels"], wk_labels)
    grpc_rule = next(r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == 50051)
    assert matches(grpc_rule["from"][0]["podSelector"]["matchLabels"], gw_labels)
    assert not matches(grpc_rule["from"][0]["podSelector"]["matchLabels"], wk_labels)
    for pdb in (o for o in objects if o["kind"] == "PodDisruptionBudget"):
        target = gw_labels if pdb["metadata"]["name"].endswith("-gateway") else wk_labels
        assert matches(pdb["spec"]["selector"]["matchLabels"], target)
    # The rendered configurations are accepted by the binaries.
    for key, text in (("gateway.yaml", yaml.safe_dump(gw_config)), ("worker.yaml", yaml.safe_dump(wk_config))):
        check_config(tmp_path, key, text)

    gpu = render(helm, GOOD_VALUES["gpu"])
    spec = by_kind(gpu, "StatefulSet")["spec"]["template"]["spec"]
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"} and spec["tolerations"]
    gpu_worker = yaml.safe_load(by_kind(gpu, "ConfigMap", "-worker")["data"]["worker.yaml"])
    assert gpu_worker["device"] == "cuda"
    # tensorParallelSize sets the worker's flag as well as the GPU limit.
    assert gpu_worker["tensor_parallel_size"] == 2

    on = render(helm, GOOD_VALUES["everything on"])
    rule = by_kind(on, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(open(os.path.join(CHART, "files", "tessera-alerts.yaml")))
    monitor = by_kind(on, "ServiceMonitor")
    scraped = [o for o in on if o["kind"] == "Service" and matches(monitor["spec"]["selector"]["matchLabels"],
                                                                    o["metadata"]["labels"])]
    assert len(scraped) == 2 and all(any(p["name"] == "metrics" for p in s["spec"]["ports"]) for s in scraped)
    assert monitor["metadata"]["labels"]["release"] == "prom"
    dashboards = by_kind(objects, "ConfigMap", "-dashboards")
    assert sorted(dashboards["data"]) == ["tessera-adapters.json", "tessera-gateway.json", "tessera-workers.json"]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_plain_manifests_are_the_chart_defaults(helm):
    chart = {(o["kind"], o["metadata"]["name"]) for o in render(helm, {})}
    paths = [p for p in glob.glob(os.path.join(K8S, "base", "*.yaml")) if not p.endswith("kustomization.yaml")]
    plain = {(d["kind"], d["metadata"]["name"]) for _, d in documents(paths) if d["kind"] != "Namespace"}
    assert plain == chart - {("ConfigMap", "tessera-dashboards")}
    rendered = {o["metadata"]["name"]: o for o in render(helm, {}) if o["kind"] == "ConfigMap"}
    for _, doc in documents(paths):
        if doc["kind"] == "ConfigMap":
            for key, text in doc["data"].items():
                assert yaml.safe_load(text) == yaml.safe_load(rendered[doc["metadata"]["name"]]["data"][key]), key


def worker_defaults():
    """The worker's effective configuration with no file and no flags (but a
    loopback port and the simulated engine, which loads no model)."""
    args = [os.path.join(BIN, "tessera-worker"), "--engine", "sim", "--listen", f"127.0.0.1:{free_port()}"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in p.stdout:
            if line.startswith("tessera-worker: serving"):
                break
            lines.append(line)
    finally:
        p.terminate()
        p.communicate(timeout=30)
    text = "".join(lines)
    assert "effective configuration:" in text, text
    return yaml.safe_load(text.split("effective configuration:", 1)[1])


def test_chart_worker_settings_are_the_binarys_defaults(helm):
    # values.yaml spells the worker's defaults for operators; the binary owns
    # them (EngineOptions, SchedulerOptions, AdapterManagerOptions,
    # kDefaultKvCacheBytes): a default changed on one side only fails here.
    chart = yaml.safe_load(by_kind(render(helm, {}), "ConfigMap", "-worker")["data"]["worker.yaml"])
    binary = worker_defaults()
    deployment_specific = {"listen", "metrics_listen", "model"}
    compared = set(chart) - deployment_specific
    assert compared >= {"kv_cache_memory", "max_num_seqs", "max_waiting", "max_loras", "max_cpu_loras",
                        "max_lora_rank", "drain_timeout_s"}, compared
    assert {k: chart[k] for k in compared} == {k: binary[k] for k in compared}
