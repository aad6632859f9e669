#include "common/status_fields.h"

#include "absl/strings/cord.h"
#include "nlohmann/json.hpp"

namespace tessera {
namespace {
constexpr char kParamUrl[] = "tessera.dev/param";
constexpr char kCodeUrl[] = "tessera.dev/code";

std::string Payload(const absl::Status& s, const char* url) {
  auto p = s.GetPayload(url);
  return p ? std::string(*p) : std::string();
}
}  // namespace

absl::Status WithParam(absl::Status s, std::string_view param) {
  if (!s.ok()) s.SetPayload(kParamUrl, absl::Cord(std::string(param)));
  return s;
}
std::string ParamOf(const absl::Status& s) { return Payload(s, kParamUrl); }

absl::Status WithCode(absl::Status s, std::string_view code) {
  if (!s.ok()) s.SetPayload(kCodeUrl, absl::Cord(std::string(code)));
  return s;
}
std::string CodeOf(const absl::Status& s) { return Payload(s, kCodeUrl); }

std::string FieldsToDetails(const absl::Status& s) {
  const std::string param = ParamOf(s), code = CodeOf(s);
  if (param.empty() && code.empty()) return "";
  nlohmann::json j = nlohmann::json::object();
  if (!param.empty()) j["param"] = param;
  if (!code.empty()) j["code"] = code;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

absl::Status WithFieldsFromDetails(absl::Status s, std::string_view details) {
  if (details.empty() || details.size() > 1024 || details.front() != '{') return s;
  const nlohmann::json j = nlohmann::json::parse(details, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return s;
  auto field = [&](const char* k) -> std::string {
    return j.contains(k) && j[k].is_string() && j[k].get_ref<const std::string&>().size() <= 64 ? j[k].get<std::string>()
                                                                                                  : "";
  };
  if (const std::string p = field("param"); !p.empty()) s = WithParam(std::move(s), p);
  if (const std::string c = field("code"); !c.empty()) s = WithCode(std::move(s), c);
  return s;
}

}  // namespace tessera
