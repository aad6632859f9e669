// DrainableService: what the worker's main loop needs of a generation
// service to drain it on SIGTERM (the real and the simulated worker both
// implement it).
#ifndef TESSERA_WORKER_SERVICE_DRAINABLE_H_
#define TESSERA_WORKER_SERVICE_DRAINABLE_H_

#include <grpcpp/grpcpp.h>

namespace tessera {

class DrainableService {
 public:
  virtual ~DrainableService() = default;
  // From now on new generations are refused with UNAVAILABLE (the gateway
  // retries them elsewhere); running and queued ones go on.
  virtual void StartDrain() = 0;
  // Generations not yet finished.
  virtual int ActiveGenerations() const = 0;
  // Ends every unfinished generation with `status`, after the tokens it
  // already produced (an in-band error for the client).
  virtual void AbortGenerations(const grpc::Status& status) = 0;
  // Ends the endless WatchLoad streams (before the server shuts down).
  virtual void StopLoadReports() = 0;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_SERVICE_DRAINABLE_H_
