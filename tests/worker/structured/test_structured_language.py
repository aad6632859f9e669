"""The language of each compiled constraint, without a model: random walks of
the worker's automaton (structured-sample) for the e2e suite's schemas and
regexes, each checked by Python's jsonschema (with format checks) or
re.fullmatch. A sample that fails means the compiler admits text outside the
schema; every schema must also admit varied text (not one string)."""
import json
import os
import re
import subprocess
import sys

import jsonschema

SOURCE = os.environ.get("TESSERA_SOURCE", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))
BIN = os.environ.get("TESSERA_BIN", os.path.join(SOURCE, "build", "bin"))
sys.path.insert(0, os.path.join(SOURCE, "tests", "e2e"))
import test_structured_output as suite  # noqa: E402

N = 60


def run(requests):
    p = subprocess.run([os.path.join(BIN, "structured-sample")], input="".join(json.dumps(r) + "\n" for r in requests),
                       capture_output=True, text=True, timeout=120, check=True)
    return [json.loads(l) for l in p.stdout.split("\n") if l]


def test_schema_samples_validate():
    outs = run([{"kind": "schema", "spec": json.dumps(s), "n": N, "seed": i} for i, s in enumerate(suite.SCHEMAS)])
    for schema, out in zip(suite.SCHEMAS, outs):
        assert "samples" in out, (schema, out)
        for text in out["samples"]:
            jsonschema.validate(json.loads(text), schema, format_checker=suite.FORMATS)
        if not ("const" in schema or schema.get("type") in ("null", "boolean")):
            assert len(set(out["samples"])) > 1, schema


def test_regex_samples_fullmatch():
    outs = run([{"kind": "regex", "spec": p, "n": N, "seed": i} for i, p in enumerate(suite.REGEXES)])
    for pattern, out in zip(suite.REGEXES, outs):
        assert "samples" in out, (pattern, out)
        for text in out["samples"]:
            assert re.fullmatch(pattern, text), (pattern, text)


def test_pattern_in_json_strings_escapes():
    schema = {"type": "string", "pattern": '^[a"\\\\\\n]{1,6}$'}
    out = run([{"kind": "schema", "spec": json.dumps(schema), "n": N, "seed": 3}])[0]
    for text in out["samples"]:
        jsonschema.validate(json.loads(text), schema)
