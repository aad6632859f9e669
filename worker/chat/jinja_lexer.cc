// Lexer: template text and tags, with Jinja2's whitespace control
// ({%- -%}, trim_blocks, lstrip_blocks), then the tokens inside tags.
#include <cctype>

#include "absl/strings/str_cat.h"
#include "worker/chat/jinja_ast.h"

namespace tessera::jinja {
namespace {

absl::Status LexError(int line, absl::string_view msg) {
  return absl::InvalidArgumentError(absl::StrCat("chat template line ", line, ": ", msg));
}

bool IsSpaceNoNl(char c) { return c == ' ' || c == '\t'; }

// Tokens of one {{ }} or {% %} body.
absl::Status LexInside(const std::string& s, size_t begin, size_t end, int line, std::vector<Token>& out) {
  size_t i = begin;
  while (i < end) {
    const char c = s[i];
    if (c == '\n') { ++line; ++i; continue; }
    if (std::isspace(static_cast<unsigned char>(c))) { ++i; continue; }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < end && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      out.push_back({Token::Kind::kName, s.substr(i, j - i), line});
      i = j;
      continue;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      bool is_float = false;
      while (j < end && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      if (j + 1 < end && s[j] == '.' && std::isdigit(static_cast<unsigned char>(s[j + 1]))) {
        is_float = true;
        ++j;
        while (j < end && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      }
      if (j < end && (s[j] == 'e' || s[j] == 'E')) {
        size_t k = j + 1;
        if (k < end && (s[k] == '+' || s[k] == '-')) ++k;
        if (k < end && std::isdigit(static_cast<unsigned char>(s[k]))) {
          is_float = true;
          j = k;
          while (j < end && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
        }
      }
      std::string num;
      for (size_t k = i; k < j; ++k) if (s[k] != '_') num.push_back(s[k]);
      out.push_back({is_float ? Token::Kind::kFloat : Token::Kind::kInt, num, line});
      i = j;
      continue;
    }
    if (c == '\'' || c == '"') {
      std::string val;
      size_t j = i + 1;
      bool closed = false;
      while (j < end) {
        char d = s[j];
        if (d == c) { closed = true; ++j; break; }
        if (d == '\n') ++line;
        if (d == '\\' && j + 1 < end) {
          char e = s[j + 1];
          switch (e) {
            case 'n': val.push_back('\n'); break;
            case 't': val.push_back('\t'); break;
            case 'r': val.push_back('\r'); break;
            case '\\': val.push_back('\\'); break;
            case '\'': val.push_back('\''); break;
            case '"': val.push_back('"'); break;
            default: val.push_back('\\'); val.push_back(e); break;
          }
          j += 2;
          continue;
        }
        val.push_back(d);
        ++j;
      }
      if (!closed) return LexError(line, "unterminated string literal");
      out.push_back({Token::Kind::kString, val, line});
      i = j;
      continue;
    }
    static constexpr std::string_view kOps2[] = {"==", "!=", "<=", ">=", "//", "**"};
    bool matched = false;
    for (std::string_view op : kOps2) {
      if (s.compare(i, 2, op) == 0 && i + 2 <= end) {
        out.push_back({Token::Kind::kOp, std::string(op), line});
        i += 2;
        matched = true;
        break;
      }
    }
    if (matched) continue;
    if (std::string_view("+-*/%~|.,:()[]{}=<>!").find(c) != std::string_view::npos) {
      out.push_back({Token::Kind::kOp, std::string(1, c), line});
      ++i;
      continue;
    }
    return LexError(line, absl::StrCat("unexpected character '", std::string(1, c), "'"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<Token>> Lex(const std::string& s, const LexOptions& opt) {
  std::vector<Token> out;
  size_t i = 0;
  int line = 1;
  bool strip_next_text = false;  // previous tag ended with '-'
  bool trim_next_newline = false;  // previous tag was a block/comment (trim_blocks)
  auto count_lines = [](std::string_view t) {
    int n = 0;
    for (char c : t) n += c == '\n';
    return n;
  };
  while (i < s.size()) {
    // Find the next tag start.
    size_t open = std::string::npos;
    for (size_t k = i; k + 1 < s.size(); ++k) {
      if (s[k] == '{' && (s[k + 1] == '{' || s[k + 1] == '%' || s[k + 1] == '#')) { open = k; break; }
    }
    std::string text = s.substr(i, open == std::string::npos ? std::string::npos : open - i);
    const int text_lines = count_lines(text);
    if (trim_next_newline && !text.empty() && text[0] == '\n') text.erase(0, 1);
    if (trim_next_newline && text.size() >= 2 && text[0] == '\r' && text[1] == '\n') text.erase(0, 2);
    if (strip_next_text) {
      size_t k = 0;
      while (k < text.size() && std::isspace(static_cast<unsigned char>(text[k]))) ++k;
      text.erase(0, k);
    }
    if (open == std::string::npos) {
      if (!text.empty()) out.push_back({Token::Kind::kText, text, line});
      break;
    }
    const char kind = s[open + 1];
    const bool minus_left = open + 2 < s.size() && s[open + 2] == '-';
    const bool plus_left = open + 2 < s.size() && s[open + 2] == '+';
    if (minus_left) {
      size_t k = text.size();
      while (k > 0 && std::isspace(static_cast<unsigned char>(text[k - 1]))) --k;
      text.resize(k);
    } else if (opt.lstrip_blocks && !plus_left && (kind == '%' || kind == '#')) {
      // Remove spaces/tabs between the start of the line and the tag.
      size_t k = text.size();
      while (k > 0 && IsSpaceNoNl(text[k - 1])) --k;
      const size_t ws_start = open - (text.size() - k);
      const bool raw_line_start = ws_start == 0 || s[ws_start - 1] == '\n';
      if (raw_line_start) text.resize(k);
    }
    if (!text.empty()) out.push_back({Token::Kind::kText, text, line});
    line += text_lines;
    size_t body = open + 2 + ((minus_left || plus_left) ? 1 : 0);
    if (kind == '#') {
      const size_t close = s.find("#}", body);
      if (close == std::string::npos) return LexError(line, "unterminated comment");
      line += count_lines(std::string_view(s).substr(open, close - open));
      strip_next_text = close > body && s[close - 1] == '-';
      trim_next_newline = opt.trim_blocks;
      i = close + 2;
      continue;
    }
    const std::string closer = kind == '{' ? "}}" : "%}";
    // Find the closer outside string literals.
    size_t k = body;
    char quote = 0;
    size_t close = std::string::npos;
    for (; k + 1 < s.size(); ++k) {
      if (quote) {
        if (s[k] == '\\') { ++k; continue; }
        if (s[k] == quote) quote = 0;
        continue;
      }
      if (s[k] == '\'' || s[k] == '"') { quote = s[k]; continue; }
      if (s[k] == closer[0] && s[k + 1] == closer[1]) { close = k; break; }
    }
    if (close == std::string::npos) return LexError(line, absl::StrCat("unterminated '{", std::string(1, kind), "' tag"));
    const bool minus_right = close > body && s[close - 1] == '-';
    const size_t body_end = minus_right ? close - 1 : close;
    out.push_back({kind == '{' ? Token::Kind::kExprOpen : Token::Kind::kStmtOpen, "", line});
    auto st = LexInside(s, body, body_end, line, out);
    if (!st.ok()) return st;
    line += count_lines(std::string_view(s).substr(body, close - body));
    out.push_back({kind == '{' ? Token::Kind::kExprClose : Token::Kind::kStmtClose, "", line});
    strip_next_text = minus_right;
    trim_next_newline = opt.trim_blocks && kind == '%';
    i = close + 2;
  }
  out.push_back({Token::Kind::kEnd, "", line});
  return out;
}

}  // namespace tessera::jinja
