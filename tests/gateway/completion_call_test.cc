// CompletionCall's failover against scripted workers (a fake CallRouter and
// fake WorkerConnections): retry before output, hung workers, failures after
// output, request errors, the retry budget, the attempt limit and
// cancellation, each checked in the events the client sees and in what the
// router was told about each worker. The process-level failover tests
// (tests/e2e/test_failover.py) hold the same rules with real workers.
#include "gateway/completion_call.h"

#include <gtest/gtest.h>

#include <functional>
#include <thread>

#include "absl/synchronization/notification.h"

namespace tessera::gateway {
namespace {

namespace wv1 = tessera::worker::v1;
using namespace std::chrono_literals;

enum class Script {
  kServe,             // accepts, streams "Hel" "lo", finishes
  kUnavailable,       // fails at once: unreachable
  kQueueFull,         // fails at once: RESOURCE_EXHAUSTED
  kBadRequest,        // fails at once: INVALID_ARGUMENT (the request's fault)
  kHang,              // never accepts; ends only when cancelled
  kFailAfterOutput,   // accepts, streams "partial", then loses the connection
};

// The stream threads of a test. Joined by the router's destructor, on the
// test's thread: a stream thread may drop the last reference to a worker
// (and its connection), so no connection may own or join them.
class StreamThreads {
 public:
  ~StreamThreads() { JoinAll(); }
  void Start(std::function<void()> f) {
    absl::MutexLock lock(&mu_);
    threads_.emplace_back(std::move(f));
  }
  void JoinAll() {
    std::vector<std::thread> threads;
    {
      absl::MutexLock lock(&mu_);
      threads.swap(threads_);
    }
    for (auto& t : threads) t.join();
  }

 private:
  absl::Mutex mu_;
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
};

// Runs each stream on its own thread, as gRPC's callback threads would.
class FakeConnection final : public WorkerConnection {
 public:
  FakeConnection(Script script, StreamThreads& threads) : script_(script), threads_(threads) {}
  int streams() const { return streams_.load(); }

  std::shared_ptr<GenerateStream> Generate(const wv1::GenerateRequest&, std::chrono::system_clock::time_point,
                                           std::shared_ptr<GenerateObserver> observer) override {
    ++streams_;
    auto stream = std::make_shared<Stream>();
    threads_.Start([script = script_, stream, observer] { Run(script, *stream, *observer); });
    return stream;
  }

 private:
  struct Stream final : GenerateStream {
    absl::Notification cancelled;
    void Cancel() override {
      if (!cancelled.HasBeenNotified()) cancelled.Notify();
    }
  };

  static wv1::GenerateResponse Text(const std::string& text) {
    wv1::GenerateResponse r;
    r.set_text(text);
    r.add_token_ids(1);
    return r;
  }

  static void Run(Script script, Stream& stream, GenerateObserver& o) {
    switch (script) {
      case Script::kServe: {
        o.OnAccepted();
        o.OnResponse(Text("Hel"));
        wv1::GenerateResponse last = Text("lo");
        last.set_finish_reason(wv1::FINISH_REASON_STOP);
        last.mutable_usage()->set_prompt_tokens(3);
        last.mutable_usage()->set_completion_tokens(2);
        o.OnResponse(last);
        o.OnDone(grpc::Status::OK);
        return;
      }
      case Script::kUnavailable:
        o.OnDone(grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection refused"));
        return;
      case Script::kQueueFull:
        o.OnDone(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "the worker's queue is full"));
        return;
      case Script::kBadRequest:
        o.OnDone(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "prompt too long"));
        return;
      case Script::kHang:
        stream.cancelled.WaitForNotificationWithTimeout(absl::Seconds(30));
        o.OnDone(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
        return;
      case Script::kFailAfterOutput:
        o.OnAccepted();
        o.OnResponse(Text("partial"));
        o.OnDone(grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection lost"));
        return;
    }
  }

  const Script script_;
  StreamThreads& threads_;
  std::atomic<int> streams_{0};
};

// Routes to the first worker not yet tried, and records what it is told.
class FakeRouter final : public CallRouter {
 public:
  explicit FakeRouter(int retry_budget = 10) : retry_budget_(retry_budget) {}
  ~FakeRouter() override { threads_.JoinAll(); }

  FakeConnection& Add(const std::string& address, Script script) {
    auto w = std::make_shared<Worker>(WorkerHealthOptions{});
    w->address = address;
    auto conn = std::make_unique<FakeConnection>(script, threads_);
    FakeConnection& raw = *conn;
    w->connection = std::move(conn);
    workers_.push_back(w);
    return raw;
  }
  std::vector<std::string> log() {
    absl::MutexLock lock(&mu_);
    return log_;
  }
  int tracked() {
    absl::MutexLock lock(&mu_);
    return tracked_;
  }
  int retries_held() {
    absl::MutexLock lock(&mu_);
    return retries_;
  }

  absl::StatusOr<Route> Pick(const std::string&, const std::string& adapter,
                             const std::vector<const Worker*>& exclude) override {
    for (const auto& w : workers_) {
      if (std::find(exclude.begin(), exclude.end(), w.get()) == exclude.end()) return Route{w, adapter};
    }
    return absl::UnavailableError("no other healthy worker is available");
  }
  absl::Status CanRoute(const std::string& model, const std::string& adapter,
                        const std::vector<const Worker*>& exclude) override {
    return Pick(model, adapter, exclude).status();
  }
  void ReportSuccess(Worker& w) override { Log("success " + w.address); }
  void ReportFailure(Worker& w, const grpc::Status& s) override {
    Log("failure " + w.address + " " + std::to_string(s.error_code()));
  }
  void ReportHung(Worker& w, std::chrono::milliseconds) override { Log("hung " + w.address); }
  bool TryStartRetry() override {
    absl::MutexLock lock(&mu_);
    if (retries_ >= retry_budget_) return false;
    ++retries_;
    return true;
  }
  void EndRetry() override {
    absl::MutexLock lock(&mu_);
    --retries_;
  }
  void TrackCall(const std::shared_ptr<CompletionCall>&) override {
    absl::MutexLock lock(&mu_);
    ++tracked_;
  }
  void UntrackCall(const CompletionCall*) override {
    absl::MutexLock lock(&mu_);
    --tracked_;
  }
  bool Draining() const override { return false; }
  GatewayMetrics* metrics() const override { return nullptr; }

 private:
  void Log(const std::string& line) {
    absl::MutexLock lock(&mu_);
    log_.push_back(line);
  }
  const int retry_budget_;
  StreamThreads threads_;  // declared before the workers: outlives their connections
  std::vector<std::shared_ptr<Worker>> workers_;
  absl::Mutex mu_;
  std::vector<std::string> log_ ABSL_GUARDED_BY(mu_);
  int tracked_ ABSL_GUARDED_BY(mu_) = 0;
  int retries_ ABSL_GUARDED_BY(mu_) = 0;
};

// A streaming client: once the first output is sent, a restart is refused.
class RecordingSink final : public CompletionSink {
 public:
  void OnFirstOutput() override { Log("first output"); begun_ = true; }
  void OnEcho(int, const std::string&, const std::vector<TokenLogprobs>&) override { Log("echo"); }
  void OnDelta(int, const std::string& text, const std::vector<TokenLogprobs>&) override { Log("delta " + text); }
  void OnChoiceFinished(int, const std::string& reason) override { Log("finished " + reason); }
  void OnDone(const absl::Status& status, int prompt_tokens, int completion_tokens) override {
    Log("done " + std::string(absl::StatusCodeToString(status.code())) + " " + std::to_string(prompt_tokens) + "+" +
        std::to_string(completion_tokens));
    status_ = status;
    done_.Notify();
  }
  bool Restart() override {
    Log(begun_ ? "restart refused" : "restart");
    return !begun_;
  }

  std::vector<std::string> Wait() {
    EXPECT_TRUE(done_.WaitForNotificationWithTimeout(absl::Seconds(20)));
    absl::MutexLock lock(&mu_);
    return events_;
  }
  absl::Status status() const { return status_; }

 private:
  void Log(const std::string& e) {
    absl::MutexLock lock(&mu_);
    events_.push_back(e);
  }
  bool begun_ = false;  // events are serialized by the call
  absl::Mutex mu_;
  std::vector<std::string> events_ ABSL_GUARDED_BY(mu_);
  absl::Status status_;
  absl::Notification done_;
};

CompletionRequest Request() {
  CompletionRequest r;
  r.kind = CompletionRequest::Kind::kText;
  r.model = "m";
  r.prompts = {"hi"};
  r.max_tokens = 8;
  r.stream = true;
  return r;
}

using Events = std::vector<std::string>;
const Events kServed = {"first output", "delta Hel", "delta lo", "finished stop", "done OK 3+2"};

std::vector<std::string> RunCall(FakeRouter& router, const CompletionOptions& options = {},
                             std::shared_ptr<RecordingSink>* sink_out = nullptr) {
  auto sink = std::make_shared<RecordingSink>();
  auto call = CompletionCall::Start(router, Request(), sink, options);
  auto events = sink->Wait();
  if (sink_out != nullptr) *sink_out = sink;
  return events;
}

TEST(CompletionCallTest, ServedByTheFirstWorker) {
  FakeRouter router;
  FakeConnection& a = router.Add("a", Script::kServe);
  FakeConnection& b = router.Add("b", Script::kServe);
  EXPECT_EQ(RunCall(router), kServed);
  EXPECT_EQ(router.log(), (Events{"success a"}));
  EXPECT_EQ(a.streams(), 1);
  EXPECT_EQ(b.streams(), 0);
  EXPECT_EQ(router.tracked(), 0);
}

TEST(CompletionCallTest, AnUnreachableWorkerIsRetriedElsewhereBeforeOutput) {
  FakeRouter router;
  router.Add("a", Script::kUnavailable);
  router.Add("b", Script::kServe);
  Events expected = {"restart"};
  expected.insert(expected.end(), kServed.begin(), kServed.end());
  EXPECT_EQ(RunCall(router), expected);
  EXPECT_EQ(router.log(), (Events{"failure a 14", "success b"}));
  EXPECT_EQ(router.retries_held(), 0);  // the budget slot is given back
  EXPECT_EQ(router.tracked(), 0);
}

TEST(CompletionCallTest, AFullQueueIsRetriedToo) {
  FakeRouter router;
  router.Add("a", Script::kQueueFull);
  router.Add("b", Script::kServe);
  EXPECT_EQ(RunCall(router).back(), "done OK 3+2");
  EXPECT_EQ(router.log(), (Events{"failure a 8", "success b"}));
}

TEST(CompletionCallTest, AHungWorkerIsReportedAndTheRequestMovesOn) {
  FakeRouter router;
  FakeConnection& a = router.Add("a", Script::kHang);
  router.Add("b", Script::kServe);
  CompletionOptions o;
  o.first_response_timeout = 100ms;
  Events expected = {"restart"};
  expected.insert(expected.end(), kServed.begin(), kServed.end());
  EXPECT_EQ(RunCall(router, o), expected);
  EXPECT_EQ(router.log(), (Events{"hung a", "success b"}));
  EXPECT_EQ(a.streams(), 1);  // and cancelled: its thread has ended by the router's destruction
}

TEST(CompletionCallTest, AFailureAfterOutputIsFinalAndInBand) {
  FakeRouter router;
  router.Add("a", Script::kFailAfterOutput);
  FakeConnection& b = router.Add("b", Script::kServe);
  std::shared_ptr<RecordingSink> sink;
  // Retryable, but the client has seen output: the error ends its stream.
  EXPECT_EQ(RunCall(router, {}, &sink),
            (Events{"first output", "delta partial", "restart refused", "done UNAVAILABLE 0+0"}));
  EXPECT_EQ(b.streams(), 0);
  EXPECT_NE(sink->status().message().find("connection lost"), std::string::npos) << sink->status();
}

TEST(CompletionCallTest, TheRequestsOwnErrorsAreNotRetried) {
  FakeRouter router;
  router.Add("a", Script::kBadRequest);
  FakeConnection& b = router.Add("b", Script::kServe);
  EXPECT_EQ(RunCall(router), (Events{"done INVALID_ARGUMENT 0+0"}));
  EXPECT_EQ(router.log(), (Events{"failure a 3"}));
  EXPECT_EQ(b.streams(), 0);
}

TEST(CompletionCallTest, AnEmptyRetryBudgetShedsInsteadOfRetrying) {
  FakeRouter router(/*retry_budget=*/0);
  router.Add("a", Script::kUnavailable);
  FakeConnection& b = router.Add("b", Script::kServe);
  std::shared_ptr<RecordingSink> sink;
  EXPECT_EQ(RunCall(router, {}, &sink), (Events{"restart", "done UNAVAILABLE 0+0"}));
  EXPECT_NE(sink->status().message().find("retry budget exhausted"), std::string::npos) << sink->status();
  EXPECT_EQ(b.streams(), 0);
}

TEST(CompletionCallTest, AttemptsStopAtTheLimitWithTheLastWorkersError) {
  FakeRouter router;
  FakeConnection& a = router.Add("a", Script::kUnavailable);
  FakeConnection& b = router.Add("b", Script::kUnavailable);
  FakeConnection& c = router.Add("c", Script::kServe);
  CompletionOptions o;
  o.max_attempts = 2;
  std::shared_ptr<RecordingSink> sink;
  EXPECT_EQ(RunCall(router, o, &sink), (Events{"restart", "done UNAVAILABLE 0+0"}));
  EXPECT_EQ(a.streams() + b.streams() + c.streams(), 2);
  EXPECT_NE(sink->status().message().find("connection refused"), std::string::npos) << sink->status();
}

TEST(CompletionCallTest, NoWorkerLeftEndsWithTheWorkersOwnError) {
  FakeRouter router;
  router.Add("a", Script::kUnavailable);
  std::shared_ptr<RecordingSink> sink;
  EXPECT_EQ(RunCall(router, {}, &sink), (Events{"restart", "done UNAVAILABLE 0+0"}));
  EXPECT_NE(sink->status().message().find("connection refused"), std::string::npos) << sink->status();
}

TEST(CompletionCallTest, CancelEndsAHungCallWithoutRetry) {
  FakeRouter router;
  FakeConnection& a = router.Add("a", Script::kHang);
  FakeConnection& b = router.Add("b", Script::kServe);
  auto sink = std::make_shared<RecordingSink>();
  auto call = CompletionCall::Start(router, Request(), sink);
  std::this_thread::sleep_for(50ms);
  call->Cancel();
  EXPECT_EQ(sink->Wait(), (Events{"done CANCELLED 0+0"}));
  EXPECT_EQ(a.streams(), 1);
  EXPECT_EQ(b.streams(), 0);
}

}  // namespace
}  // namespace tessera::gateway
