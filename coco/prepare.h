// `coco prepare`: UTF-8 text files -> WordPiece token shards + meta.json, the input of pretraining.
//
// Inputs: files, or directories searched recursively (hidden names and the output directory skipped); all files
// are processed in byte order of their paths, so the output does not depend on how they were listed.
//
// Documents (the unit of the train/valid split and of the shard document table), by the document boundary option:
//   blank (default): a document is a run of non-blank lines; a blank line (empty, or only spaces, tabs, \r, \f, \v)
//                    ends it, and so does the end of a file. Lines of a document are joined with '\n'.
//   line:            every non-blank line is a document of its own (line-per-record corpora: one verse, sentence
//                    or record per line); blank lines are skipped. A document whose text reaches max_document_bytes is
//                    cut at the next
// line end (a single longer line at its last space or tab before the limit), which bounds memory on any input.
// Documents that give no tokens (e.g. only control characters) are dropped. Document d (0-based over all inputs,
// in order, counting dropped ones) goes to the valid split iff splitmix64(seed ^ splitmix64(d)) / 2^64 <
// valid_fraction. A split that comes out empty although it was asked for (valid_fraction > 0 and no valid document,
// or every document in valid) is refused with std::invalid_argument before meta.json is written.
//
// Output directory: the vocabulary file (the given vocab.txt / tokenizer.json copied, or the trained vocab.txt),
// the other Hugging Face tokenizer files made to match it (vocab.txt, tokenizer.json, tokenizer_config.json,
// special_tokens_map.json: coco/interop/tokenizer_files.h),
// shards train_000000.bin, ..., valid_000000.bin, ... (format in coco/shards.h; a shard is closed once it holds
// shard_tokens tokens, documents never straddle shards), and meta.json, written last. The result is identical
// for any thread count. Incremental: when meta.json records the same inputs (path, size, mtime) and the same
// output-relevant options, and its shards are present, nothing is done (PrepareResult::up_to_date).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "coco/vocab_trainer.h"
#include "coco/wordpiece.h"

namespace coco::text {

struct PrepareProgress {
  const char* phase;  // "counting words" (vocabulary training pass) or "tokenizing"
  uint64_t bytes_done;
  uint64_t bytes_total;
  uint64_t documents;  // counting words: documents read; tokenizing: documents written (those with tokens)
  uint64_t tokens;     // 0 while counting words
};

enum class DocumentBoundary { blank_line, line };

// "blank" / "line" (the --doc-boundary values).
const char* document_boundary_name(DocumentBoundary boundary);

struct PrepareOptions {
  std::vector<std::filesystem::path> inputs;
  std::filesystem::path output_dir;

  // Vocabulary: a file (vocab.txt, or tokenizer.json by its .json extension), or else trained (coco/vocab_trainer.h)
  // on the documents of the train split only, with exactly vocab_size tokens (an extra pass over the inputs).
  std::optional<std::filesystem::path> vocab_file;
  size_t vocab_size = 0;
  SpecialLayout special_layout = SpecialLayout::first;  // trained vocabularies only
  uint64_t min_pair_frequency = 2;                      // trained vocabularies only
  // Uncased (lowercase + strip accents) unless false. A tokenizer.json decides itself; a value given here must
  // then agree with it.
  std::optional<bool> lowercase;

  DocumentBoundary document_boundary = DocumentBoundary::blank_line;
  double valid_fraction = 0.0;  // in [0, 1)
  uint64_t seed = 0;
  uint64_t shard_tokens = uint64_t{1} << 26;  // tokens per shard (64 Mi: 128 MiB of uint16)
  size_t max_document_bytes = size_t{32} << 20;

  // Throughput knobs: they never change the output.
  size_t threads = 0;                    // tokenizer threads; 0 = hardware concurrency
  size_t batch_bytes = size_t{1} << 20;  // text per work item
  size_t read_bytes = size_t{4} << 20;   // read chunk

  bool force = false;                                    // rebuild even if meta.json says the output is up to date
  std::function<void(const PrepareProgress&)> progress;  // called from the calling thread
};

struct SplitSummary {
  uint64_t documents = 0;
  uint64_t tokens = 0;
  std::vector<std::string> shards;  // file names in the output directory
};

struct PrepareResult {
  bool up_to_date = false;  // nothing was done: meta.json already matched
  std::string message;      // one line for the user
  std::filesystem::path meta_path;
  std::filesystem::path vocab_path;
  size_t vocab_size = 0;
  SpecialTokenIds special_ids;
  uint64_t input_files = 0;
  uint64_t input_bytes = 0;
  uint64_t dropped_documents = 0;
  SplitSummary train, valid;
  double seconds = 0;
};

// Throws std::invalid_argument for bad options (naming the option and the expected value), Utf8Error for
// invalid UTF-8 (file and byte offset), TokenizerError / ShardError / std::runtime_error for I/O problems.
PrepareResult prepare(const PrepareOptions& options);

// The files prepare() would read, in processing order.
std::vector<std::filesystem::path> list_input_files(const std::vector<std::filesystem::path>& inputs,
                                                    const std::filesystem::path& exclude_dir = {});

// Whether document `index` belongs to the valid split.
bool is_valid_document(uint64_t index, uint64_t seed, double valid_fraction);

}  // namespace coco::text
