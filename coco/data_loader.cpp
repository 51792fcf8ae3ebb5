#include "coco/data_loader.h"

#include <algorithm>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "coco/vocab_identity.h"
#include "engine/io/checked_read.h"
#include "engine/rng/philox.h"

namespace coco::data {

namespace fs = std::filesystem;

PreparedMeta PreparedMeta::read(const fs::path& dir) {
  const fs::path path = dir / "meta.json";
  std::error_code error;
  if (!fs::exists(path, error))
    throw DataError(path.string() + ": cannot open the file (is data.dir a directory written by `coco prepare`?)");
  const nlohmann::json j = io::read_json_checked(path);
  PreparedMeta meta;
  meta.dir = dir;
  try {
    if (j.value("format", std::string()) != "cocolm-token-shards")
      throw DataError(path.string() + ": key 'format': expected \"cocolm-token-shards\"");
    meta.vocab_size = j.at("vocab_size").get<uint64_t>();
    meta.vocab_file = j.value("vocab_file", std::string("vocab.txt"));
    if (meta.vocab_file.empty() || meta.vocab_file.find('/') != std::string::npos || meta.vocab_file == "..")
      throw DataError(path.string() + ": key 'vocab_file': \"" + meta.vocab_file + "\" is not a plain file name");
    if (j.contains("vocab_hash")) {
      meta.vocab_hash = parse_vocab_hash(j.at("vocab_hash").get<std::string>(), path.string() + ": key 'vocab_hash'");
    } else {
      // Written before meta.json recorded the hash: the vocabulary file is the identity.
      const VocabIdentity identity = vocab_identity_of_file(dir / meta.vocab_file);
      if (identity.size != meta.vocab_size)
        throw DataError(path.string() + ": vocab_size " + std::to_string(meta.vocab_size) + " but " +
                        (dir / meta.vocab_file).string() + " holds " + std::to_string(identity.size) + " tokens");
      meta.vocab_hash = identity.hash;
    }
    const auto& ids = j.at("special_ids");
    meta.pad_id = ids.at("pad").get<int64_t>();
    meta.unk_id = ids.at("unk").get<int64_t>();
    meta.cls_id = ids.at("cls").get<int64_t>();
    meta.sep_id = ids.at("sep").get<int64_t>();
    meta.mask_id = ids.at("mask").get<int64_t>();
    std::map<std::string, std::string>
        split_of_shard;  // a shard listed twice trains twice, or validates on training data
    for (const char* split : {"train", "valid"}) {
      auto& list = std::string(split) == "train" ? meta.train_shards : meta.valid_shards;
      auto& counts = std::string(split) == "train" ? meta.train_counts : meta.valid_counts;
      if (!j.at("splits").contains(split)) continue;
      const auto& entry = j.at("splits").at(split);
      for (const char* key : {"documents", "tokens"}) {
        if (!entry.contains(key)) continue;
        if (!entry.at(key).is_number_unsigned())
          throw DataError(path.string() + ": key 'splits." + split + "." + key + "': expected a count, got " +
                          entry.at(key).dump());
        (std::string(key) == "tokens" ? counts.tokens : counts.documents) = entry.at(key).get<uint64_t>();
      }
      for (const auto& shard : entry.at("shards")) {
        const std::string file = shard.at("file").get<std::string>();
        if (file.empty() || file.find('/') != std::string::npos || file.find("..") != std::string::npos)
          throw DataError(path.string() + ": shard name \"" + file + "\" is not a plain file name");
        const auto [previous, inserted] = split_of_shard.emplace(file, split);
        if (!inserted)
          throw DataError(path.string() + ": shard \"" + file + "\" is listed twice (in the " + previous->second +
                          " split and the " + split + " split); expected each shard once");
        list.push_back(file);
      }
    }
  } catch (const nlohmann::json::exception& e) {
    throw DataError(path.string() + ": missing or malformed field: " + e.what());
  }
  return meta;
}

const std::vector<std::string>& PreparedMeta::shards(const std::string& split) const {
  if (split == "train") return train_shards;
  if (split == "valid") return valid_shards;
  throw DataError("unknown data split '" + split + "': expected \"train\" or \"valid\"");
}

TokenDataset TokenDataset::open(const PreparedMeta& meta, const std::string& split, uint64_t model_vocab_size) {
  std::vector<fs::path> paths;
  for (const auto& file : meta.shards(split)) paths.push_back(meta.dir / file);
  TokenDataset dataset;
  dataset.vocab_size_ = meta.vocab_size;
  dataset.document_starts_.push_back(0);
  text::ShardExpectation expect;
  expect.vocab_hash = meta.vocab_hash;
  expect.vocab_size = static_cast<uint32_t>(meta.vocab_size);
  dataset.shards_.reserve(paths.size());
  uint64_t shard_documents = 0;
  for (const auto& path : paths) {
    text::TokenShard shard;
    try {
      shard = text::TokenShard::read(path, expect);
    } catch (const text::ShardError& e) {
      throw DataError(e.what());
    }
    // The shard already checked every id < its vocab_size: only a smaller model vocabulary needs a scan.
    if (model_vocab_size > 0 && model_vocab_size < shard.header().vocab_size) {
      std::vector<uint32_t> chunk(uint64_t{1} << 16);
      for (uint64_t first = 0; first < shard.token_count(); first += chunk.size()) {
        const uint64_t count = std::min<uint64_t>(chunk.size(), shard.token_count() - first);
        shard.copy_tokens(first, count, chunk.data());
        for (uint64_t i = 0; i < count; ++i)
          if (chunk[i] >= model_vocab_size)
            throw DataError(
                path.string() + ": token id " + std::to_string(chunk[i]) + " at token " + std::to_string(first + i) +
                " is outside the model's vocabulary (model.vocab_size = " + std::to_string(model_vocab_size) + ")");
      }
    }
    const uint64_t base = dataset.shard_token_starts_.back();
    for (uint64_t d = 0; d < shard.document_count(); ++d) {
      const auto [begin, end] = shard.document(d);
      if (end > begin) dataset.document_starts_.push_back(base + end);
    }
    dataset.shard_token_starts_.push_back(base + shard.token_count());
    shard_documents += shard.document_count();
    dataset.shards_.push_back(std::move(shard));
  }
  const PreparedMeta::SplitCounts& recorded = split == "train" ? meta.train_counts : meta.valid_counts;
  if ((recorded.tokens && *recorded.tokens != dataset.tokens()) ||
      (recorded.documents && *recorded.documents != shard_documents))
    throw DataError((meta.dir / "meta.json").string() + ": the " + split + " split records " +
                    std::to_string(recorded.documents.value_or(shard_documents)) + " documents and " +
                    std::to_string(recorded.tokens.value_or(dataset.tokens())) + " tokens, its shards hold " +
                    std::to_string(shard_documents) + " and " + std::to_string(dataset.tokens()) +
                    " (shards replaced or meta.json edited?)");
  return dataset;
}

uint32_t TokenDataset::token(uint64_t index) const {
  if (index >= tokens())
    throw std::out_of_range("TokenDataset::token: index " + std::to_string(index) + " >= " + std::to_string(tokens()) +
                            " tokens");
  // The shard holding `index`: last s with shard_token_starts_[s] <= index (empty shards are skipped by upper_bound).
  const auto next = std::upper_bound(shard_token_starts_.begin(), shard_token_starts_.end(), index);
  const size_t s = static_cast<size_t>(next - shard_token_starts_.begin()) - 1;
  return shards_[s].token(index - shard_token_starts_[s]);
}

void TokenDataset::copy_tokens(uint64_t first, uint64_t count, uint32_t* out) const {
  if (first > tokens() || count > tokens() - first)
    throw std::out_of_range("TokenDataset::copy_tokens: range [" + std::to_string(first) + ", " +
                            std::to_string(first + count) + ") exceeds " + std::to_string(tokens()) + " tokens");
  if (count == 0) return;
  const auto next = std::upper_bound(shard_token_starts_.begin(), shard_token_starts_.end(), first);
  size_t s = static_cast<size_t>(next - shard_token_starts_.begin()) - 1;
  while (count > 0) {
    const uint64_t within = first - shard_token_starts_[s];
    const uint64_t take = std::min(count, shards_[s].token_count() - within);
    shards_[s].copy_tokens(within, take, out);
    out += take;
    first += take;
    count -= take;
    ++s;
  }
}

TokenDataset TokenDataset::from_shards(const std::vector<fs::path>& shard_paths, uint64_t model_vocab_size) {
  PreparedMeta meta;
  if (!shard_paths.empty()) {
    text::ShardHeader header;
    try {
      header = text::TokenShard::read_header(shard_paths.front());
    } catch (const text::ShardError& e) {
      throw DataError(e.what());
    }
    meta.vocab_size = header.vocab_size;
    meta.vocab_hash = header.vocab_hash;
  }
  // Absolute names: `dir / absolute` is the absolute path itself.
  meta.dir = fs::path("/");
  for (const auto& p : shard_paths) meta.train_shards.push_back(fs::absolute(p).string());
  return open(meta, "train", model_vocab_size);
}

PackedSequences::PackedSequences(std::shared_ptr<const TokenDataset> dataset, PackingLayout layout)
    : dataset_(std::move(dataset)), layout_(layout) {
  if (layout_.seq_len < 2)
    throw DataError("packing: sequence length must be at least 2, got " + std::to_string(layout_.seq_len));
  body_ = static_cast<uint64_t>(layout_.seq_len) - (layout_.cls_id >= 0 ? 1 : 0);
  const uint64_t documents = dataset_->documents();
  const uint64_t separators = layout_.sep_id >= 0 && documents > 0 ? documents - 1 : 0;
  stream_length_ = dataset_->tokens() + separators;
  sequences_ = (stream_length_ + body_ - 1) / body_;
}

void PackedSequences::fill(uint64_t index, int32_t* out) const {
  if (index >= sequences_)
    throw std::out_of_range("PackedSequences::fill: sequence " + std::to_string(index) + " of " +
                            std::to_string(sequences_));
  int32_t* write = out;
  if (layout_.cls_id >= 0) *write++ = layout_.cls_id;
  const bool separated = layout_.sep_id >= 0;
  const auto& starts = dataset_->document_starts();
  // Stream position of document d's first token: starts[d] + d (one [SEP] before every later document).
  auto stream_start = [&](uint64_t d) { return starts[d] + (separated ? d : 0); };
  uint64_t position = index * body_;
  const uint64_t end = std::min(position + body_, stream_length_);
  // The document containing `position` (or whose trailing [SEP] it is): last d with stream_start(d) <= position.
  uint64_t lo = 0, hi = dataset_->documents();  // invariant: stream_start(lo) <= position < stream_start(hi)
  while (hi - lo > 1) {
    const uint64_t mid = (lo + hi) / 2;
    if (stream_start(mid) <= position)
      lo = mid;
    else
      hi = mid;
  }
  uint64_t d = lo;
  while (position < end) {
    const uint64_t doc_begin = stream_start(d);
    const uint64_t doc_tokens = starts[d + 1] - starts[d];
    const uint64_t offset = position - doc_begin;
    if (offset < doc_tokens) {
      const uint64_t take = std::min(doc_tokens - offset, end - position);
      // The bits static_cast<int32_t> gave; writing int32 storage through uint32_t* is allowed aliasing.
      dataset_->copy_tokens(starts[d] + offset, take, reinterpret_cast<uint32_t*>(write));
      write += take;
      position += take;
    } else {  // the [SEP] after document d
      *write++ = layout_.sep_id;
      ++position;
      ++d;
    }
    if (!separated && position - stream_start(d) >= starts[d + 1] - starts[d]) ++d;
  }
  int32_t* row_end = out + layout_.seq_len;
  std::fill(write, row_end, layout_.pad_id);
}

std::vector<uint64_t> epoch_order(uint64_t n, uint64_t seed, uint64_t epoch) {
  std::vector<uint64_t> order(n);
  for (uint64_t i = 0; i < n; ++i) order[i] = i;
  if (n > UINT32_MAX) throw DataError("epoch_order: more than 2^32 sequences are not supported");
  const rng::Stream stream(seed, epoch, rng::Purpose::data_shuffle);
  for (uint64_t i = n; i > 1; --i) {
    const uint64_t j = stream.below(static_cast<uint32_t>(i), i - 1);
    std::swap(order[i - 1], order[j]);
  }
  return order;
}

Batch make_batch(const PackedSequences& sequences, const LoaderOptions& options, uint64_t cursor,
                 std::vector<uint64_t>* order_cache, uint64_t* order_epoch) {
  const uint64_t n = sequences.size();
  if (n == 0) throw DataError("the data split has no tokens: nothing to train on");
  const int64_t seq_len = sequences.layout().seq_len;
  Batch batch;
  batch.rows = options.micro_batch;
  batch.seq_len = seq_len;
  batch.cursor_before = cursor;
  batch.cursor_after = cursor + static_cast<uint64_t>(options.world_size * options.micro_batch);
  batch.tokens.resize(static_cast<size_t>(batch.rows * seq_len));
  std::vector<uint64_t> local_order;
  uint64_t local_epoch = UINT64_MAX;
  if (!order_cache) {
    order_cache = &local_order;
    order_epoch = &local_epoch;
  }
  for (int64_t row = 0; row < batch.rows; ++row) {
    const uint64_t global = cursor + static_cast<uint64_t>(options.rank * options.micro_batch + row);
    const uint64_t epoch = global / n, within = global % n;
    if (row == 0) batch.epoch = epoch;
    uint64_t index = within;
    if (options.shuffle) {
      if (*order_epoch != epoch) {
        *order_cache = epoch_order(n, options.seed, epoch);
        *order_epoch = epoch;
      }
      index = (*order_cache)[within];
    }
    int32_t* out = batch.tokens.data() + row * seq_len;
    sequences.fill(index, out);
    for (int64_t t = 0; t < seq_len; ++t) batch.non_pad_tokens += out[t] != sequences.layout().pad_id;
  }
  return batch;
}

DataLoader::DataLoader(std::shared_ptr<const PackedSequences> sequences, LoaderOptions options)
    : sequences_(std::move(sequences)), options_(options), cursor_(options.start_cursor) {
  if (options_.micro_batch < 1) throw DataError("data loader: micro_batch must be >= 1");
  if (options_.world_size < 1 || options_.rank < 0 || options_.rank >= options_.world_size)
    throw DataError("data loader: rank " + std::to_string(options_.rank) +
                    " is not in [0, world_size = " + std::to_string(options_.world_size) + ")");
  if (sequences_->size() == 0) throw DataError("the data split has no tokens: nothing to train on");
  if (options_.prefetch > 0) thread_ = std::thread([this] { run(); });
}

DataLoader::~DataLoader() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void DataLoader::run() {
  uint64_t cursor = cursor_;
  try {
    while (true) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        changed_.wait(lock, [&] { return stop_ || static_cast<int64_t>(ready_.size()) < options_.prefetch; });
        if (stop_) return;
      }
      Batch batch = make_batch(*sequences_, options_, cursor, &order_, &order_epoch_);
      cursor = batch.cursor_after;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        ready_.push_back(std::move(batch));
      }
      changed_.notify_all();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    error_ = std::current_exception();
    changed_.notify_all();
  }
}

Batch DataLoader::next() {
  Batch batch;
  if (!thread_.joinable()) {
    batch = make_batch(*sequences_, options_, cursor_, &order_, &order_epoch_);
  } else {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return !ready_.empty() || error_; });
    if (ready_.empty()) std::rethrow_exception(error_);
    batch = std::move(ready_.front());
    ready_.pop_front();
    lock.unlock();
    changed_.notify_all();
  }
  cursor_ = batch.cursor_after;
  return batch;
}

}  // namespace coco::data
