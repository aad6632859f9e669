// ConfigTable<C>: the keys of one component's configuration struct C, each
// declared once -- name, default, help, check -- from which the YAML file's
// reading, the command-line flags and the printed effective configuration are
// all derived. A new key is one line in its component's table.
//
//   using K = Key<MyConfig>;
//   ConfigTable<MyConfig> table("tessera-x", "x/x_config.cc", {
//       K::Of("listen", &MyConfig::listen, std::string("127.0.0.1:1"), "address to serve on"),
//       K::Of("threads", &MyConfig::threads, 2, "threads", InRange(1, 64)),
//       K::Of("workers", &MyConfig::workers, std::vector<std::string>(), "HOST:PORT").Flag("worker"),
//   });
//   MyConfig c = table.Defaults();
//   table.MergeYamlFile(path, c);           // unknown keys are errors that name them
//   table.ApplyFlags(table.GivenFlags(), c); // flags given on the command line win
//   table.Validate(c);                       // every key's check, in table order
//   table.ToYaml(c);                         // what the binary prints at start
//
// Flags: RegisterFlags() registers one Abseil flag per key (the key's name, or
// the spelling Key::Flag gives), typed as the key, whose help shows the
// table's default. A flag counts when given on the command line: there are
// no sentinel defaults. A list flag given several times accumulates
// (--worker a --worker b,c is [a, b, c]).
//
// A deprecated spelling of a key is a key of its own (Key::Alias): it sets its
// target, is not printed, and warns (one line on stderr) where a file or the
// command line uses it.
//
// Thread-safety: a table is immutable once built, except RegisterFlags, which
// the main thread calls before parsing the command line. Ownership: a table
// owns the flags it registers, and Abseil's registry points at them, so a
// table that registered flags lives for the process (a leaked static).
#ifndef TESSERA_COMMON_CONFIG_CONFIG_TABLE_H_
#define TESSERA_COMMON_CONFIG_CONFIG_TABLE_H_

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/flags/marshalling.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace tessera::config {

// One flag as given on the command line (name with underscores).
struct FlagText {
  std::string flag;
  std::string text;
};

// The value types a key may have.
enum class ValueKind { kBool, kInt, kInt64, kUint64, kDouble, kString, kStringList };

template <typename T>
constexpr ValueKind KindOf() {
  if constexpr (std::is_same_v<T, bool>) return ValueKind::kBool;
  else if constexpr (std::is_same_v<T, int>) return ValueKind::kInt;
  else if constexpr (std::is_same_v<T, int64_t>) return ValueKind::kInt64;
  else if constexpr (std::is_same_v<T, uint64_t>) return ValueKind::kUint64;
  else if constexpr (std::is_same_v<T, double>) return ValueKind::kDouble;
  else if constexpr (std::is_same_v<T, std::string>) return ValueKind::kString;
  else {
    static_assert(std::is_same_v<T, std::vector<std::string>>, "unsupported key type");
    return ValueKind::kStringList;
  }
}

// What the flag registry needs of a key (config_table.cc holds the Abseil side).
struct FlagSpec {
  std::string name;
  std::string help;
  std::string default_text;
  ValueKind kind = ValueKind::kString;
  bool secret = false;  // --help shows how many values were given, not them
};

// "--max-num-seqs" for "max_num_seqs": how the docs spell flags.
std::string FlagSpelling(std::string_view name);

// The Abseil flags of one table. Thread-compatible; see ConfigTable.
class FlagSet {
 public:
  FlagSet();
  ~FlagSet();
  // Movable: the registered flags stay where they are.
  FlagSet(FlagSet&&) noexcept;
  FlagSet& operator=(FlagSet&&) noexcept;

  // REQUIRES: no flag of these names is registered yet; *this outlives the
  // command line's parsing and every later use of the flags.
  void Register(const std::vector<FlagSpec>& specs, std::string_view filename);
  // Every value given on the command line, in registration order, then in
  // the order given.
  std::vector<FlagText> Given() const;

 private:
  class TableFlag;
  std::vector<std::unique_ptr<TableFlag>> flags_;
};

// Reads a configuration file (at most 1 MiB); errors name the path.
absl::StatusOr<std::string> ReadConfigText(const std::string& path);
// "PROGRAM: MESSAGE" as one line on stderr.
void WriteConfigWarning(const std::string& program, const std::string& message);

// Checks. A check gets the key's name and value (and, if it takes three
// arguments, the whole configuration) and returns an error naming the key,
// the bound and the value.

// NAME must be in [LO, HI]NOTE; got V
template <typename N>
auto InRange(N lo, N hi, std::string note = "") {
  return [lo, hi, note](std::string_view name, const auto& v) -> absl::Status {
    if (v >= lo && v <= hi) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(std::string(name), " must be in [", lo, ", ", hi, "]", note,
                                                   "; got ", v));
  };
}

// NAME must be >= LO; got V
template <typename N>
auto AtLeast(N lo) {
  return [lo](std::string_view name, const auto& v) -> absl::Status {
    if (v >= lo) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(std::string(name), " must be >= ", lo, "; got ", v));
  };
}

// NAME must be one of A, B, C; got 'V'
absl::Status CheckOneOf(std::string_view name, const std::string& v, const std::vector<std::string>& allowed);
inline auto OneOf(std::vector<std::string> allowed) {
  return [allowed](std::string_view name, const std::string& v) { return CheckOneOf(name, v, allowed); };
}

// One key of configuration C: type-erased over its value type.
template <typename C>
struct Key {
  std::string name;  // YAML key and printed name
  std::string flag;  // flag name (underscores); `name` unless Flag() says otherwise
  std::string help;
  ValueKind kind = ValueKind::kString;
  std::string default_text;  // for --help
  bool printed = true;
  bool secret = false;
  std::string alias_of;  // a deprecated spelling of this key
  std::string alias_note;

  std::function<void(C&)> set_default;
  std::function<absl::Status(const YAML::Node&, C&)> from_yaml;  // may throw YAML::Exception
  std::function<absl::Status(const std::vector<std::string>&, C&)> from_flags;
  std::function<void(YAML::Emitter&, const C&)> emit;
  std::function<void(YAML::Emitter&, const C&)> emit_redacted;  // for Secret()
  std::function<absl::Status(const C&)> check;

  // A key stored in a field of C.
  template <typename T, typename Check = std::nullptr_t>
  static Key Of(std::string name, T C::*field, T default_value, std::string help, Check check = nullptr) {
    return Computed<T>(
        std::move(name), [field](const C& c) -> const T& { return c.*field; },
        [field](C& c, T v) { c.*field = std::move(v); }, std::move(default_value), std::move(help), std::move(check));
  }

  // A key read and written through accessors (a nested field, a unit change).
  // `set` may return absl::Status to refuse a value.
  template <typename T, typename Get, typename Set, typename Check = std::nullptr_t>
  static Key Computed(std::string name, Get get, Set set, T default_value, std::string help, Check check = nullptr) {
    Key k = Settable<T>(std::move(name), set, std::move(help));
    k.default_text = absl::UnparseFlag(default_value);
    k.set_default = [set, default_value](C& c) { (void)Apply(set, c, default_value); };
    k.emit = [get](YAML::Emitter& out, const C& c) {
      if constexpr (std::is_same_v<T, std::vector<std::string>>) out << YAML::Flow;
      out << get(c);
    };
    k.emit_redacted = [get](YAML::Emitter& out, const C& c) {
      if constexpr (std::is_same_v<T, std::vector<std::string>>) {
        out << absl::StrCat(get(c).size(), " configured");
      } else {
        out << "configured";
      }
    };
    if constexpr (!std::is_same_v<Check, std::nullptr_t>) {
      k.check = [get, check, n = k.name](const C& c) -> absl::Status {
        if constexpr (std::is_invocable_v<Check, std::string_view, const T&, const C&>) return check(n, get(c), c);
        else return check(n, get(c));
      };
    }
    return k;
  }

  // A deprecated spelling of `target`: sets it through `set` (which checks
  // and translates the value), is never printed, and warns when used.
  template <typename T, typename Set>
  static Key Alias(std::string name, std::string target, Set set, std::string note) {
    std::string help = absl::StrCat("deprecated spelling of ", FlagSpelling(target), " (", note, ")");
    Key k = Settable<T>(std::move(name), set, std::move(help));
    k.printed = false;
    k.alias_of = std::move(target);
    k.alias_note = std::move(note);
    return k;
  }

  // The flag's name when it is not the key's ("worker" for "workers").
  Key Flag(std::string flag_name) && {
    flag = std::move(flag_name);
    return std::move(*this);
  }
  // Printed as how many values it holds ("2 configured"), never the values;
  // --help does not show given values either.
  Key Secret() && {
    secret = true;
    emit = emit_redacted;
    return std::move(*this);
  }

 private:
  template <typename Set, typename T>
  static absl::Status Apply(const Set& set, C& c, T v) {
    if constexpr (std::is_same_v<std::invoke_result_t<const Set&, C&, T>, absl::Status>) {
      return set(c, std::move(v));
    } else {
      set(c, std::move(v));
      return absl::OkStatus();
    }
  }

  template <typename T, typename Set>
  static Key Settable(std::string name, Set set, std::string help) {
    Key k;
    k.name = name;
    k.flag = std::move(name);
    k.help = std::move(help);
    k.kind = KindOf<T>();
    k.from_yaml = [set](const YAML::Node& node, C& c) { return Apply(set, c, node.as<T>()); };
    k.from_flags = [set, n = k.name](const std::vector<std::string>& texts, C& c) -> absl::Status {
      T v{};
      for (const std::string& text : texts) {
        T one{};
        std::string error;
        if (!absl::ParseFlag(text, &one, &error)) {
          return absl::InvalidArgumentError(absl::StrCat(FlagSpelling(n), ": ", error));
        }
        if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          v.insert(v.end(), one.begin(), one.end());
        } else {
          v = std::move(one);
        }
      }
      return Apply(set, c, std::move(v));
    };
    return k;
  }
};

// A check over the whole configuration (keys that bound each other).
template <typename C>
using ConfigCheck = std::function<absl::Status(const C&)>;

template <typename C>
class ConfigTable {
 public:
  // `program` prefixes warnings ("tessera-worker: ..."); `filename` is where
  // --help says the flags come from.
  ConfigTable(std::string program, std::string filename, std::vector<Key<C>> keys,
              std::vector<ConfigCheck<C>> checks = {})
      : program_(std::move(program)), filename_(std::move(filename)), keys_(std::move(keys)),
        checks_(std::move(checks)) {}

  const std::vector<Key<C>>& keys() const { return keys_; }

  // Where deprecation warnings go (default: one line on stderr, prefixed
  // with the program's name).
  void SetWarningSink(std::function<void(const std::string&)> sink) { warn_ = std::move(sink); }

  // C with every key at its default (fields no key names keep C{}'s).
  C Defaults() const {
    C c{};
    for (const Key<C>& k : keys_) {
      if (k.set_default) k.set_default(c);
    }
    return c;
  }

  // Merges the mapping in YAML `text` (read from `origin`, which errors name).
  absl::Status MergeYaml(const std::string& text, const std::string& origin, C& c) const {
    std::string key;
    try {
      YAML::Node root = YAML::Load(text);
      if (root.IsNull()) return absl::OkStatus();
      if (!root.IsMap()) return absl::InvalidArgumentError(absl::StrCat(origin, ": the top level must be a mapping"));
      for (const auto& kv : root) {
        key = kv.first.as<std::string>();
        const Key<C>* k = Find(key, &Key<C>::name);
        if (k == nullptr) return absl::InvalidArgumentError(absl::StrCat(origin, ": unknown key '", key, "'"));
        if (!k->alias_of.empty()) {
          Warn(absl::StrCat(origin, ": '", key, "' is deprecated; use '", k->alias_of, "' (", k->alias_note, ")"));
        }
        if (absl::Status s = k->from_yaml(kv.second, c); !s.ok()) {
          return absl::InvalidArgumentError(absl::StrCat(origin, ": ", s.message()));
        }
      }
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(
          key.empty() ? absl::StrCat(origin, ": ", e.what()) : absl::StrCat(origin, ": ", key, ": ", e.what()));
    }
    return absl::OkStatus();
  }

  absl::Status MergeYamlFile(const std::string& path, C& c) const {
    absl::StatusOr<std::string> text = ReadConfigText(path);
    if (!text.ok()) return text.status();
    return MergeYaml(*text, path, c);
  }

  // Applies flags given on the command line (FlagSet::Given's order: a list
  // flag's values accumulate, any other's last one wins).
  absl::Status ApplyFlags(const std::vector<FlagText>& given, C& c) const {
    for (const Key<C>& k : keys_) {
      std::vector<std::string> texts;
      for (const FlagText& g : given) {
        if (g.flag == k.flag) texts.push_back(g.text);
      }
      if (texts.empty()) continue;
      if (!k.alias_of.empty()) {
        const Key<C>* target = Find(k.alias_of, &Key<C>::name);
        Warn(absl::StrCat(FlagSpelling(k.flag), " is deprecated; use ",
                          FlagSpelling(target != nullptr ? target->flag : k.alias_of), " (", k.alias_note, ")"));
      }
      if (absl::Status s = k.from_flags(texts, c); !s.ok()) return s;
    }
    for (const FlagText& g : given) {
      if (Find(g.flag, &Key<C>::flag) == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("unknown flag ", FlagSpelling(g.flag)));
      }
    }
    return absl::OkStatus();
  }

  // Every key's check in table order, then the cross-key checks.
  absl::Status Validate(const C& c) const {
    for (const Key<C>& k : keys_) {
      if (k.check) {
        if (absl::Status s = k.check(c); !s.ok()) return s;
      }
    }
    for (const ConfigCheck<C>& check : checks_) {
      if (absl::Status s = check(c); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  // The effective configuration as a YAML mapping, keys in table order
  // (aliases left out, secrets as "N configured").
  std::string ToYaml(const C& c) const {
    YAML::Emitter out;
    out << YAML::BeginMap;
    for (const Key<C>& k : keys_) {
      if (!k.printed) continue;
      out << YAML::Key << k.name << YAML::Value;
      k.emit(out, c);
    }
    out << YAML::EndMap;
    return out.c_str();
  }

  // Registers one flag per key. REQUIRES: called once per process, before
  // the command line is parsed; *this lives for the process.
  void RegisterFlags() {
    std::vector<FlagSpec> specs;
    for (const Key<C>& k : keys_) {
      specs.push_back({.name = k.flag, .help = k.help, .default_text = k.default_text, .kind = k.kind,
                       .secret = k.secret});
    }
    flags_.Register(specs, filename_);
  }
  // The flags RegisterFlags made that the command line gave.
  std::vector<FlagText> GivenFlags() const { return flags_.Given(); }

  // Defaults, then the YAML file (none if `yaml_path` is empty), then the
  // flags given; validated.
  absl::StatusOr<C> Load(const std::string& yaml_path, const std::vector<FlagText>& given) const {
    C c = Defaults();
    if (!yaml_path.empty()) {
      if (absl::Status s = MergeYamlFile(yaml_path, c); !s.ok()) return s;
    }
    if (absl::Status s = ApplyFlags(given, c); !s.ok()) return s;
    if (absl::Status s = Validate(c); !s.ok()) return s;
    return c;
  }

 private:
  const Key<C>* Find(const std::string& name, std::string Key<C>::*field) const {
    for (const Key<C>& k : keys_) {
      if (k.*field == name) return &k;
    }
    return nullptr;
  }
  void Warn(const std::string& message) const {
    if (warn_) {
      warn_(message);
    } else {
      WriteConfigWarning(program_, message);
    }
  }

  std::string program_;
  std::string filename_;
  std::vector<Key<C>> keys_;
  std::vector<ConfigCheck<C>> checks_;
  std::function<void(const std::string&)> warn_;
  FlagSet flags_;
};

}  // namespace tessera::config

#endif  // TESSERA_COMMON_CONFIG_CONFIG_TABLE_H_
