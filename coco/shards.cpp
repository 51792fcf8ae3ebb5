#include "coco/shards.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <utility>

namespace coco::text {

namespace {

constexpr uint64_t kPrime1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kPrime2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kPrime3 = 0x165667B19E3779F9ull;
constexpr uint64_t kPrime4 = 0x85EBCA77C2B2AE63ull;
constexpr uint64_t kPrime5 = 0x27D4EB2F165667C5ull;

uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

uint64_t load64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

uint32_t load32(const unsigned char* p) {
  return p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

void store64(unsigned char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
void store32(unsigned char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}

uint64_t xxh_round(uint64_t acc, uint64_t input) {
  acc += input * kPrime2;
  acc = rotl(acc, 31);
  return acc * kPrime1;
}

uint64_t xxh_merge(uint64_t acc, uint64_t value) {
  acc ^= xxh_round(0, value);
  return acc * kPrime1 + kPrime4;
}

// Streaming XXH64, so that the payload checksum needs no second copy of the data.
class Xxh64 {
 public:
  explicit Xxh64(uint64_t seed = 0)
      : v1_(seed + kPrime1 + kPrime2), v2_(seed + kPrime2), v3_(seed), v4_(seed - kPrime1), seed_(seed) {}

  void update(const void* data, size_t length) {
    if (length == 0) return;  // data may be null then (an empty vector)
    const auto* p = static_cast<const unsigned char*>(data);
    total_ += length;
    if (buffered_ + length < 32) {
      std::memcpy(buffer_ + buffered_, p, length);
      buffered_ += length;
      return;
    }
    if (buffered_) {
      const size_t fill = 32 - buffered_;
      std::memcpy(buffer_ + buffered_, p, fill);
      consume(buffer_);
      p += fill;
      length -= fill;
      buffered_ = 0;
    }
    while (length >= 32) {
      consume(p);
      p += 32;
      length -= 32;
    }
    std::memcpy(buffer_, p, length);
    buffered_ = length;
  }

  uint64_t digest() const {
    uint64_t h;
    if (total_ >= 32) {
      h = rotl(v1_, 1) + rotl(v2_, 7) + rotl(v3_, 12) + rotl(v4_, 18);
      h = xxh_merge(h, v1_);
      h = xxh_merge(h, v2_);
      h = xxh_merge(h, v3_);
      h = xxh_merge(h, v4_);
    } else {
      h = seed_ + kPrime5;
    }
    h += total_;
    const unsigned char* p = buffer_;
    size_t length = buffered_;
    while (length >= 8) {
      h ^= xxh_round(0, load64(p));
      h = rotl(h, 27) * kPrime1 + kPrime4;
      p += 8;
      length -= 8;
    }
    if (length >= 4) {
      h ^= static_cast<uint64_t>(load32(p)) * kPrime1;
      h = rotl(h, 23) * kPrime2 + kPrime3;
      p += 4;
      length -= 4;
    }
    while (length > 0) {
      h ^= (*p) * kPrime5;
      h = rotl(h, 11) * kPrime1;
      ++p;
      --length;
    }
    h ^= h >> 33;
    h *= kPrime2;
    h ^= h >> 29;
    h *= kPrime3;
    h ^= h >> 32;
    return h;
  }

 private:
  void consume(const unsigned char* p) {
    v1_ = xxh_round(v1_, load64(p));
    v2_ = xxh_round(v2_, load64(p + 8));
    v3_ = xxh_round(v3_, load64(p + 16));
    v4_ = xxh_round(v4_, load64(p + 24));
  }
  uint64_t v1_, v2_, v3_, v4_, seed_;
  uint64_t total_ = 0;
  unsigned char buffer_[32] = {};
  size_t buffered_ = 0;
};

void encode_header(const ShardHeader& h, unsigned char* out) {
  std::memset(out, 0, kShardHeaderBytes);
  std::memcpy(out, kShardMagic, 8);
  store32(out + 8, h.version);
  store32(out + 12, h.token_bytes);
  store64(out + 16, h.token_count);
  store64(out + 24, h.document_count);
  store64(out + 32, h.vocab_hash);
  store32(out + 40, h.vocab_size);
  store64(out + 48, h.payload_checksum);
  store64(out + 56, xxh64(out, 56));
}

std::string hex64(uint64_t v) {
  char text[19];
  std::snprintf(text, sizeof text, "0x%016llx", static_cast<unsigned long long>(v));
  return text;
}

std::string printable(const unsigned char* bytes, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = bytes[i];
    if (c >= 32 && c < 127) {
      out += static_cast<char>(c);
    } else {
      char esc[5];
      std::snprintf(esc, sizeof esc, "\\x%02X", c);
      out += esc;
    }
  }
  return out;
}

}  // namespace

uint64_t xxh64(const void* bytes, size_t length, uint64_t seed) {
  Xxh64 state(seed);
  state.update(bytes, length);
  return state.digest();
}

// ---------------------------------------------------------------------------------------------------
// Writer

ShardWriter::ShardWriter(std::filesystem::path path, size_t vocab_size, uint64_t vocab_hash)
    : path_(std::move(path)),
      vocab_size_(static_cast<uint32_t>(vocab_size)),
      vocab_hash_(vocab_hash),
      token_bytes_(token_bytes_for_vocab(vocab_size)) {
  if (vocab_size == 0 || vocab_size > 0xFFFFFFFFull) {
    throw ShardError(path_.string() + ": vocab_size " + std::to_string(vocab_size) + " must be in 1..2^32-1");
  }
}

void ShardWriter::add_document(std::span<const uint32_t> ids) {
  const size_t old_size = tokens_.size();
  tokens_.resize(old_size + ids.size() * token_bytes_);
  unsigned char* out = tokens_.data() + old_size;
  for (uint32_t id : ids) {
    if (id >= vocab_size_) {
      tokens_.resize(old_size);
      throw ShardError(path_.string() + ": token id " + std::to_string(id) + " is not below the vocab_size " +
                       std::to_string(vocab_size_));
    }
    if (token_bytes_ == 2) {
      out[0] = static_cast<unsigned char>(id);
      out[1] = static_cast<unsigned char>(id >> 8);
      out += 2;
    } else {
      store32(out, id);
      out += 4;
    }
  }
  token_count_ += ids.size();
  offsets_.push_back(token_count_);
}

ShardHeader ShardWriter::finish() {
  std::vector<unsigned char> offsets_bytes(offsets_.size() * 8);
  for (size_t i = 0; i < offsets_.size(); ++i) store64(offsets_bytes.data() + 8 * i, offsets_[i]);
  Xxh64 payload;
  payload.update(offsets_bytes.data(), offsets_bytes.size());
  payload.update(tokens_.data(), tokens_.size());

  ShardHeader header;
  header.token_bytes = token_bytes_;
  header.token_count = token_count_;
  header.document_count = offsets_.size() - 1;
  header.vocab_hash = vocab_hash_;
  header.vocab_size = vocab_size_;
  header.payload_checksum = payload.digest();
  unsigned char header_bytes[kShardHeaderBytes];
  encode_header(header, header_bytes);
  header.header_checksum = load64(header_bytes + 56);

  std::filesystem::path temp = path_;
  temp += ".tmp";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    if (!out) throw ShardWriteError(temp.string() + ": cannot create shard file: " + std::strerror(errno));
    out.write(reinterpret_cast<const char*>(header_bytes), kShardHeaderBytes);
    out.write(reinterpret_cast<const char*>(offsets_bytes.data()), static_cast<std::streamsize>(offsets_bytes.size()));
    out.write(reinterpret_cast<const char*>(tokens_.data()), static_cast<std::streamsize>(tokens_.size()));
    out.close();
    if (!out) {
      std::error_code ignored;
      std::filesystem::remove(temp, ignored);
      throw ShardWriteError(temp.string() + ": write error (disk full?)");
    }
  }
  std::error_code error;
  std::filesystem::rename(temp, path_, error);
  if (error) throw ShardWriteError(path_.string() + ": cannot move shard into place: " + error.message());
  tokens_.clear();
  offsets_.assign(1, 0);
  token_count_ = 0;
  return header;
}

// ---------------------------------------------------------------------------------------------------
// Reader

namespace {

ShardHeader parse_header(const std::string& name, const unsigned char* bytes, uint64_t file_size) {
  auto fail = [&](const std::string& what) { return ShardError(name + ": " + what); };
  if (file_size < kShardHeaderBytes) {
    throw fail("truncated: " + std::to_string(file_size) + " bytes, expected at least the " +
               std::to_string(kShardHeaderBytes) + "-byte shard header");
  }
  if (std::memcmp(bytes, kShardMagic, 8) != 0) {
    throw fail("bad magic '" + printable(bytes, 8) + "', expected 'COCOTOK1' (not a cocolm token shard)");
  }
  ShardHeader h;
  h.version = load32(bytes + 8);
  if (h.version != kShardVersion) {
    throw fail("unsupported shard version " + std::to_string(h.version) + ", expected " +
               std::to_string(kShardVersion));
  }
  h.header_checksum = load64(bytes + 56);
  const uint64_t computed = xxh64(bytes, 56);
  if (computed != h.header_checksum) {
    throw fail("header checksum mismatch: stored " + hex64(h.header_checksum) + ", computed " + hex64(computed) +
               " (corrupted header)");
  }
  h.token_bytes = load32(bytes + 12);
  h.token_count = load64(bytes + 16);
  h.document_count = load64(bytes + 24);
  h.vocab_hash = load64(bytes + 32);
  h.vocab_size = load32(bytes + 40);
  h.payload_checksum = load64(bytes + 48);
  if (h.token_bytes != 2 && h.token_bytes != 4) {
    throw fail("token width " + std::to_string(h.token_bytes) + " bytes, expected 2 or 4");
  }
  if (h.token_bytes != token_bytes_for_vocab(h.vocab_size)) {
    throw fail("token width " + std::to_string(h.token_bytes) + " bytes does not match vocab_size " +
               std::to_string(h.vocab_size) + ", expected " + std::to_string(token_bytes_for_vocab(h.vocab_size)));
  }
  // Counts come from the file: bound them before computing sizes so nothing overflows.
  const uint64_t max_count = (1ull << 50);
  if (h.token_count > max_count || h.document_count > max_count) throw fail("implausible token or document count");
  const uint64_t expected = kShardHeaderBytes + (h.document_count + 1) * 8 + h.token_count * h.token_bytes;
  if (file_size != expected) {
    throw fail(std::string(file_size < expected ? "truncated" : "trailing bytes") + ": file has " +
               std::to_string(file_size) + " bytes, expected " + std::to_string(expected) + " for " +
               std::to_string(h.document_count) + " documents and " + std::to_string(h.token_count) + " tokens");
  }
  return h;
}

}  // namespace

ShardHeader TokenShard::read_header(const std::filesystem::path& path) {
  // The mapping refuses non-regular files (a FIFO would block an ifstream forever).
  const MappedFile file = MappedFile::open(path);
  unsigned char bytes[kShardHeaderBytes] = {};
  std::memcpy(bytes, file.data(), std::min<uint64_t>(file.size(), kShardHeaderBytes));
  return parse_header(path.string(), bytes, file.size());
}

// ---------------------------------------------------------------------------------------------------
// Mapping

MappedFile MappedFile::open(const std::filesystem::path& path) {
  const std::string name = path.string();
  auto system_error = [&](const std::string& what) {
    return ShardError(name + ": " + what + ": " + std::strerror(errno));
  };
  // O_NONBLOCK: a FIFO in place of a shard must not block open() (the type check below refuses it).
  const int fd = ::open(name.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw system_error("cannot open token shard");
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    const ShardError error = system_error("cannot stat token shard");
    ::close(fd);
    throw error;
  }
  if (!S_ISREG(info.st_mode)) {
    ::close(fd);
    throw ShardError(name + ": cannot open token shard: not a regular file");
  }
  MappedFile file;
  file.size_ = static_cast<uint64_t>(info.st_size);
  if (file.size_ > 0) {
    void* address = ::mmap(nullptr, file.size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (address == MAP_FAILED) {
      const ShardError error = system_error("cannot memory-map token shard (" + std::to_string(file.size_) + " bytes)");
      ::close(fd);
      throw error;
    }
    file.data_ = static_cast<const unsigned char*>(address);
  }
  // The mapping keeps the file alive; holding no descriptor lets a split have more shards than the fd limit.
  ::close(fd);
  return file;
}

MappedFile::~MappedFile() { release(); }

uint64_t xxh64_file(const std::filesystem::path& path) {
  const MappedFile file = MappedFile::open(path);
  file.advise_sequential();
  return xxh64(file.data(), file.size());
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void MappedFile::release() noexcept {
  if (data_) ::munmap(const_cast<unsigned char*>(data_), size_);
  data_ = nullptr;
  size_ = 0;
}

void MappedFile::advise_sequential() const {
  if (data_) ::madvise(const_cast<unsigned char*>(data_), size_, MADV_SEQUENTIAL);
}

void MappedFile::advise_normal() const {
  if (data_) ::madvise(const_cast<unsigned char*>(data_), size_, MADV_NORMAL);
}

// ---------------------------------------------------------------------------------------------------
// Mapped shard

TokenShard::TokenShard(TokenShard&& other) noexcept
    : file_(std::move(other.file_)),
      header_(std::exchange(other.header_, ShardHeader{})),
      token_data_offset_(std::exchange(other.token_data_offset_, 0)) {}

TokenShard& TokenShard::operator=(TokenShard&& other) noexcept {
  if (this != &other) {
    file_ = std::move(other.file_);
    header_ = std::exchange(other.header_, ShardHeader{});
    token_data_offset_ = std::exchange(other.token_data_offset_, 0);
  }
  return *this;
}

TokenShard TokenShard::read(const std::filesystem::path& path, const ShardExpectation& expect) {
  const std::string name = path.string();
  TokenShard shard;
  shard.file_ = MappedFile::open(path);
  const unsigned char* bytes = shard.file_.data();
  const uint64_t size = shard.file_.size();
  // parse_header checks the size before reading the header bytes, and that the size is exactly what the header
  // describes: every read below stays inside the mapping.
  const ShardHeader h = parse_header(name, bytes, size);
  auto fail = [&](const std::string& what) { return ShardError(name + ": " + what); };

  if (expect.vocab_hash && *expect.vocab_hash != h.vocab_hash) {
    throw fail("vocabulary hash " + hex64(h.vocab_hash) + " differs from the expected " + hex64(*expect.vocab_hash) +
               " (tokenized with another vocabulary)");
  }
  if (expect.vocab_size && *expect.vocab_size != h.vocab_size) {
    throw fail("vocab_size " + std::to_string(h.vocab_size) + ", expected " + std::to_string(*expect.vocab_size));
  }

  shard.file_.advise_sequential();
  const unsigned char* offsets_bytes = bytes + kShardHeaderBytes;
  if (expect.verify_payload_checksum) {
    const uint64_t computed = xxh64(offsets_bytes, size - kShardHeaderBytes);
    if (computed != h.payload_checksum) {
      throw fail("payload checksum mismatch: stored " + hex64(h.payload_checksum) + ", computed " + hex64(computed) +
                 " (corrupted document table or tokens)");
    }
  }
  uint64_t previous = 0;
  for (uint64_t d = 0; d <= h.document_count; ++d) {
    const uint64_t offset = load64(offsets_bytes + 8 * d);
    if ((d == 0 && offset != 0) || (d > 0 && offset < previous)) {
      throw fail("document offset " + std::to_string(d) + " is " + std::to_string(offset) +
                 ", expected offsets that start at 0 and never decrease");
    }
    previous = offset;
  }
  if (previous != h.token_count) {
    throw fail("last document offset " + std::to_string(previous) + ", expected the token count " +
               std::to_string(h.token_count));
  }
  shard.header_ = h;
  shard.token_data_offset_ = kShardHeaderBytes + (h.document_count + 1) * 8;
  for (uint64_t i = 0; i < h.token_count; ++i) {
    const uint32_t id = shard.token_unchecked(i);
    if (id >= h.vocab_size) {
      throw fail("token " + std::to_string(i) + " has id " + std::to_string(id) + ", expected ids below vocab_size " +
                 std::to_string(h.vocab_size));
    }
  }
  // Training reads sequences in a shuffled order: drop the validation pass's read-ahead-and-discard hint.
  shard.file_.advise_normal();
  return shard;
}

uint32_t TokenShard::token(uint64_t index) const {
  if (index >= header_.token_count) {
    throw std::out_of_range("TokenShard::token: index " + std::to_string(index) +
                            " >= " + std::to_string(header_.token_count) + " tokens");
  }
  return token_unchecked(index);
}

uint32_t TokenShard::token_unchecked(uint64_t index) const {
  const unsigned char* p = token_data() + index * header_.token_bytes;
  return header_.token_bytes == 2 ? static_cast<uint32_t>(p[0] | (p[1] << 8)) : load32(p);
}

uint64_t TokenShard::offset_unchecked(uint64_t d) const { return load64(file_.data() + kShardHeaderBytes + 8 * d); }

std::pair<uint64_t, uint64_t> TokenShard::document(uint64_t d) const {
  if (d >= header_.document_count) {
    throw std::out_of_range("TokenShard::document: document " + std::to_string(d) +
                            " >= " + std::to_string(header_.document_count) + " documents");
  }
  return {offset_unchecked(d), offset_unchecked(d + 1)};
}

void TokenShard::copy_tokens(uint64_t first, uint64_t count, uint32_t* out) const {
  if (first > header_.token_count || count > header_.token_count - first) {
    throw std::out_of_range("TokenShard::copy_tokens: range [" + std::to_string(first) + ", " +
                            std::to_string(first + count) + ") exceeds " + std::to_string(header_.token_count) +
                            " tokens");
  }
  if (count == 0) return;
  const unsigned char* p = token_data() + first * header_.token_bytes;
  if (header_.token_bytes == 2) {
    for (uint64_t i = 0; i < count; ++i) out[i] = static_cast<uint32_t>(p[2 * i] | (p[2 * i + 1] << 8));
  } else if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(out, p, count * sizeof(uint32_t));
  } else {
    for (uint64_t i = 0; i < count; ++i) out[i] = load32(p + 4 * i);
  }
}

std::vector<uint32_t> TokenShard::tokens() const {
  std::vector<uint32_t> out(header_.token_count);
  copy_tokens(0, header_.token_count, out.data());
  return out;
}

std::vector<uint32_t> TokenShard::document_tokens(uint64_t d) const {
  const auto [begin, end] = document(d);
  std::vector<uint32_t> out(end - begin);
  copy_tokens(begin, end - begin, out.data());
  return out;
}

}  // namespace coco::text
