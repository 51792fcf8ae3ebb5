#include "coco/prepare.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "coco/interop/tokenizer_files.h"
#include "coco/shards.h"
#include "coco/utf8.h"
#include "engine/config.h"
#include "engine/io/checked_read.h"

namespace coco::text {

namespace fs = std::filesystem;

namespace {

constexpr int kMetaFormatVersion = 1;
constexpr const char* kBlankLineRule =
    "a document is a run of non-blank lines joined with '\\n'; blank lines (empty or only space, tab, \\r, \\f, "
    "\\v) and file ends separate documents; documents are cut at a line end once their text reaches "
    "max_document_bytes; documents without tokens are dropped";
constexpr const char* kLineRule =
    "every non-blank line is a document; blank lines (empty or only space, tab, \\r, \\f, \\v) are skipped; a line "
    "whose text reaches max_document_bytes is cut at its last space or tab before the limit; documents without "
    "tokens are dropped";

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

bool is_blank_line(std::string_view line) {
  return std::all_of(line.begin(), line.end(),
                     [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; });
}

std::string path_string(const fs::path& path) { return path.generic_string(); }

// ---------------------------------------------------------------------------------------------------
// Reading: files -> documents -> batches

struct Batch {
  uint64_t sequence = 0;
  std::string text;                   // documents back to back
  std::vector<size_t> text_ends;      // end offset of each document in `text`
  std::vector<uint64_t> doc_indices;  // global document index of each document
  uint64_t input_bytes = 0;           // input bytes up to the end of this batch's last document (for progress)
  // Tokenizing results.
  std::vector<uint32_t> ids;
  std::vector<size_t> id_ends;

  size_t documents() const { return text_ends.size(); }
  std::string_view document(size_t i) const {
    const size_t begin = i == 0 ? 0 : text_ends[i - 1];
    return std::string_view(text).substr(begin, text_ends[i] - begin);
  }
};

// Splits the input files into documents (the rule in prepare.h) and hands out batches of about batch_bytes.
class DocumentReader {
 public:
  DocumentReader(const std::vector<fs::path>& files, const PrepareOptions& options,
                 std::function<void(std::unique_ptr<Batch>)> emit)
      : files_(files), options_(options), emit_(std::move(emit)) {}

  void run() {
    for (const auto& file : files_) read_file(file);
    // Input after the last document (blank lines, dropped text) still counts: an empty batch carries it.
    if (!batch_ && position_ > emitted_position_) batch_ = std::make_unique<Batch>();
    flush_batch();
  }
  uint64_t documents() const { return next_doc_index_; }

 private:
  void read_file(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw std::runtime_error(path_string(file) + ": cannot open input file");
    name_ = path_string(file);
    file_base_ = consumed_bytes_;
    std::string buffer;  // unprocessed bytes, starting at file offset buffer_offset
    uint64_t buffer_offset = 0;
    std::vector<char> chunk(std::max<size_t>(options_.read_bytes, 4096));
    for (;;) {
      in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
      const size_t got = static_cast<size_t>(in.gcount());
      if (got == 0) break;
      buffer.append(chunk.data(), got);
      consumed_bytes_ += got;
      process_lines(buffer, buffer_offset, /*at_end=*/false);
    }
    if (in.bad()) throw std::runtime_error(name_ + ": read error");
    process_lines(buffer, buffer_offset, /*at_end=*/true);
    position_ = consumed_bytes_;
    end_document();
  }

  void process_lines(std::string& buffer, uint64_t& buffer_offset, bool at_end) {
    size_t pos = 0;
    for (;;) {
      const size_t newline = buffer.find('\n', pos);
      if (newline == std::string::npos) {
        const size_t rest = buffer.size() - pos;
        if (at_end && rest > 0) {
          take_line(std::string_view(buffer).substr(pos), buffer_offset + pos);
          pos = buffer.size();
        } else if (rest >= options_.max_document_bytes) {
          // One line longer than a document may be: cut it at its last space or tab before the limit.
          const std::string_view window = std::string_view(buffer).substr(pos, options_.max_document_bytes);
          size_t cut = window.find_last_of(" \t");
          if (cut == std::string_view::npos || cut == 0) {
            cut = window.size();
            while (cut > 1 && (static_cast<unsigned char>(window[cut]) & 0xC0) == 0x80) --cut;
          }
          take_line(window.substr(0, cut), buffer_offset + pos);
          end_document();
          pos += cut;
          continue;
        }
        break;
      }
      take_line(std::string_view(buffer).substr(pos, newline - pos), buffer_offset + pos);
      pos = newline + 1;
    }
    buffer.erase(0, pos);
    buffer_offset += pos;
  }

  void take_line(std::string_view line, uint64_t file_offset) {
    validate_utf8(line, name_, file_offset);
    position_ = file_base_ + file_offset + line.size();
    if (is_blank_line(line)) {
      end_document();
      return;
    }
    if (!document_.empty()) document_ += '\n';
    document_ += line;
    if (options_.document_boundary == DocumentBoundary::line || document_.size() >= options_.max_document_bytes)
      end_document();
  }

  void end_document() {
    if (document_.empty()) return;
    if (!batch_) batch_ = std::make_unique<Batch>();
    batch_->text += document_;
    batch_->text_ends.push_back(batch_->text.size());
    batch_->doc_indices.push_back(next_doc_index_++);
    document_.clear();
    if (batch_->text.size() >= options_.batch_bytes) flush_batch();
  }

  void flush_batch() {
    if (!batch_) return;
    batch_->sequence = next_sequence_++;
    batch_->input_bytes = emitted_position_ = position_;
    emit_(std::move(batch_));
    batch_.reset();
  }

  const std::vector<fs::path>& files_;
  const PrepareOptions& options_;
  std::function<void(std::unique_ptr<Batch>)> emit_;
  std::string name_;
  std::string document_;
  std::unique_ptr<Batch> batch_;
  uint64_t next_doc_index_ = 0;
  uint64_t next_sequence_ = 0;
  uint64_t consumed_bytes_ = 0;  // bytes read from the input files so far (reading runs ahead of the documents)
  uint64_t file_base_ = 0;       // consumed_bytes_ when the current file was opened
  uint64_t position_ = 0;        // input bytes up to the end of the last line taken: what progress reports
  uint64_t emitted_position_ = 0;
};

// ---------------------------------------------------------------------------------------------------
// Parallel stage: workers process batches in any order; the calling thread consumes them in reading order, which
// makes the output independent of the thread count. At most max_in_flight batches exist at once.

class OrderedPipeline {
 public:
  using Work = std::function<void(Batch&, size_t worker)>;
  using Consume = std::function<void(Batch&)>;

  OrderedPipeline(size_t threads, Work work, Consume consume) : work_(std::move(work)), consume_(std::move(consume)) {
    // Thread creation fails under a process or memory limit (ulimit -u / -v): carry on with the threads that
    // started (the output does not depend on their number), and fail clearly when none did. At that point
    // the limit is nearly exhausted (the stacks took the address space), so half of the started threads
    // are retired again to leave room for the batches.
    for (size_t t = 0; t < threads; ++t) {
      try {
        workers_.emplace_back([this, t] { worker_loop(t); });
      } catch (const std::system_error& e) {
        if (workers_.empty())
          throw std::runtime_error(std::string("prepare: cannot start a tokenizer thread: ") + e.what());
        const size_t started = workers_.size(), keep = std::max<size_t>(1, started / 2);
        {
          std::lock_guard lock(mutex_);
          active_workers_ = keep;
        }
        work_ready_.notify_all();
        for (size_t w = keep; w < started; ++w) workers_[w].join();
        workers_.resize(keep);
        std::fprintf(stderr, "warning: prepare: started %zu of %zu tokenizer threads (%s); continuing with %zu\n",
                     started, threads, e.what(), keep);
        break;
      }
    }
    max_in_flight_ = 2 * workers_.size() + 2;
  }
  ~OrderedPipeline() {
    {
      std::lock_guard lock(mutex_);
      std::queue<std::unique_ptr<Batch>>().swap(pending_);  // unwinding: drop work nobody will consume
    }
    stop();
  }

  void submit(std::unique_ptr<Batch> batch) {
    {
      std::unique_lock lock(mutex_);
      rethrow_if_failed(lock);
      pending_.push(std::move(batch));
      ++in_flight_;
    }
    work_ready_.notify_one();
    while (in_flight_count() >= max_in_flight_) consume_next();
  }

  void finish() {
    while (in_flight_count() > 0) consume_next();
    stop();
    std::unique_lock lock(mutex_);
    rethrow_if_failed(lock);
  }

 private:
  size_t in_flight_count() {
    std::lock_guard lock(mutex_);
    return in_flight_;
  }

  void consume_next() {
    std::unique_ptr<Batch> batch;
    {
      std::unique_lock lock(mutex_);
      done_ready_.wait(lock, [&] { return error_ || done_.count(next_to_consume_); });
      rethrow_if_failed(lock);
      auto it = done_.find(next_to_consume_);
      batch = std::move(it->second);
      done_.erase(it);
      ++next_to_consume_;
      --in_flight_;
    }
    consume_(*batch);
  }

  void rethrow_if_failed(std::unique_lock<std::mutex>&) {
    if (error_) std::rethrow_exception(error_);
  }

  void worker_loop(size_t worker) {
    for (;;) {
      std::unique_ptr<Batch> batch;
      {
        std::unique_lock lock(mutex_);
        work_ready_.wait(lock, [&] { return stopping_ || worker >= active_workers_ || !pending_.empty(); });
        if (worker >= active_workers_ || (stopping_ && pending_.empty())) return;
        batch = std::move(pending_.front());
        pending_.pop();
      }
      try {
        work_(*batch, worker);
      } catch (...) {
        std::lock_guard lock(mutex_);
        if (!error_) error_ = std::current_exception();
        stopping_ = true;
        done_ready_.notify_all();
        work_ready_.notify_all();
        return;
      }
      {
        std::lock_guard lock(mutex_);
        done_.emplace(batch->sequence, std::move(batch));
      }
      done_ready_.notify_all();
    }
  }

  void stop() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    work_ready_.notify_all();
    for (auto& worker : workers_) {
      if (worker.joinable()) worker.join();
    }
  }

  Work work_;
  Consume consume_;
  size_t max_in_flight_ = 0;
  size_t active_workers_ = SIZE_MAX;  // workers with a higher index leave their loop (retired after a failure)
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable work_ready_, done_ready_;
  std::queue<std::unique_ptr<Batch>> pending_;
  std::map<uint64_t, std::unique_ptr<Batch>> done_;
  uint64_t next_to_consume_ = 0;
  size_t in_flight_ = 0;
  bool stopping_ = false;
  std::exception_ptr error_;
};

// Reads every file through the pipeline. A reader error (e.g. invalid UTF-8) stops the workers before it
// propagates.
void run_pass(const std::vector<fs::path>& files, const PrepareOptions& options, size_t threads,
              OrderedPipeline::Work work, OrderedPipeline::Consume consume) {
  OrderedPipeline pipeline(threads, std::move(work), std::move(consume));
  DocumentReader reader(files, options, [&](std::unique_ptr<Batch> batch) { pipeline.submit(std::move(batch)); });
  reader.run();
  pipeline.finish();
}

// ---------------------------------------------------------------------------------------------------
// Fingerprint and meta.json

// Nanoseconds since the Unix epoch. std::filesystem's clock has an epoch of its own (libstdc++: 2174-01-01), so
// its raw count is not Unix time; file_clock::to_sys converts to the system clock, whose epoch is Unix time.
int64_t unix_time_ns(fs::file_time_type time) {
  const auto system_time = std::chrono::file_clock::to_sys(time);
  return std::chrono::duration_cast<std::chrono::nanoseconds>(system_time.time_since_epoch()).count();
}

nlohmann::json file_fingerprint(const fs::path& path) {
  std::error_code error;
  const auto size = fs::file_size(path, error);
  if (error) throw std::runtime_error(path_string(path) + ": cannot stat: " + error.message());
  const auto mtime = fs::last_write_time(path, error);
  if (error) throw std::runtime_error(path_string(path) + ": cannot read modification time: " + error.message());
  return {
      {"path", path_string(fs::absolute(path).lexically_normal())}, {"size", size}, {"mtime_ns", unix_time_ns(mtime)}};
}

nlohmann::json options_fingerprint(const PrepareOptions& options) {
  nlohmann::json j;
  j["vocab_file"] = options.vocab_file ? file_fingerprint(*options.vocab_file) : nlohmann::json();
  j["vocab_size"] = options.vocab_file ? 0 : options.vocab_size;
  j["special_layout"] = options.special_layout == SpecialLayout::first ? "first" : "bert";
  j["min_pair_frequency"] = options.vocab_file ? 0 : options.min_pair_frequency;
  j["lowercase"] = options.lowercase ? nlohmann::json(*options.lowercase) : nlohmann::json();
  j["doc_boundary"] = document_boundary_name(options.document_boundary);
  j["valid_fraction"] = options.valid_fraction;
  j["seed"] = options.seed;
  j["shard_tokens"] = options.shard_tokens;
  j["max_document_bytes"] = options.max_document_bytes;
  j["format_version"] = kMetaFormatVersion;
  return j;
}

std::string hex64(uint64_t v) {
  char text[19];
  std::snprintf(text, sizeof text, "0x%016llx", static_cast<unsigned long long>(v));
  return text;
}

nlohmann::json read_json(const fs::path& path) {
  std::error_code error;
  if (!fs::is_regular_file(path, error)) return nullptr;
  try {
    return io::read_json_checked(path);
  } catch (const ConfigError&) {
    return nullptr;  // an unreadable meta.json just means "not up to date"
  }
}

// The shard and vocabulary files an earlier meta.json lists, for cleanup and for the up-to-date check.
std::vector<std::pair<std::string, uint64_t>> listed_outputs(const nlohmann::json& meta) {
  std::vector<std::pair<std::string, uint64_t>> files;
  if (!meta.is_object()) return files;
  if (meta.contains("splits") && meta["splits"].is_object()) {
    for (const auto& [name, split] : meta["splits"].items()) {
      if (!split.is_object() || !split.contains("shards") || !split["shards"].is_array()) continue;
      for (const auto& shard : split["shards"]) {
        if (shard.is_object() && shard.contains("file") && shard["file"].is_string()) {
          files.emplace_back(shard["file"].get<std::string>(), shard.value("bytes", uint64_t{0}));
        }
      }
    }
  }
  if (meta.contains("vocab_file") && meta["vocab_file"].is_string()) {
    files.emplace_back(meta["vocab_file"].get<std::string>(), meta.value("vocab_file_bytes", uint64_t{0}));
  }
  if (meta.contains("tokenizer_files") && meta["tokenizer_files"].is_object()) {
    for (const auto& [name, bytes] : meta["tokenizer_files"].items())
      if (bytes.is_number_unsigned()) files.emplace_back(name, bytes.get<uint64_t>());
  }
  return files;
}

bool safe_output_name(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos && name.find('\\') == std::string::npos && name != "." &&
         name != "..";
}

void write_text_atomically(const fs::path& path, const std::string& text) {
  fs::path temp = path;
  temp += ".tmp";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error(path_string(temp) + ": cannot create");
    out << text;
    out.close();
    if (!out) throw std::runtime_error(path_string(temp) + ": write error");
  }
  fs::rename(temp, path);
}

void check_options(const PrepareOptions& options) {
  if (options.inputs.empty()) throw std::invalid_argument("prepare: no inputs; expected text files or directories");
  if (options.output_dir.empty()) throw std::invalid_argument("prepare: output_dir is empty; expected a directory");
  if (!options.vocab_file && options.vocab_size == 0) {
    throw std::invalid_argument("prepare: neither a vocabulary file nor vocab_size; expected one of them");
  }
  if (options.vocab_file && options.vocab_size != 0) {
    throw std::invalid_argument("prepare: both a vocabulary file and vocab_size " + std::to_string(options.vocab_size) +
                                "; expected one of them");
  }
  if (!(options.valid_fraction >= 0.0 && options.valid_fraction < 1.0)) {
    throw std::invalid_argument("prepare: valid_fraction " + std::to_string(options.valid_fraction) +
                                ", expected a value in [0, 1)");
  }
  if (options.shard_tokens == 0) throw std::invalid_argument("prepare: shard_tokens is 0, expected a positive count");
  if (options.max_document_bytes < 2) {
    throw std::invalid_argument("prepare: max_document_bytes " + std::to_string(options.max_document_bytes) +
                                ", expected at least 2");
  }
  if (options.batch_bytes == 0) throw std::invalid_argument("prepare: batch_bytes is 0, expected a positive size");
}

// Empty input, or blank lines only: "0 documents, 0 tokens" would only fail at training time.
std::invalid_argument no_documents_error(const PrepareOptions& options, uint64_t input_bytes) {
  std::string inputs;
  for (const auto& input : options.inputs) inputs += (inputs.empty() ? "" : ", ") + path_string(input);
  return std::invalid_argument("prepare: " + inputs + ": no document with any token (" + std::to_string(input_bytes) +
                               " bytes of input, empty or blank lines only); expected UTF-8 text");
}

// A split asked for but left empty would only fail later (nothing to train on, nothing to evaluate): refuse it now,
// before meta.json makes the directory look complete, and remove the shards this run wrote.
void refuse_empty_split(const PrepareOptions& options, const PrepareResult& result, const fs::path& out_dir) {
  const uint64_t documents = result.train.documents + result.valid.documents;
  if (documents == 0) {
    for (const SplitSummary* split : {&result.train, &result.valid})
      for (const auto& shard : split->shards) {
        std::error_code ignored;
        fs::remove(out_dir / shard, ignored);
      }
    throw no_documents_error(options, result.input_bytes);
  }
  const bool no_valid = options.valid_fraction > 0 && result.valid.documents == 0;
  const bool no_train = result.train.documents == 0;
  if (!no_valid && !no_train) return;
  for (const SplitSummary* split : {&result.train, &result.valid}) {
    for (const auto& shard : split->shards) {
      std::error_code ignored;
      fs::remove(out_dir / shard, ignored);
    }
  }
  char fraction[32];
  std::snprintf(fraction, sizeof fraction, "%g", options.valid_fraction);
  std::string message = "prepare: the inputs hold " + std::to_string(documents) + " document" +
                        (documents == 1 ? "" : "s") +
                        " (document boundary: " + document_boundary_name(options.document_boundary) +
                        "), and with valid_fraction " + fraction +
                        (no_train ? " all of them went to the valid split, leaving nothing to train on"
                                  : " none went to the valid split you asked for") +
                        "; expected both splits to get documents. ";
  if (options.document_boundary == DocumentBoundary::blank_line) {
    message +=
        "Documents are separated by blank lines: for a corpus with one record (verse, sentence) per line, use "
        "--doc-boundary line; otherwise choose a different --valid-fraction (or --valid-fraction 0 for no valid "
        "split).";
  } else {
    message += "Choose a different --valid-fraction (or --valid-fraction 0 for no valid split) or another --seed.";
  }
  throw std::invalid_argument(message);
}

}  // namespace

const char* document_boundary_name(DocumentBoundary boundary) {
  return boundary == DocumentBoundary::line ? "line" : "blank";
}

bool is_valid_document(uint64_t index, uint64_t seed, double valid_fraction) {
  if (valid_fraction <= 0.0) return false;
  const uint64_t h = splitmix64(seed ^ splitmix64(index));
  return static_cast<double>(h >> 11) * 0x1.0p-53 < valid_fraction;
}

std::vector<fs::path> list_input_files(const std::vector<fs::path>& inputs, const fs::path& exclude_dir) {
  std::vector<fs::path> files;
  std::error_code error;
  const fs::path excluded = exclude_dir.empty() ? fs::path() : fs::weakly_canonical(exclude_dir, error);
  auto hidden = [](const fs::path& p) { return p.filename().string().starts_with("."); };
  for (const auto& input : inputs) {
    const auto status = fs::status(input, error);
    if (error || !fs::exists(status)) {
      throw std::invalid_argument("prepare: input " + path_string(input) +
                                  " does not exist; expected a file or directory");
    }
    if (fs::is_regular_file(status)) {
      files.push_back(input);
      continue;
    }
    if (!fs::is_directory(status)) {
      throw std::invalid_argument("prepare: input " + path_string(input) +
                                  " is neither a regular file nor a directory");
    }
    for (auto it = fs::recursive_directory_iterator(input, fs::directory_options::skip_permission_denied);
         it != fs::recursive_directory_iterator(); ++it) {
      const fs::path& path = it->path();
      if (hidden(path) || (!excluded.empty() && it->is_directory() && fs::weakly_canonical(path, error) == excluded)) {
        if (it->is_directory()) it.disable_recursion_pending();
        continue;
      }
      if (it->is_regular_file()) files.push_back(path);
    }
  }
  std::sort(files.begin(), files.end(),
            [](const fs::path& a, const fs::path& b) { return path_string(a) < path_string(b); });
  files.erase(std::unique(files.begin(), files.end()), files.end());
  return files;
}

PrepareResult prepare(const PrepareOptions& options) {
  const auto start_time = std::chrono::steady_clock::now();
  check_options(options);
  const fs::path out_dir = options.output_dir;
  const std::vector<fs::path> files = list_input_files(options.inputs, out_dir);
  if (files.empty()) throw std::invalid_argument("prepare: the inputs hold no files; expected UTF-8 text files");
  if (options.vocab_file && !fs::is_regular_file(*options.vocab_file)) {
    throw std::invalid_argument("prepare: vocabulary file " + path_string(*options.vocab_file) + " does not exist");
  }
  {
    std::error_code error;
    if (fs::exists(out_dir, error) && !fs::is_directory(out_dir, error))
      throw std::invalid_argument("prepare: output " + path_string(out_dir) + " exists and is not a directory");
  }
  fs::create_directories(out_dir);

  PrepareResult result;
  result.meta_path = out_dir / "meta.json";
  nlohmann::json inputs_json = nlohmann::json::array();
  for (const auto& file : files) {
    inputs_json.push_back(file_fingerprint(file));
    result.input_bytes += inputs_json.back()["size"].get<uint64_t>();
  }
  result.input_files = files.size();
  const nlohmann::json options_json = options_fingerprint(options);

  // Incremental: same inputs, same options and every listed output file present with its size.
  const nlohmann::json old_meta = read_json(result.meta_path);
  // (A folder prepared before prepare wrote the tokenizer files is rebuilt, which adds them.)
  if (!options.force && old_meta.is_object() && old_meta.value("inputs", nlohmann::json()) == inputs_json &&
      old_meta.value("options", nlohmann::json()) == options_json && old_meta.contains("tokenizer_files")) {
    bool complete = true;
    for (const auto& [name, bytes] : listed_outputs(old_meta)) {
      std::error_code error;
      complete = complete && safe_output_name(name) && fs::file_size(out_dir / name, error) == bytes && !error;
    }
    if (complete) {
      try {
        result.vocab_path = out_dir / old_meta.at("vocab_file").get<std::string>();
        result.vocab_size = old_meta.at("vocab_size").get<size_t>();
        const auto& ids = old_meta.at("special_ids");
        result.special_ids = {ids.at("pad").get<uint32_t>(), ids.at("unk").get<uint32_t>(),
                              ids.at("cls").get<uint32_t>(), ids.at("sep").get<uint32_t>(),
                              ids.at("mask").get<uint32_t>()};
        for (auto* split : {&result.train, &result.valid}) {
          const auto& j = old_meta.at("splits").at(split == &result.train ? "train" : "valid");
          split->documents = j.at("documents").get<uint64_t>();
          split->tokens = j.at("tokens").get<uint64_t>();
          for (const auto& shard : j.at("shards")) split->shards.push_back(shard.at("file").get<std::string>());
        }
        result.dropped_documents = old_meta.at("totals").at("dropped_documents").get<uint64_t>();
        result.up_to_date = true;
        result.message = path_string(out_dir) + " is up to date (" + std::to_string(files.size()) +
                         " input files unchanged, same options); nothing to do";
        result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
        return result;
      } catch (const nlohmann::json::exception&) {
        result = PrepareResult{};  // a damaged meta.json: rebuild
        result.meta_path = out_dir / "meta.json";
        result.input_files = files.size();
        for (const auto& input : inputs_json) result.input_bytes += input["size"].get<uint64_t>();
      }
    }
  }
  // Rebuilding: first make the old output unrecognizable, then remove the files it listed.
  fs::remove(result.meta_path);
  for (const auto& [name, bytes] : listed_outputs(old_meta)) {
    if (safe_output_name(name)) fs::remove(out_dir / name);
  }

  const size_t threads = options.threads ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  const uint64_t total_bytes = result.input_bytes;

  // --- Vocabulary.
  NormalizerOptions normalizer =
      options.lowercase.value_or(true) ? NormalizerOptions::uncased() : NormalizerOptions::cased();
  std::optional<WordPieceTokenizer> tokenizer;
  std::string vocab_name;
  std::string vocab_source;
  if (options.vocab_file) {
    const fs::path& source = *options.vocab_file;
    const bool is_json = source.extension() == ".json";
    tokenizer = is_json ? WordPieceTokenizer::from_tokenizer_json(source)
                        : WordPieceTokenizer::from_vocab_txt(source, normalizer);
    if (is_json && options.lowercase && *options.lowercase != tokenizer->normalizer().lowercase) {
      throw std::invalid_argument(
          "prepare: lowercase=" + std::string(*options.lowercase ? "true" : "false") + " but " + path_string(source) +
          " has lowercase=" + (tokenizer->normalizer().lowercase ? "true" : "false") + "; expected them to agree");
    }
    vocab_name = is_json ? "tokenizer.json" : "vocab.txt";
    vocab_source = path_string(source);
    std::error_code error;
    if (!fs::equivalent(source, out_dir / vocab_name, error)) {
      fs::copy_file(source, out_dir / vocab_name, fs::copy_options::overwrite_existing);
    }
  } else {
    VocabTrainerOptions trainer;
    trainer.vocab_size = options.vocab_size;
    trainer.normalizer = normalizer;
    trainer.layout = options.special_layout;
    trainer.min_pair_frequency = options.min_pair_frequency;
    std::vector<WordCounter> counters(threads, WordCounter(normalizer, trainer.max_word_chars));
    uint64_t counted_documents = 0;
    run_pass(
        files, options, threads,
        [&](Batch& batch, size_t worker) {
          for (size_t i = 0; i < batch.documents(); ++i) {
            if (!is_valid_document(batch.doc_indices[i], options.seed, options.valid_fraction)) {
              counters[worker].add_text(batch.document(i));
            }
          }
        },
        [&](Batch& batch) {
          counted_documents += batch.documents();
          if (options.progress)
            options.progress({"counting words", batch.input_bytes, total_bytes, counted_documents, 0});
        });
    if (counted_documents == 0) throw no_documents_error(options, result.input_bytes);
    WordCounter total(normalizer, trainer.max_word_chars);
    for (const auto& counter : counters) total.merge(counter);
    Vocab vocab(train_wordpiece_vocab(total.counts(), trainer));
    vocab_name = "vocab.txt";
    vocab_source = "trained";
    vocab.save_txt(out_dir / vocab_name);
    tokenizer = WordPieceTokenizer::from_vocab(std::move(vocab), normalizer);
  }
  result.vocab_path = out_dir / vocab_name;
  result.vocab_size = tokenizer->vocab().size();
  try {
    result.special_ids = tokenizer->special_ids();
  } catch (const TokenizerError& e) {
    throw TokenizerError((vocab_source.empty() ? path_string(result.vocab_path) : vocab_source) + ": " + e.what());
  }
  // The Hugging Face tokenizer files beside the vocabulary (coco/interop/tokenizer_files.h); the vocabulary
  // file itself stays as given or trained. Checkpoints copy them.
  nlohmann::ordered_json tokenizer_files = nlohmann::ordered_json::object();
  for (const auto& [name, contents] : interop::make_tokenizer_files(*tokenizer).files) {
    if (name != vocab_name) write_text_atomically(out_dir / name, contents);
    tokenizer_files[name] = fs::file_size(out_dir / name);
  }
  const uint64_t vocab_hash_value = tokenizer->vocab().hash();

  // --- Tokenize and write shards.
  struct SplitWriter {
    std::string name;
    SplitSummary summary;
    std::unique_ptr<ShardWriter> writer;
    nlohmann::ordered_json shards = nlohmann::ordered_json::array();
  };
  SplitWriter splits[2] = {{"train", {}, nullptr, nlohmann::ordered_json::array()},
                           {"valid", {}, nullptr, nlohmann::ordered_json::array()}};
  auto shard_file = [](const SplitWriter& split) {
    char name[64];
    std::snprintf(name, sizeof name, "%s_%06zu.bin", split.name.c_str(), split.summary.shards.size());
    return std::string(name);
  };
  auto close_shard = [&](SplitWriter& split) {
    if (!split.writer) return;
    const std::string file = shard_file(split);
    const ShardHeader header = split.writer->finish();
    split.writer.reset();
    split.summary.shards.push_back(file);
    split.shards.push_back({{"file", file},
                            {"documents", header.document_count},
                            {"tokens", header.token_count},
                            {"bytes", fs::file_size(out_dir / file)}});
  };
  uint64_t documents_done = 0, tokens_done = 0;  // documents written (dropped ones excluded): the summary's count
  std::vector<WordPieceTokenizer::Scratch> scratch(threads);
  run_pass(
      files, options, threads,
      [&](Batch& batch, size_t worker) {
        batch.ids.reserve(batch.text.size() / 4);
        for (size_t i = 0; i < batch.documents(); ++i) {
          tokenizer->encode(batch.document(i), batch.ids, scratch[worker]);
          batch.id_ends.push_back(batch.ids.size());
        }
      },
      [&](Batch& batch) {
        for (size_t i = 0; i < batch.documents(); ++i) {
          const size_t begin = i == 0 ? 0 : batch.id_ends[i - 1];
          const size_t count = batch.id_ends[i] - begin;
          if (count == 0) {
            ++result.dropped_documents;
            continue;
          }
          SplitWriter& split = splits[is_valid_document(batch.doc_indices[i], options.seed, options.valid_fraction)];
          if (!split.writer) {
            split.writer =
                std::make_unique<ShardWriter>(out_dir / shard_file(split), result.vocab_size, vocab_hash_value);
          }
          split.writer->add_document(std::span<const uint32_t>(batch.ids.data() + begin, count));
          ++split.summary.documents;
          ++documents_done;
          split.summary.tokens += count;
          tokens_done += count;
          if (split.writer->token_count() >= options.shard_tokens) close_shard(split);
        }
        if (options.progress)
          options.progress({"tokenizing", batch.input_bytes, total_bytes, documents_done, tokens_done});
      });
  for (auto& split : splits) close_shard(split);
  result.train = splits[0].summary;
  result.valid = splits[1].summary;
  refuse_empty_split(options, result, out_dir);

  // --- meta.json, last: its presence means the directory is complete.
  const NormalizerOptions& norm = tokenizer->normalizer();
  nlohmann::ordered_json meta;
  meta["format"] = "cocolm-token-shards";
  meta["format_version"] = kMetaFormatVersion;
  meta["shard_format"] = "COCOTOK1 version 1 (coco/shards.h): header, uint64 document offsets, uint16/uint32 ids";
  meta["vocab_file"] = vocab_name;
  meta["vocab_file_bytes"] = fs::file_size(result.vocab_path);
  meta["vocab_source"] = vocab_source;
  meta["vocab_size"] = result.vocab_size;
  meta["vocab_hash"] = hex64(vocab_hash_value);
  meta["tokenizer_files"] = tokenizer_files;
  meta["token_bytes"] = token_bytes_for_vocab(result.vocab_size);
  meta["special_ids"] = {{"pad", result.special_ids.pad},
                         {"unk", result.special_ids.unk},
                         {"cls", result.special_ids.cls},
                         {"sep", result.special_ids.sep},
                         {"mask", result.special_ids.mask}};
  meta["lowercase"] = norm.lowercase;
  meta["normalizer"] = {{"clean_text", norm.clean_text},
                        {"handle_chinese_chars", norm.handle_chinese_chars},
                        {"strip_accents", norm.strip_accents},
                        {"lowercase", norm.lowercase}};
  meta["doc_boundary"] = document_boundary_name(options.document_boundary);
  meta["document_rule"] = options.document_boundary == DocumentBoundary::line ? kLineRule : kBlankLineRule;
  meta["valid_split_rule"] = "document d is valid iff splitmix64(seed ^ splitmix64(d)) / 2^64 < valid_fraction";
  meta["splits"] = nlohmann::ordered_json::object();
  for (auto& split : splits) {
    meta["splits"][split.name] = {
        {"documents", split.summary.documents}, {"tokens", split.summary.tokens}, {"shards", split.shards}};
  }
  meta["totals"] = {{"documents", result.train.documents + result.valid.documents},
                    {"tokens", result.train.tokens + result.valid.tokens},
                    {"dropped_documents", result.dropped_documents},
                    {"input_files", result.input_files},
                    {"input_bytes", result.input_bytes}};
  meta["inputs"] = inputs_json;
  meta["options"] = options_json;
  write_text_atomically(result.meta_path, meta.dump(2) + "\n");

  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
  char summary[256];
  std::snprintf(summary, sizeof summary,
                "%llu documents, %llu tokens (train %llu / valid %llu documents) from %llu files, %.1f MB in %.2f s",
                static_cast<unsigned long long>(result.train.documents + result.valid.documents),
                static_cast<unsigned long long>(result.train.tokens + result.valid.tokens),
                static_cast<unsigned long long>(result.train.documents),
                static_cast<unsigned long long>(result.valid.documents),
                static_cast<unsigned long long>(result.input_files), result.input_bytes / 1e6, result.seconds);
  result.message = summary;
  if (result.dropped_documents > 0)
    result.message += "; " + std::to_string(result.dropped_documents) + " documents without tokens dropped";
  result.message += options.document_boundary == DocumentBoundary::line
                        ? "; one document per non-blank line (--doc-boundary line)"
                        : "; documents end at blank lines (--doc-boundary blank)";
  return result;
}

}  // namespace coco::text
