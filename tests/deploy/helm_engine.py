"""Helm v4's engine, from the shared library of PyPI's helm-sdkpy wheel
(tools/setup/setup.sh puts it at .venv/helm/libhelm_sdkpy.so), called
through ctypes:
- lint: `helm lint` of a chart directory, which renders every template with
  the chart's values and checks them against values.schema.json and Helm's
  own rules;
- render: `helm install` against a stand-in API server (fake_kube_api.py),
  which returns the objects Helm rendered and sent."""
import ctypes
import json
import os
import tempfile

from fake_kube_api import FakeKubeApi

SOURCE = os.environ.get("TESSERA_SOURCE", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
LIBRARY = os.path.join(SOURCE, ".venv", "helm", "libhelm_sdkpy.so")

SEVERITY = {0: "unknown", 1: "info", 2: "warning", 3: "error"}


class HelmEngine:
    def __init__(self, library=LIBRARY):
        self.lib = ctypes.CDLL(library)
        self.lib.helm_sdkpy_last_error.restype = ctypes.c_char_p
        self.lib.helm_sdkpy_version_string.restype = ctypes.c_char_p
        self.lib.helm_sdkpy_config_create.argtypes = [ctypes.c_char_p] * 4 + [ctypes.POINTER(ctypes.c_ulonglong)]
        self.lib.helm_sdkpy_lint.argtypes = [ctypes.c_ulonglong, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p)]
        self.lib.helm_sdkpy_install.argtypes = [ctypes.c_ulonglong] + [ctypes.c_char_p] * 5 + [
            ctypes.POINTER(ctypes.c_char_p)]
        self.lib.helm_sdkpy_config_destroy.argtypes = [ctypes.c_ulonglong]
        self.handle = ctypes.c_ulonglong()
        if self.lib.helm_sdkpy_config_create(b"default", b"", b"", b"{}", ctypes.byref(self.handle)) != 0:
            raise RuntimeError(self.lib.helm_sdkpy_last_error().decode())

    def version(self):
        return self.lib.helm_sdkpy_version_string().decode()

    def lint(self, chart_dir):
        """Returns (ok, messages): messages as (severity, path) pairs."""
        out = ctypes.c_char_p()
        rc = self.lib.helm_sdkpy_lint(self.handle, chart_dir.encode(), ctypes.byref(out))
        if rc != 0:
            return False, [("error", (self.lib.helm_sdkpy_last_error() or b"").decode())]
        result = json.loads(out.value)
        messages = [(SEVERITY.get(m["Severity"], str(m["Severity"])), m["Path"]) for m in result.get("Messages") or []]
        errors = result.get("Errors") or []
        ok = not errors and all(s not in ("error",) for s, _ in messages)
        return ok, messages + [("error", str(e)) for e in errors]

    def render(self, chart_dir, values, release="tessera", namespace="tessera"):
        """The objects `helm install` creates for `values`, as dicts; raises
        RuntimeError with Helm's message if it refuses."""
        api = FakeKubeApi()
        try:
            with tempfile.NamedTemporaryFile("w", suffix=".kubeconfig", delete=False) as f:
                f.write(api.kubeconfig(namespace))
                kubeconfig = f.name
            handle = ctypes.c_ulonglong()
            if self.lib.helm_sdkpy_config_create(namespace.encode(), kubeconfig.encode(), b"fake", b"{}",
                                                 ctypes.byref(handle)) != 0:
                raise RuntimeError(self.lib.helm_sdkpy_last_error().decode())
            options = {"create_namespace": False, "wait": False, "timeout_seconds": 60,
                       "disable_openapi_validation": True, "skip_schema_validation": False}
            out = ctypes.c_char_p()
            rc = self.lib.helm_sdkpy_install(handle, release.encode(), chart_dir.encode(), json.dumps(values).encode(),
                                             b"", json.dumps(options).encode(), ctypes.byref(out))
            self.lib.helm_sdkpy_config_destroy(handle)
            os.unlink(kubeconfig)
            if rc != 0:
                raise RuntimeError((self.lib.helm_sdkpy_last_error() or b"").decode())
            return list(api.objects)
        finally:
            api.close()
