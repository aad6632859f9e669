// DNS discovery of workers: a name (typically a Kubernetes headless Service,
// whose A/AAAA records are the ready pods) resolved to worker addresses.
//
// The lookup goes to the DNS servers of /etc/resolv.conf (with its search
// domains, as a pod expects) or to one given server; it never consults
// /etc/hosts, so "localhost" is not a discovery name.
//
// Thread-safety: ResolveWorkers is reentrant (per-call resolver state).
#ifndef TESSERA_GATEWAY_DISCOVERY_DNS_RESOLVER_H_
#define TESSERA_GATEWAY_DISCOVERY_DNS_RESOLVER_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tessera::gateway {

struct DnsTarget {
  std::string host;  // the name to resolve
  int port = 0;      // every resolved worker listens on this port
};

// "NAME:PORT" (optionally prefixed "dns:///"). InvalidArgument otherwise.
absl::StatusOr<DnsTarget> ParseDnsTarget(std::string_view spec);

struct DnsOptions {
  std::string server;  // "IPV4:PORT" of the one server to ask; empty: /etc/resolv.conf
  absl::Duration timeout = absl::Seconds(2);  // per query attempt
};

// The target's A and AAAA records as sorted, distinct "IP:PORT" /
// "[IP6]:PORT" strings. A name that does not exist or has no addresses is an
// empty list (a headless Service with no ready pods looks like that);
// Unavailable when no answer came (timeout, server failure), so that callers
// keep what they had.
absl::StatusOr<std::vector<std::string>> ResolveWorkers(const DnsTarget& target, const DnsOptions& options);

}  // namespace tessera::gateway

#endif  // TESSERA_GATEWAY_DISCOVERY_DNS_RESOLVER_H_
