"""Helm v4's engine, from the shared library of PyPI's helm-sdkpy wheel
(tools/setup/setup.sh puts it at .venv/helm/libhelm_sdkpy.so), called
through ctypes: `helm lint` of a chart directory, which renders every
template with the chart's values and checks them against values.schema.json
and Helm's own rules. No cluster is needed."""
import ctypes
import json
import os

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
