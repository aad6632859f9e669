// HttpServer: an asynchronous HTTP/1.1 server on Boost.Beast/Asio.
//
// Connections cost no thread: a few I/O threads serve thousands of idle or
// streaming keep-alive connections. Limits are enforced while reading:
// header bytes (431), body bytes (413), a deadline to receive a whole request
// (slow clients) and an idle keep-alive timeout.
//
// A handler gets an HttpExchange for each request and answers it, at once or
// later from any thread, with a whole response or a chunked stream
// (server-sent events). If the client goes away first, the exchange's
// on-disconnect callback runs so the work behind it can be cancelled.
#ifndef TESSERA_GATEWAY_HTTP_HTTP_SERVER_H_
#define TESSERA_GATEWAY_HTTP_HTTP_SERVER_H_

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera::gateway {

struct HttpLimits {
  size_t max_body_bytes = 4u << 20;
  size_t max_header_bytes = 16u << 10;
  size_t max_header_count = 100;
  std::chrono::seconds request_timeout{30};  // to receive one whole request
  std::chrono::seconds idle_timeout{75};     // keep-alive connection with no request
  std::chrono::seconds write_timeout{60};    // a client that stops reading
};

struct HttpRequestView {
  std::string method;
  std::string target;  // path and query
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // Case-insensitive header lookup; empty if absent.
  std::string Header(std::string_view name) const;
};

class HttpExchange {
 public:
  virtual ~HttpExchange() = default;
  virtual const HttpRequestView& request() const = 0;
  // A complete response. Headers are (name, value) pairs.
  virtual void Respond(int status, std::string content_type, std::string body,
                       std::vector<std::pair<std::string, std::string>> headers = {}) = 0;
  // A chunked response whose body arrives through Write; Close ends it.
  virtual void StartStream(int status, std::string content_type,
                           std::vector<std::pair<std::string, std::string>> headers = {}) = 0;
  virtual void Write(std::string data) = 0;
  virtual void Close() = 0;
  // Runs once if the client disconnects before the response is complete.
  virtual void OnDisconnect(std::function<void()> callback) = 0;
};

using HttpHandler = std::function<void(std::shared_ptr<HttpExchange>)>;

class HttpServer {
 public:
  // Binds `address` (HOST:PORT; port 0 picks one) and starts `threads` I/O
  // threads.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const std::string& address, HttpHandler handler,
                                                           const HttpLimits& limits, int threads);
  ~HttpServer();
  int port() const;
  // Waits until every response byte handed to the server has been written
  // to its socket (or the peer is gone), at most `timeout`. For a graceful
  // drain before Stop. False on timeout.
  bool FlushWrites(std::chrono::milliseconds timeout);
  // Stops accepting; open connections are closed.
  void Stop();

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera::gateway

#endif  // TESSERA_GATEWAY_HTTP_HTTP_SERVER_H_
