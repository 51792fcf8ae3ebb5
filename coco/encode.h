// Text to vectors with a pretrained checkpoint: the encoding half of the library API (cocolm/cocolm.h) and
// what `coco encode` runs.
//
//   auto encoder = coco::TextEncoder::load("runs/demo");                // run dir (its latest) or checkpoint dir
//   std::vector<coco::Encoding> out = encoder.encode({"a sentence", "another one"});
//   out[0].pooled(coco::Pooling::mean);                                 // one vector of encoder.dim() floats
//
// A text becomes [CLS] wordpieces [SEP] (no [SEP] when the objective uses none, objective.sep_id = -1), cut to
// max_length tokens: the layout the discriminator saw in pretraining. The discriminator runs in inference mode
// (no dropout) in batches of `batch_size` texts padded to the longest; its final hidden states are the per-token
// vectors, `cls` is the row of [CLS], `mean` the average over every row of the text ([CLS] and [SEP] included,
// padding excluded). A text's vectors do not depend on the other texts of its batch beyond float rounding.
//
// The vocabulary travels with the checkpoint (vocab.txt, tokenizer.json: coco/interop/tokenizer_files.h); a
// tokenizer given from elsewhere must be the checkpoint's vocabulary (same tokens, same special ids), else load()
// refuses it.
//
// Thread safety: a loaded TextEncoder is immutable; any number of threads may call encode() / tokenize() on one
// instance (and its copies, which share the weights) at once. On the cpu device the calls run in parallel; on the
// cuda device they are serialized per instance.
//
// Errors are exceptions whose message names the argument or file and what was expected: EncodeError (a
// std::invalid_argument) for bad arguments and checkpoints, std::logic_error for encoding with an encoder that
// holds no checkpoint, std::runtime_error for I/O failures.
//
// This header includes only the standard library: nothing of the engine, the CUDA runtime or the emulator.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace coco {

class EncodeError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

enum class Pooling { cls, mean };

// "cls" / "mean"; EncodeError naming `what` (e.g. "--pool") otherwise.
Pooling parse_pooling(const std::string& text, const std::string& what = "pooling");
const char* pooling_name(Pooling pooling);

struct Encoding {
  std::vector<uint32_t> ids;        // [CLS] ... [SEP], the positions the model saw
  std::vector<std::string> tokens;  // the same as strings
  bool truncated = false;           // the text had more wordpieces than max_length allows
  int64_t dim = 0;                  // width of every vector
  std::vector<float> hidden;        // ids.size() x dim, row-major; empty when not requested
  std::vector<float> cls;           // dim: the hidden state of [CLS]
  std::vector<float> mean;          // dim: the mean hidden state over the text's positions

  const std::vector<float>& pooled(Pooling pooling) const { return pooling == Pooling::cls ? cls : mean; }
  // The hidden state of position `i` (EncodeError when out of range or hidden states were not requested).
  std::span<const float> token_state(size_t i) const;
};

struct EncoderOptions {
  std::string device = "cpu";  // "cpu", "cuda" or "auto" (cuda when usable)
  int64_t batch_size = 16;     // texts per forward pass
  int64_t max_length = 0;      // tokens per text including [CLS]/[SEP]; 0: the model's max_positions
  // Take the tokenizer from this directory (a `coco prepare` output or Hugging Face folder) instead of the
  // checkpoint's own files; it must hold the checkpoint's vocabulary. Empty: the checkpoint's.
  std::filesystem::path tokenizer_dir;
};

class TextEncoder {
 public:
  // An empty encoder: loaded() is false and encode() throws std::logic_error.
  TextEncoder();
  // `path`: a checkpoint directory (checkpoints/step-NNNNNNNN) or a run directory (its checkpoints/latest).
  static TextEncoder load(const std::filesystem::path& path, const EncoderOptions& options = {});

  bool loaded() const { return impl_ != nullptr; }

  // The wordpiece ids of `text` as encode() feeds them to the model ([CLS] ... [SEP], cut to max_length).
  std::vector<uint32_t> tokenize(std::string_view text) const;
  // Encodes `texts` in batches of options.batch_size; result i belongs to texts[i]. Without hidden states only
  // the pooled vectors are filled (cheaper for long texts).
  std::vector<Encoding> encode(const std::vector<std::string>& texts, bool hidden_states = true) const;
  Encoding encode(std::string_view text, bool hidden_states = true) const;
  // The same for texts tokenized already (each id in [0, vocab_size()); no [CLS]/[SEP] is added).
  std::vector<Encoding> encode_ids(const std::vector<std::vector<uint32_t>>& sequences,
                                   bool hidden_states = true) const;

  int64_t dim() const;
  int64_t vocab_size() const;
  int64_t max_length() const;
  std::string device() const;                // "cpu" or "cuda"
  std::filesystem::path checkpoint() const;  // the checkpoint directory that was loaded
  std::string vocab_hash() const;            // "0x..." (coco/vocab_identity.h)

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
  const Impl& impl(const char* call) const;
};

// Cosine similarity of two vectors of equal length (EncodeError otherwise); 0 when either is all zeros.
double cosine_similarity(std::span<const float> a, std::span<const float> b);

}  // namespace coco
