#include "worker/structured/regex.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"

namespace tessera::structured {

Ranges Normalize(Ranges r) {
  std::sort(r.begin(), r.end());
  Ranges out;
  for (const auto& [lo, hi] : r) {
    if (lo > hi) continue;
    if (!out.empty() && lo <= out.back().second + 1) {
      out.back().second = std::max(out.back().second, hi);
    } else {
      out.emplace_back(lo, hi);
    }
  }
  return out;
}

Ranges Complement(const Ranges& r, uint32_t max) {
  Ranges out;
  uint32_t next = 0;
  for (const auto& [lo, hi] : Normalize(r)) {
    if (lo > next) out.emplace_back(next, lo - 1);
    next = hi + 1;
    if (hi >= max) return out;
  }
  if (next <= max) out.emplace_back(next, max);
  return out;
}

Ranges Subtract(const Ranges& a, const Ranges& b) {
  Ranges inv = Complement(b, 0x10FFFF);
  Ranges out;
  for (const auto& [alo, ahi] : Normalize(a)) {
    for (const auto& [blo, bhi] : inv) {
      const uint32_t lo = std::max(alo, blo), hi = std::min(ahi, bhi);
      if (lo <= hi) out.emplace_back(lo, hi);
    }
  }
  return out;
}

namespace {

NodeP Make(Node n) { return std::make_shared<const Node>(std::move(n)); }

}  // namespace

NodeP Never() {
  static const NodeP n = Make(Node{Node::Op::kNever, {}, {}, 0, 0});
  return n;
}
NodeP Empty() {
  static const NodeP n = Make(Node{Node::Op::kEmpty, {}, {}, 0, 0});
  return n;
}
bool IsNever(const NodeP& n) { return n->op == Node::Op::kNever; }

NodeP Automaton(std::shared_ptr<const ByteAutomaton> a) {
  return Make(Node{Node::Op::kAutomaton, {}, {}, 0, 0, std::move(a)});
}

NodeP Chars(Ranges r) {
  r = Normalize(std::move(r));
  if (r.empty()) return Never();
  return Make(Node{Node::Op::kChars, std::move(r), {}, 0, 0});
}

NodeP Bytes(Ranges r) {
  r = Normalize(std::move(r));
  if (r.empty()) return Never();
  return Make(Node{Node::Op::kBytes, std::move(r), {}, 0, 0});
}

NodeP Literal(std::string_view utf8) {
  std::vector<NodeP> kids;
  for (unsigned char c : utf8) kids.push_back(Bytes({{c, c}}));
  return Concat(std::move(kids));
}

NodeP Concat(std::vector<NodeP> kids) {
  std::vector<NodeP> out;
  for (NodeP& k : kids) {
    if (k->op == Node::Op::kNever) return Never();
    if (k->op == Node::Op::kEmpty) continue;
    if (k->op == Node::Op::kConcat) {
      out.insert(out.end(), k->kids.begin(), k->kids.end());
    } else {
      out.push_back(std::move(k));
    }
  }
  if (out.empty()) return Empty();
  if (out.size() == 1) return out[0];
  return Make(Node{Node::Op::kConcat, {}, std::move(out), 0, 0});
}

NodeP Alt(std::vector<NodeP> kids) {
  std::vector<NodeP> out;
  for (NodeP& k : kids) {
    if (k->op == Node::Op::kNever) continue;
    if (k->op == Node::Op::kAlt) {
      out.insert(out.end(), k->kids.begin(), k->kids.end());
    } else {
      out.push_back(std::move(k));
    }
  }
  if (out.empty()) return Never();
  if (out.size() == 1) return out[0];
  return Make(Node{Node::Op::kAlt, {}, std::move(out), 0, 0});
}

NodeP Repeat(NodeP kid, int min, int max) {
  if (max == 0) return Empty();
  if (kid->op == Node::Op::kNever) return min == 0 ? Empty() : Never();
  if (kid->op == Node::Op::kEmpty) return Empty();
  if (min == 1 && max == 1) return kid;
  return Make(Node{Node::Op::kRepeat, {}, {std::move(kid)}, min, max});
}

NodeP Optional(NodeP kid) { return Repeat(std::move(kid), 0, 1); }

NodeP SepList(NodeP item, NodeP sep) {
  if (item->op == Node::Op::kNever) return Never();
  if (sep->op == Node::Op::kNever) return item;
  return Make(Node{Node::Op::kSepList, {}, {std::move(item), std::move(sep)}, 0, 0});
}

namespace {

const Ranges kDigit = {{'0', '9'}};
const Ranges kWord = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
const Ranges kSpace = {{'\t', '\r'}, {' ', ' '}};

class Parser {
 public:
  explicit Parser(std::string_view p) : p_(p) {}

  absl::StatusOr<NodeP> ParseAll() {
    auto n = ParseAlt(0);
    if (!n.ok()) return n;
    if (pos_ < p_.size()) return Error(p_[pos_] == ')' ? "an unmatched ')'" : "an unexpected character");
    return n;
  }

 private:
  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("regex: ", std::string(what), " at offset ", pos_));
  }
  absl::Status Unsupported(std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("regex: ", std::string(what), " at offset ", pos_, " is not supported (only regular constructs are)"));
  }
  bool AtEnd() const { return pos_ >= p_.size(); }
  char Peek() const { return p_[pos_]; }

  absl::StatusOr<NodeP> ParseAlt(int depth) {
    if (depth > 200) return Error("groups nested deeper than 200");
    std::vector<NodeP> alts;
    while (true) {
      auto c = ParseConcat(depth);
      if (!c.ok()) return c;
      alts.push_back(*c);
      if (!AtEnd() && Peek() == '|') {
        ++pos_;
        continue;
      }
      break;
    }
    // Alt drops kNever branches; an empty class makes a branch kNever.
    return alts.size() == 1 ? alts[0] : Alt(std::move(alts));
  }

  absl::StatusOr<NodeP> ParseConcat(int depth) {
    std::vector<NodeP> items;
    while (!AtEnd() && Peek() != '|' && Peek() != ')') {
      auto atom = ParseAtom(depth);
      if (!atom.ok()) return atom;
      auto q = ParseQuantifiers(*atom);
      if (!q.ok()) return q;
      items.push_back(*q);
    }
    return Concat(std::move(items));
  }

  absl::StatusOr<NodeP> ParseQuantifiers(NodeP atom) {
    bool quantified = false;
    while (!AtEnd()) {
      int min, max;
      const char c = Peek();
      if (c == '*') {
        min = 0, max = -1, ++pos_;
      } else if (c == '+') {
        min = 1, max = -1, ++pos_;
      } else if (c == '?') {
        min = 0, max = 1, ++pos_;
      } else if (c == '{') {
        const size_t save = pos_;
        auto b = ParseBraces(&min, &max);
        if (!b.ok()) return b.status();
        if (!*b) {
          pos_ = save;  // a literal '{' (as Python reads "a{x")
          break;
        }
      } else {
        break;
      }
      if (quantified) return Error("a repeated quantifier (nothing to repeat)");
      quantified = true;
      atom = Repeat(atom, min, max);
      // Lazy (?) and possessive (+) forms match the same whole strings.
      if (!AtEnd() && (Peek() == '?' || Peek() == '+')) ++pos_;
    }
    return atom;
  }

  // {m}, {m,}, {m,n}; false when the text is not a quantifier.
  absl::StatusOr<bool> ParseBraces(int* min, int* max) {
    ++pos_;  // '{'
    auto number = [&](int* out) {
      size_t start = pos_;
      long v = 0;
      while (!AtEnd() && Peek() >= '0' && Peek() <= '9') {
        v = std::min<long>(v * 10 + (Peek() - '0'), 1L << 30);
        ++pos_;
      }
      *out = static_cast<int>(v);
      return pos_ > start;
    };
    const bool has_min = number(min);
    if (AtEnd()) return false;
    if (Peek() == '}') {
      if (!has_min) return false;
      ++pos_;
      *max = *min;
    } else if (Peek() == ',') {
      ++pos_;
      const bool has_max = number(max);
      if (AtEnd() || Peek() != '}') return false;
      ++pos_;
      if (!has_min) *min = 0;  // Python: {,n}
      if (!has_max) *max = -1;
    } else {
      return false;
    }
    if (*min > kMaxRepeat || *max > kMaxRepeat) {
      return absl::InvalidArgumentError(
          absl::StrCat("regex: a repeat count above ", kMaxRepeat, " at offset ", pos_, " is not supported"));
    }
    if (*max >= 0 && *max < *min) return Error("a repeat {m,n} with n < m");
    return true;
  }

  absl::StatusOr<NodeP> ParseAtom(int depth) {
    const char c = Peek();
    switch (c) {
      case '(': return ParseGroup(depth);
      case '[': return ParseClass();
      case '.':
        ++pos_;
        return Chars(Complement({{'\n', '\n'}}, 0x10FFFF));
      case '\\': {
        auto r = ParseEscape(/*in_class=*/false);
        if (!r.ok()) return r.status();
        return Chars(*r);
      }
      case '*':
      case '+':
      case '?':
        return Error("a quantifier with nothing to repeat");
      case '^':
      case '$':
        return Unsupported("an anchor inside the pattern (only ^ at the start and $ at the end)");
      default: {
        auto cp = NextCodePoint();
        if (!cp.ok()) return cp.status();
        return Chars({{*cp, *cp}});
      }
    }
  }

  absl::StatusOr<NodeP> ParseGroup(int depth) {
    ++pos_;  // '('
    if (!AtEnd() && Peek() == '?') {
      const std::string_view rest = p_.substr(pos_);
      if (rest.starts_with("?:")) {
        pos_ += 2;
      } else if (rest.starts_with("?=") || rest.starts_with("?!")) {
        return Unsupported("lookahead");
      } else if (rest.starts_with("?<=") || rest.starts_with("?<!")) {
        return Unsupported("lookbehind");
      } else if (rest.starts_with("?P<") || rest.starts_with("?<")) {
        const size_t close = rest.find('>');
        if (close == std::string_view::npos) return Error("an unterminated group name");
        pos_ += close + 1;
      } else if (rest.starts_with("?P=")) {
        return Unsupported("a backreference");
      } else if (rest.starts_with("?#")) {
        return Unsupported("a comment group");
      } else {
        return Unsupported("an inline flag or extension group");
      }
    }
    auto inner = ParseAlt(depth + 1);
    if (!inner.ok()) return inner;
    if (AtEnd() || Peek() != ')') return Error("a missing ')'");
    ++pos_;
    return inner;
  }

  absl::StatusOr<NodeP> ParseClass() {
    ++pos_;  // '['
    bool negate = false;
    if (!AtEnd() && Peek() == '^') {
      negate = true;
      ++pos_;
    }
    Ranges set;
    bool first = true;
    while (true) {
      if (AtEnd()) return Error("an unterminated character class");
      if (Peek() == ']' && !first) {
        ++pos_;
        break;
      }
      first = false;
      if (p_.substr(pos_).starts_with("[:")) return Unsupported("a POSIX class [:name:]");
      Ranges lo_set;
      bool single = false;
      uint32_t lo = 0;
      if (Peek() == '\\') {
        auto r = ParseEscape(/*in_class=*/true);
        if (!r.ok()) return r.status();
        lo_set = *r;
        single = lo_set.size() == 1 && lo_set[0].first == lo_set[0].second;
        lo = lo_set.empty() ? 0 : lo_set[0].first;
      } else {
        auto cp = NextCodePoint();
        if (!cp.ok()) return cp.status();
        lo = *cp;
        lo_set = {{lo, lo}};
        single = true;
      }
      // A range a-b (a '-' before ']' is a literal).
      if (single && pos_ + 1 < p_.size() && Peek() == '-' && p_[pos_ + 1] != ']') {
        ++pos_;
        uint32_t hi;
        if (Peek() == '\\') {
          auto r = ParseEscape(/*in_class=*/true);
          if (!r.ok()) return r.status();
          if (r->size() != 1 || (*r)[0].first != (*r)[0].second) return Error("a class escape as a range bound");
          hi = (*r)[0].first;
        } else {
          auto cp = NextCodePoint();
          if (!cp.ok()) return cp.status();
          hi = *cp;
        }
        if (hi < lo) return Error("a character range out of order");
        set.emplace_back(lo, hi);
      } else {
        set.insert(set.end(), lo_set.begin(), lo_set.end());
      }
    }
    if (negate) set = Complement(set, 0x10FFFF);
    return Chars(std::move(set));
  }

  // After a '\\': the code points the escape stands for.
  absl::StatusOr<Ranges> ParseEscape(bool in_class) {
    ++pos_;
    if (AtEnd()) return Error("a trailing backslash");
    const char c = Peek();
    ++pos_;
    auto one = [](uint32_t cp) { return Ranges{{cp, cp}}; };
    switch (c) {
      case 'd': return kDigit;
      case 'D': return Complement(kDigit, 0x10FFFF);
      case 'w': return kWord;
      case 'W': return Complement(kWord, 0x10FFFF);
      case 's': return kSpace;
      case 'S': return Complement(kSpace, 0x10FFFF);
      case 'n': return one('\n');
      case 'r': return one('\r');
      case 't': return one('\t');
      case 'f': return one('\f');
      case 'v': return one('\v');
      case 'a': return one('\a');
      case '0': return one(0);
      case 'b':
        if (in_class) return one('\b');
        --pos_;
        return Unsupported("a word boundary \\b");
      case 'B': --pos_; return Unsupported("a word boundary \\B");
      case 'A':
      case 'Z':
      case 'z':
      case 'G':
        --pos_;
        return Unsupported(absl::StrCat("the anchor \\", std::string(1, c)));
      case 'k': --pos_; return Unsupported("a backreference \\k");
      case 'p':
      case 'P':
        --pos_;
        return Unsupported("a Unicode property class \\p");
      case 'x': return HexEscape(2);
      case 'u':
        if (!AtEnd() && Peek() == '{') {
          ++pos_;
          auto r = HexEscape(-1);
          if (!r.ok()) return r;
          if (AtEnd() || Peek() != '}') return Error("an unterminated \\u{...}");
          ++pos_;
          return r;
        }
        return HexEscape(4);
      case 'U': return HexEscape(8);
      default:
        if (c >= '1' && c <= '9') {
          pos_ -= 1;
          return Unsupported("a backreference");
        }
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
          pos_ -= 1;
          return Unsupported(absl::StrCat("the escape \\", std::string(1, c)));
        }
        --pos_;  // an escaped punctuation or other character stands for itself
        auto cp = NextCodePoint();
        if (!cp.ok()) return cp.status();
        return one(*cp);
    }
  }

  // `digits` hex digits (-1: one or more, up to 6); the code point.
  absl::StatusOr<Ranges> HexEscape(int digits) {
    uint32_t v = 0;
    int n = 0;
    while (!AtEnd() && (digits < 0 ? n < 6 : n < digits) && isxdigit(static_cast<unsigned char>(Peek()))) {
      const char h = Peek();
      v = v * 16 + (h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
      ++pos_;
      ++n;
    }
    if ((digits > 0 && n != digits) || n == 0) return Error("a malformed hex escape");
    if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return Error("an escape that is not a Unicode scalar value");
    return Ranges{{v, v}};
  }

  absl::StatusOr<uint32_t> NextCodePoint() {
    const auto b0 = static_cast<unsigned char>(p_[pos_]);
    int len = b0 < 0x80 ? 1 : (b0 >> 5) == 6 ? 2 : (b0 >> 4) == 14 ? 3 : (b0 >> 3) == 30 ? 4 : 0;
    if (len == 0 || pos_ + len > p_.size()) return Error("invalid UTF-8");
    uint32_t cp = len == 1 ? b0 : len == 2 ? (b0 & 0x1F) : len == 3 ? (b0 & 0x0F) : (b0 & 0x07);
    for (int i = 1; i < len; ++i) {
      const auto b = static_cast<unsigned char>(p_[pos_ + i]);
      if ((b & 0xC0) != 0x80) return Error("invalid UTF-8");
      cp = (cp << 6) | (b & 0x3F);
    }
    static const uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return Error("invalid UTF-8");
    pos_ += len;
    return cp;
  }

  std::string_view p_;
  size_t pos_ = 0;
};

}  // namespace

absl::StatusOr<ParsedRegex> ParseRegex(std::string_view pattern) {
  ParsedRegex out;
  if (pattern.starts_with("^")) {
    out.anchored_start = true;
    pattern.remove_prefix(1);
  }
  if (pattern.ends_with("$")) {
    // Unescaped when preceded by an even number of backslashes.
    size_t slashes = 0;
    while (slashes + 1 < pattern.size() && pattern[pattern.size() - 2 - slashes] == '\\') ++slashes;
    if (slashes % 2 == 0) {
      out.anchored_end = true;
      pattern.remove_suffix(1);
    }
  }
  Parser p(pattern);
  auto root = p.ParseAll();
  if (!root.ok()) return root.status();
  out.root = *root;
  return out;
}

NodeP ForJsonString(const NodeP& n) {
  switch (n->op) {
    case Node::Op::kChars: {
      // Code points JSON writes as themselves, then the escaped ones.
      const Ranges special = {{0, 0x1F}, {'"', '"'}, {'\\', '\\'}};
      std::vector<NodeP> alts = {Chars(Subtract(n->ranges, special))};
      for (const auto& [lo, hi] : n->ranges) {
        for (uint32_t cp = lo; cp <= std::min<uint32_t>(hi, 0x5C); ++cp) {
          if (cp > 0x1F && cp != '"' && cp != '\\') continue;
          switch (cp) {
            case '"': alts.push_back(Literal("\\\"")); break;
            case '\\': alts.push_back(Literal("\\\\")); break;
            case '\n': alts.push_back(Literal("\\n")); break;
            case '\t': alts.push_back(Literal("\\t")); break;
            case '\r': alts.push_back(Literal("\\r")); break;
            case '\b': alts.push_back(Literal("\\b")); break;
            case '\f': alts.push_back(Literal("\\f")); break;
            default: {
              char buf[8];
              std::snprintf(buf, sizeof(buf), "\\u%04x", cp);
              alts.push_back(Literal(buf));
            }
          }
        }
      }
      return Alt(std::move(alts));
    }
    case Node::Op::kConcat:
    case Node::Op::kAlt: {
      std::vector<NodeP> kids;
      for (const NodeP& k : n->kids) kids.push_back(ForJsonString(k));
      return n->op == Node::Op::kConcat ? Concat(std::move(kids)) : Alt(std::move(kids));
    }
    case Node::Op::kRepeat: return Repeat(ForJsonString(n->kids[0]), n->min, n->max);
    case Node::Op::kSepList: return SepList(ForJsonString(n->kids[0]), ForJsonString(n->kids[1]));
    default: return n;  // kBytes and kAutomaton nodes are already output bytes
  }
}

}  // namespace tessera::structured
