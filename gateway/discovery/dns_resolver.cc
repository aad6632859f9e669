#include "gateway/discovery/dns_resolver.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <netinet/in.h>
#include <resolv.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace tessera::gateway {
namespace {

// One query type against a prepared resolver state. Appends addresses.
// Returns false with `error` set when no usable answer came back.
bool Query(res_state state, const std::string& host, int type, int port, std::vector<std::string>& out,
           std::string& error) {
  unsigned char answer[8192];
  const int n = res_nsearch(state, host.c_str(), ns_c_in, type, answer, sizeof(answer));
  if (n < 0) {
    switch (state->res_h_errno) {
      case HOST_NOT_FOUND:  // NXDOMAIN
      case NO_DATA:         // the name exists without records of this type
        return true;
      default:
        error = state->res_h_errno == TRY_AGAIN ? "no answer from the DNS server (timeout or server failure)"
                                                : "the DNS server refused the query";
        return false;
    }
  }
  // The answer is untrusted input: ns_initparse and ns_parserr bound every
  // read; record lengths are checked before use.
  ns_msg msg;
  if (ns_initparse(answer, std::min(n, static_cast<int>(sizeof(answer))), &msg) < 0) {
    error = "malformed DNS answer";
    return false;
  }
  const int count = ns_msg_count(msg, ns_s_an);
  for (int i = 0; i < count; ++i) {
    ns_rr rr;
    if (ns_parserr(&msg, ns_s_an, i, &rr) < 0) {
      error = "malformed DNS answer record";
      return false;
    }
    if (ns_rr_class(rr) != ns_c_in || ns_rr_type(rr) != type) continue;  // e.g. CNAME links
    char text[INET6_ADDRSTRLEN] = {};
    if (type == ns_t_a && ns_rr_rdlen(rr) == 4) {
      inet_ntop(AF_INET, ns_rr_rdata(rr), text, sizeof(text));
      out.push_back(absl::StrCat(text, ":", port));
    } else if (type == ns_t_aaaa && ns_rr_rdlen(rr) == 16) {
      inet_ntop(AF_INET6, ns_rr_rdata(rr), text, sizeof(text));
      out.push_back(absl::StrCat("[", text, "]:", port));
    }
  }
  return true;
}

}  // namespace

absl::StatusOr<DnsTarget> ParseDnsTarget(std::string_view spec) {
  absl::string_view s(spec.data(), spec.size());
  absl::ConsumePrefix(&s, "dns:///");
  const size_t colon = s.rfind(':');
  DnsTarget t;
  if (colon == absl::string_view::npos || colon == 0 || !absl::SimpleAtoi(s.substr(colon + 1), &t.port) ||
      t.port <= 0 || t.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("worker DNS name '", std::string(spec), "' is not NAME:PORT"));
  }
  t.host = std::string(s.substr(0, colon));
  if (t.host.size() > 253) return absl::InvalidArgumentError("worker DNS name is longer than 253 characters");
  return t;
}

absl::StatusOr<std::vector<std::string>> ResolveWorkers(const DnsTarget& target, const DnsOptions& options) {
  struct __res_state state;
  std::memset(&state, 0, sizeof(state));
  if (res_ninit(&state) != 0) return absl::UnavailableError("cannot initialize the DNS resolver");
  state.retrans = std::max(1, static_cast<int>(absl::ToInt64Seconds(options.timeout)));
  state.retry = 1;
  if (!options.server.empty()) {
    const size_t colon = options.server.rfind(':');
    int port = 53;
    in_addr addr{};
    const std::string ip = options.server.substr(0, colon);
    if (colon == std::string::npos || !absl::SimpleAtoi(options.server.substr(colon + 1), &port) || port <= 0 ||
        port > 65535 || inet_pton(AF_INET, ip.c_str(), &addr) != 1) {
      res_nclose(&state);
      return absl::InvalidArgumentError(absl::StrCat("DNS server '", options.server, "' is not IPV4:PORT"));
    }
    state.nscount = 1;
    state.nsaddr_list[0].sin_family = AF_INET;
    state.nsaddr_list[0].sin_port = htons(static_cast<uint16_t>(port));
    state.nsaddr_list[0].sin_addr = addr;
  }
  std::vector<std::string> out;
  std::string error;
  const bool ok = Query(&state, target.host, ns_t_a, target.port, out, error) &&
                  Query(&state, target.host, ns_t_aaaa, target.port, out, error);
  res_nclose(&state);
  if (!ok) return absl::UnavailableError(absl::StrCat("resolving '", target.host, "': ", error));
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace tessera::gateway
