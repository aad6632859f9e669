// GrpcFrontend: the public tessera.api.v1.Completions gRPC API. Requests are
// converted to the REST API's JSON and go through the same validation,
// CompletionCall and renderer as HTTP, so the two front ends cannot drift.
#ifndef TESSERA_GATEWAY_GRPC_FRONTEND_H_
#define TESSERA_GATEWAY_GRPC_FRONTEND_H_

#include "gateway/gateway_config.h"
#include "gateway/worker_pool.h"
#include "tessera/api/v1/completions.grpc.pb.h"

namespace tessera::gateway {

class GrpcFrontend final : public tessera::api::v1::Completions::CallbackService {
 public:
  // REQUIRES: config and pool outlive the frontend.
  GrpcFrontend(const GatewayConfig& config, WorkerPool& pool) : config_(config), pool_(pool) {}

  grpc::ServerUnaryReactor* CreateChatCompletion(grpc::CallbackServerContext* ctx,
                                                 const tessera::api::v1::ChatCompletionRequest* request,
                                                 tessera::api::v1::ChatCompletion* response) override;
  grpc::ServerWriteReactor<tessera::api::v1::ChatCompletionChunk>* StreamChatCompletion(
      grpc::CallbackServerContext* ctx, const tessera::api::v1::ChatCompletionRequest* request) override;
  grpc::ServerUnaryReactor* CreateCompletion(grpc::CallbackServerContext* ctx,
                                             const tessera::api::v1::CompletionRequest* request,
                                             tessera::api::v1::Completion* response) override;
  grpc::ServerWriteReactor<tessera::api::v1::Completion>* StreamCompletion(
      grpc::CallbackServerContext* ctx, const tessera::api::v1::CompletionRequest* request) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* ctx,
                                       const tessera::api::v1::ListModelsRequest* request,
                                       tessera::api::v1::ListModelsResponse* response) override;

 private:
  absl::Status Authorize(grpc::CallbackServerContext* ctx) const;

  const GatewayConfig& config_;
  WorkerPool& pool_;
};

}  // namespace tessera::gateway

#endif  // TESSERA_GATEWAY_GRPC_FRONTEND_H_
