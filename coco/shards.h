// Token shards: the binary files `coco prepare` writes and training reads.
//
// Layout (all integers little-endian):
//   offset  0  char[8] magic "COCOTOK1"
//           8  u32     version (kShardVersion = 1)
//          12  u32     token_bytes: 2 (uint16 ids, vocab_size <= 65536) or 4 (uint32 ids)
//          16  u64     token_count
//          24  u64     document_count
//          32  u64     vocab_hash: 64-bit FNV-1a of the vocabulary's tokens (coco::text::vocab_hash)
//          40  u32     vocab_size
//          44  u32     reserved, 0
//          48  u64     payload_checksum: XXH64 (seed 0) of every byte after the 64-byte header
//          56  u64     header_checksum: XXH64 (seed 0) of header bytes 0..55
//   64: u64 document_offsets[document_count + 1]: token index where each document starts; the first is 0, the
//       last token_count, non-decreasing (documents are token ranges [offsets[d], offsets[d+1]))
//   then token ids[token_count], token_bytes each
// Documents hold raw WordPiece ids without [CLS]/[SEP]: packing them into sequences is the loader's job.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <utility>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace coco::text {

inline constexpr char kShardMagic[8] = {'C', 'O', 'C', 'O', 'T', 'O', 'K', '1'};
inline constexpr uint32_t kShardVersion = 1;
inline constexpr size_t kShardHeaderBytes = 64;

class ShardError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Writing a shard failed (full disk, I/O error): a runtime failure (exit 1), not bad data.
class ShardWriteError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// XXH64 (the xxHash 64-bit algorithm, seed as given) of `bytes`.
uint64_t xxh64(const void* bytes, size_t length, uint64_t seed = 0);
// XXH64 (seed 0) of the whole regular file `path`, read through a mapping; errors are ShardError naming it.
uint64_t xxh64_file(const std::filesystem::path& path);

// uint16 ids while every id fits, else uint32.
inline uint32_t token_bytes_for_vocab(size_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

struct ShardHeader {
  uint32_t version = kShardVersion;
  uint32_t token_bytes = 2;
  uint64_t token_count = 0;
  uint64_t document_count = 0;
  uint64_t vocab_hash = 0;
  uint32_t vocab_size = 0;
  uint64_t payload_checksum = 0;
  uint64_t header_checksum = 0;
};

// Accumulates documents in memory (bounded by the caller's shard size) and writes the file atomically
// (temporary file + rename) in finish().
class ShardWriter {
 public:
  ShardWriter(std::filesystem::path path, size_t vocab_size, uint64_t vocab_hash);

  // Throws ShardError when an id is >= vocab_size.
  void add_document(std::span<const uint32_t> ids);
  uint64_t token_count() const { return token_count_; }
  uint64_t document_count() const { return offsets_.size() - 1; }
  size_t payload_bytes() const { return tokens_.size() + offsets_.size() * sizeof(uint64_t); }
  // Writes the file; returns its header. The writer is empty afterwards.
  ShardHeader finish();

 private:
  std::filesystem::path path_;
  uint32_t vocab_size_;
  uint64_t vocab_hash_;
  uint32_t token_bytes_;
  uint64_t token_count_ = 0;
  std::vector<uint64_t> offsets_{0};
  std::vector<unsigned char> tokens_;  // little-endian ids
};

// What a reader requires of a shard; unset fields are not checked.
struct ShardExpectation {
  std::optional<uint64_t> vocab_hash;
  std::optional<uint32_t> vocab_size;
  bool verify_payload_checksum = true;
};

// A whole file mapped read-only (POSIX mmap), so that shard bytes live in the page cache, where the kernel can drop
// and re-read them, instead of in anonymous memory. Move-only: exactly one object owns (and unmaps) a mapping.
class MappedFile {
 public:
  MappedFile() = default;
  // Maps `path` entirely; an empty file gives an empty mapping. Errors are ShardError naming the file and the
  // system's reason (errno text).
  static MappedFile open(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const unsigned char* data() const { return data_; }
  // The file's size when it was mapped; no access may go beyond it.
  uint64_t size() const { return size_; }
  // Hints the kernel about the coming access pattern (sequential while validating); a refused hint is ignored.
  void advise_sequential() const;
  void advise_normal() const;

 private:
  void release() noexcept;

  const unsigned char* data_ = nullptr;
  uint64_t size_ = 0;
};

// A validated shard, memory-mapped: its anonymous memory is O(1) whatever its size.
class TokenShard {
 public:
  TokenShard() = default;
  // A moved-from shard is empty (no tokens, no documents) and no longer owns the mapping.
  TokenShard(TokenShard&& other) noexcept;
  TokenShard& operator=(TokenShard&& other) noexcept;
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;

  // Maps and validates `path`: magic, version, header checksum, token width, exact file size, payload checksum,
  // document offsets, vocabulary hash/size against `expect`, and every id < vocab_size. Errors are ShardError
  // naming the file, what was found and what was expected.
  static TokenShard read(const std::filesystem::path& path, const ShardExpectation& expect = {});
  static ShardHeader read_header(const std::filesystem::path& path);

  const ShardHeader& header() const { return header_; }
  uint64_t token_count() const { return header_.token_count; }
  uint64_t document_count() const { return header_.document_count; }
  uint32_t token(uint64_t index) const;
  // Tokens [first, first + count) widened to uint32.
  void copy_tokens(uint64_t first, uint64_t count, uint32_t* out) const;
  std::vector<uint32_t> tokens() const;
  // Token range of document d: [begin, end).
  std::pair<uint64_t, uint64_t> document(uint64_t d) const;
  std::vector<uint32_t> document_tokens(uint64_t d) const;

 private:
  uint32_t token_unchecked(uint64_t index) const;
  uint64_t offset_unchecked(uint64_t d) const;
  const unsigned char* token_data() const { return file_.data() + token_data_offset_; }

  MappedFile file_;
  ShardHeader header_;
  uint64_t token_data_offset_ = 0;  // byte offset of token 0 in the file
};

}  // namespace coco::text
