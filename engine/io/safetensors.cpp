#include "engine/io/safetensors.h"

#include "engine/io/checked_read.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <utility>

namespace coco::safetensors {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

constexpr DType kSupportedDtypes[] = {DType::f32, DType::f64, DType::bf16, DType::f16,
                                      DType::i32, DType::i64, DType::u8};

// Types the format defines that this engine does not load; named separately in errors so that a
// valid-but-unsupported file is not reported as corrupt.
constexpr std::string_view kOtherFormatDtypes[] = {"BOOL",    "F4",      "F6_E2M3", "F6_E3M2",     "I8",
                                                   "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ",
                                                   "I16",     "U16",     "U32",     "C64",         "U64"};

// Position in the reference `enum Dtype` (safetensors/src/tensor.rs); its writer sorts by it,
// descending, so larger elements come first and every tensor stays aligned to its element size.
int reference_dtype_rank(DType t) {
  switch (t) {
    case DType::u8:
      return 0;
    case DType::f16:
      return 1;
    case DType::bf16:
      return 2;
    case DType::i32:
      return 3;
    case DType::f32:
      return 4;
    case DType::f64:
      return 5;
    case DType::i64:
      return 6;
  }
  return -1;
}

std::string shape_string(std::span<const int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// "[begin, end)". Built by appending: GCC 12 warns falsely (-Wrestrict) on `"[" + std::to_string(..)`.
std::string byte_range(uint64_t begin, uint64_t end) {
  std::string s = "[";
  s.append(std::to_string(begin)).append(", ").append(std::to_string(end)).append(")");
  return s;
}

// Byte offset of the first invalid UTF-8 sequence (overlong forms, surrogates and code points above
// U+10FFFF are invalid, as in Rust's str::from_utf8), or nullopt when the text is valid.
std::optional<size_t> first_invalid_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t min_code, code;
    if ((c & 0xE0) == 0xC0)
      len = 2, min_code = 0x80, code = c & 0x1F;
    else if ((c & 0xF0) == 0xE0)
      len = 3, min_code = 0x800, code = c & 0x0F;
    else if ((c & 0xF8) == 0xF0)
      len = 4, min_code = 0x10000, code = c & 0x07;
    else
      return i;
    if (n - i < len) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
      code = (code << 6) | (s[i + k] & 0x3F);
    }
    if (code < min_code || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return i;
    i += len;
  }
  return std::nullopt;
}

std::optional<uint64_t> as_non_negative_integer(const json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
  return std::nullopt;
}

// product(shape) * dtype_size, or nullopt on uint64 overflow.
std::optional<uint64_t> checked_byte_size(std::span<const int64_t> shape, DType dtype) {
  uint64_t elements = 1;
  for (int64_t d : shape) {
    const auto dim = static_cast<uint64_t>(d);
    if (dim != 0 && elements > std::numeric_limits<uint64_t>::max() / dim) return std::nullopt;
    elements *= dim;
  }
  const uint64_t size = dtype_size(dtype);
  if (elements > std::numeric_limits<uint64_t>::max() / size) return std::nullopt;
  return elements * size;
}

class Validator {
 public:
  explicit Validator(const std::string& label) : label_(label) {}

  [[noreturn]] void fail(const std::string& problem) const {
    throw FormatError("safetensors file '" + label_ + "': " + problem);
  }
  [[noreturn]] void fail_tensor(const std::string& name, const std::string& problem) const {
    fail("tensor '" + name + "': " + problem);
  }

  DType parse_dtype(const std::string& name, const json& v) const {
    if (!v.is_string()) fail_tensor(name, "dtype is " + v.dump() + ", expected a string such as \"F32\"");
    const auto& s = v.get_ref<const std::string&>();
    for (DType t : kSupportedDtypes)
      if (s == dtype_safetensors_name(t)) return t;
    for (std::string_view other : kOtherFormatDtypes)
      if (s == other)
        fail_tensor(name, "unsupported dtype '" + s + "' (this engine reads F32, F64, BF16, F16, I32, I64, U8)");
    fail_tensor(name, "unknown dtype '" + s + "'");
  }

  std::vector<int64_t> parse_shape(const std::string& name, const json& v) const {
    if (!v.is_array()) fail_tensor(name, "shape is " + v.dump() + ", expected a list of non-negative integers");
    std::vector<int64_t> shape;
    shape.reserve(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      const auto dim = as_non_negative_integer(v[i]);
      if (!dim || *dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail_tensor(name, "shape[" + std::to_string(i) + "] is " + v[i].dump() + ", expected a non-negative integer");
      shape.push_back(static_cast<int64_t>(*dim));
    }
    return shape;
  }

  std::pair<uint64_t, uint64_t> parse_offsets(const std::string& name, const json& v) const {
    std::optional<uint64_t> begin, end;
    if (v.is_array() && v.size() == 2) begin = as_non_negative_integer(v[0]), end = as_non_negative_integer(v[1]);
    if (!begin || !end)
      fail_tensor(name, "data_offsets is " + v.dump() + ", expected a list of two non-negative integers");
    if (*begin > *end)
      fail_tensor(name, "data_offsets [" + std::to_string(*begin) + ", " + std::to_string(*end) + "] has begin > end");
    return {*begin, *end};
  }

  TensorInfo parse_entry(const std::string& name, const json& entry) const {
    if (!entry.is_object()) fail_tensor(name, "entry is " + entry.dump() + ", expected an object");
    for (const auto& [key, value] : entry.items())
      if (key != "dtype" && key != "shape" && key != "data_offsets")
        fail_tensor(name, "unexpected key '" + key + "' (an entry has exactly dtype, shape, data_offsets)");
    for (const char* key : {"dtype", "shape", "data_offsets"})
      if (!entry.contains(key)) fail_tensor(name, std::string("missing key '") + key + "'");

    TensorInfo info{name, parse_dtype(name, entry["dtype"]), parse_shape(name, entry["shape"]), 0, 0};
    std::tie(info.begin, info.end) = parse_offsets(name, entry["data_offsets"]);
    const auto needed = checked_byte_size(info.shape, info.dtype);
    const std::string described = std::string(dtype_safetensors_name(info.dtype)) + " " + shape_string(info.shape);
    if (!needed) fail_tensor(name, described + ": the byte size overflows 64 bits");
    if (*needed != info.byte_size())
      fail_tensor(name, "data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) + "] hold " +
                            std::to_string(info.byte_size()) + " bytes but " + described + " needs " +
                            std::to_string(*needed));
    return info;
  }

  std::map<std::string, std::string> parse_metadata(const json& v) const {
    if (!v.is_object()) fail("__metadata__ is " + v.dump() + ", expected an object of string values");
    std::map<std::string, std::string> metadata;
    for (const auto& [key, value] : v.items()) {
      if (!value.is_string()) fail("__metadata__ value of '" + key + "' is " + value.dump() + ", expected a string");
      metadata.emplace(key, value.get<std::string>());
    }
    return metadata;
  }

 private:
  const std::string& label_;
};

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Parses `text` as JSON, rejecting duplicate keys at any depth (nlohmann would keep the last one; the
// reference's serde rejects them).
json parse_header_json(std::string_view text, const Validator& validator) {
  std::vector<std::set<std::string>> keys_per_open_object;
  std::optional<std::pair<int, std::string>> duplicate;  // depth, key
  bool too_deep = false;
  json::parser_callback_t track_keys = [&](int depth, json::parse_event_t event, json& parsed) {
    // Deeper values are discarded as they are parsed (the parser itself does not recurse), so nothing
    // recursive ever sees them (io/checked_read.h).
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
        depth >= io::kMaxJsonDepth)
      too_deep = true;
    if (too_deep) return false;
    if (event == json::parse_event_t::object_start)
      keys_per_open_object.emplace_back();
    else if (event == json::parse_event_t::object_end)
      keys_per_open_object.pop_back();
    else if (event == json::parse_event_t::key && !duplicate && !keys_per_open_object.empty() &&
             !keys_per_open_object.back().insert(parsed.get<std::string>()).second)
      duplicate.emplace(depth, parsed.get<std::string>());
    return true;
  };
  json header;
  try {
    header = json::parse(text.begin(), text.end(), track_keys);
  } catch (const json::exception& e) {
    validator.fail(std::string("header is not valid JSON: ") + e.what());
  }
  if (too_deep) validator.fail("header JSON nests deeper than " + std::to_string(io::kMaxJsonDepth) + " levels");
  if (duplicate) {
    if (duplicate->first == 1) validator.fail("duplicate tensor name '" + duplicate->second + "' in the header");
    validator.fail("duplicate key '" + duplicate->second + "' in the header JSON");
  }
  return header;
}

}  // namespace

Reader Reader::from_bytes(std::vector<uint8_t> bytes, std::string label) {
  Reader r;
  r.label_ = std::move(label);
  r.bytes_ = std::move(bytes);
  const Validator v(r.label_);
  const uint64_t size = r.bytes_.size();

  if (size < 8) v.fail("file is " + std::to_string(size) + " bytes, too short for the 8-byte header length");
  const uint64_t header_bytes = read_u64_le(r.bytes_.data());
  if (header_bytes > kMaxHeaderBytes)
    v.fail("header length " + std::to_string(header_bytes) + " exceeds the limit of " +
           std::to_string(kMaxHeaderBytes) + " bytes");
  if (header_bytes > size - 8)
    v.fail("header length " + std::to_string(header_bytes) + " runs past the end of the file (" + std::to_string(size) +
           " bytes)");
  if (header_bytes == 0) v.fail("header is empty, expected a JSON object");
  const std::string_view text(reinterpret_cast<const char*>(r.bytes_.data()) + 8, header_bytes);
  if (text[0] != '{') {
    std::ostringstream byte;
    byte << "0x" << std::hex << static_cast<int>(static_cast<unsigned char>(text[0]));
    v.fail("header starts with byte " + byte.str() + ", expected '{'");
  }
  if (auto bad = first_invalid_utf8(text))
    v.fail("header is not valid UTF-8 (at header byte " + std::to_string(*bad) + ")");

  const json header = parse_header_json(text, v);
  if (!header.is_object()) v.fail("header JSON is not an object");
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__")
      r.metadata_ = v.parse_metadata(value);
    else
      r.tensors_.push_back(v.parse_entry(key, value));
  }

  // The buffer must be tiled exactly: sorted by offsets, each tensor starts where the previous ends.
  std::sort(r.tensors_.begin(), r.tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  uint64_t covered = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : r.tensors_) {
    const std::string range = byte_range(t.begin, t.end);
    if (t.begin > covered)
      v.fail_tensor(
          t.name, "data " + range + " leaves a gap: " +
                      (previous ? "the previous tensor '" + previous->name + "' ends at byte " + std::to_string(covered)
                                : std::string("the first tensor must start at byte 0")));
    if (t.begin < covered)
      v.fail_tensor(t.name, "data " + range + " overlaps tensor '" + previous->name + "' which ends at byte " +
                                std::to_string(covered));
    covered = t.end;
    previous = &t;
  }
  const uint64_t buffer_bytes = size - 8 - header_bytes;
  if (covered < buffer_bytes)
    v.fail("tensors cover " + std::to_string(covered) + " bytes but the data buffer has " +
           std::to_string(buffer_bytes) + " (" + std::to_string(buffer_bytes - covered) +
           " trailing bytes belong to no tensor)");
  if (covered > buffer_bytes)
    v.fail("tensors need " + std::to_string(covered) + " data bytes but only " + std::to_string(buffer_bytes) +
           " follow the header (file truncated?)");

  r.buffer_start_ = 8 + header_bytes;
  for (size_t i = 0; i < r.tensors_.size(); ++i) r.index_by_name_.emplace(r.tensors_[i].name, i);
  return r;
}

Reader Reader::open(const std::string& path) {
  const auto fail = [&](const std::string& problem) -> FormatError {
    return FormatError("safetensors file '" + path + "': " + problem);
  };
  // O_NONBLOCK: a FIFO in place of the file must not block open() (the type check below refuses it).
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw fail(std::string("cannot open: ") + std::strerror(errno));
  std::vector<uint8_t> bytes;
  try {
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw fail(std::string("cannot stat: ") + std::strerror(errno));
    if (!S_ISREG(st.st_mode)) throw fail("not a regular file");
    bytes.resize(static_cast<size_t>(st.st_size));
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t got = ::read(fd, bytes.data() + done, bytes.size() - done);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) throw fail(std::string("read error: ") + std::strerror(errno));
      if (got == 0) throw fail("file shrank while being read");
      done += static_cast<size_t>(got);
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  return from_bytes(std::move(bytes), path);
}

const TensorInfo* Reader::find(std::string_view name) const {
  const auto it = index_by_name_.find(name);
  return it == index_by_name_.end() ? nullptr : &tensors_[it->second];
}

std::span<const uint8_t> Reader::data(const TensorInfo& info) const {
  // Offsets were validated against the buffer; a TensorInfo from another Reader is caught here.
  if (info.end < info.begin || info.end > bytes_.size() - buffer_start_)
    throw std::out_of_range("safetensors file '" + label_ + "': tensor '" + info.name +
                            "' does not belong to this file");
  return std::span<const uint8_t>(bytes_.data() + buffer_start_ + info.begin, info.byte_size());
}

namespace {

struct PreparedFile {
  std::string header;                      // padded JSON, N = header.size()
  std::vector<const TensorData*> ordered;  // data order
};

PreparedFile prepare(std::span<const TensorData> tensors, const std::map<std::string, std::string>& metadata) {
  const auto invalid = [](const std::string& problem) {
    return std::invalid_argument("safetensors writer: " + problem);
  };
  PreparedFile out;
  std::set<std::string_view> names;
  for (const TensorData& t : tensors) {
    if (t.name == "__metadata__") throw invalid("'__metadata__' is reserved and cannot name a tensor");
    if (!names.insert(t.name).second) throw invalid("duplicate tensor name '" + t.name + "'");
    if (first_invalid_utf8(t.name)) throw invalid("tensor name '" + t.name + "' is not valid UTF-8");
    for (int64_t d : t.shape)
      if (d < 0) throw invalid("tensor '" + t.name + "': negative dimension in shape " + shape_string(t.shape));
    const auto needed = checked_byte_size(t.shape, t.dtype);
    if (!needed || *needed != t.bytes.size())
      throw invalid("tensor '" + t.name + "': " + std::to_string(t.bytes.size()) + " bytes given but " +
                    dtype_safetensors_name(t.dtype) + " " + shape_string(t.shape) + " needs " +
                    (needed ? std::to_string(*needed) : std::string("more than 2^64")));
    out.ordered.push_back(&t);
  }
  for (const auto& [key, value] : metadata)
    if (first_invalid_utf8(key) || first_invalid_utf8(value))
      throw invalid("metadata entry '" + key + "' is not valid UTF-8");

  std::sort(out.ordered.begin(), out.ordered.end(), [](const TensorData* a, const TensorData* b) {
    const int ra = reference_dtype_rank(a->dtype), rb = reference_dtype_rank(b->dtype);
    return ra != rb ? ra > rb : a->name < b->name;
  });

  ordered_json header = ordered_json::object();
  ordered_json meta = ordered_json::object();
  if (!metadata.contains("format")) meta["format"] = "pt";
  for (const auto& [key, value] : metadata) meta[key] = value;
  header["__metadata__"] = std::move(meta);
  uint64_t offset = 0;
  for (const TensorData* t : out.ordered) {
    const uint64_t end = offset + t->bytes.size();
    header[t->name] =
        ordered_json{{"dtype", dtype_safetensors_name(t->dtype)}, {"shape", t->shape}, {"data_offsets", {offset, end}}};
    offset = end;
  }
  out.header = header.dump();
  out.header.append((8 - out.header.size() % 8) % 8, ' ');
  if (out.header.size() > kMaxHeaderBytes)
    throw invalid("header of " + std::to_string(out.header.size()) + " bytes exceeds the " +
                  std::to_string(kMaxHeaderBytes) + "-byte limit readers enforce");
  return out;
}

std::array<uint8_t, 8> u64_le(uint64_t v) {
  std::array<uint8_t, 8> b{};
  for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
  return b;
}

}  // namespace

std::vector<uint8_t> serialize(std::span<const TensorData> tensors,
                               const std::map<std::string, std::string>& metadata) {
  const PreparedFile prepared = prepare(tensors, metadata);
  size_t total = 8 + prepared.header.size();
  for (const TensorData* t : prepared.ordered) total += t->bytes.size();
  std::vector<uint8_t> out;
  out.reserve(total);
  const auto length = u64_le(prepared.header.size());
  out.insert(out.end(), length.begin(), length.end());
  out.insert(out.end(), prepared.header.begin(), prepared.header.end());
  for (const TensorData* t : prepared.ordered) out.insert(out.end(), t->bytes.begin(), t->bytes.end());
  return out;
}

namespace {

// Owns a file descriptor; closes it on every path out.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

[[noreturn]] void throw_io(const std::string& path, const std::string& what) {
  throw std::runtime_error("safetensors file '" + path + "': " + what + ": " + std::strerror(errno));
}

void write_all(int fd, const void* data, size_t size, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_io(path, "write failed");
    p += n;
    size -= static_cast<size_t>(n);
  }
}

}  // namespace

void write_file(const std::string& path, std::span<const TensorData> tensors,
                const std::map<std::string, std::string>& metadata) {
  const PreparedFile prepared = prepare(tensors, metadata);
  const std::string partial = path + ".partial";
  try {
    FileDescriptor fd(::open(partial.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (fd.get() < 0) throw_io(partial, "cannot create");
    const auto length = u64_le(prepared.header.size());
    write_all(fd.get(), length.data(), length.size(), partial);
    write_all(fd.get(), prepared.header.data(), prepared.header.size(), partial);
    for (const TensorData* t : prepared.ordered) write_all(fd.get(), t->bytes.data(), t->bytes.size(), partial);
    if (::fsync(fd.get()) != 0) throw_io(partial, "fsync failed");
    if (::close(fd.release()) != 0) throw_io(partial, "close failed");
    if (::rename(partial.c_str(), path.c_str()) != 0) throw_io(path, "cannot rename '" + partial + "' to it");
  } catch (...) {
    ::unlink(partial.c_str());
    throw;
  }
  // Make the rename itself durable.
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  FileDescriptor dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.get() < 0) throw_io(dir, "cannot open directory to fsync it");
  // EINVAL: the filesystem cannot sync directories; nothing more can be done there.
  if (::fsync(dir_fd.get()) != 0 && errno != EINVAL) throw_io(dir, "cannot fsync directory");
}

}  // namespace coco::safetensors
