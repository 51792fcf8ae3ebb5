#include "coco/interop/hf_import.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <memory>
#include <set>

#include "engine/io/checked_read.h"
#include "engine/io/safetensors.h"
#include "engine/tensor.h"

namespace coco::interop {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

// One Hugging Face folder: its config.json, its tensors (f32 on read), and which tensors were used.
class HfFolder {
 public:
  explicit HfFolder(const fs::path& dir) : dir_(dir) {
    const fs::path config_path = dir / "config.json";
    if (!fs::exists(config_path))
      throw InteropError(config_path.string() + ": cannot open the file (expected a Hugging Face model folder)");
    config_ = io::read_json_checked(config_path);
    if (!config_.is_object()) throw InteropError(config_path.string() + ": expected a JSON object");
    model_type_ = config_.value("model_type", std::string());
    if (model_type_ != "bert" && model_type_ != "electra" && model_type_ != "cocolm")
      throw InteropError(config_path.string() + ": key 'model_type' is \"" + model_type_ +
                         "\"; expected \"bert\", \"electra\" or \"cocolm\"");
    const fs::path weights = dir / "model.safetensors";
    if (!fs::exists(weights)) {
      if (fs::exists(dir / "model.safetensors.index.json"))
        throw InteropError(dir.string() +
                           ": sharded safetensors (model.safetensors.index.json) are not supported; expected one "
                           "model.safetensors (save_pretrained(..., max_shard_size=\"100GB\"))");
      throw InteropError(dir.string() +
                         ": no model.safetensors (only safetensors weights are read; save the model with "
                         "save_pretrained(..., safe_serialization=True))");
    }
    try {
      reader_ = std::make_unique<safetensors::Reader>(safetensors::Reader::open(weights.string()));
    } catch (const safetensors::FormatError& e) {
      throw InteropError(e.what());  // a damaged input file: bad data, exit code 2
    }
    for (const char* p : {"electra.", "bert.", "cocolm.", ""}) {
      if (reader_->find(std::string(p) + "embeddings.word_embeddings.weight")) {
        prefix_ = p;
        break;
      }
    }
    if (!prefix_)
      throw InteropError(weights.string() +
                         ": no tensor 'embeddings.word_embeddings.weight' (bare, or under electra./bert./cocolm.): not "
                         "a BERT, ELECTRA or COCO-LM checkpoint");
  }

  const fs::path& dir() const { return dir_; }
  const json& config() const { return config_; }
  const std::string& model_type() const { return model_type_; }
  const std::string& prefix() const { return *prefix_; }
  std::string config_source() const { return (dir_ / "config.json").string(); }

  bool has(const std::string& name) const { return reader_->find(name) != nullptr; }

  // Tensor `name` (full name) as f32, which must have `shape`.
  std::vector<float> take(const std::string& name, const std::vector<int64_t>& shape) {
    const safetensors::TensorInfo* info = reader_->find(name);
    if (!info) throw InteropError(reader_->label() + ": missing tensor '" + name + "'");
    if (info->shape != shape)
      throw InteropError(reader_->label() + ": tensor '" + name + "' has shape " + shape_text(info->shape) +
                         ", expected " + shape_text(shape) + " (from " + config_source() + ")");
    if (info->dtype != DType::f32 && info->dtype != DType::bf16 && info->dtype != DType::f16)
      throw InteropError(reader_->label() + ": tensor '" + name + "' is " + dtype_safetensors_name(info->dtype) +
                         "; expected F32, BF16 or F16");
    consumed_.insert(name);
    const auto bytes = reader_->data(*info);
    const Tensor raw = Tensor::from_host(bytes.data(), Shape(std::span<const int64_t>(shape)), info->dtype);
    return (info->dtype == DType::f32 ? raw : raw.to(DType::f32)).to_vector<float>();
  }
  // Shape of `name`, or empty when absent.
  std::vector<int64_t> shape_of(const std::string& name) const {
    const safetensors::TensorInfo* info = reader_->find(name);
    return info ? info->shape : std::vector<int64_t>{};
  }
  void mark_used(const std::string& name) {
    if (has(name)) consumed_.insert(name);
  }
  const std::set<std::string>& used() const { return consumed_; }

  // Tensors nobody took.
  std::vector<std::string> unused() const {
    std::vector<std::string> out;
    for (const auto& t : reader_->tensors())
      if (!consumed_.count(t.name)) out.push_back(t.name);
    return out;
  }

  // Typed config.json fields; an absent key takes `fallback`.
  int64_t get_int(const std::string& key, int64_t fallback) const {
    if (!config_.contains(key) || config_[key].is_null()) return fallback;
    if (!config_[key].is_number_integer()) fail(key, "an integer");
    return config_[key].get<int64_t>();
  }
  double get_double(const std::string& key, double fallback) const {
    if (!config_.contains(key) || config_[key].is_null()) return fallback;
    if (!config_[key].is_number()) fail(key, "a number");
    return config_[key].get<double>();
  }
  bool get_bool(const std::string& key, bool fallback) const {
    if (!config_.contains(key) || config_[key].is_null()) return fallback;
    if (!config_[key].is_boolean()) fail(key, "true or false");
    return config_[key].get<bool>();
  }
  std::string get_string(const std::string& key, const std::string& fallback) const {
    if (!config_.contains(key) || config_[key].is_null()) return fallback;
    if (!config_[key].is_string()) fail(key, "a string");
    return config_[key].get<std::string>();
  }
  [[noreturn]] void fail(const std::string& key, const std::string& expected) const {
    throw InteropError(config_source() + ": key '" + key + "': expected " + expected + ", got " +
                       (config_.contains(key) ? config_[key].dump() : std::string("nothing")));
  }

 private:
  fs::path dir_;
  json config_;
  std::string model_type_;
  std::unique_ptr<safetensors::Reader> reader_;
  std::optional<std::string> prefix_;
  std::set<std::string> consumed_;
};

struct EncoderImport {
  model::EncoderConfig config;
  int64_t vocab_size = 0, max_positions = 0;
  std::vector<ImportedTensor> tensors;  // registry names under the encoder's prefix

  ImportedTensor* find(const std::string& name) {
    for (auto& t : tensors)
      if (t.name == name) return &t;
    return nullptr;
  }
  void erase(const std::string& name) {
    tensors.erase(std::remove_if(tensors.begin(), tensors.end(), [&](const auto& t) { return t.name == name; }),
                  tensors.end());
  }
};

// The encoder architecture of a folder's config.json, with the defaults of BertConfig / ElectraConfig /
// COCOLMConfig for absent keys.
EncoderImport encoder_config(const HfFolder& f) {
  const std::string& type = f.model_type();
  const bool bert = type == "bert", electra = type == "electra", cocolm = type == "cocolm";
  EncoderImport out;
  model::EncoderConfig& e = out.config;
  out.vocab_size = f.get_int("vocab_size", 30522);
  out.max_positions = f.get_int("max_position_embeddings", 512);
  e.dim = f.get_int("hidden_size", electra ? 256 : 768);
  e.depth = f.get_int("num_hidden_layers", 12);
  e.heads = f.get_int("num_attention_heads", electra ? 4 : 12);
  e.embed_dim = bert ? e.dim : f.get_int("embedding_size", electra ? 128 : e.dim);
  if (e.dim < 1 || e.depth < 1 || e.heads < 1 || e.embed_dim < 1 || out.vocab_size < 1 || out.max_positions < 1)
    throw InteropError(f.config_source() +
                       ": hidden_size, num_hidden_layers, num_attention_heads, embedding_size, "
                       "vocab_size and max_position_embeddings must be positive");
  if (e.dim % e.heads != 0) f.fail("num_attention_heads", "a divisor of hidden_size (" + std::to_string(e.dim) + ")");
  e.dim_head = cocolm ? f.get_int("attention_head_size", e.dim / e.heads) : e.dim / e.heads;
  const int64_t intermediate = f.get_int("intermediate_size", bert ? 3072 : electra ? 1024 : 3072);
  if (intermediate % e.dim != 0)
    f.fail("intermediate_size", "a multiple of hidden_size (" + std::to_string(e.dim) +
                                    "): coco's feed-forward width is ff_mult * hidden_size");
  e.ff_mult = intermediate / e.dim;
  const std::string act = f.get_string("hidden_act", "gelu");
  if (act != "gelu") f.fail("hidden_act", "\"gelu\" (the exact erf GELU coco computes), not \"" + act + "\"");
  const std::string positions = f.get_string("position_embedding_type", "absolute");
  if (positions != "absolute") f.fail("position_embedding_type", "\"absolute\"");
  if (f.get_bool("is_decoder", false)) f.fail("is_decoder", "false (an encoder)");
  if (f.get_bool("add_cross_attention", false)) f.fail("add_cross_attention", "false");
  e.layer_norm_eps = f.get_double("layer_norm_eps", cocolm ? 1e-5 : 1e-12);
  const double hidden_dropout = f.get_double("hidden_dropout_prob", 0.1);
  e.dropout.residual = hidden_dropout;
  e.dropout.embedding = cocolm ? f.get_double("embedding_dropout_prob", hidden_dropout) : hidden_dropout;
  e.dropout.attention = f.get_double("attention_probs_dropout_prob", 0.1);
  e.dropout.activation = cocolm ? f.get_double("activation_dropout_prob", 0.0) : 0.0;
  e.init = "bert";
  if (cocolm) {
    e.pre_norm = f.get_bool("pre_norm", false);
    e.embedding_norm = f.get_bool("embedding_layer_norm", true);
    e.final_norm = f.get_bool("final_layer_norm", false);
    e.qkv_bias = f.get_bool("qkv_bias", true);
    e.out_bias = f.get_bool("out_bias", true);
    const int64_t buckets = f.get_int("rel_pos_buckets", 32);
    e.relative_position = buckets > 0;
    if (e.relative_position) {
      e.rel_buckets = buckets;
      e.rel_max_distance = f.get_int("max_rel_pos", 128);
    }
  } else {
    e.pre_norm = false;
    e.embedding_norm = true;
    e.final_norm = false;
    e.qkv_bias = true;
    e.out_bias = true;
    e.relative_position = false;
  }
  return out;
}

// Reads an encoder's tensors under registry prefix `coco_prefix`, folding token-type row 0 into the positions.
EncoderImport import_encoder(HfFolder& f, const std::string& coco_prefix, std::vector<std::string>& notes) {
  EncoderImport out = encoder_config(f);
  const auto names = model::hf::encoder_names(out.config, out.vocab_size, out.max_positions, coco_prefix, f.prefix());
  for (const auto& t : names) {
    ImportedTensor tensor{t.coco, t.shape, {}};
    if (!t.split_qkv()) {
      tensor.values = f.take(t.hf[0], t.shape);
    } else {
      std::vector<int64_t> part = t.shape;
      part[0] /= 3;
      for (const auto& name : t.hf) {
        const std::vector<float> values = f.take(name, part);
        tensor.values.insert(tensor.values.end(), values.begin(), values.end());
      }
    }
    out.tensors.push_back(std::move(tensor));
  }
  const std::string types = f.prefix() + "embeddings.token_type_embeddings.weight";
  if (f.has(types)) {
    const std::vector<int64_t> shape = f.shape_of(types);
    if (shape.size() != 2 || shape[0] < 1 || shape[1] != out.config.embed_dim)
      throw InteropError(f.dir().string() + "/model.safetensors: tensor '" + types + "' has shape " +
                         shape_text(shape) + ", expected [type_vocab_size, " + std::to_string(out.config.embed_dim) +
                         "]");
    const std::vector<float> table = f.take(types, shape);
    const int64_t e = out.config.embed_dim;
    const bool zero_row = std::all_of(table.begin(), table.begin() + e, [](float v) { return v == 0.0f; });
    if (!zero_row) {
      ImportedTensor* positions = out.find(coco_prefix + "position_embedding");
      for (int64_t p = 0; p < out.max_positions; ++p)
        for (int64_t k = 0; k < e; ++k) positions->values[p * e + k] += table[k];
      notes.push_back(f.dir().string() + ": token_type_embeddings row 0 added into the position embeddings (coco has " +
                      "no segments; inputs with token_type_ids = 0 compute the same)" +
                      (shape[0] > 1 ? "; rows 1.." + std::to_string(shape[0] - 1) + " dropped" : ""));
    }
  }
  f.mark_used(f.prefix() + "embeddings.position_ids");  // a buffer older checkpoints saved
  f.mark_used(f.prefix() + "embeddings.token_type_ids");
  return out;
}

// The replaced-token head (w, b) of a discriminator folder, in the "positive = replaced" convention.
struct BinaryHead {
  std::vector<float> weight;  // (1, d)
  float bias = 0.0f;
};

std::optional<BinaryHead> replaced_token_head(HfFolder& f, int64_t d, std::vector<std::string>& notes) {
  if (f.model_type() == "cocolm") {
    if (!f.has("binary_head.weight")) return std::nullopt;
    BinaryHead head{f.take("binary_head.weight", {1, d}), f.take("binary_head.bias", {1})[0]};
    const std::string label = f.get_string("binary_head_label", "original");
    if (label != "original" && label != "replaced") f.fail("binary_head_label", "\"original\" or \"replaced\"");
    if (label == "original") {
      for (float& w : head.weight) w = -w;
      head.bias = -head.bias;
    }
    return head;
  }
  if (f.model_type() != "electra" || !f.has("discriminator_predictions.dense.weight")) return std::nullopt;
  const std::vector<float> dense = f.take("discriminator_predictions.dense.weight", {d, d});
  const std::vector<float> dense_bias = f.take("discriminator_predictions.dense.bias", {d});
  const std::vector<float> prediction = f.take("discriminator_predictions.dense_prediction.weight", {1, d});
  const float prediction_bias = f.take("discriminator_predictions.dense_prediction.bias", {1})[0];
  // The exact form `coco export` writes (hf_layout.h): rows w and -w, everything else zero.
  bool exact = d >= 2 && prediction[0] == 1.0f && prediction[1] == -1.0f;
  for (int64_t k = 2; exact && k < d; ++k) exact = prediction[k] == 0.0f;
  for (int64_t k = 0; exact && k < d; ++k) exact = dense_bias[k] == 0.0f && dense[d + k] == -dense[k];
  for (int64_t k = 2 * d; exact && k < d * d; ++k) exact = dense[k] == 0.0f;
  if (!exact) {
    notes.push_back(
        "discriminator_predictions (ELECTRA's two-layer head) has no counterpart in coco's one-layer binary head: "
        "the binary head starts fresh");
    return std::nullopt;
  }
  return BinaryHead{std::vector<float>(dense.begin(), dense.begin() + d), prediction_bias};
}

struct GeneratorHead {
  std::string kind;  // "bert" or "linear"
  std::vector<ImportedTensor> tensors;
};

// The masked-LM head of a generator folder, or nullopt when it has none.
std::optional<GeneratorHead> generator_head(HfFolder& f, const EncoderImport& enc, std::vector<std::string>& notes) {
  const int64_t d = enc.config.dim, e = enc.config.embed_dim, v = enc.vocab_size;
  auto bert_head = [&](const std::string& dense, const std::string& norm, const std::string& bias) {
    if (e != d) {
      notes.push_back(f.dir().string() + ": the masked-LM head projects to the embedding width " + std::to_string(e) +
                      " != " + std::to_string(d) +
                      ", which coco's tied \"bert\" head cannot hold: the generator gets a fresh \"linear\" head");
      for (const char* s : {".weight", ".bias"}) {
        f.mark_used(dense + s);
        f.mark_used(norm + s);
      }
      f.mark_used(bias);
      return GeneratorHead{"linear", {}};
    }
    GeneratorHead head{"bert", {}};
    head.tensors.push_back({"generator_head.dense.weight", {d, d}, f.take(dense + ".weight", {d, d})});
    head.tensors.push_back({"generator_head.dense.bias", {d}, f.take(dense + ".bias", {d})});
    head.tensors.push_back({"generator_head.norm.weight", {d}, f.take(norm + ".weight", {d})});
    head.tensors.push_back({"generator_head.norm.bias", {d}, f.take(norm + ".bias", {d})});
    head.tensors.push_back({"generator_head.bias", {v}, f.take(bias, {v})});
    return head;
  };
  // A tied output layer may be saved as well; it must then equal the token embedding.
  auto tied_copy = [&](const std::string& name) {
    if (!f.has(name)) return;
    const std::vector<float> out = f.take(name, {v, e});
    if (!bitwise_equal(out, f.take(f.prefix() + "embeddings.word_embeddings.weight", {v, e})))
      throw InteropError(f.dir().string() + "/model.safetensors: tensor '" + name +
                         "' differs from the word embeddings; coco's generator head is tied to them");
  };
  const std::string& type = f.model_type();
  if (type == "electra" && f.has("generator_predictions.dense.weight")) {
    tied_copy("generator_lm_head.weight");
    return bert_head("generator_predictions.dense", "generator_predictions.LayerNorm", "generator_lm_head.bias");
  }
  if (type == "bert" && f.has("cls.predictions.transform.dense.weight")) {
    tied_copy("cls.predictions.decoder.weight");
    f.mark_used("cls.predictions.decoder.bias");
    return bert_head("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm", "cls.predictions.bias");
  }
  if (type == "cocolm" && f.has("generator_lm_head.bias")) {
    if (f.get_string("generator_head", "bert") == "bert")
      return bert_head("generator_predictions.dense", "generator_predictions.LayerNorm", "generator_lm_head.bias");
    GeneratorHead head{"linear", {}};
    head.tensors.push_back({"generator_head.out.weight", {v, d}, f.take("generator_lm_head.weight", {v, d})});
    head.tensors.push_back({"generator_head.out.bias", {v}, f.take("generator_lm_head.bias", {v})});
    return head;
  }
  return std::nullopt;
}

void note_unused(const HfFolder& f, std::vector<std::string>& notes) {
  const std::vector<std::string> unused = f.unused();
  if (unused.empty()) return;
  std::string list;
  for (size_t i = 0; i < unused.size() && i < 6; ++i) list += (i ? ", " : "") + unused[i];
  if (unused.size() > 6) list += ", ...";
  notes.push_back(f.dir().string() + ": " + std::to_string(unused.size()) +
                  " tensor(s) without a counterpart, not imported: " + list);
}

std::vector<std::string> vocabulary_of(const fs::path& dir) { return load_tokenizer(dir).vocab().tokens(); }

}  // namespace

ImportResult import_hugging_face(const ImportOptions& options) {
  ImportResult result;
  std::vector<std::string>& notes = result.notes;
  HfFolder main(options.from);
  EncoderImport disc = import_encoder(main, "discriminator.", notes);
  const model::EncoderConfig& dc = disc.config;

  // Vocabulary and special ids: the folder's tokenizer files.
  const text::WordPieceTokenizer tokenizer = load_tokenizer(options.from);
  if (static_cast<int64_t>(tokenizer.vocab().size()) != disc.vocab_size)
    throw InteropError(options.from.string() + ": the vocabulary has " + std::to_string(tokenizer.vocab().size()) +
                       " tokens but config.json's vocab_size is " + std::to_string(disc.vocab_size));
  const text::SpecialTokenIds ids = tokenizer.special_ids();
  result.tokenizer = read_tokenizer_files(options.from);

  // Generator: imported or fresh.
  model::ModelConfig m;
  m.vocab_size = disc.vocab_size;
  m.max_positions = disc.max_positions;
  m.discriminator = dc;
  std::vector<ImportedTensor> generator_tensors;
  std::optional<GeneratorHead> gen_head;
  std::unique_ptr<HfFolder> gen_folder;
  if (options.generator) {
    gen_folder = std::make_unique<HfFolder>(*options.generator);
    EncoderImport gen = import_encoder(*gen_folder, "generator.", notes);
    if (gen.vocab_size != disc.vocab_size)
      throw InteropError(gen_folder->config_source() + ": key 'vocab_size' is " + std::to_string(gen.vocab_size) +
                         ", the discriminator's is " + std::to_string(disc.vocab_size) + "; expected them equal");
    if (gen.max_positions != disc.max_positions)
      throw InteropError(gen_folder->config_source() + ": key 'max_position_embeddings' is " +
                         std::to_string(gen.max_positions) + ", the discriminator's is " +
                         std::to_string(disc.max_positions) + "; expected them equal (coco has one position range)");
    if (has_vocabulary(*options.generator) && vocabulary_of(*options.generator) != tokenizer.vocab().tokens())
      throw InteropError(options.generator->string() + ": its vocabulary differs from " + options.from.string() +
                         "'s; expected the same tokens in the same order");
    m.generator = gen.config;
    // Tie what is identical (shapes and values), keep the rest separate.
    auto tie = [&](const std::vector<std::string>& suffixes) {
      for (const auto& s : suffixes) {
        const ImportedTensor* a = disc.find("discriminator." + s);
        const ImportedTensor* b = gen.find("generator." + s);
        if (!a || !b || a->shape != b->shape || !bitwise_equal(a->values, b->values)) return false;
      }
      for (const auto& s : suffixes) gen.erase("generator." + s);
      return true;
    };
    m.tie_token_embedding = tie({"token_embedding"});
    m.tie_position_embedding = tie({"position_embedding"});
    m.tie_embedding_norm = tie({"embedding_norm.weight", "embedding_norm.bias"});
    notes.push_back(std::string("generator from ") + options.generator->string() + "; token / position embeddings / " +
                    "embedding LayerNorm " + (m.tie_token_embedding ? "tied" : "separate") + " / " +
                    (m.tie_position_embedding ? "tied" : "separate") + " / " +
                    (m.tie_embedding_norm ? "tied" : "separate") + " (tied where the values are identical)");
    gen_head = generator_head(*gen_folder, gen, notes);
    if (!gen_head)
      notes.push_back(options.generator->string() + ": no masked-LM head: the generator head starts fresh");
    generator_tensors = std::move(gen.tensors);
  } else {
    m.generator = dc;
    m.generator.depth = options.generator_depth > 0 ? options.generator_depth : std::max<int64_t>(1, dc.depth / 3);
    m.tie_token_embedding = m.tie_position_embedding = m.tie_embedding_norm = true;
    notes.push_back("generator: fresh, " + std::to_string(m.generator.depth) + " layer(s) of width " +
                    std::to_string(m.generator.dim) + ", embeddings tied to the discriminator's (--generator DIR " +
                    "imports one)");
  }
  m.generator_head = gen_head ? gen_head->kind : (m.generator.embed_dim == m.generator.dim ? "bert" : "linear");

  // Preset: the paper's when the sizes allow it.
  const bool paper_fits = m.generator_head == "bert" && m.generator.dim == dc.dim && dc.embed_dim == dc.dim;
  const objective::Preset preset =
      options.preset ? *options.preset : (paper_fits ? objective::Preset::paper : objective::Preset::lucidrains);
  const bool paper = preset == objective::Preset::paper;
  if (!options.preset)
    notes.push_back(std::string("objective preset ") + (paper ? "paper" : "lucidrains") +
                    (paper ? ""
                           : " (the paper preset needs a \"bert\" generator head, one width for both encoders "
                             "and embed_dim = dim)"));

  result.tensors = std::move(disc.tensors);
  for (auto& t : generator_tensors) result.tensors.push_back(std::move(t));
  if (gen_head)
    for (auto& t : gen_head->tensors) result.tensors.push_back(std::move(t));

  // Discriminator heads.
  int64_t scl_dim = dc.dim;
  const std::string binary = paper ? "copy_head" : "rtd_head";
  if (std::optional<BinaryHead> head = replaced_token_head(main, dc.dim, notes)) {
    const float s = paper ? -1.0f : 1.0f;  // paper: the copy head's positive class is "original"
    for (float& w : head->weight) w *= s;
    result.tensors.push_back({binary + ".weight", {1, dc.dim}, std::move(head->weight)});
    result.tensors.push_back({binary + ".bias", {1}, {s * head->bias}});
  } else if (main.model_type() != "electra" || !main.has("discriminator_predictions.dense.weight")) {
    notes.push_back("binary head: fresh (" + options.from.string() + " has none)");
  }
  if (main.model_type() == "cocolm") {
    const bool has_clm = main.has("clm_head.bias"), has_scl = main.has("scl_head.dense.weight"),
               has_theta = main.has("cl_theta");
    if (paper && has_clm)
      result.tensors.push_back({"clm_head.bias", {m.vocab_size}, main.take("clm_head.bias", {m.vocab_size})});
    if (paper && has_scl) {
      const std::vector<int64_t> shape = main.shape_of("scl_head.dense.weight");
      if (shape.size() != 2 || shape[1] != dc.dim)
        throw InteropError(options.from.string() + "/model.safetensors: tensor 'scl_head.dense.weight' has shape " +
                           shape_text(shape) + ", expected [scl_dim, " + std::to_string(dc.dim) + "]");
      scl_dim = shape[0];
      result.tensors.push_back({"scl_head.dense.weight", shape, main.take("scl_head.dense.weight", shape)});
      result.tensors.push_back({"scl_head.dense.bias", {scl_dim}, main.take("scl_head.dense.bias", {scl_dim})});
      result.tensors.push_back({"scl_head.norm.weight", {scl_dim}, main.take("scl_head.LayerNorm.weight", {scl_dim})});
      result.tensors.push_back({"scl_head.norm.bias", {scl_dim}, main.take("scl_head.LayerNorm.bias", {scl_dim})});
    }
    if (!paper && has_theta) result.tensors.push_back({"cl_theta", {1}, main.take("cl_theta", {1})});
  }
  if (main.model_type() == "bert" && main.has("cls.predictions.transform.dense.weight") &&
      !(options.generator && fs::equivalent(*options.generator, options.from)))
    notes.push_back(options.from.string() +
                    ": cls.predictions.* (BERT's masked-LM head) not imported; pass the same folder as --generator to "
                    "start the generator from this BERT, head included");
  const bool same_folder = options.generator && fs::equivalent(*options.generator, options.from);
  if (same_folder)
    for (const auto& name : gen_folder->used()) main.mark_used(name);
  note_unused(main, notes);
  if (gen_folder && !same_folder) note_unused(*gen_folder, notes);

  result.model = model::model_config_to_json(m);
  result.objective = {{"preset", paper ? "paper" : "lucidrains"},
                      {"pad_id", ids.pad},
                      {"unk_id", ids.unk},
                      {"cls_id", ids.cls},
                      {"sep_id", ids.sep},
                      {"mask_id", ids.mask},
                      {"scl_dim", scl_dim}};
  const int64_t pad_token_id = main.get_int("pad_token_id", ids.pad);
  if (pad_token_id != static_cast<int64_t>(ids.pad))
    notes.push_back(main.config_source() + ": pad_token_id " + std::to_string(pad_token_id) +
                    " differs from [PAD]'s id " + std::to_string(ids.pad) +
                    " in the vocabulary; using the vocabulary's");
  return result;
}

json imported_run_config(const ImportResult& result, json base) {
  if (!base.is_object()) base = json::object();
  base["model"] = result.model;
  json& objective = base["objective"];
  if (!objective.is_object()) objective = json::object();
  for (const auto& [key, value] : result.objective.items()) objective[key] = value;
  const int64_t max_positions = result.model.at("max_positions").get<int64_t>();
  if (!base.contains("data")) base["data"] = json::object();
  if (!base["data"].contains("seq_len")) base["data"]["seq_len"] = std::min<int64_t>(128, max_positions);
  if (!base.contains("optim"))
    base["optim"] = {{"lr", 1e-4},           {"betas", {0.9, 0.98}}, {"eps", 1e-6},     {"weight_decay", 0.01},
                     {"warmup_steps", 1000}, {"schedule", "linear"}, {"clip_norm", 2.0}};
  if (!base.contains("train"))
    base["train"] = {{"steps", 10000}, {"micro_batch", 8}, {"log_every", 10}, {"checkpoint_every", 1000}};
  if (!base.contains("precision")) base["precision"] = "f32";
  return base;
}

void load_imported(Module& model, const std::vector<ImportedTensor>& tensors) {
  for (const auto& t : tensors) {
    Tensor target;
    try {
      target = model.parameter(t.name);
    } catch (const std::out_of_range&) {
      throw InteropError("imported tensor '" + t.name +
                         "' is not a parameter of the configured model (does the configuration change the imported "
                         "architecture?)");
    }
    if (target.shape().vec() != t.shape)
      throw InteropError("imported tensor '" + t.name + "' has shape " + shape_text(t.shape) +
                         ", the configured model's is " + shape_text(target.shape().vec()));
    const Tensor host = Tensor::from_vector(t.values, Shape(std::span<const int64_t>(t.shape)), Device::cpu);
    Tensor destination = target.detach();
    destination.copy_from(target.dtype() == DType::f32 ? host : host.to(target.dtype()));
  }
}

}  // namespace coco::interop
