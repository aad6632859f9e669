#include "tools/quantize/hf_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/escape.h"
#include "common/json/json_file.h"
#include "common/model_dir.h"
#include "common/status_macros.h"

namespace tessera::quantize {
namespace {

absl::Status Errno(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", EscapeForMessage(path, 512), ": ", std::strerror(errno)));
}

absl::Status PWriteAll(int fd, const uint8_t* data, size_t n, uint64_t offset, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, data, n, static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      return Errno("cannot write", path);
    }
    data += w;
    n -= static_cast<size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
  return absl::OkStatus();
}

bool IsWeightFile(const std::string& name) {
  for (const char* ext : {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf"}) {
    if (absl::EndsWith(name, ext)) return true;
  }
  return name == "model.safetensors.index.json" || name == "pytorch_model.bin.index.json" || name == "config.json";
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Create(const std::string& path,
                                                                              std::vector<TensorDecl> tensors) {
  std::unique_ptr<SafetensorsWriter> w(new SafetensorsWriter());
  w->path_ = path;
  std::sort(tensors.begin(), tensors.end(), [](const TensorDecl& a, const TensorDecl& b) { return a.name < b.name; });
  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t offset = 0;
  for (const TensorDecl& t : tensors) {
    uint64_t n = DtypeSize(t.dtype);
    for (int64_t d : t.shape) n *= static_cast<uint64_t>(d);
    if (!w->slots_.emplace(t.name, Slot{offset, n, false}).second) {
      return absl::InternalError(absl::StrCat("tensor '", t.name, "' declared twice"));
    }
    header[t.name] = {{"dtype", std::string(DtypeName(t.dtype))}, {"shape", t.shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t header_len = text.size();
  for (auto& [name, slot] : w->slots_) slot.offset += 8 + header_len;
  w->fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (w->fd_ < 0) return Errno("cannot create", path);
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(header_len >> (8 * i));
  TESSERA_RETURN_IF_ERROR(PWriteAll(w->fd_, len, 8, 0, path));
  TESSERA_RETURN_IF_ERROR(PWriteAll(w->fd_, reinterpret_cast<const uint8_t*>(text.data()), text.size(), 8, path));
  if (::ftruncate(w->fd_, static_cast<off_t>(8 + header_len + offset)) != 0) return Errno("cannot size", path);
  return w;
}

SafetensorsWriter::~SafetensorsWriter() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status SafetensorsWriter::Write(const std::string& name, std::span<const uint8_t> bytes) {
  auto it = slots_.find(name);
  if (it == slots_.end()) return absl::InternalError(absl::StrCat("tensor '", name, "' was not declared"));
  if (it->second.written) return absl::InternalError(absl::StrCat("tensor '", name, "' written twice"));
  if (bytes.size() != it->second.bytes) {
    return absl::InternalError(absl::StrCat("tensor '", name, "': ", bytes.size(), " bytes; declared ", it->second.bytes));
  }
  TESSERA_RETURN_IF_ERROR(PWriteAll(fd_, bytes.data(), bytes.size(), it->second.offset, path_));
  it->second.written = true;
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Finish() {
  for (const auto& [name, slot] : slots_) {
    if (!slot.written) return absl::InternalError(absl::StrCat("tensor '", name, "' was never written"));
  }
  if (::fsync(fd_) != 0) return Errno("cannot flush", path_);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) return Errno("cannot close", path_);
  return absl::OkStatus();
}

absl::Status CopySideFiles(const std::string& input_dir, const std::string& output_dir) {
  namespace fs = std::filesystem;
  TESSERA_ASSIGN_OR_RETURN(ModelDirectory dir, ModelDirectory::Open(input_dir));
  std::error_code ec;
  std::vector<std::string> names;
  for (const fs::directory_entry& e : fs::directory_iterator(input_dir, ec)) names.push_back(e.path().filename().string());
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", EscapeForMessage(input_dir, 512), ": ", ec.message()));
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    if (IsWeightFile(name) || name.starts_with(".")) continue;
    // Resolve keeps symlinks from leading outside the model directory.
    absl::StatusOr<std::string> src = dir.Resolve(name);
    if (!src.ok() || !fs::is_regular_file(*src, ec)) continue;
    fs::copy_file(*src, fs::path(output_dir) / name, fs::copy_options::overwrite_existing, ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot copy ", EscapeForMessage(name), ": ", ec.message()));
  }
  return absl::OkStatus();
}

absl::Status WriteQuantizedConfig(const std::string& input_dir, const std::string& output_dir,
                                  const nlohmann::json& quantization_config, const nlohmann::json& overrides) {
  TESSERA_ASSIGN_OR_RETURN(ModelDirectory dir, ModelDirectory::Open(input_dir));
  TESSERA_ASSIGN_OR_RETURN(std::string path, dir.Resolve("config.json"));
  TESSERA_ASSIGN_OR_RETURN(nlohmann::json config, ReadJsonFile(path, {.max_bytes = 4u << 20, .max_depth = 64}));
  if (!config.is_object()) return absl::InvalidArgumentError("config.json is not an object");
  config["quantization_config"] = quantization_config;
  for (const auto& [key, value] : overrides.items()) config[key] = value;
  const std::string out = (std::filesystem::path(output_dir) / "config.json").string();
  std::ofstream f(out, std::ios::binary | std::ios::trunc);
  f << config.dump(2) << "\n";
  f.close();
  if (!f) return absl::InternalError(absl::StrCat("cannot write ", EscapeForMessage(out, 512)));
  return absl::OkStatus();
}

}  // namespace tessera::quantize
