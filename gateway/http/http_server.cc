#include "gateway/http/http_server.h"

#include <atomic>
#include <deque>
#include <optional>
#include <sstream>

#include <boost/asio.hpp>
#include <boost/beast.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace tessera::gateway {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

std::string ErrorJson(std::string_view message, std::string_view type) {
  return absl::StrCat(R"({"error":{"message":")", std::string(message), R"(","type":")", std::string(type),
                      R"(","param":null,"code":null}})");
}

class Session;

class Exchange final : public HttpExchange {
 public:
  Exchange(std::shared_ptr<Session> s, HttpRequestView req) : session_(std::move(s)), request_(std::move(req)) {}
  const HttpRequestView& request() const override { return request_; }
  void Respond(int status, std::string content_type, std::string body,
               std::vector<std::pair<std::string, std::string>> headers) override;
  void StartStream(int status, std::string content_type,
                   std::vector<std::pair<std::string, std::string>> headers) override;
  void Write(std::string data) override;
  void Close() override;
  void OnDisconnect(std::function<void()> callback) override;

 private:
  std::shared_ptr<Session> session_;
  HttpRequestView request_;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, const HttpHandler& handler, const HttpLimits& limits, std::atomic<int>* queued)
      : stream_(std::move(socket)), handler_(handler), limits_(limits), queued_(queued) {}

  void Start() { net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->ReadRequest(); }); }

  // --- called on the strand ---
  void SendWhole(int status, const std::string& content_type, std::string body,
                 const std::vector<std::pair<std::string, std::string>>& headers) {
    if (responding_ == false || response_started_) return;
    response_started_ = true;
    http::response<http::string_body> res{static_cast<http::status>(status), 11};
    res.set(http::field::server, "tessera");
    if (!content_type.empty()) res.set(http::field::content_type, content_type);
    for (const auto& [k, v] : headers) res.set(k, v);
    res.keep_alive(keep_alive_);
    res.body() = std::move(body);
    res.prepare_payload();
    std::ostringstream os;
    os << res;
    Enqueue(os.str());
    response_complete_ = true;
    MaybeFinishExchange();
  }

  void SendStreamHeader(int status, const std::string& content_type,
                        const std::vector<std::pair<std::string, std::string>>& headers) {
    if (response_started_) return;
    response_started_ = true;
    streaming_ = true;
    http::response<http::empty_body> res{static_cast<http::status>(status), 11};
    res.set(http::field::server, "tessera");
    res.set(http::field::content_type, content_type);
    res.set(http::field::cache_control, "no-cache");
    for (const auto& [k, v] : headers) res.set(k, v);
    res.keep_alive(keep_alive_);
    res.chunked(true);
    std::ostringstream os;
    os << res.base();
    Enqueue(os.str());
  }

  void SendChunk(std::string data) {
    if (!streaming_ || response_complete_ || data.empty()) return;
    Enqueue(absl::StrFormat("%x\r\n", data.size()) + data + "\r\n");
  }

  void EndStream() {
    if (!streaming_ || response_complete_) return;
    Enqueue("0\r\n\r\n");
    response_complete_ = true;
    MaybeFinishExchange();
  }

  void SetDisconnectCallback(std::function<void()> cb) {
    if (disconnected_) {
      if (cb) cb();
      return;
    }
    on_disconnect_ = std::move(cb);
  }

  net::any_io_executor executor() { return stream_.get_executor(); }

 private:
  void ReadRequest() {
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(limits_.max_header_bytes));
    parser_->body_limit(limits_.max_body_bytes);
    stream_.expires_after(requests_served_ == 0 ? limits_.request_timeout : limits_.idle_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == net::error::eof || ec == beast::error::timeout ||
        ec == net::error::operation_aborted || ec == net::error::connection_reset) {
      return Shutdown();
    }
    if (ec) {
      keep_alive_ = false;
      responding_ = true;
      if (ec == http::error::body_limit) {
        SendWhole(413, "application/json",
                  ErrorJson(absl::StrCat("request body larger than ", limits_.max_body_bytes, " bytes"),
                            "invalid_request_error"),
                  {});
      } else if (ec == http::error::header_limit) {
        SendWhole(431, "application/json", ErrorJson("request headers too large", "invalid_request_error"), {});
      } else {
        SendWhole(400, "application/json",
                  ErrorJson(absl::StrCat("malformed HTTP request: ", ec.message()), "invalid_request_error"), {});
      }
      return;
    }
    const auto& req = parser_->get();
    HttpRequestView view;
    view.method = std::string(req.method_string());
    view.target = std::string(req.target());
    size_t count = 0;
    for (const auto& f : req) {
      view.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
      ++count;
    }
    view.body = req.body();
    keep_alive_ = req.keep_alive();
    ++requests_served_;
    responding_ = true;
    response_started_ = false;
    response_complete_ = false;
    streaming_ = false;
    disconnected_ = false;
    on_disconnect_ = nullptr;
    if (count > limits_.max_header_count) {
      keep_alive_ = false;
      SendWhole(431, "application/json",
                ErrorJson(absl::StrCat("more than ", limits_.max_header_count, " request headers"),
                          "invalid_request_error"),
                {});
      return;
    }
    stream_.expires_never();
    WatchForDisconnect();
    handler_(std::make_shared<Exchange>(shared_from_this(), std::move(view)));
  }

  // While a request is being answered, a read notices a client that goes
  // away. Bytes that arrive (a pipelined request) stay in the buffer.
  void WatchForDisconnect() {
    watching_ = true;
    stream_.socket().async_read_some(buffer_.prepare(4096), [self = shared_from_this()](beast::error_code ec,
                                                                                        size_t n) {
      self->watching_ = false;
      if (!ec) {
        self->buffer_.commit(n);
        if (self->buffer_.size() > self->limits_.max_body_bytes + self->limits_.max_header_bytes) {
          return self->ClientGone();  // flooding while we answer
        }
        if (!self->exchange_finished_) return self->WatchForDisconnect();
      } else if (ec != net::error::operation_aborted) {
        return self->ClientGone();
      }
      if (self->exchange_finished_) self->AfterExchange();
    });
  }

  void ClientGone() {
    disconnected_ = true;
    keep_alive_ = false;
    if (on_disconnect_) {
      auto cb = std::move(on_disconnect_);
      on_disconnect_ = nullptr;
      cb();
    }
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
  }

  void Enqueue(std::string bytes) {
    if (disconnected_) return;
    out_.push_back(std::move(bytes));
    queued_->fetch_add(1);
    if (!writing_) WriteNext();
  }

  void WriteNext() {
    if (out_.empty()) {
      writing_ = false;
      MaybeFinishExchange();
      return;
    }
    writing_ = true;
    stream_.expires_after(limits_.write_timeout);
    net::async_write(stream_, net::buffer(out_.front()), [self = shared_from_this()](beast::error_code ec, size_t) {
      self->stream_.expires_never();
      if (ec) {
        self->queued_->fetch_sub(static_cast<int>(self->out_.size()));
        self->out_.clear();
        self->writing_ = false;
        return self->ClientGone();
      }
      self->queued_->fetch_sub(1);
      self->out_.pop_front();
      self->WriteNext();
    });
  }

  // The response is fully written: go on with the next request (after the
  // disconnect watch stops) or close.
  void MaybeFinishExchange() {
    if (!response_complete_ || writing_ || !out_.empty() || exchange_finished_) return;
    exchange_finished_ = true;
    responding_ = false;
    on_disconnect_ = nullptr;
    if (watching_) {
      beast::error_code ignored;
      stream_.socket().cancel(ignored);  // its handler calls AfterExchange
    } else {
      AfterExchange();
    }
  }

  void AfterExchange() {
    exchange_finished_ = false;
    if (!keep_alive_ || disconnected_) return Shutdown();
    ReadRequest();
  }

  void Shutdown() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.socket().close(ignored);
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  const HttpHandler& handler_;
  const HttpLimits& limits_;
  std::deque<std::string> out_;
  bool writing_ = false;
  bool watching_ = false;
  bool keep_alive_ = false;
  bool responding_ = false;
  std::atomic<int>* queued_;  // the server's count of buffers not yet written
  bool response_started_ = false;
  bool response_complete_ = false;
  bool streaming_ = false;
  bool exchange_finished_ = false;
  bool disconnected_ = false;
  uint64_t requests_served_ = 0;
  std::function<void()> on_disconnect_;
};

void Exchange::Respond(int status, std::string content_type, std::string body,
                       std::vector<std::pair<std::string, std::string>> headers) {
  net::post(session_->executor(), [s = session_, status, ct = std::move(content_type), b = std::move(body),
                                   h = std::move(headers)]() mutable { s->SendWhole(status, ct, std::move(b), h); });
}

void Exchange::StartStream(int status, std::string content_type,
                           std::vector<std::pair<std::string, std::string>> headers) {
  net::post(session_->executor(), [s = session_, status, ct = std::move(content_type), h = std::move(headers)] {
    s->SendStreamHeader(status, ct, h);
  });
}

void Exchange::Write(std::string data) {
  net::post(session_->executor(), [s = session_, d = std::move(data)]() mutable { s->SendChunk(std::move(d)); });
}

void Exchange::Close() {
  net::post(session_->executor(), [s = session_] { s->EndStream(); });
}

void Exchange::OnDisconnect(std::function<void()> callback) {
  net::post(session_->executor(), [s = session_, cb = std::move(callback)]() mutable {
    s->SetDisconnectCallback(std::move(cb));
  });
}

}  // namespace

std::string HttpRequestView::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (absl::EqualsIgnoreCase(k, absl::string_view(name.data(), name.size()))) return v;
  }
  return "";
}

struct HttpServer::Impl {
  net::io_context ioc;
  tcp::acceptor acceptor{ioc};
  HttpHandler handler;
  HttpLimits limits;
  std::vector<std::thread> threads;
  std::atomic<bool> stopped{false};
  std::atomic<int> queued_writes{0};

  void Accept() {
    acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
      if (ec) {
        if (stopped.load()) return;
      } else {
        // Streamed tokens are small writes: send each at once.
        beast::error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        std::make_shared<Session>(std::move(socket), handler, limits, &queued_writes)->Start();
      }
      Accept();
    });
  }
};

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& address, HttpHandler handler,
                                                              const HttpLimits& limits, int threads) {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("listen address '", address, "' is not HOST:PORT"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  auto impl = std::make_unique<Impl>();
  impl->handler = std::move(handler);
  impl->limits = limits;
  beast::error_code ec;
  const auto ip = net::ip::make_address(host.empty() ? "0.0.0.0" : host, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("bad listen host '", host, "': ", ec.message()));
  tcp::endpoint ep(ip, static_cast<unsigned short>(port));
  impl->acceptor.open(ep.protocol(), ec);
  if (!ec) impl->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(ep, ec);
  if (!ec) impl->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot listen on ", address, ": ", ec.message()));
  impl->Accept();
  for (int i = 0; i < std::max(threads, 1); ++i) impl->threads.emplace_back([raw = impl.get()] { raw->ioc.run(); });
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

int HttpServer::port() const { return impl_->acceptor.local_endpoint().port(); }

void HttpServer::Stop() {
  if (impl_->stopped.exchange(true)) return;
  beast::error_code ignored;
  impl_->acceptor.close(ignored);
  impl_->ioc.stop();
  for (auto& t : impl_->threads) {
    if (t.joinable()) t.join();
  }
}

bool HttpServer::FlushWrites(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int quiet = 0;  // consecutive checks with nothing queued: bytes posted just now are queued by then
  while (std::chrono::steady_clock::now() < deadline) {
    quiet = impl_->queued_writes.load() == 0 ? quiet + 1 : 0;
    if (quiet >= 3) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

HttpServer::~HttpServer() { Stop(); }

}  // namespace tessera::gateway
