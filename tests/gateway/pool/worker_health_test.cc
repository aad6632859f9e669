// The worker health state machine, replayed as tables of events with the
// transitions and states expected after each.
#include "gateway/pool/worker_health.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tessera::gateway {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1000);

struct Event {
  enum Kind { kProbePass, kProbeFail, kOk, kUnreachable, kFault, kNotTheWorkers, kEject } kind;
  double at_s;  // seconds after kT0
  // Expected after the event.
  bool serving;
  bool ejected;
  std::string note;  // the transition or verdict expected ("" none)
};

std::string Apply(WorkerHealth& h, const Event& e) {
  const absl::Time now = kT0 + absl::Seconds(e.at_s);
  switch (e.kind) {
    case Event::kProbePass:
    case Event::kProbeFail: {
      if (!h.ProbeDue(now)) return "not due";
      const auto t = h.OnProbe(e.kind == Event::kProbePass, now);
      std::string out;
      if (t.became_serving) out += "serving ";
      if (t.became_not_serving) out += "not serving ";
      if (t.readmitted) out += "readmitted ";
      return out.empty() ? "" : out.substr(0, out.size() - 1);
    }
    case Event::kOk:
      h.OnRequestSucceeded();
      return "";
    case Event::kEject: {
      const auto d = h.Eject(now);
      return d ? "ejected " + std::to_string(absl::ToInt64Seconds(*d)) + "s" : "already";
    }
    default:
      break;
  }
  const RequestFault f = e.kind == Event::kUnreachable ? RequestFault::kUnreachable
                         : e.kind == Event::kFault     ? RequestFault::kWorkerFault
                                                       : RequestFault::kNotTheWorkers;
  switch (h.OnRequestFailed(f)) {
    case WorkerHealth::Verdict::kNothing:
      return "";
    case WorkerHealth::Verdict::kNowNotServing:
      return "now not serving";
    case WorkerHealth::Verdict::kStillNotServing:
      return "still not serving";
    case WorkerHealth::Verdict::kEject:
      return "eject";
  }
  return "?";
}

void Replay(const std::vector<Event>& events, const WorkerHealthOptions& o = {}) {
  WorkerHealth h(o);
  for (size_t i = 0; i < events.size(); ++i) {
    const Event& e = events[i];
    EXPECT_EQ(Apply(h, e), e.note) << "event " << i;
    EXPECT_EQ(h.serving(), e.serving) << "event " << i;
    EXPECT_EQ(h.ejected(), e.ejected) << "event " << i;
  }
}

TEST(WorkerHealthTest, ProbesDecideServing) {
  Replay({
      {Event::kProbeFail, 0, false, false, ""},  // starts not serving: nothing changes
      {Event::kProbePass, 1, true, false, "serving"},
      {Event::kProbePass, 2, true, false, ""},
      {Event::kProbeFail, 3, false, false, "not serving"},
      {Event::kProbePass, 4, true, false, "serving"},
  });
}

TEST(WorkerHealthTest, UnreachableTakesItOutUntilAProbePasses) {
  Replay({
      {Event::kProbePass, 0, true, false, "serving"},
      {Event::kUnreachable, 1, false, false, "now not serving"},
      {Event::kUnreachable, 1, false, false, "still not serving"},
      {Event::kProbePass, 2, true, false, "serving"},
  });
}

TEST(WorkerHealthTest, ConsecutiveFaultsEjectAndASuccessResetsTheCount) {
  Replay({
      {Event::kProbePass, 0, true, false, "serving"},
      {Event::kFault, 1, true, false, ""},
      {Event::kFault, 1, true, false, ""},
      {Event::kOk, 1, true, false, ""},  // the streak is broken
      {Event::kFault, 2, true, false, ""},
      {Event::kNotTheWorkers, 2, true, false, ""},  // a bad request says nothing about the worker
      {Event::kFault, 2, true, false, ""},
      {Event::kFault, 2, true, false, "eject"},
      {Event::kEject, 2, true, true, "ejected 5s"},
      {Event::kEject, 3, true, true, "already"},
      {Event::kProbePass, 4, true, true, "not due"},  // ejections run their time
      {Event::kProbeFail, 7.5, false, true, "not serving"},  // due, but failing: stays out
      {Event::kProbePass, 8, true, false, "serving readmitted"},
  });
}

TEST(WorkerHealthTest, EjectionsGrowAndResetAfterGoodBehaviour) {
  const WorkerHealthOptions o{.outlier_consecutive_failures = 1, .base_ejection = absl::Seconds(5),
                              .max_ejection = absl::Seconds(12)};
  Replay({
      {Event::kProbePass, 0, true, false, "serving"},
      {Event::kEject, 0, true, true, "ejected 5s"},
      {Event::kProbePass, 5, true, false, "readmitted"},
      {Event::kEject, 6, true, true, "ejected 10s"},  // the second in a row lasts twice as long
      {Event::kProbePass, 16, true, false, "readmitted"},
      {Event::kEject, 17, true, true, "ejected 12s"},  // capped
      {Event::kProbePass, 29, true, false, "readmitted"},
      // Out of trouble for longer than max_ejection after the last one ended:
      // the count resets, so the next ejection is short again.
      {Event::kProbePass, 42, true, false, ""},
      {Event::kEject, 43, true, true, "ejected 5s"},
  }, o);
}

}  // namespace
}  // namespace tessera::gateway
