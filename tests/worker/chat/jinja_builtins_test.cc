// The built-in table (jinja_builtins.h): names resolve when a template
// compiles, and every entry renders as Python's jinja2 would (as chat
// templates use it).
#include "worker/chat/jinja_builtins.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "worker/chat/jinja_interpreter.h"

namespace tessera::jinja {
namespace {

std::string CompileError(const std::string& src) {
  auto t = Template::Compile(src);
  return t.ok() ? "" : std::string(t.status().message());
}

TEST(JinjaBuiltinsTest, UnknownFilterFailsAtCompileWithNameAndLine) {
  EXPECT_EQ(CompileError("a\n{{ x | wordwrap }}"), "chat template line 2: unsupported construct: filter 'wordwrap'");
  // Also where no render would reach it.
  EXPECT_EQ(CompileError("{% if false %}\n\n{{ x | nope(1) }}{% endif %}"),
            "chat template line 3: unsupported construct: filter 'nope'");
  EXPECT_EQ(CompileError("{% for m in ms %}{{ m | trim | dictsort }}{% endfor %}"),
            "chat template line 1: unsupported construct: filter 'dictsort'");
}

TEST(JinjaBuiltinsTest, UnknownTestFailsAtCompileWithNameAndLine) {
  EXPECT_EQ(CompileError("{% if x is frobbed %}{% endif %}"), "chat template line 1: unsupported construct: test 'frobbed'");
  EXPECT_EQ(CompileError("\n{{ 1 if x is not escaped else 2 }}"),
            "chat template line 2: unsupported construct: test 'escaped'");
}

TEST(JinjaBuiltinsTest, NamesGivenToFiltersAsLiteralsAreCheckedAtCompile) {
  EXPECT_EQ(CompileError("{{ ms | selectattr('role', 'matching', 'x') | list }}"),
            "chat template line 1: unsupported construct: test 'matching' in selectattr");
  EXPECT_EQ(CompileError("{{ ms | rejectattr('role', 'odd') | list }}"),
            "chat template line 1: unsupported construct: test 'odd' in rejectattr");
  EXPECT_EQ(CompileError("{{ ms | map('wordcount') | list }}"),
            "chat template line 1: unsupported construct: map filter 'wordcount'");
  // attribute= wins over a positional name at render: nothing to check.
  EXPECT_EQ(CompileError("{{ ms | map('wordcount', attribute='x') | list }}"), "");
  // A name computed at render is checked at render.
  auto t = Template::Compile("{{ ms | map(f) | list }}");
  ASSERT_TRUE(t.ok());
  auto r = (*t)->Render(Value::FromJson({{"ms", {"a"}}, {"f", "wordcount"}}));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("unsupported construct: map filter 'wordcount'"), std::string::npos);
}

// Methods depend on the receiver's type: an unknown one is undefined (as
// jinja2's attribute lookup is), and calling it fails at render.
TEST(JinjaBuiltinsTest, MethodsStayDynamic) {
  auto t = Template::Compile("{{ s.nosuch is defined }}|{{ d.nosuch is defined }}|{{ d.keys is defined }}");
  ASSERT_TRUE(t.ok());
  auto r = (*t)->Render(Value::FromJson({{"s", "x"}, {"d", nlohmann::ordered_json::object()}}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "False|False|True");
  // A dict's own key comes before its methods.
  auto k = Template::Compile("{{ d.items }}");
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(*(*k)->Render(Value::FromJson({{"d", {{"items", 3}}}})), "3");
}

struct Case {
  enum Kind { kFilter, kTest, kDictMethod, kListMethod, kStringMethod } kind;
  std::string name;
  std::string source;
  std::string expected;
};

// One or more cases per table entry; expected values are Python jinja2's
// (transformers' tojson: json.dumps with ensure_ascii=False), except that
// jinja2 has no `strip` filter and its immutable sandbox (transformers')
// refuses `append`.
const std::vector<Case>& Cases() {
  static const std::vector<Case> cases = {
      {Case::kFilter, "trim", "[{{ '  a b \n' | trim }}]", "[a b]"},
      {Case::kFilter, "strip", "[{{ '  a b ' | strip }}]", "[a b]"},
      {Case::kFilter, "upper", "{{ 'aB' | upper }}", "AB"},
      {Case::kFilter, "lower", "{{ 'aB' | lower }}", "ab"},
      {Case::kFilter, "title", "{{ 'hello wORLD-x' | title }}", "Hello World-X"},
      {Case::kFilter, "capitalize", "{{ 'hELLO World' | capitalize }}", "Hello world"},
      {Case::kFilter, "string", "{{ [1, 'a'] | string }}", "[1, 'a']"},
      {Case::kFilter, "safe", "{{ '<b>' | safe }}", "<b>"},
      {Case::kFilter, "e", "{{ '<a href=\"x\">&\\'' | e }}", "&lt;a href=&#34;x&#34;&gt;&amp;&#39;"},
      {Case::kFilter, "escape", "{{ '<i>' | escape }}", "&lt;i&gt;"},
      {Case::kFilter, "forceescape", "{{ '&' | forceescape }}", "&amp;"},
      {Case::kFilter, "length", "{{ [1, 2, 3] | length }}{{ 'ab' | length }}{{ {'k': 1} | length }}", "321"},
      {Case::kFilter, "count", "{{ [1, 2] | count }}", "2"},
      {Case::kFilter, "tojson", "{{ {'a': [1, 'é', none, true]} | tojson }}", "{\"a\": [1, \"é\", null, true]}"},
      {Case::kFilter, "first", "{{ [1, 2, 3] | first }}{{ 'abc' | first }}", "1a"},
      {Case::kFilter, "last", "{{ [1, 2, 3] | last }}{{ 'abc' | last }}", "3c"},
      {Case::kFilter, "join", "{{ ['a', 'b'] | join(', ') }}|{{ [{'n': 'x'}, {'n': 'y'}] | join('-', attribute='n') }}",
       "a, b|x-y"},
      {Case::kFilter, "default", "{{ missing | default('z') }}{{ '' | default('e', true) }}{{ 'k' | default('n') }}", "zek"},
      {Case::kFilter, "d", "{{ missing | d('z') }}", "z"},
      {Case::kFilter, "int", "{{ '42' | int + 1 }}{{ 2.9 | int }}{{ 'x' | int }}", "4320"},
      {Case::kFilter, "float", "{{ '2.5' | float }}|{{ 2 | float }}", "2.5|2.0"},
      {Case::kFilter, "abs", "{{ (-3) | abs }}{{ (-1.5) | abs }}", "31.5"},
      {Case::kFilter, "round", "{{ 2.567 | round(2) }}|{{ 2.5 | round }}", "2.57|2.0"},
      {Case::kFilter, "list", "{{ 'ab' | list }}{{ {'k': 1} | list }}", "['a', 'b']['k']"},
      {Case::kFilter, "items", "{% for k, v in {'a': 1, 'b': 2} | items %}{{ k }}{{ v }}{% endfor %}", "a1b2"},
      {Case::kFilter, "reverse", "{{ [1, 2] | reverse | list }}{{ 'ab' | reverse }}", "[2, 1]ba"},
      {Case::kFilter, "replace", "{{ 'aXbX' | replace('X', '-') }}", "a-b-"},
      {Case::kFilter, "selectattr",
       "{{ ms | selectattr('role', 'equalto', 'user') | map(attribute='c') | join }}"
       "{{ ms | selectattr('tool') | map(attribute='c') | join }}",
       "acc"},
      {Case::kFilter, "rejectattr", "{{ ms | rejectattr('role', 'eq', 'user') | map(attribute='c') | join }}", "b"},
      {Case::kFilter, "map", "{{ ['a', 'B'] | map('upper') | join }}{{ ms | map(attribute='role') | join(',') }}",
       "ABuser,assistant,user"},
      {Case::kFilter, "unique", "{{ [1, 2, 1, 3, 2] | unique | list }}", "[1, 2, 3]"},
      {Case::kFilter, "indent", "{{ 'a\nb\n\nc' | indent(2) }}|{{ 'x' | indent(1, true) }}", "a\n  b\n\n  c| x"},

      {Case::kTest, "defined", "{{ x is defined }}{{ y is defined }}", "TrueFalse"},
      {Case::kTest, "undefined", "{{ y is undefined }}", "True"},
      {Case::kTest, "none", "{{ none is none }}{{ 0 is none }}", "TrueFalse"},
      {Case::kTest, "string", "{{ 'a' is string }}{{ 1 is string }}", "TrueFalse"},
      {Case::kTest, "number", "{{ 1.5 is number }}{{ 'a' is number }}", "TrueFalse"},
      {Case::kTest, "integer", "{{ 1 is integer }}{{ 1.0 is integer }}", "TrueFalse"},
      {Case::kTest, "float", "{{ 1.5 is float }}{{ 1 is float }}", "TrueFalse"},
      {Case::kTest, "boolean", "{{ true is boolean }}{{ 1 is boolean }}", "TrueFalse"},
      {Case::kTest, "true", "{{ true is true }}{{ 1 is true }}", "TrueFalse"},
      {Case::kTest, "false", "{{ false is false }}{{ 0 is false }}", "TrueFalse"},
      {Case::kTest, "mapping", "{{ {} is mapping }}{{ [] is mapping }}", "TrueFalse"},
      {Case::kTest, "iterable", "{{ [] is iterable }}{{ 1 is iterable }}", "TrueFalse"},
      {Case::kTest, "sequence", "{{ 'a' is sequence }}{{ 1 is sequence }}", "TrueFalse"},
      {Case::kTest, "callable", "{{ range is callable }}{{ 1 is callable }}", "TrueFalse"},
      {Case::kTest, "odd", "{{ 3 is odd }}{{ 4 is odd }}", "TrueFalse"},
      {Case::kTest, "even", "{{ 4 is even }}{{ 3 is not even }}", "TrueTrue"},
      {Case::kTest, "divisibleby", "{{ 9 is divisibleby 3 }}{{ 9 is divisibleby(2) }}", "TrueFalse"},
      {Case::kTest, "eq", "{{ 1 is eq 1 }}{{ 'a' is eq 'b' }}", "TrueFalse"},
      {Case::kTest, "equalto", "{{ 1 is equalto 1 }}", "True"},
      {Case::kTest, "sameas", "{{ true is sameas true }}", "True"},
      {Case::kTest, "ne", "{{ 1 is ne 2 }}{{ 1 is ne 1 }}", "TrueFalse"},
      {Case::kTest, "in", "{{ 'a' is in 'abc' }}{{ 3 is in([1, 2]) }}", "TrueFalse"},
      {Case::kTest, "lower", "{{ 'ab' is lower }}{{ 'aB' is lower }}", "TrueFalse"},
      {Case::kTest, "upper", "{{ 'AB' is upper }}{{ 'aB' is upper }}", "TrueFalse"},

      {Case::kDictMethod, "items", "{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}", "a=1;b=2;"},
      {Case::kDictMethod, "keys", "{{ {'a': 1, 'b': 2}.keys() | join }}", "ab"},
      {Case::kDictMethod, "values", "{{ {'a': 1, 'b': 2}.values() | list }}", "[1, 2]"},
      {Case::kDictMethod, "get", "{{ {'a': 1}.get('a') }}{{ {'a': 1}.get('b', 9) }}{{ {'a': 1}.get('b') }}", "19None"},
      {Case::kListMethod, "append", "{% set l = [1] %}{% set _ = l.append(2) %}{{ l }}", "[1, 2]"},
      {Case::kStringMethod, "strip", "[{{ ' a '.strip() }}|{{ 'xxaxx'.strip('x') }}]", "[a|a]"},
      {Case::kStringMethod, "lstrip", "[{{ ' a '.lstrip() }}]", "[a ]"},
      {Case::kStringMethod, "rstrip", "[{{ ' a '.rstrip() }}]", "[ a]"},
      {Case::kStringMethod, "upper", "{{ 'aB'.upper() }}", "AB"},
      {Case::kStringMethod, "lower", "{{ 'aB'.lower() }}", "ab"},
      {Case::kStringMethod, "title", "{{ 'ab cd'.title() }}", "Ab Cd"},
      {Case::kStringMethod, "capitalize", "{{ 'aB cd'.capitalize() }}", "Ab cd"},
      {Case::kStringMethod, "startswith", "{{ 'abc'.startswith('ab') }}{{ 'abc'.startswith(('x', 'a')) }}", "TrueTrue"},
      {Case::kStringMethod, "endswith", "{{ 'abc'.endswith('bc') }}{{ 'abc'.endswith('b') }}", "TrueFalse"},
      {Case::kStringMethod, "split", "{{ 'a,b,,c'.split(',') }}{{ ' a  b '.split() }}{{ 'a,b,c'.split(',', 1) }}",
       "['a', 'b', '', 'c']['a', 'b']['a', 'b,c']"},
      {Case::kStringMethod, "replace", "{{ 'aXbX'.replace('X', '') }}", "ab"},
      {Case::kStringMethod, "find", "{{ 'abc'.find('c') }}{{ 'abc'.find('z') }}", "2-1"},
  };
  return cases;
}

TEST(JinjaBuiltinsTest, EveryEntryRendersAsJinja2Does) {
  const nlohmann::ordered_json ctx = {
      {"x", 1},
      {"ms", {{{"role", "user"}, {"c", "a"}}, {{"role", "assistant"}, {"c", "b"}}, {{"role", "user"}, {"c", "c"}, {"tool", true}}}}};
  for (const Case& c : Cases()) {
    auto t = Template::Compile(c.source);
    if (!t.ok()) {
      ADD_FAILURE() << c.name << ": " << t.status();
      continue;
    }
    auto r = (*t)->Render(Value::FromJson(ctx));
    if (!r.ok()) {
      ADD_FAILURE() << c.name << ": " << r.status();
      continue;
    }
    EXPECT_EQ(*r, c.expected) << c.name << ": " << c.source;
  }
}

TEST(JinjaBuiltinsTest, EveryTableEntryHasACase) {
  std::set<std::pair<Case::Kind, std::string>> covered;
  for (const Case& c : Cases()) covered.insert({c.kind, c.name});
  auto expect_covered = [&](Case::Kind kind, const std::vector<std::string_view>& names) {
    for (std::string_view n : names) EXPECT_TRUE(covered.count({kind, std::string(n)})) << "no case for " << n;
  };
  expect_covered(Case::kFilter, FilterNames());
  expect_covered(Case::kTest, TestNames());
  expect_covered(Case::kDictMethod, MethodNames(Value::Kind::kDict));
  expect_covered(Case::kListMethod, MethodNames(Value::Kind::kList));
  expect_covered(Case::kStringMethod, MethodNames(Value::Kind::kString));
  EXPECT_TRUE(MethodNames(Value::Kind::kInt).empty());
}

TEST(JinjaBuiltinsTest, LookupsFindExactlyTheTable) {
  for (std::string_view n : FilterNames()) EXPECT_NE(FindFilter(n), nullptr) << n;
  for (std::string_view n : TestNames()) EXPECT_NE(FindTest(n), nullptr) << n;
  EXPECT_EQ(FindFilter("wordwrap"), nullptr);
  EXPECT_EQ(FindTest("escaped"), nullptr);
  EXPECT_NE(FindMethod(Value::Kind::kString, "split"), nullptr);
  EXPECT_EQ(FindMethod(Value::Kind::kList, "split"), nullptr);
  EXPECT_EQ(FindMethod(Value::Kind::kDict, "append"), nullptr);
}

}  // namespace
}  // namespace tessera::jinja
