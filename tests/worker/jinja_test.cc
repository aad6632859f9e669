#include "worker/chat/jinja_interpreter.h"

#include <gtest/gtest.h>

namespace tessera::jinja {
namespace {

std::string Render(const std::string& src, const nlohmann::ordered_json& ctx = nlohmann::ordered_json::object()) {
  auto t = Template::Compile(src);
  if (!t.ok()) return "COMPILE ERROR: " + std::string(t.status().message());
  auto r = (*t)->Render(Value::FromJson(ctx));
  if (!r.ok()) return "RENDER ERROR: " + std::string(r.status().message());
  return *r;
}

TEST(JinjaTest, ExpressionsFollowPythonSemantics) {
  EXPECT_EQ(Render("{{ 1 + 2 * 3 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ 7 % 3 }}|{{ 7 / 2 }}"), "7|3|-4|1|3.5");
  EXPECT_EQ(Render("{{ 'a' ~ 1 ~ none }}|{{ true }}|{{ [1, 'x'] }}|{{ {'k': 2} }}"), "a1None|True|[1, 'x']|{'k': 2}");
  EXPECT_EQ(Render("{{ 'abc'[1:] }}{{ [1,2,3][::-1] }}{{ 'hello'[-1] }}"), "bc[3, 2, 1]o");
  EXPECT_EQ(Render("{{ 'x' if 0 else 'y' }}{{ 'b' in 'abc' }}{{ 3 not in [1,2] }}"), "yTrueTrue");
  EXPECT_EQ(Render("{{ '  hi  ' | trim | upper }}{{ [3,1] | length }}{{ 'a,b' .split(',') }}"), "HI2['a', 'b']");
}

TEST(JinjaTest, LoopsScopesAndNamespaces) {
  EXPECT_EQ(Render("{% for x in xs %}{{ loop.index }}{{ x }}{% if not loop.last %},{% endif %}{% endfor %}",
                   {{"xs", {"a", "b", "c"}}}),
            "1a,2b,3c");
  EXPECT_EQ(Render("{% set n = 1 %}{% for x in [1,2] %}{% set n = n + x %}{% endfor %}{{ n }}"), "1");
  EXPECT_EQ(Render("{% set ns = namespace(n=1) %}{% for x in [1,2] %}{% set ns.n = ns.n + x %}{% endfor %}{{ ns.n }}"), "4");
  EXPECT_EQ(Render("{% for x in [1,2,3,4] %}{% if x == 3 %}{% break %}{% endif %}{{ x }}{% endfor %}"), "12");
  EXPECT_EQ(Render("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", {{"d", {{"a", 1}, {"b", 2}}}}), "a=1;b=2;");
  EXPECT_EQ(Render("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(Render("{% macro m(a, b='!') %}{{ a }}{{ b }}{% endmacro %}{{ m('hi') }}{{ m('yo', b='?') }}"), "hi!yo?");
}

TEST(JinjaTest, WhitespaceControlAsHuggingFaceRendersIt) {
  EXPECT_EQ(Render("a\n  {% if true %}\n  b\n  {% endif %}\nc"), "a\n  b\nc");
  EXPECT_EQ(Render("a  {%- if true -%}  b  {%- endif %}"), "ab");
  EXPECT_EQ(Render("{# comment #}\nx"), "x");
}

TEST(JinjaTest, TojsonMatchesPythonJsonDumps) {
  EXPECT_EQ(Render("{{ x | tojson }}", {{"x", {{"a", {1, 2.5, nullptr, true}}, {"b", "\"q\"\n"}}}}),
            R"({"a": [1, 2.5, null, true], "b": "\"q\"\n"})");
  EXPECT_EQ(Render("{{ [1] | tojson(indent=2) }}"), "[\n  1\n]");
}

TEST(JinjaTest, ErrorsNameTheConstruct) {
  EXPECT_NE(Render("{% include 'x' %}").find("unsupported construct: '{% include %}'"), std::string::npos);
  EXPECT_NE(Render("{{ x | wordwrap }}").find("unsupported construct: filter 'wordwrap'"), std::string::npos);
  EXPECT_NE(Render("{{ raise_exception('roles must alternate') }}").find("roles must alternate"), std::string::npos);
  EXPECT_NE(Render("{% if x %}").find("endif"), std::string::npos);
  EXPECT_NE(Render("{{ 'abc' ").find("unterminated"), std::string::npos);
  EXPECT_NE(Render("{{ 1 +* 2 }}").find("line 1"), std::string::npos);
}

TEST(JinjaTest, HostileTemplatesAreBounded) {
  std::string deep(5000, '(');
  EXPECT_NE(Render("{{ " + deep + " }}").find("nested too deeply"), std::string::npos);
  EXPECT_NE(Render("{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}").find("limit"),
            std::string::npos);
  EXPECT_NE(Render("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}").find("nested too deeply"), std::string::npos);
}

}  // namespace
}  // namespace tessera::jinja
