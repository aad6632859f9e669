// AdapterManager: the worker's LoRA adapter catalog and its three tiers.
//
//   disk    adapter directories under the --adapter-dir roots, or registered
//           at run time by Load (the path must resolve inside a root);
//   host    parsed and validated adapters in RAM, at most max_cpu_loras,
//           least-recently-used evicted (device-resident ones included);
//   device  adapters in backend memory (DeviceLora), at most max_loras,
//           least-recently-used evicted among those no running sequence
//           pins.
//
// Loading (disk -> host -> device) runs on one loader thread, never on the
// engine thread: the engine asks through the AdapterGate interface, a cold
// adapter's sequences wait in the queue, the others keep running.
//
// Adapters are known by name; each registration gets a fresh id (> 0), used
// as the sequence's adapter and prefix-cache namespace, so that a name
// unloaded and loaded again with other weights never shares KV blocks with
// its predecessor.
//
// Thread-safety: thread-safe. View() is valid while the caller holds a pin.
#ifndef TESSERA_WORKER_LORA_ADAPTER_MANAGER_H_
#define TESSERA_WORKER_LORA_ADAPTER_MANAGER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kernels/backend.h"
#include "worker/engine/scheduler.h"
#include "worker/lora/device_lora.h"
#include "worker/lora/lora_adapter.h"

namespace tessera {

struct AdapterManagerOptions {
  std::vector<std::string> roots;  // --adapter-dir
  int max_loras = 8;               // device slots
  int max_cpu_loras = 32;          // host copies (at least max_loras)
  int max_lora_rank = 16;
  LoraDtype lora_dtype = LoraDtype::kF32;  // host and device storage of adapter weights
  // When set, uploads go to every tensor-parallel rank of this model, each
  // its slice (DeviceLora::UploadFor); otherwise whole, to Create's backend.
  // Outlives the manager.
  const LlamaModel* model = nullptr;
};

enum class AdapterTier { kDisk = 0, kHost = 1, kDevice = 2 };
std::string_view AdapterTierName(AdapterTier t);

struct AdapterInfo {
  std::string name;
  std::string path;
  uint64_t id = 0;
  AdapterTier tier = AdapterTier::kDisk;
  int rank = 0;  // 0 until the adapter has been read
  int pins = 0;
};

struct AdapterStats {
  uint64_t loads = 0;            // disk -> host
  uint64_t uploads = 0;          // host -> device
  uint64_t host_evictions = 0;
  uint64_t device_evictions = 0;
  uint64_t load_failures = 0;
  double last_load_seconds = 0;  // disk -> device of the latest cold load
  uint64_t requests = 0;         // requests for an adapter (NoteRequest)
  uint64_t device_hits = 0;      // of those, arrived with the adapter on the device
  int on_device = 0;
  int on_host = 0;
};

class AdapterManager final : public AdapterGate {
 public:
  // Scans the roots for adapter directories (a valid name holding an
  // adapter_config.json) and starts the loader thread.
  static absl::StatusOr<std::unique_ptr<AdapterManager>> Create(const AdapterManagerOptions& options,
                                                                const LlamaConfig& base, Backend& backend);
  ~AdapterManager() override;

  // The id of adapter `name`: registered, or found as <root>/<name> now.
  // NotFound if there is none.
  absl::StatusOr<uint64_t> Resolve(std::string_view name);
  // Registers `name` at `path` after reading and validating it completely
  // (it is then in host memory). InvalidArgument for a bad name or adapter,
  // PermissionDenied for a path outside the roots, AlreadyExists if the name
  // is taken. Runs on the caller's thread.
  absl::Status Load(const std::string& name, const std::string& path);
  // Forgets `name`: new requests cannot use it; its memory is released once
  // no running sequence uses it. NotFound if unknown.
  absl::Status Unload(const std::string& name);
  std::vector<AdapterInfo> List();
  // Names on the device and in host memory only, without touching the file
  // system (for load reports).
  void Residency(std::vector<std::string>* device, std::vector<std::string>* host) const;
  // Starts moving `name` towards the device if it is not there. NotFound if
  // there is no such adapter.
  absl::Status Prefetch(std::string_view name);
  AdapterStats stats() const;
  const AdapterManagerOptions& options() const { return options_; }

  // A request for `id` arrived: counts it as a device hit or miss, and
  // starts loading a cold adapter at once, so that the load overlaps the
  // request's wait in the queue.
  void NoteRequest(uint64_t id);

  // AdapterGate (engine thread).
  Pin TryPin(uint64_t id) override;
  void Unpin(uint64_t id) override;
  bool IsPinned(uint64_t id) const override;
  absl::Status Failure(uint64_t id) const override;
  const LoraView* View(uint64_t id) const override;

 private:
  struct Entry {
    std::string name;
    std::string dir;
    bool registered = true;  // false once unloaded or failed
    std::shared_ptr<const LoraAdapter> host;
    std::unique_ptr<DeviceLora> device;
    int rank = 0;
    int pins = 0;
    uint64_t last_used = 0;
    uint64_t wanted_since = 0;  // 0: no load requested
    bool loading = false;
    bool no_slot = false;
    double load_started = 0;  // when the current cold load began
    absl::Status failure;
  };

  // A failed read of an adapter directory, remembered until its files change
  // so that requests for a broken adapter are refused at once instead of
  // re-reading it every time.
  struct Failed {
    absl::Status status;
    std::string signature;
  };

  AdapterManager(const AdapterManagerOptions& o, const LlamaConfig& base, Backend& backend)
      : options_(o), base_(base), backend_(backend) {}
  void LoaderLoop();
  uint64_t RegisterLocked(const std::string& name, const std::string& dir) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adapter directories under the roots. Touches the file system, so it
  // runs without the mutex the engine thread takes.
  struct Found {
    std::string name, dir, signature;
  };
  std::vector<Found> ScanRoots() const;
  // <root>/<name> if it is an adapter directory inside a root.
  std::optional<Found> FindInRoots(const std::string& name) const;
  // Registers what a scan found, except names already known and names whose
  // last read failed on the same files.
  void RegisterFoundLocked(const std::vector<Found>& found) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The remembered failure of `f` if its files have not changed since.
  const Failed* KnownFailureLocked(const Found& f) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets dead entries (unloaded or failed, unused) once there are many.
  void SweepLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The next entry the loader can work on, or 0.
  uint64_t NextLoadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes room for one more device copy; false if every slot is pinned.
  bool FreeDeviceSlotLocked(uint64_t for_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TrimHostLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseIfUnusedLocked(Entry& e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const AdapterManagerOptions options_;
  const LlamaConfig base_;
  Backend& backend_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<uint64_t, Entry> entries_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, uint64_t> by_name_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t tick_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, Failed> failed_ ABSL_GUARDED_BY(mu_);  // by name
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  AdapterStats stats_ ABSL_GUARDED_BY(mu_);
  std::thread loader_;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_LORA_ADAPTER_MANAGER_H_
