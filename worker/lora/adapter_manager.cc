#include "worker/lora/adapter_manager.h"

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/escape.h"
#include "common/status_macros.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

double Seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Directories scanned per root, so that a huge directory cannot stall the
// worker.
constexpr int kMaxScanEntries = 10000;
// Dead entries (unloaded or failed, no longer used) kept for Failure().
constexpr size_t kMaxDeadEntries = 256;

// What identifies the contents of an adapter directory cheaply: size and
// modification time of its files.
std::string Signature(const std::string& dir) {
  std::string sig;
  for (const char* f : {"adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"}) {
    std::error_code ec;
    const fs::path p = fs::path(dir) / f;
    const auto size = fs::file_size(p, ec);
    if (ec) {
      absl::StrAppend(&sig, f, ":-;");
      continue;
    }
    const auto mtime = fs::last_write_time(p, ec).time_since_epoch().count();
    absl::StrAppend(&sig, f, ":", size, ":", ec ? 0 : mtime, ";");
  }
  return sig;
}

}  // namespace

std::string_view AdapterTierName(AdapterTier t) {
  switch (t) {
    case AdapterTier::kDisk: return "disk";
    case AdapterTier::kHost: return "host";
    case AdapterTier::kDevice: return "device";
  }
  return "?";
}

absl::StatusOr<std::unique_ptr<AdapterManager>> AdapterManager::Create(const AdapterManagerOptions& options,
                                                                       const LlamaConfig& base, Backend& backend) {
  if (options.max_loras < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_loras must be at least 1; got ", options.max_loras));
  }
  if (options.max_cpu_loras < options.max_loras) {
    return absl::InvalidArgumentError(absl::StrCat("max_cpu_loras (", options.max_cpu_loras,
                                                   ") must be at least max_loras (", options.max_loras, ")"));
  }
  if (options.max_lora_rank < 1 || options.max_lora_rank > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_lora_rank must be in [1, 1024]; got ", options.max_lora_rank));
  }
  AdapterManagerOptions o = options;
  o.roots.clear();
  for (const std::string& root : options.roots) {
    std::error_code ec;
    const fs::path real = fs::canonical(root, ec);
    if (ec || !fs::is_directory(real, ec)) {
      return absl::InvalidArgumentError(
          absl::StrCat("adapter directory '", EscapeForMessage(root), "' does not exist or is not a directory"));
    }
    o.roots.push_back(real.string());
  }
  std::unique_ptr<AdapterManager> m(new AdapterManager(o, base, backend));
  const std::vector<Found> found = m->ScanRoots();
  {
    absl::MutexLock lock(&m->mu_);
    m->RegisterFoundLocked(found);
  }
  m->loader_ = std::thread([raw = m.get()] { raw->LoaderLoop(); });
  return m;
}

AdapterManager::~AdapterManager() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (loader_.joinable()) loader_.join();
}

uint64_t AdapterManager::RegisterLocked(const std::string& name, const std::string& dir) {
  SweepLocked();
  const uint64_t id = next_id_++;
  Entry& e = entries_[id];
  e.name = name;
  e.dir = dir;
  by_name_[name] = id;
  return id;
}

void AdapterManager::SweepLocked() {
  auto dead = [](const Entry& e) { return !e.registered && e.pins == 0 && !e.host && !e.device && !e.loading; };
  size_t n = 0;
  for (const auto& [id, e] : entries_) n += dead(e);
  if (n <= kMaxDeadEntries) return;
  // Oldest first: ids grow with registration.
  std::vector<uint64_t> ids;
  for (const auto& [id, e] : entries_) {
    if (dead(e)) ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  for (size_t k = 0; k + kMaxDeadEntries / 2 < ids.size(); ++k) entries_.erase(ids[k]);
}

std::vector<AdapterManager::Found> AdapterManager::ScanRoots() const {
  std::vector<Found> out;
  for (const std::string& root : options_.roots) {
    std::error_code ec;
    fs::directory_iterator it(root, ec), end;
    for (int n = 0; !ec && it != end && n < kMaxScanEntries; it.increment(ec), ++n) {
      const std::string name = it->path().filename().string();
      if (!IsValidAdapterName(name)) continue;
      std::error_code ec2;
      if (!fs::is_regular_file(it->path() / "adapter_config.json", ec2)) continue;
      auto dir = ResolveAdapterDir(it->path().string(), options_.roots);
      if (dir.ok()) out.push_back({name, *dir, Signature(*dir)});
    }
  }
  return out;
}

std::optional<AdapterManager::Found> AdapterManager::FindInRoots(const std::string& name) const {
  if (!IsValidAdapterName(name)) return std::nullopt;
  for (const std::string& root : options_.roots) {
    const fs::path dir = fs::path(root) / name;
    std::error_code ec;
    if (!fs::is_regular_file(dir / "adapter_config.json", ec)) continue;
    auto real = ResolveAdapterDir(dir.string(), options_.roots);
    if (real.ok()) return Found{name, *real, Signature(*real)};
  }
  return std::nullopt;
}

const AdapterManager::Failed* AdapterManager::KnownFailureLocked(const Found& f) {
  auto it = failed_.find(f.name);
  if (it == failed_.end()) return nullptr;
  if (it->second.signature == f.signature) return &it->second;
  failed_.erase(it);  // the files changed: try again
  return nullptr;
}

void AdapterManager::RegisterFoundLocked(const std::vector<Found>& found) {
  for (const Found& f : found) {
    if (by_name_.contains(f.name) || KnownFailureLocked(f) != nullptr) continue;
    RegisterLocked(f.name, f.dir);
  }
}

absl::StatusOr<uint64_t> AdapterManager::Resolve(std::string_view name) {
  const std::string key(name);
  {
    absl::MutexLock lock(&mu_);
    if (auto it = by_name_.find(key); it != by_name_.end()) return it->second;
  }
  const std::optional<Found> found = FindInRoots(key);
  absl::MutexLock lock(&mu_);
  if (auto it = by_name_.find(key); it != by_name_.end()) return it->second;  // registered meanwhile
  if (found) {
    if (const Failed* f = KnownFailureLocked(*found)) return f->status;
    return RegisterLocked(key, found->dir);
  }
  return absl::NotFoundError(absl::StrCat("the model '", EscapeForMessage(name), "' does not exist"));
}

absl::Status AdapterManager::Load(const std::string& name, const std::string& path) {
  if (!IsValidAdapterName(name)) {
    return absl::InvalidArgumentError(absl::StrCat("invalid adapter name '", EscapeForMessage(name),
                                                   "': use [A-Za-z0-9][A-Za-z0-9._-]{0,127}"));
  }
  TESSERA_ASSIGN_OR_RETURN(const std::string dir, ResolveAdapterDir(path, options_.roots));
  auto taken = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
    if (by_name_.contains(name)) {
      return absl::AlreadyExistsError(absl::StrCat("the adapter '", name, "' is already loaded"));
    }
    return absl::OkStatus();
  };
  {
    absl::MutexLock lock(&mu_);
    TESSERA_RETURN_IF_ERROR(taken());
  }
  const double t0 = Seconds();
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<LoraAdapter> adapter,
                           LoraAdapter::Load(name, dir, base_, options_.max_lora_rank, options_.lora_dtype));
  absl::MutexLock lock(&mu_);
  TESSERA_RETURN_IF_ERROR(taken());
  failed_.erase(name);
  const uint64_t id = RegisterLocked(name, dir);
  Entry& e = entries_[id];
  e.rank = adapter->config().rank;
  e.host = std::move(adapter);
  e.last_used = ++tick_;
  ++stats_.loads;
  stats_.last_load_seconds = Seconds() - t0;
  TrimHostLocked();
  return absl::OkStatus();
}

absl::Status AdapterManager::Unload(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto it = by_name_.find(name);
  if (it == by_name_.end()) {
    return absl::NotFoundError(absl::StrCat("the adapter '", EscapeForMessage(name), "' is not loaded"));
  }
  Entry& e = entries_[it->second];
  by_name_.erase(it);
  e.registered = false;
  e.failure = absl::NotFoundError(absl::StrCat("the adapter '", name, "' was unloaded"));
  ReleaseIfUnusedLocked(e);
  return absl::OkStatus();
}

void AdapterManager::ReleaseIfUnusedLocked(Entry& e) {
  if (e.registered || e.pins > 0) return;
  e.device.reset();
  if (!e.loading) e.host.reset();
}

std::vector<AdapterInfo> AdapterManager::List() {
  const std::vector<Found> found = ScanRoots();
  absl::MutexLock lock(&mu_);
  RegisterFoundLocked(found);
  std::vector<AdapterInfo> out;
  for (const auto& [name, id] : by_name_) {
    const Entry& e = entries_.at(id);
    out.push_back({name, e.dir, id,
                   e.device ? AdapterTier::kDevice : e.host ? AdapterTier::kHost : AdapterTier::kDisk, e.rank,
                   e.pins});
  }
  std::sort(out.begin(), out.end(), [](const AdapterInfo& a, const AdapterInfo& b) { return a.name < b.name; });
  return out;
}

void AdapterManager::Residency(std::vector<std::string>* device, std::vector<std::string>* host) const {
  absl::MutexLock lock(&mu_);
  for (const auto& [name, id] : by_name_) {
    const Entry& e = entries_.at(id);
    if (e.device) {
      device->push_back(name);
    } else if (e.host) {
      host->push_back(name);
    }
  }
  std::sort(device->begin(), device->end());
  std::sort(host->begin(), host->end());
}

absl::Status AdapterManager::Prefetch(std::string_view name) {
  TESSERA_ASSIGN_OR_RETURN(const uint64_t id, Resolve(name));
  absl::MutexLock lock(&mu_);
  Entry& e = entries_.at(id);
  if (!e.device && e.wanted_since == 0) e.wanted_since = ++tick_;
  return absl::OkStatus();
}

AdapterStats AdapterManager::stats() const {
  absl::MutexLock lock(&mu_);
  AdapterStats s = stats_;
  for (const auto& [id, e] : entries_) {
    s.on_device += e.device != nullptr;
    s.on_host += e.host != nullptr;
  }
  return s;
}

void AdapterManager::NoteRequest(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  ++stats_.requests;
  if (it == entries_.end()) return;
  Entry& e = it->second;
  stats_.device_hits += e.device != nullptr;
  // Start the load now rather than when the scheduler reaches the request,
  // so that it overlaps the wait for a batch slot.
  if (!e.device && e.registered && e.wanted_since == 0) e.wanted_since = ++tick_;
}

AdapterGate::Pin AdapterManager::TryPin(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  if (it == entries_.end() || !it->second.registered) return Pin::kFailed;
  Entry& e = it->second;
  e.last_used = ++tick_;
  if (e.device) {
    ++e.pins;
    return Pin::kPinned;
  }
  if (e.wanted_since == 0) e.wanted_since = tick_;
  return e.no_slot ? Pin::kWaitForSlot : Pin::kLoading;
}

void AdapterManager::Unpin(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  if (it == entries_.end() || it->second.pins == 0) return;
  Entry& e = it->second;
  --e.pins;
  ReleaseIfUnusedLocked(e);
}

bool AdapterManager::IsPinned(uint64_t id) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  return it != entries_.end() && it->second.pins > 0;
}

absl::Status AdapterManager::Failure(uint64_t id) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return absl::NotFoundError("the adapter was unloaded or failed to load");
  if (!it->second.failure.ok()) return it->second.failure;
  return absl::OkStatus();
}

const LoraView* AdapterManager::View(uint64_t id) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  return it == entries_.end() ? nullptr : it->second.device.get();
}

bool AdapterManager::FreeDeviceSlotLocked(uint64_t for_id) {
  int on_device = 0;
  Entry* victim = nullptr;
  for (auto& [id, e] : entries_) {
    if (!e.device) continue;
    ++on_device;
    if (e.pins == 0 && id != for_id && (victim == nullptr || e.last_used < victim->last_used)) victim = &e;
  }
  if (on_device < options_.max_loras) return true;
  if (victim == nullptr) return false;
  victim->device.reset();
  ++stats_.device_evictions;
  return true;
}

void AdapterManager::TrimHostLocked() {
  while (true) {
    int on_host = 0;
    Entry* victim = nullptr;
    auto worse = [](const Entry& a, const Entry& b) {  // a is a better victim than b
      if ((a.device != nullptr) != (b.device != nullptr)) return a.device == nullptr;
      return a.last_used < b.last_used;
    };
    for (auto& [id, e] : entries_) {
      if (!e.host) continue;
      ++on_host;
      // A copy waiting for its upload stays, or it would be read forever.
      const bool pending = e.wanted_since != 0 && !e.device;
      if (!e.loading && !pending && (victim == nullptr || worse(e, *victim))) victim = &e;
    }
    if (on_host <= options_.max_cpu_loras || victim == nullptr) return;
    victim->host.reset();
    ++stats_.host_evictions;
  }
}

uint64_t AdapterManager::NextLoadLocked() {
  int on_device = 0;
  bool evictable = false;
  for (const auto& [id, e] : entries_) {
    if (!e.device) continue;
    ++on_device;
    evictable |= e.pins == 0;
  }
  const bool slot = on_device < options_.max_loras || evictable;
  uint64_t best = 0, best_since = 0;
  for (auto& [id, e] : entries_) {
    if (!e.registered || e.wanted_since == 0 || e.device || e.loading) continue;
    e.no_slot = e.host != nullptr && !slot;
    if (e.no_slot) continue;
    if (best == 0 || e.wanted_since < best_since) {
      best = id;
      best_since = e.wanted_since;
    }
  }
  return best;
}

void AdapterManager::LoaderLoop() {
  absl::MutexLock lock(&mu_);
  auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || NextLoadLocked() != 0; };
  while (true) {
    mu_.Await(absl::Condition(&has_work));
    if (stopping_) return;
    const uint64_t id = NextLoadLocked();
    Entry* e = &entries_.at(id);
    e->loading = true;
    if (!e->host) {
      // disk -> host
      const std::string name = e->name, dir = e->dir;
      const double t0 = Seconds();
      mu_.Unlock();
      absl::StatusOr<std::unique_ptr<LoraAdapter>> adapter =
          LoraAdapter::Load(name, dir, base_, options_.max_lora_rank, options_.lora_dtype);
      const std::string signature = adapter.ok() ? std::string() : Signature(dir);
      mu_.Lock();
      e = &entries_.at(id);
      e->loading = false;
      if (!adapter.ok()) {
        ++stats_.load_failures;
        failed_[name] = Failed{adapter.status(), signature};
        e->failure = adapter.status();
        e->registered = false;
        if (auto it = by_name_.find(e->name); it != by_name_.end() && it->second == id) by_name_.erase(it);
        continue;
      }
      ++stats_.loads;
      e->rank = (*adapter)->config().rank;
      e->host = std::move(*adapter);
      e->load_started = t0;
      TrimHostLocked();
      if (!e->registered) ReleaseIfUnusedLocked(*e);
      continue;  // the upload is the next round's work, once a slot is free
    }
    // host -> device
    if (!FreeDeviceSlotLocked(id)) {
      e->loading = false;
      e->no_slot = true;
      continue;
    }
    std::shared_ptr<const LoraAdapter> host = e->host;
    const double t0 = e->load_started > 0 ? e->load_started : Seconds();
    mu_.Unlock();
    absl::StatusOr<std::unique_ptr<DeviceLora>> device = options_.model != nullptr ? DeviceLora::UploadFor(*host, *options_.model) : DeviceLora::Upload(*host, backend_);
    mu_.Lock();
    e = &entries_.at(id);
    e->loading = false;
    if (!device.ok()) {
      ++stats_.load_failures;
      e->failure = device.status();
      e->registered = false;
      if (auto it = by_name_.find(e->name); it != by_name_.end() && it->second == id) by_name_.erase(it);
      continue;
    }
    if (!e->registered) continue;  // unloaded meanwhile: drop the copy
    e->device = std::move(*device);
    e->wanted_since = 0;
    e->no_slot = false;
    e->load_started = 0;
    ++stats_.uploads;
    stats_.last_load_seconds = Seconds() - t0;
  }
}

}  // namespace tessera
