// safetensors files (https://github.com/huggingface/safetensors): reading with full validation and
// writing byte-identical to the reference Rust writer. This layer knows bytes, dtypes and shapes only;
// the engine's Tensor converts to and from it.
//
// File layout:
//   [0, 8)        N, uint64 little-endian: length of the JSON header
//   [8, 8+N)      UTF-8 JSON object, padded with trailing spaces to a multiple of 8 bytes
//   [8+N, EOF)    the byte buffer: every tensor's raw little-endian, row-major bytes, back to back
// Header: {"__metadata__":{"format":"pt",...}, "NAME":{"dtype":"F32","shape":[2,3],"data_offsets":[B,E]}, ...}
// with [B, E) relative to the start of the byte buffer.
#pragma once
#include <cstdint>
#include <map>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "engine/dtype.h"

namespace coco::safetensors {

// A malformed, truncated or unreadable file. The message always names the file (or the label given to
// Reader::from_bytes) and what is wrong with it.
class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The reference reader's limit on N (MAX_HEADER_SIZE in safetensors/src/tensor.rs).
inline constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;  // [] is a scalar (one element); a 0 anywhere makes an empty tensor
  uint64_t begin, end;         // byte range within the byte buffer (not the file)

  uint64_t byte_size() const { return end - begin; }
};

// A whole safetensors file held in memory and validated on construction: after open()/from_bytes()
// returns, every TensorInfo describes a byte range that lies inside the buffer and matches its dtype and
// shape exactly.
class Reader {
 public:
  // Throws FormatError when the file cannot be read or is not a valid safetensors file.
  static Reader open(const std::string& path);
  // `label` stands in for the file name in error messages.
  static Reader from_bytes(std::vector<uint8_t> bytes, std::string label);

  // Sorted by data offset (file order), whatever order the header lists them in.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // nullptr when the file has no tensor of that name.
  const TensorInfo* find(std::string_view name) const;
  // The tensor's raw bytes (little-endian, row-major). Alignment is only guaranteed for files whose
  // writer sorted by dtype size (this one and the reference do), so copy rather than reinterpret.
  std::span<const uint8_t> data(const TensorInfo& info) const;
  // The "__metadata__" map; empty when the file has none.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& label() const { return label_; }

 private:
  Reader() = default;

  std::string label_;
  std::vector<uint8_t> bytes_;  // the whole file
  uint64_t buffer_start_ = 0;   // 8 + N
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_by_name_;
  std::map<std::string, std::string> metadata_;
};

// One tensor to write. `bytes` must hold exactly product(shape) * dtype_size(dtype) bytes.
struct TensorData {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::span<const uint8_t> bytes;
};

// The complete file contents, laid out like the reference writer: tensors sorted by dtype alignment
// (I64, F64, F32, I32, BF16, F16, U8) then by name, compact JSON with "__metadata__" first, header padded
// with spaces to a multiple of 8. "format":"pt" is added to the metadata unless it has a "format" key.
// Throws std::invalid_argument on inconsistent input (byte count, duplicate or reserved name, bad UTF-8).
std::vector<uint8_t> serialize(std::span<const TensorData> tensors, const std::map<std::string, std::string>& metadata);

// Writes the same bytes as serialize() to `path` without building them in memory: first to
// "<path>.partial", fsync'd, then renamed over `path` (and the directory fsync'd), so a crash leaves
// either the old file or the complete new one. Throws std::invalid_argument like serialize() and
// std::runtime_error (naming the path) on I/O failure.
void write_file(const std::string& path, std::span<const TensorData> tensors,
                const std::map<std::string, std::string>& metadata);

}  // namespace coco::safetensors
