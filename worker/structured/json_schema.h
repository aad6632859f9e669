// JSON Schema -> a regex tree whose language is JSON text that validates
// against the schema (the approach of Outlines: a schema as a regular
// language; nesting is bounded, so the language stays regular).
//
// The language is a subset of the valid instances, never a superset: every
// output it admits validates, but not every valid instance is admitted.
// What is produced:
//   * Whitespace: none, except one optional space after ':' and ','
//     ({"a": 1, "b": [1, 2]} and {"a":1,"b":[1,2]} both fit).
//   * Objects: the declared properties in declared order; a required one
//     always, an optional one or not. Undeclared properties are never
//     produced (additionalProperties true/absent therefore changes nothing),
//     except for an object with no "properties", whose members then follow
//     additionalProperties (a schema, or any JSON value when true/absent).
//   * Strings: any valid UTF-8 with JSON's escapes (\uXXXX only for
//     non-surrogates, so that minLength/maxLength count code points as
//     jsonschema does); "pattern" (the regex subset of regex.h; unanchored
//     patterns are searched, as JSON Schema says); "format" date, time,
//     date-time, uuid, email, ipv4 (dates only up to day 28 in February).
//     minLength/maxLength beside "pattern" or "format": the intersection,
//     an automaton product with a character counter (WithLengthBound),
//     refused past max_length_states; "pattern" with "format" is refused.
//   * Numbers: JSON numbers of at most 15 integer and 15 fraction digits
//     (exponent 3); with bounds, integers within them, and
//     fractions only where the whole interval stays inside them (bounds of
//     "number" are rounded inwards to integers).
//   * Objects: minProperties/maxProperties counted over the declared
//     properties (an object without "properties" takes minProperties <= 1:
//     free member names are not kept distinct).
//   * Arrays: prefixItems (items for the rest; false: none) within
//     minItems/maxItems.
//   * anyOf as alternatives; oneOf as alternatives only when every pair of
//     branches is provably exclusive (no common type; disjoint const/enum
//     values; a property required by both with disjoint const/enum values,
//     or required by one and forbidden by the other; non-overlapping
//     numeric bounds), else refused naming the pair; allOf of one schema,
//     or of object schemas (with object keywords beside it) merged into one
//     object schema (a property declared twice must be the same schema, a
//     property is produced only where every part admits it); enum and
//     const as literals; $ref to
//     "#", "#/$defs/..." and "#/definitions/..." within the document.
//     Recursion is unrolled max_recursion times, after which the recursive
//     branch is dropped; a schema whose recursion never ends in a finite
//     instance, or a cycle of bare $refs, is refused.
// Every other keyword is refused with InvalidArgument naming it and its
// location, except annotations (title, description, default, examples,
// $schema, $id, $comment, deprecated, readOnly, writeOnly), which are
// ignored.
//
// Thread-safety: stateless functions.
#ifndef TESSERA_WORKER_STRUCTURED_JSON_SCHEMA_H_
#define TESSERA_WORKER_STRUCTURED_JSON_SCHEMA_H_

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "worker/structured/regex.h"

namespace tessera::structured {

struct JsonSchemaOptions {
  int max_depth = 32;          // schema nesting (subschemas within subschemas)
  int max_recursion = 3;       // expansions of one $ref within itself
  int any_value_depth = 3;     // nesting of values a schema leaves open (true, {}, items absent)
  int max_properties = 256;    // per object schema
  int max_enum = 1024;         // enum values per schema
  // A string with "pattern" or "format" and minLength/maxLength: states of
  // the product of the form's automaton with the length counter.
  int max_length_states = 20'000;
  absl::Time deadline = absl::InfiniteFuture();  // compile time bound (the product)
};

absl::StatusOr<NodeP> JsonSchemaToRegex(const nlohmann::ordered_json& schema, const JsonSchemaOptions& options = {});

// Any JSON object (json_object mode): members' values nest up to `depth`
// levels of arrays and objects in total.
NodeP AnyJsonObject(int depth);

}  // namespace tessera::structured

#endif  // TESSERA_WORKER_STRUCTURED_JSON_SCHEMA_H_
