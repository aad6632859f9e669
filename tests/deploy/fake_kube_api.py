"""A stand-in Kubernetes API server on loopback that accepts every object
it is sent and remembers it: Helm's engine installs a chart against it, so
the objects Helm renders can be checked (Helm's library cannot print them
without a cluster). It answers discovery for the resource types the chart
uses, reports every object absent until created, and takes Helm's release
record (a protobuf Secret) without reading it."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RESOURCES = {
    "v1": [("configmaps", "ConfigMap", True), ("services", "Service", True), ("secrets", "Secret", True),
           ("namespaces", "Namespace", False), ("serviceaccounts", "ServiceAccount", True)],
    "apps/v1": [("deployments", "Deployment", True), ("statefulsets", "StatefulSet", True)],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy", True)],
    "monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor", True), ("prometheusrules", "PrometheusRule", True)],
}
PLURALS = {name for resources in RESOURCES.values() for name, _, _ in resources}


def _resource_list(group_version):
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
            "resources": [{"name": n, "singularName": k.lower(), "namespaced": ns, "kind": k,
                           "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
                          for n, k, ns in RESOURCES[group_version]]}


def _groups():
    groups = {}
    for gv in RESOURCES:
        if "/" in gv:
            g, v = gv.split("/")
            groups.setdefault(g, []).append(v)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
         "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}} for g, vs in groups.items()]}


class FakeKubeApi:
    def __init__(self):
        self.objects = []  # chart objects in the order Helm created them
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def send(self, code, obj):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                path = self.path.split("?")[0]
                if path == "/version":
                    return self.send(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0"})
                if path == "/api":
                    return self.send(200, {"kind": "APIVersions", "versions": ["v1"]})
                if path == "/apis":
                    return self.send(200, _groups())
                gv = path[len("/api/"):] if path.startswith("/api/") else path[len("/apis/"):]
                if gv in RESOURCES:
                    return self.send(200, _resource_list(gv))
                if path.rsplit("/", 1)[-1] in PLURALS:
                    return self.send(200, {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                                           "items": []})
                return self.send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                       "reason": "NotFound", "code": 404, "message": "not found"})

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if "json" not in (self.headers.get("Content-Type") or ""):
                    return self.send(201, {"kind": "Secret", "apiVersion": "v1", "metadata": {
                        "name": "helm-release", "namespace": "default", "resourceVersion": "1", "uid": "release"}})
                obj = json.loads(raw)
                with api.lock:
                    api.objects.append(json.loads(raw))
                obj.setdefault("metadata", {}).update({"resourceVersion": "1", "uid": str(len(api.objects))})
                return self.send(201, obj)

            do_PUT = do_POST
            do_PATCH = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def kubeconfig(self, namespace):
        return ("apiVersion: v1\nkind: Config\n"
                f"clusters:\n- name: fake\n  cluster: {{server: '{self.url}'}}\n"
                f"contexts:\n- name: fake\n  context: {{cluster: fake, user: fake, namespace: {namespace}}}\n"
                "current-context: fake\nusers:\n- name: fake\n  user: {}\n")

    def close(self):
        self.server.shutdown()
        self.server.server_close()
