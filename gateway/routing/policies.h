// Factories of the built-in routing policies (one file each).
#ifndef TESSERA_GATEWAY_ROUTING_POLICIES_H_
#define TESSERA_GATEWAY_ROUTING_POLICIES_H_

#include <memory>

#include "gateway/routing/routing_policy.h"

namespace tessera::gateway {

std::unique_ptr<RoutingPolicy> MakeRoundRobinPolicy();
std::unique_ptr<RoutingPolicy> MakeLeastLoadedPolicy();
std::unique_ptr<RoutingPolicy> MakeAdapterAffinityPolicy();

}  // namespace tessera::gateway

#endif  // TESSERA_GATEWAY_ROUTING_POLICIES_H_
