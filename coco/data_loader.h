// Training data: the token shards of a `coco prepare` directory packed into fixed-length sequences,
// served in a seeded order by a background thread.
//
// Packing: the documents of a split, in shard order, form one token stream with [SEP] between documents
// (when a sep id is given). Sequence i is the stream's tokens [i*L, (i+1)*L) with L = T - 1 behind a
// [CLS] (layout with cls_id >= 0, the paper preset) or L = T (cls_id < 0: the lucidrains preset, whose
// objective prepends [CLS] itself). Only the last sequence of the split can be short; it is
// right-padded with pad_id.
//
// Order: a global sequence counter (the `cursor`) walks epochs; epoch e visits the N sequences in a
// permutation drawn from Philox(seed, step = e, purpose data_shuffle) (identity when shuffle is off).
// A micro-batch consumes world_size * B consecutive positions of that order; rank r takes rows
// [r*B, (r+1)*B). The cursor is the whole data position: a loader started at a checkpoint's cursor
// yields exactly the batches an uninterrupted run would have seen.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <optional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "coco/shards.h"

namespace coco::data {

// A problem with the prepared data or its agreement with the config (exit code 2 in the CLI).
class DataError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// meta.json of a prepared directory.
struct PreparedMeta {
  std::filesystem::path dir;
  uint64_t vocab_size = 0;
  uint64_t vocab_hash = 0;  // coco/vocab_identity.h; computed from the vocabulary file when meta.json predates it
  std::string vocab_file;   // the vocabulary's file name in `dir` (vocab.txt or tokenizer.json)
  int64_t pad_id = -1, unk_id = -1, cls_id = -1, sep_id = -1, mask_id = -1;
  std::vector<std::string> train_shards, valid_shards;
  // The counts meta.json records per split (absent in hand-written ones); TokenDataset::open checks the
  // shards hold exactly these.
  struct SplitCounts {
    std::optional<uint64_t> documents, tokens;
  };
  SplitCounts train_counts, valid_counts;

  static PreparedMeta read(const std::filesystem::path& dir);
  const std::vector<std::string>& shards(const std::string& split) const;
};

// One split of a prepared directory, validated (checksums, vocabulary hash and size, ids < vocab size).
// The shards stay memory-mapped: the tokens live in the page cache, and the dataset's own memory is
// O(shards + documents) (the document table), not O(tokens).
class TokenDataset {
 public:
  // `model_vocab_size` > 0 additionally requires every id to be below it (DataError otherwise).
  static TokenDataset open(const PreparedMeta& meta, const std::string& split, uint64_t model_vocab_size = 0);
  // From shard files directly (tests); every shard must carry the same vocabulary.
  static TokenDataset from_shards(const std::vector<std::filesystem::path>& shard_paths, uint64_t model_vocab_size = 0);

  uint64_t documents() const { return document_starts_.empty() ? 0 : document_starts_.size() - 1; }
  uint64_t tokens() const { return shard_token_starts_.back(); }
  uint64_t vocab_size() const { return vocab_size_; }

  // Token `index` of the split's concatenated token stream (every shard's tokens in order).
  uint32_t token(uint64_t index) const;
  // Tokens [first, first + count) of that stream, across shard boundaries; std::out_of_range past the end.
  void copy_tokens(uint64_t first, uint64_t count, uint32_t* out) const;
  // Non-empty document d is the token range [starts[d], starts[d+1]) of the stream.
  const std::vector<uint64_t>& document_starts() const { return document_starts_; }

 private:
  std::vector<text::TokenShard> shards_;
  std::vector<uint64_t> shard_token_starts_{0};  // (shards + 1): stream index of each shard's first token
  std::vector<uint64_t> document_starts_;
  uint64_t vocab_size_ = 0;
};

struct PackingLayout {
  int64_t seq_len = 0;  // T
  int32_t cls_id = -1;  // < 0: no [CLS] written by the loader
  int32_t sep_id = -1;  // < 0: documents follow each other directly
  int32_t pad_id = 0;
};

// The packed view of a dataset: random access to sequence i.
class PackedSequences {
 public:
  PackedSequences(std::shared_ptr<const TokenDataset> dataset, PackingLayout layout);

  uint64_t size() const { return sequences_; }
  const PackingLayout& layout() const { return layout_; }
  // Writes sequence i (T ids) to `out`.
  void fill(uint64_t index, int32_t* out) const;

 private:
  std::shared_ptr<const TokenDataset> dataset_;
  PackingLayout layout_;
  uint64_t body_ = 0;  // stream tokens per sequence (T or T - 1)
  uint64_t stream_length_ = 0;
  uint64_t sequences_ = 0;
};

struct Batch {
  std::vector<int32_t> tokens;  // (rows, T) row-major
  int64_t rows = 0;
  int64_t seq_len = 0;
  uint64_t cursor_before = 0;  // data position of this batch
  uint64_t cursor_after = 0;   // data position of the next batch
  uint64_t epoch = 0;
  int64_t non_pad_tokens = 0;
};

struct LoaderOptions {
  int64_t micro_batch = 1;
  uint64_t seed = 0;
  bool shuffle = true;
  int64_t rank = 0;
  int64_t world_size = 1;
  uint64_t start_cursor = 0;
  int64_t prefetch = 4;  // 0: no thread, batches are built on demand
};

// Epoch permutation of n sequences (Fisher-Yates driven by Philox(seed, epoch, data_shuffle)).
std::vector<uint64_t> epoch_order(uint64_t n, uint64_t seed, uint64_t epoch);

// Builds the micro-batch at `cursor` (pure function of its arguments).
Batch make_batch(const PackedSequences& sequences, const LoaderOptions& options, uint64_t cursor,
                 std::vector<uint64_t>* order_cache = nullptr, uint64_t* order_epoch = nullptr);

// Background prefetching loader over an endless (epoch-wrapping) stream of micro-batches.
class DataLoader {
 public:
  DataLoader(std::shared_ptr<const PackedSequences> sequences, LoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // The next micro-batch (blocks until the thread has built it); rethrows a loader-thread error.
  Batch next();
  // Data position of the batch next() returns next.
  uint64_t cursor() const { return cursor_; }

 private:
  void run();

  std::shared_ptr<const PackedSequences> sequences_;
  LoaderOptions options_;
  uint64_t cursor_;
  std::vector<uint64_t> order_;
  uint64_t order_epoch_ = UINT64_MAX;

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Batch> ready_;
  std::exception_ptr error_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace coco::data
