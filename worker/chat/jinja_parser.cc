// Recursive-descent parser with Jinja2's operator precedence:
// cond-expr < or < and < not < comparisons/in/is < + - < ~ < * / // % < ** <
// unary < primary with postfix (.attr, [index], (call)) and filters/tests.
#include <charconv>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/chat/jinja_ast.h"
#include "worker/chat/jinja_builtins.h"

namespace tessera::jinja {
namespace {

class Parser {
 public:
  explicit Parser(std::vector<Token> t) : t_(std::move(t)) {}

  absl::StatusOr<NodeList> ParseTemplate() {
    NodeList nodes;
    std::string end_tag;
    TESSERA_RETURN_IF_ERROR(ParseBody(nodes, {}, &end_tag));
    if (!end_tag.empty()) return Error(absl::StrCat("unexpected '", end_tag, "'"));
    return nodes;
  }

 private:
  const Token& Peek(int k = 0) const { return t_[std::min(pos_ + k, t_.size() - 1)]; }
  const Token& Next() { return t_[std::min(pos_++, t_.size() - 1)]; }
  bool IsOp(absl::string_view op, int k = 0) const { return Peek(k).kind == Token::Kind::kOp && Peek(k).text == op; }
  bool IsName(absl::string_view n, int k = 0) const { return Peek(k).kind == Token::Kind::kName && Peek(k).text == n; }
  absl::Status Error(absl::string_view msg) const { return ErrorAt(Peek().line, msg); }
  static absl::Status ErrorAt(int line, absl::string_view msg) {
    return absl::InvalidArgumentError(absl::StrCat("chat template line ", line, ": ", msg));
  }
  absl::Status ExpectOp(absl::string_view op) {
    if (!IsOp(op)) return Error(absl::StrCat("expected '", op, "', found '", Peek().text, "'"));
    ++pos_;
    return absl::OkStatus();
  }
  absl::Status ExpectStmtClose() {
    if (Peek().kind != Token::Kind::kStmtClose) return Error(absl::StrCat("expected '%}', found '", Peek().text, "'"));
    ++pos_;
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> ExpectName() {
    if (Peek().kind != Token::Kind::kName) return Error(absl::StrCat("expected a name, found '", Peek().text, "'"));
    return Next().text;
  }

  // Parses nodes until a {% tag %} named in `ends` (left unconsumed past its
  // name, reported in *end_tag) or the end of input.
  absl::Status ParseBody(NodeList& out, std::initializer_list<absl::string_view> ends, std::string* end_tag) {
    end_tag->clear();
    while (Peek().kind != Token::Kind::kEnd) {
      const Token& tok = Peek();
      if (tok.kind == Token::Kind::kText) {
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::kText;
        n->text = Next().text;
        out.push_back(std::move(n));
        continue;
      }
      if (tok.kind == Token::Kind::kExprOpen) {
        ++pos_;
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::kOutput;
        n->line = tok.line;
        TESSERA_ASSIGN_OR_RETURN(n->expr, ParseExpr());
        if (Peek().kind != Token::Kind::kExprClose) return Error(absl::StrCat("expected '}}', found '", Peek().text, "'"));
        ++pos_;
        out.push_back(std::move(n));
        continue;
      }
      if (tok.kind != Token::Kind::kStmtOpen) return Error("unexpected token");
      const Token& name = Peek(1);
      if (name.kind != Token::Kind::kName) return Error("expected a statement name after '{%'");
      for (absl::string_view e : ends) {
        if (name.text == e) {
          pos_ += 2;
          *end_tag = name.text;
          return absl::OkStatus();
        }
      }
      pos_ += 2;
      TESSERA_RETURN_IF_ERROR(ParseStatement(name.text, name.line, out));
    }
    return absl::OkStatus();
  }

  absl::Status ParseStatement(const std::string& kw, int line, NodeList& out) {
    if (++depth_ > kMaxDepth) return Error("statements nested too deeply");
    absl::Status s = ParseStatementInner(kw, line, out);
    --depth_;
    return s;
  }

  absl::Status ParseStatementInner(const std::string& kw, int line, NodeList& out) {
    auto n = std::make_unique<Node>();
    n->line = line;
    std::string end;
    if (kw == "if") {
      n->kind = Node::Kind::kIf;
      TESSERA_ASSIGN_OR_RETURN(ExprPtr cond, ParseExpr());
      TESSERA_RETURN_IF_ERROR(ExpectStmtClose());
      while (true) {
        NodeList body;
        TESSERA_RETURN_IF_ERROR(ParseBody(body, {"elif", "else", "endif"}, &end));
        n->branches.emplace_back(std::move(cond), std::move(body));
        if (end == "elif") {
          TESSERA_ASSIGN_OR_RETURN(cond, ParseExpr());
          TESSERA_RETURN_IF_ERROR(ExpectStmtClose());
        } else if (end == "else") {
          TESSERA_RETURN_IF_ERROR(ExpectStmtClose());
          NodeList else_body;
          TESSERA_RETURN_IF_ERROR(ParseBody(else_body, {"endif"}, &end));
          if (end != "endif") return Error("missing '{% endif %}'");
          n->branches.emplace_back(nullptr, std::move(else_body));
          break;
        } else if (end == "endif") {
          break;
        } else {
          return Error("missing '{% endif %}'");
        }
      }
      TESSERA_RETURN_IF_ERROR(ExpectStmtClose());
    } else if (kw == "for") {
      n->kind = Node::Kind::kFor;
      do {
        TESSERA_ASSIGN_OR_RETURN(std::string v, ExpectName());
        n->targets.push_back(v);
      } while (IsOp(",") && (++pos_, true));
      if (!IsName("in")) return Error("expected 'in' in for loop");
      ++pos_;
      TESSERA_ASSIGN_OR_RETURN(n->expr, ParseOr());
      if (IsName("if")) {
        ++pos_;
        auto filter = ParseOr();
        if (!filter.ok()) return filter.status();
        n->params.emplace_back("if", std::move(*filter));
      }
      if (IsName("recursive")) return Error("unsupported construct: recursive for loops");
      TESSERA_RETURN_IF_ERROR(ExpectStmtClose());
      TESSERA_RETURN_IF_ERROR(ParseBody(n->body, {"else", "endfor"}, &end));
      if (end == "else") {
        TESSERA_RETURN_IF_ERROR(ExpectStmtClose());
        TESSERA_RETURN_IF_ERROR(ParseBody(n->else_body, {"endfor"}, &end));
      }
      if (end != "endfor") return Error("missing '{% endfor %}'");
      TESSERA_RETURN_IF_ERROR(ExpectStmtClose());
    } else if (kw == "set") {
      TESSERA_ASSIGN_OR_RETURN(std::string target, ExpectName());
      n->targets.push_back(target);
      if (IsOp(".")) {
        ++pos_;
        TESSERA_ASSIGN_OR_RETURN(n->attr, ExpectName());
      }
      while (IsOp(",")) {
        ++pos_;
        TESSERA_ASSIGN_OR_RETURN(std::string more, ExpectName());
        n->targets.push_back(more);
      }
      if (IsOp("=")) {
        ++pos_;
        n->kind = Node::Kind::kSet;
        TESSERA_ASSIGN_OR_RETURN(n->expr, ParseTupleOrExpr());
        TESSERA_RETURN_IF_ERROR(ExpectStmtClose());
      } else {
        n->kind = Node::Kind::kSetBlock;
        TESSERA_RETURN_IF_ERROR(ExpectStmtClose());
        TESSERA_RETURN_IF_ERROR(ParseBody(n->body, {"endset"}, &end));
        if (end != "endset") return Error("missing '{% endset %}'");
        TESSERA_RETURN_IF_ERROR(ExpectStmtClose());
      }
    } else if (kw == "macro") {
      n->kind = Node::Kind::kMacro;
      TESSERA_ASSIGN_OR_RETURN(n->name, ExpectName());
      TESSERA_RETURN_IF_ERROR(ExpectOp("("));
      while (!IsOp(")")) {
        TESSERA_ASSIGN_OR_RETURN(std::string p, ExpectName());
        ExprPtr def;
        if (IsOp("=")) {
          ++pos_;
          TESSERA_ASSIGN_OR_RETURN(def, ParseExpr());
        }
        n->params.emplace_back(p, std::move(def));
        if (IsOp(",")) ++pos_;
        else if (!IsOp(")")) return Error("expected ',' or ')' in macro parameters");
      }
      ++pos_;
      TESSERA_RETURN_IF_ERROR(ExpectStmtClose());
      TESSERA_RETURN_IF_ERROR(ParseBody(n->body, {"endmacro"}, &end));
      if (end != "endmacro") return Error("missing '{% endmacro %}'");
      TESSERA_RETURN_IF_ERROR(ExpectStmtClose());
    } else if (kw == "break" || kw == "continue") {
      n->kind = kw == "break" ? Node::Kind::kBreak : Node::Kind::kContinue;
      TESSERA_RETURN_IF_ERROR(ExpectStmtClose());
    } else if (kw == "generation") {
      // Hugging Face's assistant-mask marker: renders its body unchanged.
      TESSERA_RETURN_IF_ERROR(ExpectStmtClose());
      TESSERA_RETURN_IF_ERROR(ParseBody(out, {"endgeneration"}, &end));
      if (end != "endgeneration") return Error("missing '{% endgeneration %}'");
      return ExpectStmtClose();
    } else {
      return Error(absl::StrCat("unsupported construct: '{% ", kw, " %}'"));
    }
    out.push_back(std::move(n));
    return absl::OkStatus();
  }

  ExprPtr Make(Expr::Kind k) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->line = Peek().line;
    return e;
  }

  // `a, b` without brackets (set and for targets' values).
  absl::StatusOr<ExprPtr> ParseTupleOrExpr() {
    TESSERA_ASSIGN_OR_RETURN(ExprPtr first, ParseExpr());
    if (!IsOp(",")) return first;
    auto t = Make(Expr::Kind::kTuple);
    t->items.push_back(std::move(first));
    while (IsOp(",")) {
      ++pos_;
      TESSERA_ASSIGN_OR_RETURN(ExprPtr e, ParseExpr());
      t->items.push_back(std::move(e));
    }
    return t;
  }

  absl::StatusOr<ExprPtr> ParseExpr() {
    if (++depth_ > kMaxDepth) return Error("expression nested too deeply");
    auto r = ParseCond();
    --depth_;
    return r;
  }

  absl::StatusOr<ExprPtr> ParseCond() {
    TESSERA_ASSIGN_OR_RETURN(ExprPtr e, ParseOr());
    while (IsName("if")) {
      ++pos_;
      auto c = Make(Expr::Kind::kCond);
      c->a = std::move(e);
      TESSERA_ASSIGN_OR_RETURN(c->b, ParseOr());
      if (IsName("else")) {
        ++pos_;
        TESSERA_ASSIGN_OR_RETURN(c->c, ParseCond());
      }
      e = std::move(c);
    }
    return e;
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    TESSERA_ASSIGN_OR_RETURN(ExprPtr e, ParseAnd());
    while (IsName("or")) {
      ++pos_;
      auto n = Make(Expr::Kind::kOr);
      n->a = std::move(e);
      TESSERA_ASSIGN_OR_RETURN(n->b, ParseAnd());
      e = std::move(n);
    }
    return e;
  }

  absl::StatusOr<ExprPtr> ParseAnd() {
    TESSERA_ASSIGN_OR_RETURN(ExprPtr e, ParseNot());
    while (IsName("and")) {
      ++pos_;
      auto n = Make(Expr::Kind::kAnd);
      n->a = std::move(e);
      TESSERA_ASSIGN_OR_RETURN(n->b, ParseNot());
      e = std::move(n);
    }
    return e;
  }

  absl::StatusOr<ExprPtr> ParseNot() {
    if (IsName("not")) {
      ++pos_;
      if (++depth_ > kMaxDepth) return Error("expression nested too deeply");
      auto n = Make(Expr::Kind::kNot);
      TESSERA_ASSIGN_OR_RETURN(n->a, ParseNot());
      --depth_;
      return n;
    }
    return ParseCompare();
  }

  absl::StatusOr<ExprPtr> ParseCompare() {
    TESSERA_ASSIGN_OR_RETURN(ExprPtr e, ParseMath1());
    while (true) {
      std::string op;
      bool negated = false;
      if (Peek().kind == Token::Kind::kOp &&
          (IsOp("==") || IsOp("!=") || IsOp("<") || IsOp(">") || IsOp("<=") || IsOp(">="))) {
        op = Next().text;
      } else if (IsName("in")) {
        ++pos_;
        op = "in";
      } else if (IsName("not") && IsName("in", 1)) {
        pos_ += 2;
        op = "in";
        negated = true;
      } else {
        break;
      }
      auto n = Make(Expr::Kind::kBinary);
      n->name = op;
      n->negated = negated;
      n->a = std::move(e);
      TESSERA_ASSIGN_OR_RETURN(n->b, ParseMath1());
      e = std::move(n);
    }
    return e;
  }

  absl::StatusOr<ExprPtr> Binary(std::initializer_list<absl::string_view> ops,
                                 absl::StatusOr<ExprPtr> (Parser::*next)()) {
    TESSERA_ASSIGN_OR_RETURN(ExprPtr e, (this->*next)());
    while (true) {
      bool hit = false;
      for (absl::string_view op : ops) hit |= IsOp(op);
      if (!hit) break;
      auto n = Make(Expr::Kind::kBinary);
      n->name = Next().text;
      n->a = std::move(e);
      TESSERA_ASSIGN_OR_RETURN(n->b, (this->*next)());
      e = std::move(n);
    }
    return e;
  }
  absl::StatusOr<ExprPtr> ParseMath1() { return Binary({"+", "-"}, &Parser::ParseConcat); }
  absl::StatusOr<ExprPtr> ParseConcat() { return Binary({"~"}, &Parser::ParseMath2); }
  absl::StatusOr<ExprPtr> ParseMath2() { return Binary({"*", "/", "//", "%"}, &Parser::ParsePow); }
  absl::StatusOr<ExprPtr> ParsePow() { return Binary({"**"}, &Parser::ParseUnaryWithFilters); }
  absl::StatusOr<ExprPtr> ParseUnaryWithFilters() { return ParseUnary(true); }

  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter) {
    ExprPtr e;
    if (IsOp("-") || IsOp("+")) {
      if (++depth_ > kMaxDepth) return Error("expression nested too deeply");
      auto n = Make(Expr::Kind::kUnary);
      n->name = Next().text;
      TESSERA_ASSIGN_OR_RETURN(n->a, ParseUnary(false));
      --depth_;
      e = std::move(n);
    } else {
      TESSERA_ASSIGN_OR_RETURN(e, ParsePrimary());
    }
    TESSERA_ASSIGN_OR_RETURN(e, ParsePostfix(std::move(e)));
    if (with_filter) {
      TESSERA_ASSIGN_OR_RETURN(e, ParseFiltersAndTests(std::move(e)));
    }
    return e;
  }

  absl::Status ParseArgs(Expr& call) {
    // REQUIRES: '(' consumed.
    while (!IsOp(")")) {
      if (Peek().kind == Token::Kind::kName && IsOp("=", 1)) {
        std::string key = Next().text;
        ++pos_;
        TESSERA_ASSIGN_OR_RETURN(ExprPtr v, ParseExpr());
        call.kwargs.emplace_back(key, std::move(v));
      } else {
        TESSERA_ASSIGN_OR_RETURN(ExprPtr v, ParseExpr());
        call.items.push_back(std::move(v));
      }
      if (IsOp(",")) ++pos_;
      else if (!IsOp(")")) return Error(absl::StrCat("expected ',' or ')' in arguments, found '", Peek().text, "'"));
    }
    ++pos_;
    return absl::OkStatus();
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr e) {
    while (true) {
      if (IsOp(".")) {
        ++pos_;
        auto n = Make(Expr::Kind::kAttr);
        if (Peek().kind == Token::Kind::kInt) {
          n->kind = Expr::Kind::kIndex;
          auto lit = Make(Expr::Kind::kLiteral);
          lit->literal = Value(static_cast<int64_t>(std::stoll(Next().text)));
          n->b = std::move(lit);
        } else {
          TESSERA_ASSIGN_OR_RETURN(n->name, ExpectName());
        }
        n->a = std::move(e);
        e = std::move(n);
      } else if (IsOp("[")) {
        ++pos_;
        auto n = Make(Expr::Kind::kIndex);
        n->a = std::move(e);
        ExprPtr start, stop, step;
        if (!IsOp(":")) { TESSERA_ASSIGN_OR_RETURN(start, ParseExpr()); }
        if (IsOp(":")) {
          n->kind = Expr::Kind::kSlice;
          ++pos_;
          if (!IsOp("]") && !IsOp(":")) { TESSERA_ASSIGN_OR_RETURN(stop, ParseExpr()); }
          if (IsOp(":")) {
            ++pos_;
            if (!IsOp("]")) { TESSERA_ASSIGN_OR_RETURN(step, ParseExpr()); }
          }
          n->c = std::move(stop);
          n->items.push_back(std::move(step));
        }
        n->b = std::move(start);
        TESSERA_RETURN_IF_ERROR(ExpectOp("]"));
        e = std::move(n);
      } else if (IsOp("(")) {
        ++pos_;
        auto n = Make(Expr::Kind::kCall);
        n->a = std::move(e);
        TESSERA_RETURN_IF_ERROR(ParseArgs(*n));
        e = std::move(n);
      } else {
        return e;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseFiltersAndTests(ExprPtr e) {
    while (true) {
      if (IsOp("|")) {
        ++pos_;
        auto n = Make(Expr::Kind::kFilter);
        TESSERA_ASSIGN_OR_RETURN(n->name, ExpectName());
        while (IsOp(".")) {  // dotted filter names are not supported; name them
          return Error(absl::StrCat("unsupported construct: dotted filter name '", n->name, ".'"));
        }
        n->filter = FindFilter(n->name);
        if (n->filter == nullptr) return ErrorAt(n->line, absl::StrCat("unsupported construct: filter '", n->name, "'"));
        n->a = std::move(e);
        if (IsOp("(")) {
          ++pos_;
          TESSERA_RETURN_IF_ERROR(ParseArgs(*n));
        }
        if (n->filter->check != nullptr) {
          if (absl::Status s = n->filter->check(*n); !s.ok()) return ErrorAt(n->line, s.message());
        }
        e = std::move(n);
      } else if (IsName("is")) {
        ++pos_;
        auto n = Make(Expr::Kind::kTest);
        if (IsName("not")) { ++pos_; n->negated = true; }
        TESSERA_ASSIGN_OR_RETURN(n->name, ExpectName());
        n->test = FindTest(n->name);
        if (n->test == nullptr) return ErrorAt(n->line, absl::StrCat("unsupported construct: test '", n->name, "'"));
        n->a = std::move(e);
        if (IsOp("(")) {
          ++pos_;
          TESSERA_RETURN_IF_ERROR(ParseArgs(*n));
        } else if (Peek().kind == Token::Kind::kString || Peek().kind == Token::Kind::kInt ||
                   Peek().kind == Token::Kind::kFloat ||
                   (Peek().kind == Token::Kind::kName && !IsName("and") && !IsName("or") &&
                    !IsName("else") && !IsName("if") && !IsName("in") && !IsName("not") && !IsName("is"))) {
          TESSERA_ASSIGN_OR_RETURN(ExprPtr arg, ParsePrimary());
          n->items.push_back(std::move(arg));
        }
        e = std::move(n);
      } else {
        return e;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    if (++depth_ > kMaxDepth) return Error("expression nested too deeply");
    auto r = ParsePrimaryInner();
    --depth_;
    return r;
  }

  absl::StatusOr<ExprPtr> ParsePrimaryInner() {
    const Token& tok = Peek();
    switch (tok.kind) {
      case Token::Kind::kString: {
        auto n = Make(Expr::Kind::kLiteral);
        std::string s = Next().text;
        while (Peek().kind == Token::Kind::kString) s += Next().text;  // adjacent literals concatenate
        n->literal = Value(std::move(s));
        return n;
      }
      case Token::Kind::kInt: {
        auto n = Make(Expr::Kind::kLiteral);
        int64_t v = 0;
        const std::string& txt = Next().text;
        auto r = std::from_chars(txt.data(), txt.data() + txt.size(), v);
        if (r.ec != std::errc()) return Error(absl::StrCat("integer literal out of range: ", txt));
        n->literal = Value(v);
        return n;
      }
      case Token::Kind::kFloat: {
        auto n = Make(Expr::Kind::kLiteral);
        n->literal = Value(std::stod(Next().text));
        return n;
      }
      case Token::Kind::kName: {
        const std::string name = Next().text;
        auto n = Make(Expr::Kind::kLiteral);
        if (name == "true" || name == "True") { n->literal = Value(true); return n; }
        if (name == "false" || name == "False") { n->literal = Value(false); return n; }
        if (name == "none" || name == "None") { n->literal = Value::None(); return n; }
        n->kind = Expr::Kind::kName;
        n->name = name;
        return n;
      }
      case Token::Kind::kOp: {
        if (IsOp("(")) {
          ++pos_;
          if (IsOp(")")) {
            ++pos_;
            return Make(Expr::Kind::kTuple);
          }
          TESSERA_ASSIGN_OR_RETURN(ExprPtr e, ParseExpr());
          if (IsOp(",")) {
            auto t = Make(Expr::Kind::kTuple);
            t->items.push_back(std::move(e));
            while (IsOp(",")) {
              ++pos_;
              if (IsOp(")")) break;
              TESSERA_ASSIGN_OR_RETURN(ExprPtr x, ParseExpr());
              t->items.push_back(std::move(x));
            }
            e = std::move(t);
          }
          TESSERA_RETURN_IF_ERROR(ExpectOp(")"));
          return e;
        }
        if (IsOp("[")) {
          ++pos_;
          auto n = Make(Expr::Kind::kList);
          while (!IsOp("]")) {
            TESSERA_ASSIGN_OR_RETURN(ExprPtr x, ParseExpr());
            n->items.push_back(std::move(x));
            if (IsOp(",")) ++pos_;
            else if (!IsOp("]")) return Error("expected ',' or ']' in list");
          }
          ++pos_;
          return n;
        }
        if (IsOp("{")) {
          ++pos_;
          auto n = Make(Expr::Kind::kDict);
          while (!IsOp("}")) {
            TESSERA_ASSIGN_OR_RETURN(ExprPtr k, ParseExpr());
            TESSERA_RETURN_IF_ERROR(ExpectOp(":"));
            TESSERA_ASSIGN_OR_RETURN(ExprPtr v, ParseExpr());
            n->items.push_back(std::move(k));
            n->items.push_back(std::move(v));
            if (IsOp(",")) ++pos_;
            else if (!IsOp("}")) return Error("expected ',' or '}' in dict");
          }
          ++pos_;
          return n;
        }
        break;
      }
      default:
        break;
    }
    return Error(absl::StrCat("unexpected '", tok.text.empty() ? "end of tag" : tok.text, "' in expression"));
  }

  static constexpr int kMaxDepth = 200;
  std::vector<Token> t_;
  size_t pos_ = 0;
  int depth_ = 0;
};

}  // namespace

absl::StatusOr<NodeList> Parse(std::vector<Token> tokens) {
  Parser p(std::move(tokens));
  return p.ParseTemplate();
}

}  // namespace tessera::jinja
