// gguf:TYPE output: llama.cpp's llama_model_quantize, reproduced.
//
// From a GGUF input (F32/F16/BF16) the output is what llama_model_quantize
// writes for the same file type, byte for byte: the input's metadata in its
// order less general.quantization_version, general.file_type and the split
// keys, then those two keys (u32) appended; the tensors in llama.cpp's loader
// order (gguf_type_policy.h) with its per-tensor types; 32-byte alignment
// (llama.cpp always writes with GGUF's default alignment, even when it copies
// a general.alignment key); every tensor padded with zeros to it.
//
// From a Hugging Face directory the output is a complete GGUF written the way
// convert_hf_to_gguf.py lays one out (architecture keys, the vocabulary, the
// chat template; q/k rows of the llama architecture permuted into llama.cpp's
// interleaved rotary order), with the tensor types chosen as above.
//
// Streaming: every tensor's size follows from its type, so the header goes
// out first and then one tensor at a time is converted to F32, quantized and
// written; memory is the mapped input plus one tensor's buffers.
#include "tools/quantize/gguf_quantize.h"

#include <fcntl.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/escape.h"
#include "common/fp16.h"
#include "common/gguf/gguf_file.h"
#include "common/status_macros.h"
#include "tools/quantize/gguf_block_quantize.h"
#include "tools/quantize/gguf_type_policy.h"
#include "tools/quantize/input_model.h"
#include "worker/model/checkpoint.h"

namespace tessera::quantize {
namespace {

constexpr uint32_t kGgufVersion = 3;
constexpr uint64_t kAlignment = 32;          // GGUF_DEFAULT_ALIGNMENT
constexpr uint32_t kQuantizationVersion = 2;  // GGML_QNT_VERSION

// GGUF metadata, serialized as it is added.
class MetaWriter {
 public:
  void Key(const std::string& key, GgufType type) {
    PutString(key);
    Put<uint32_t>(static_cast<uint32_t>(type));
    ++count_;
  }
  void U32(const std::string& key, uint32_t v) { Key(key, GgufType::kUint32); Put(v); }
  void I32(const std::string& key, int32_t v) { Key(key, GgufType::kInt32); Put(v); }
  void F32(const std::string& key, float v) { Key(key, GgufType::kFloat32); Put(v); }
  void Bool(const std::string& key, bool v) { Key(key, GgufType::kBool); Put<uint8_t>(v ? 1 : 0); }
  void Str(const std::string& key, const std::string& v) { Key(key, GgufType::kString); PutString(v); }
  void StrArray(const std::string& key, const std::vector<std::string>& v) {
    Key(key, GgufType::kArray);
    Put<uint32_t>(static_cast<uint32_t>(GgufType::kString));
    Put<uint64_t>(v.size());
    for (const auto& s : v) PutString(s);
  }
  template <typename T>
  void Array(const std::string& key, GgufType element, const std::vector<T>& v) {
    Key(key, GgufType::kArray);
    Put<uint32_t>(static_cast<uint32_t>(element));
    Put<uint64_t>(v.size());
    for (const T& x : v) Put(x);
  }
  // A value read from a GGUF, in its own type.
  absl::Status Copy(const std::string& key, const GgufValue& v) {
    Key(key, v.type());
    return PutValue(key, v, true);
  }

  void TensorInfo(const std::string& name, const std::array<int64_t, 4>& ne, GgmlType type, uint64_t offset) {
    PutString(name);
    int n_dims = 1;
    for (int i = 3; i >= 1; --i) {
      if (ne[i] > 1) { n_dims = i + 1; break; }
    }
    Put<uint32_t>(static_cast<uint32_t>(n_dims));
    for (int i = 0; i < n_dims; ++i) Put<int64_t>(ne[i]);
    Put<uint32_t>(static_cast<uint32_t>(type));
    Put<uint64_t>(offset);
  }

  uint64_t count() const { return count_; }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  template <typename T>
  void Put(T v) {
    const size_t at = bytes_.size();
    bytes_.resize(at + sizeof(T));
    std::memcpy(bytes_.data() + at, &v, sizeof(T));
  }
  void PutString(const std::string& s) {
    Put<uint64_t>(s.size());
    bytes_.insert(bytes_.end(), s.begin(), s.end());
  }
  absl::Status PutValue(const std::string& key, const GgufValue& v, bool top) {
    switch (v.type()) {
      case GgufType::kUint8: Put<uint8_t>(static_cast<uint8_t>(v.as_unsigned())); break;
      case GgufType::kInt8: Put<int8_t>(static_cast<int8_t>(v.as_signed())); break;
      case GgufType::kUint16: Put<uint16_t>(static_cast<uint16_t>(v.as_unsigned())); break;
      case GgufType::kInt16: Put<int16_t>(static_cast<int16_t>(v.as_signed())); break;
      case GgufType::kUint32: Put<uint32_t>(static_cast<uint32_t>(v.as_unsigned())); break;
      case GgufType::kInt32: Put<int32_t>(static_cast<int32_t>(v.as_signed())); break;
      case GgufType::kUint64: Put<uint64_t>(v.as_unsigned()); break;
      case GgufType::kInt64: Put<int64_t>(v.as_signed()); break;
      case GgufType::kFloat32: Put<float>(static_cast<float>(v.as_double())); break;
      case GgufType::kFloat64: Put<double>(v.as_double()); break;
      case GgufType::kBool: Put<uint8_t>(v.as_bool() ? 1 : 0); break;
      case GgufType::kString: PutString(v.as_string()); break;
      case GgufType::kArray: {
        const GgufArray& a = v.as_array();
        if (!top || a.element_type == GgufType::kArray) {
          return absl::InvalidArgumentError(
              absl::StrCat("metadata key '", EscapeForMessage(key), "' is a nested array, which llama.cpp cannot copy"));
        }
        Put<uint32_t>(static_cast<uint32_t>(a.element_type));
        Put<uint64_t>(a.items.size());
        for (const GgufValue& item : a.items) TESSERA_RETURN_IF_ERROR(PutValue(key, item, false));
        break;
      }
    }
    return absl::OkStatus();
  }

  std::vector<uint8_t> bytes_;
  uint64_t count_ = 0;
};

// One output tensor and where its data comes from.
struct OutTensor {
  TensorDesc desc;          // name, type as the type policy sees it, GGUF dims (ne[0] = row length)
  GgmlType src_type = GgmlType::kF32;  // the bytes at `data`
  const uint8_t* data = nullptr;
  size_t row_bytes = 0;     // input bytes between rows
  // Output row r is input row row_map[r] (q/k permutation); empty: identity.
  std::vector<int64_t> row_map;
  GgmlType out_type = GgmlType::kF32;
  size_t out_bytes = 0;
};

int64_t Rows(const TensorDesc& d) { return d.ne[1] * d.ne[2] * d.ne[3]; }

bool IsDense(GgmlType t) { return t == GgmlType::kF32 || t == GgmlType::kF16 || t == GgmlType::kBF16; }

// The output file: written sequentially, errors carry errno's text.
class OutFile {
 public:
  ~OutFile() { if (f_) std::fclose(f_); }
  absl::Status Open(const std::string& path) {
    // O_EXCL: the staging path is ours alone; never write through a file or
    // link someone put there.
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return Error("cannot create", path);
    f_ = ::fdopen(fd, "wb");
    if (f_ == nullptr) {
      ::close(fd);
      return Error("cannot open", path);
    }
    path_ = path;
    return absl::OkStatus();
  }
  absl::Status Write(const void* p, size_t n) {
    if (n != 0 && std::fwrite(p, 1, n, f_) != n) return Error("cannot write", path_);
    written_ += n;
    return absl::OkStatus();
  }
  absl::Status Pad() {
    static constexpr uint8_t kZeros[kAlignment] = {};
    return Write(kZeros, (kAlignment - written_ % kAlignment) % kAlignment);
  }
  absl::Status Close() {
    const bool ok = std::fflush(f_) == 0 && ::fsync(::fileno(f_)) == 0;
    const bool closed = std::fclose(f_) == 0;
    f_ = nullptr;
    if (!ok || !closed) return Error("cannot finish writing", path_);
    return absl::OkStatus();
  }
  uint64_t written() const { return written_; }

 private:
  static absl::Status Error(const char* what, const std::string& path) {
    return absl::InternalError(absl::StrCat(what, " '", EscapeForMessage(path, 256), "': ", std::strerror(errno)));
  }
  std::FILE* f_ = nullptr;
  std::string path_;
  uint64_t written_ = 0;
};

// Row r of a dense input as F32 (exact for F16 and BF16): in place for an
// F32 row, else converted into `buf`.
const float* RowF32(const OutTensor& t, int64_t r, float* buf) {
  const int64_t n = t.desc.ne[0];
  const int64_t src_row = t.row_map.empty() ? r : t.row_map[r];
  const uint8_t* src = t.data + static_cast<size_t>(src_row) * t.row_bytes;
  switch (t.src_type) {
    case GgmlType::kF32:
      if (reinterpret_cast<uintptr_t>(src) % alignof(float) == 0) return reinterpret_cast<const float*>(src);
      std::memcpy(buf, src, static_cast<size_t>(n) * 4);
      break;
    case GgmlType::kF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        buf[i] = Fp16ToFp32(h);
      }
      break;
    default:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        buf[i] = Bf16ToFp32(h);
      }
      break;
  }
  return buf;
}

absl::Status NonFinite(const OutTensor& t, int64_t row) {
  return absl::InvalidArgumentError(absl::StrCat("tensor '", EscapeForMessage(t.desc.name),
                                                 "' has a NaN or infinite value in row ", row,
                                                 "; it cannot be quantized"));
}

// Plans types and offsets, writes the header and then every tensor.
absl::Status WriteGguf(std::vector<OutTensor>& tensors, MetaWriter& meta, const GgufFileType& ft,
                       const ModelFacts& facts, const QuantizeOptions& options, Progress& progress,
                       const std::string& staging_path) {
  // llama.cpp's loader order, then its per-tensor types.
  std::vector<TensorDesc> descs;
  for (const OutTensor& t : tensors) descs.push_back(t.desc);
  std::vector<OutTensor> ordered;
  std::vector<TensorDesc> ordered_descs;
  for (size_t i : LlamaTensorOrder(descs)) {
    ordered_descs.push_back(descs[i]);
    ordered.push_back(std::move(tensors[i]));
  }
  tensors = std::move(ordered);
  const TypePlan plan = PlanTensorTypes(ft, facts, ordered_descs);

  // Header, tensor infos and offsets; every check before the file exists.
  MetaWriter infos;
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    OutTensor& t = tensors[i];
    t.out_type = plan.types[i];
    const std::string name = EscapeForMessage(t.desc.name);
    if (t.out_type != t.src_type) {
      if (!IsDense(t.src_type)) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' is ", std::string(TypeName(t.src_type)),
                                                       "; requantizing a quantized tensor is refused (as llama.cpp does)"));
      }
      if (!CanQuantizeTo(t.out_type)) {
        return absl::UnimplementedError(absl::StrCat("tensor '", name, "' would be ", std::string(TypeName(t.out_type)),
                                                     ", which tessera-quantize cannot produce"));
      }
    }
    const size_t row = GgufRowBytes(t.out_type, t.desc.ne[0]);
    if (row == 0) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has rows of ", t.desc.ne[0],
                                                     " elements, not whole ", std::string(TypeName(t.out_type)), " blocks"));
    }
    t.out_bytes = row * static_cast<size_t>(Rows(t.desc));
    infos.TensorInfo(t.desc.name, t.desc.ne, t.out_type, offset);
    offset += (t.out_bytes + kAlignment - 1) / kAlignment * kAlignment;
  }

  OutFile out;
  TESSERA_RETURN_IF_ERROR(out.Open(staging_path));
  std::vector<uint8_t> header(24);
  const uint64_t n_tensors = tensors.size(), n_kv = meta.count();
  std::memcpy(header.data(), "GGUF", 4);
  std::memcpy(header.data() + 4, &kGgufVersion, 4);
  std::memcpy(header.data() + 8, &n_tensors, 8);
  std::memcpy(header.data() + 16, &n_kv, 8);
  TESSERA_RETURN_IF_ERROR(out.Write(header.data(), header.size()));
  TESSERA_RETURN_IF_ERROR(out.Write(meta.bytes().data(), meta.bytes().size()));
  TESSERA_RETURN_IF_ERROR(out.Write(infos.bytes().data(), infos.bytes().size()));
  TESSERA_RETURN_IF_ERROR(out.Pad());

  const int threads = options.threads > 0 ? options.threads : omp_get_max_threads();
  std::vector<uint8_t> q;
  uint64_t in_bytes = 0;
  const auto start = std::chrono::steady_clock::now();
  progress.Begin(absl::StrCat("gguf:", ft.name), static_cast<int64_t>(tensors.size()));
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (progress.cancelled()) return absl::CancelledError("interrupted");
    OutTensor& t = tensors[i];
    const int64_t rows = Rows(t.desc);
    in_bytes += t.row_bytes * static_cast<size_t>(rows);
    if (t.out_type == t.src_type) {
      // Same type: the bytes as they are (rows reordered if permuted).
      const size_t row = t.out_bytes / static_cast<size_t>(rows);
      if (t.row_map.empty() && t.row_bytes == row) {
        TESSERA_RETURN_IF_ERROR(out.Write(t.data, t.out_bytes));
      } else {
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t src = t.row_map.empty() ? r : t.row_map[r];
          TESSERA_RETURN_IF_ERROR(out.Write(t.data + static_cast<size_t>(src) * t.row_bytes, row));
        }
      }
    } else {
      // One parallel pass per tensor: each row is converted to F32 (in place
      // for F32), checked and quantized by one thread; rows are independent,
      // so the bytes do not depend on the thread count.
      const int64_t n = t.desc.ne[0];
      const size_t out_row = t.out_bytes / static_cast<size_t>(rows);
      q.resize(t.out_bytes);
      int64_t bad_row = rows;
#pragma omp parallel num_threads(threads)
      {
        std::vector<float> buf(static_cast<size_t>(n));
#pragma omp for schedule(static) reduction(min : bad_row)
        for (int64_t r = 0; r < rows; ++r) {
          const float* x = RowF32(t, r, buf.data());
          bool finite = true;
          for (int64_t k = 0; k < n; ++k) finite &= std::isfinite(x[k]);
          if (!finite) {
            bad_row = std::min(bad_row, r);
            continue;
          }
          QuantizeRow(t.out_type, x, n, q.data() + static_cast<size_t>(r) * out_row);
        }
      }
      if (bad_row < rows) return NonFinite(t, bad_row);
      TESSERA_RETURN_IF_ERROR(out.Write(q.data(), q.size()));
    }
    TESSERA_RETURN_IF_ERROR(out.Pad());
    progress.Advance(absl::StrFormat("%s %s -> %s", t.desc.name, TypeName(t.src_type), TypeName(t.out_type)));
  }
  TESSERA_RETURN_IF_ERROR(out.Close());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  progress.Log(absl::StrFormat("gguf:%s: %d tensors, %.2f MiB -> %.2f MiB in %.2f s%s", ft.name, tensors.size(),
                               in_bytes / 1048576.0, out.written() / 1048576.0, secs,
                               plan.n_fallback > 0 ? absl::StrFormat(" (%d fell back: rows not whole blocks of "
                                                                     "their mix's type)", plan.n_fallback)
                                                   : std::string()));
  return absl::OkStatus();
}

absl::Status FromGguf(const GgufFileType& ft, const QuantizeOptions& options, Progress& progress,
                      const std::string& staging_path) {
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file, GgufFile::Open(options.input));
  MetaWriter meta;
  for (const std::string& key : file->key_order()) {
    if (key == "general.quantization_version" || key == "general.file_type" || key == "split.no" ||
        key == "split.count" || key == "split.tensors.count") {
      continue;
    }
    TESSERA_RETURN_IF_ERROR(meta.Copy(key, *file->Find(key)));
  }
  meta.U32("general.quantization_version", kQuantizationVersion);
  meta.U32("general.file_type", ft.ftype);

  ModelFacts facts;
  TESSERA_ASSIGN_OR_RETURN(facts.arch, file->GetString("general.architecture"));
  auto count = [&](const std::string& key) -> int {
    auto v = file->GetUint(facts.arch + key);
    return v.ok() && *v < (1u << 30) ? static_cast<int>(*v) : 0;
  };
  facts.n_layer = count(".block_count");
  facts.n_head = count(".attention.head_count");
  facts.n_head_kv = file->Find(facts.arch + ".attention.head_count_kv") ? count(".attention.head_count_kv") : facts.n_head;

  std::vector<OutTensor> tensors;
  for (const GgufTensor& g : file->tensors()) {
    OutTensor t;
    t.desc.name = g.name;
    t.desc.type = g.type;
    t.src_type = g.type;
    t.desc.ne = g.ne;
    t.data = g.data;
    t.row_bytes = g.row_bytes();
    tensors.push_back(std::move(t));
  }
  return WriteGguf(tensors, meta, ft, facts, options, progress, staging_path);
}

std::string PreTokenizerName(PreTokenizer p) {
  switch (p) {
    case PreTokenizer::kGpt2: return "gpt-2";
    case PreTokenizer::kSmolLm: return "smollm";
    case PreTokenizer::kLlama3: return "llama-bpe";
    case PreTokenizer::kQwen2: return "qwen2";
  }
  return "default";
}

absl::Status FromHf(Checkpoint& ck, const GgufFileType& ft, const QuantizeOptions& options, Progress& progress,
                    const std::string& staging_path) {
  const LlamaConfig& c = ck.config();
  const TokenizerSpec& tok = ck.tokenizer_spec();
  // llama.cpp's converter writes Mistral checkpoints as the llama architecture.
  const std::string arch = c.architecture == "qwen2" ? "qwen2" : "llama";
  if (tok.model != TokenizerSpec::Model::kByteLevelBpe && tok.model != TokenizerSpec::Model::kSpm) {
    return absl::UnimplementedError(
        "this checkpoint's tokenizer is a SentencePiece-style BPE from tokenizer.json; writing it as a llama.cpp "
        "vocabulary is not supported yet (byte-level BPE and SentencePiece vocabularies are)");
  }

  MetaWriter meta;
  meta.Str("general.architecture", arch);
  meta.Str("general.type", "model");
  if (!c.name.empty()) meta.Str("general.name", c.name);
  meta.U32(arch + ".block_count", static_cast<uint32_t>(c.n_layers));
  meta.U32(arch + ".context_length", static_cast<uint32_t>(c.n_ctx_train));
  meta.U32(arch + ".embedding_length", static_cast<uint32_t>(c.n_embd));
  meta.U32(arch + ".feed_forward_length", static_cast<uint32_t>(c.n_ff));
  meta.U32(arch + ".attention.head_count", static_cast<uint32_t>(c.n_heads));
  meta.U32(arch + ".attention.head_count_kv", static_cast<uint32_t>(c.n_kv_heads));
  meta.F32(arch + ".rope.freq_base", c.rope_freq_base);
  meta.F32(arch + ".attention.layer_norm_rms_epsilon", c.rms_eps);
  if (c.head_dim * c.n_heads != c.n_embd) {
    meta.U32(arch + ".attention.key_length", static_cast<uint32_t>(c.head_dim));
    meta.U32(arch + ".attention.value_length", static_cast<uint32_t>(c.head_dim));
  }
  meta.U32("general.file_type", ft.ftype);
  meta.U32(arch + ".vocab_size", static_cast<uint32_t>(c.n_vocab));
  meta.U32(arch + ".rope.dimension_count", static_cast<uint32_t>(c.rope_dims));
  if (c.rope_freq_scale != 1.f) {
    meta.Str(arch + ".rope.scaling.type", "linear");
    meta.F32(arch + ".rope.scaling.factor", 1.f / c.rope_freq_scale);
  }
  meta.U32("general.quantization_version", kQuantizationVersion);

  // The vocabulary, padded to the embedding's rows as the converter pads it.
  std::vector<std::string> tokens = tok.tokens;
  std::vector<int32_t> types;
  for (TokenType t : tok.types) types.push_back(static_cast<int32_t>(t));
  types.resize(tokens.size(), static_cast<int32_t>(TokenType::kNormal));
  for (int64_t i = static_cast<int64_t>(tokens.size()); i < c.n_vocab; ++i) {
    tokens.push_back(absl::StrCat("[PAD", i, "]"));
    types.push_back(static_cast<int32_t>(TokenType::kUnused));
  }
  if (static_cast<int64_t>(tokens.size()) != c.n_vocab) {
    return absl::InvalidArgumentError(absl::StrCat("the tokenizer has ", tokens.size(), " tokens but the embedding only ",
                                                   c.n_vocab, " rows"));
  }
  const bool spm = tok.model == TokenizerSpec::Model::kSpm;
  meta.Str("tokenizer.ggml.model", spm ? "llama" : "gpt2");
  meta.Str("tokenizer.ggml.pre", spm ? "default" : PreTokenizerName(tok.pre));
  meta.StrArray("tokenizer.ggml.tokens", tokens);
  if (spm) {
    std::vector<float> scores = tok.scores;
    scores.resize(tokens.size(), -1000.f);
    meta.Array("tokenizer.ggml.scores", GgufType::kFloat32, scores);
  }
  meta.Array("tokenizer.ggml.token_type", GgufType::kInt32, types);
  if (!spm) {
    std::vector<std::string> merges;
    merges.reserve(tok.merges.size());
    for (const auto& [a, b] : tok.merges) merges.push_back(absl::StrCat(a, " ", b));
    meta.StrArray("tokenizer.ggml.merges", merges);
  }
  if (tok.bos >= 0) meta.U32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(tok.bos));
  if (tok.eos >= 0) meta.U32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(tok.eos));
  if (tok.unk >= 0) meta.U32("tokenizer.ggml.unknown_token_id", static_cast<uint32_t>(tok.unk));
  meta.Bool("tokenizer.ggml.add_bos_token", tok.bos >= 0 && tok.prefix_ids == std::vector<int32_t>{tok.bos});
  meta.Bool("tokenizer.ggml.add_eos_token", tok.eos >= 0 && tok.suffix_ids == std::vector<int32_t>{tok.eos});
  if (ck.chat_template()) meta.Str("tokenizer.chat_template", *ck.chat_template());

  ModelFacts facts{arch, c.n_layers, c.n_heads, c.n_kv_heads};
  std::vector<OutTensor> tensors;
  auto add = [&](WeightRole role, int layer, const std::string& name, bool required) -> absl::Status {
    auto w = ck.Weight(role, layer);
    if (!w.ok()) {
      if (!required && absl::IsNotFound(w.status())) return absl::OkStatus();
      return w.status();
    }
    if (!IsDense(w->type) || w->col_offset != 0 || w->input_perm != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(name, " is not a dense weight"));
    }
    OutTensor t;
    t.desc.name = name;
    // A vector (norm, bias) is stored as F32, as the converter stores it.
    t.src_type = w->type;
    t.desc.type = w->rows == 1 ? GgmlType::kF32 : w->type;
    t.desc.ne = {w->cols, w->rows, 1, 1};
    t.data = w->data;
    t.row_bytes = w->row_bytes;
    // llama.cpp's llama architecture rotates adjacent pairs: HF row
    // h*hd + s*(hd/2) + i becomes row h*hd + 2*i + s (convert_hf_to_gguf's
    // permute), for the weights and biases of q and k.
    const bool permute = arch == "llama" && !c.qk_rows_interleaved &&
                         (role == WeightRole::kQ || role == WeightRole::kK);
    if (permute) {
      const int64_t hd = c.head_dim;
      if (hd % 2 != 0 || w->rows % hd != 0) {
        return absl::InvalidArgumentError(absl::StrCat(name, " has ", w->rows, " rows, not whole heads of ", hd));
      }
      t.row_map.resize(static_cast<size_t>(w->rows));
      for (int64_t h = 0; h < w->rows / hd; ++h) {
        for (int64_t s = 0; s < 2; ++s) {
          for (int64_t i = 0; i < hd / 2; ++i) t.row_map[h * hd + 2 * i + s] = h * hd + s * (hd / 2) + i;
        }
      }
    }
    tensors.push_back(std::move(t));
    return absl::OkStatus();
  };
  TESSERA_RETURN_IF_ERROR(add(WeightRole::kTokenEmbd, 0, "token_embd.weight", true));
  TESSERA_RETURN_IF_ERROR(add(WeightRole::kOutputNorm, 0, "output_norm.weight", true));
  TESSERA_RETURN_IF_ERROR(add(WeightRole::kOutput, 0, "output.weight", false));
  TESSERA_RETURN_IF_ERROR(add(WeightRole::kRopeFreqs, 0, "rope_freqs.weight", false));
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = absl::StrCat("blk.", l, ".");
    TESSERA_RETURN_IF_ERROR(add(WeightRole::kAttnNorm, l, p + "attn_norm.weight", true));
    TESSERA_RETURN_IF_ERROR(add(WeightRole::kQ, l, p + "attn_q.weight", true));
    TESSERA_RETURN_IF_ERROR(add(WeightRole::kK, l, p + "attn_k.weight", true));
    TESSERA_RETURN_IF_ERROR(add(WeightRole::kV, l, p + "attn_v.weight", true));
    TESSERA_RETURN_IF_ERROR(add(WeightRole::kQBias, l, p + "attn_q.bias", false));
    TESSERA_RETURN_IF_ERROR(add(WeightRole::kKBias, l, p + "attn_k.bias", false));
    TESSERA_RETURN_IF_ERROR(add(WeightRole::kVBias, l, p + "attn_v.bias", false));
    TESSERA_RETURN_IF_ERROR(add(WeightRole::kO, l, p + "attn_output.weight", true));
    TESSERA_RETURN_IF_ERROR(add(WeightRole::kFfnNorm, l, p + "ffn_norm.weight", true));
    TESSERA_RETURN_IF_ERROR(add(WeightRole::kGate, l, p + "ffn_gate.weight", true));
    TESSERA_RETURN_IF_ERROR(add(WeightRole::kUp, l, p + "ffn_up.weight", true));
    TESSERA_RETURN_IF_ERROR(add(WeightRole::kDown, l, p + "ffn_down.weight", true));
  }
  return WriteGguf(tensors, meta, ft, facts, options, progress, staging_path);
}

}  // namespace

absl::Status QuantizeToGguf(const QuantizeOptions& options, Progress& progress, const std::string& staging_path) {
  // The type first: an unknown one is refused before anything is read.
  TESSERA_ASSIGN_OR_RETURN(const GgufFileType ft, ParseGgufFileType(options.gguf_type));
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ck, OpenDenseInput(options.input));
  if (ck->info().format == "gguf") return FromGguf(ft, options, progress, staging_path);
  return FromHf(*ck, ft, options, progress, staging_path);
}

}  // namespace tessera::quantize
