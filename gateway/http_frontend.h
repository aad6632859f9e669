// HttpFrontend: the OpenAI-compatible REST API. Routes requests, checks API
// keys, validates bodies, runs CompletionCalls and renders their events as
// one JSON body or as server-sent events framed exactly as OpenAI frames
// them. Logs one line per request.
#ifndef TESSERA_GATEWAY_HTTP_FRONTEND_H_
#define TESSERA_GATEWAY_HTTP_FRONTEND_H_

#include <memory>

#include "gateway/gateway_config.h"
#include "gateway/http/http_server.h"
#include "gateway/worker_pool.h"

namespace tessera::gateway {

class HttpFrontend {
 public:
  // REQUIRES: config and pool outlive the frontend.
  HttpFrontend(const GatewayConfig& config, WorkerPool& pool) : config_(config), pool_(pool) {}
  void Handle(std::shared_ptr<HttpExchange> exchange);

 private:
  void HandleCompletion(std::shared_ptr<HttpExchange> ex, bool chat, const std::string& request_id);
  void HandleModels(std::shared_ptr<HttpExchange> ex, const std::string& model_id, const std::string& request_id);
  // vLLM's runtime adapter routes, sent to every healthy worker.
  void HandleAdapterAdmin(std::shared_ptr<HttpExchange> ex, bool load, const std::string& request_id);

  const GatewayConfig& config_;
  WorkerPool& pool_;
};

}  // namespace tessera::gateway

#endif  // TESSERA_GATEWAY_HTTP_FRONTEND_H_
