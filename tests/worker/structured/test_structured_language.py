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


# Keywords beyond the e2e suite: each schema's samples validate (jsonschema
# checks oneOf as "exactly one branch"), and vary.
MORE_SCHEMAS = [
    # prefixItems: a tuple, then items (or none with items false).
    {"type": "array", "prefixItems": [{"type": "integer", "minimum": 0, "maximum": 9}, {"enum": ["a", "b"]}],
     "items": {"type": "boolean"}, "maxItems": 4},
    {"type": "array", "prefixItems": [{"type": "string", "maxLength": 3}, {"type": "null"}, {"const": 1}],
     "items": False, "minItems": 2},
    {"prefixItems": [{"type": "boolean"}], "minItems": 3, "maxItems": 3, "items": {"enum": [1, 2]}},
    # minProperties / maxProperties over declared properties.
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"}, "c": {"type": "null"},
                                      "d": {"const": "x"}}, "minProperties": 2, "maxProperties": 3},
    {"type": "object", "properties": {"id": {"type": "integer"}, "x": {"type": "boolean"}, "y": {"type": "boolean"}},
     "required": ["id"], "maxProperties": 2, "additionalProperties": False},
    {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 9},
     "minProperties": 1, "maxProperties": 2},
    # allOf of object schemas (merged), with $ref and keywords beside it.
    {"$defs": {"base": {"type": "object", "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 99}},
                        "required": ["id"]}},
     "allOf": [{"$ref": "#/$defs/base"},
               {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8}}, "required": ["name"]}],
     "properties": {"note": {"enum": ["n1", "n2"]}}},
    {"allOf": [{"properties": {"a": {"type": "integer"}}, "additionalProperties": False},
               {"properties": {"a": {"type": "integer"}, "b": {"type": "string"}}}]},
    # oneOf the compiler can prove exclusive.
    {"oneOf": [{"type": "integer"}, {"type": "string", "maxLength": 4}, {"type": "null"}]},
    {"oneOf": [{"type": "integer", "minimum": 0, "maximum": 9}, {"type": "integer", "minimum": 10, "maximum": 20}]},
    {"oneOf": [{"enum": ["a", "b"]}, {"enum": ["c", 1]}]},
    {"oneOf": [{"type": "object", "properties": {"t": {"const": "x"}, "v": {"type": "integer"}}, "required": ["t"]},
               {"type": "object", "properties": {"t": {"enum": ["y", "z"]}, "v": {"type": "string", "maxLength": 3}},
                "required": ["t", "v"]}]},
    {"oneOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
               {"type": "object", "properties": {"b": {"type": "integer"}}, "required": ["b"],
                "additionalProperties": False}]},
    # pattern (or format) with minLength/maxLength: lengths in characters of
    # the decoded string, escapes and multi-byte characters counting one.
    {"type": "string", "pattern": '^[a"\\\\\\n]+$', "minLength": 2, "maxLength": 4},
    {"type": "string", "pattern": "^[α-ω]+$", "minLength": 2, "maxLength": 3},
    {"type": "string", "pattern": "[0-9]", "minLength": 1, "maxLength": 3},
    {"type": "string", "pattern": "^x+$", "minLength": 4},
    {"type": "string", "format": "email", "maxLength": 8},
    {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]+-[0-9]+$", "maxLength": 6},
                                      "note": {"type": "string", "pattern": "^.*$", "minLength": 1, "maxLength": 2}},
     "required": ["code", "note"]},
]


def test_more_keywords_samples_validate():
    outs = run([{"kind": "schema", "spec": json.dumps(s), "n": N, "seed": 7 + i} for i, s in enumerate(MORE_SCHEMAS)])
    for schema, out in zip(MORE_SCHEMAS, outs):
        assert "samples" in out, (schema, out)
        for text in out["samples"]:
            jsonschema.validate(json.loads(text), schema)
        assert len(set(out["samples"])) > 1, schema


def test_property_and_item_counts_cover_the_bounds():
    # Every count the bounds allow appears (the language is not needlessly
    # narrow), and none outside them.
    cases = [(MORE_SCHEMAS[3], len, {2, 3}), (MORE_SCHEMAS[4], len, {1, 2}), (MORE_SCHEMAS[5], len, {1, 2}),
             (MORE_SCHEMAS[0], len, {0, 1, 2, 3, 4}), (MORE_SCHEMAS[1], len, {2, 3}),
             (MORE_SCHEMAS[13], len, {2, 3, 4}), (MORE_SCHEMAS[14], len, {2, 3})]
    outs = run([{"kind": "schema", "spec": json.dumps(s), "n": 200, "seed": 11} for s, _, _ in cases])
    for (schema, size, want), out in zip(cases, outs):
        assert {size(json.loads(t)) for t in out["samples"]} == want, schema


REFUSED = [
    # oneOf branches that may overlap: refused, never compiled as anyOf.
    ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, "branches 0 and 1 may both match"),
    ({"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 3}]}, "branches 0 and 1 may both match"),
    ({"oneOf": [{"type": "null"}, {"type": "object", "properties": {"a": {"type": "integer"}}},
                {"type": "object", "properties": {"b": {"type": "integer"}}}]}, "branches 1 and 2 may both match"),
    ({"oneOf": [{"enum": [1, "a"]}, {"enum": [2, 1.0]}]}, "branches 0 and 1 may both match"),
    ({"oneOf": [{"type": "integer", "maximum": 10}, {"type": "integer", "minimum": 10}]}, "may both match"),
    # allOf beyond object schemas, or conflicting.
    ({"allOf": [{"type": "string"}, {"maxLength": 3}]}, "object schemas only"),
    ({"allOf": [{"properties": {"a": {"type": "integer"}}}, {"properties": {"a": {"type": "string"}}}]},
     "different schemas"),
    ({"allOf": [{"properties": {"a": {"type": "integer"}}, "additionalProperties": False},
                {"properties": {"b": {"type": "integer"}}, "required": ["b"]}]}, "forbidden by another part"),
    ({"type": "object", "properties": {"a": {"type": "integer"}}, "minProperties": 2}, "minProperties"),
    ({"type": "object", "minProperties": 3, "maxProperties": 2}, "below 'minProperties'"),
    ({"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 2}, "kept distinct"),
    ({"type": "array", "prefixItems": []}, "prefixItems"),
    ({"type": "object", "patternProperties": {"^a": {}}}, "patternProperties"),
    # pattern with lengths: an empty intersection, a product past the limit.
    ({"type": "string", "pattern": "^[a-z]{6}$", "maxLength": 4}, "no string has both this form and a length"),
    ({"type": "string", "pattern": "^[a-z]{1,1000}[0-9]{1,1000}$", "maxLength": 1000}, "larger than 20000 states"),
    ({"type": "string", "format": "date", "pattern": "^2"}, "'format' and 'pattern'"),
]


def test_refusals_name_the_problem():
    outs = run([{"kind": "schema", "spec": json.dumps(s), "n": 1} for s, _ in REFUSED])
    for (schema, needle), out in zip(REFUSED, outs):
        assert "error" in out and needle in out["error"], (schema, out)
