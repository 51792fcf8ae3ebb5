// Transformer encoder configuration (generator and discriminator), read strictly from JSON.
//
// "model": {
//   "vocab_size": 30522, "max_positions": 512,
//   "tie": {"token_embedding": true, "position_embedding": true, "embedding_norm": true},
//   "generator_head": "bert" | "linear",
//   "generator":     { <encoder> },
//   "discriminator": { <encoder> }
// }
// <encoder> = {"embed_dim": E (default = dim), "dim": d, "depth": L, "heads": H, "dim_head": Dh (default d/H),
//              "ff_mult": 4, "norm": "pre" | "post", "embedding_norm": false, "qkv_bias": false,
//              "out_bias": true, "relative_position": null | {"buckets": 32, "max_distance": 128},
//              "dropout": {"embedding": 0, "attention": 0, "residual": 0, "activation": 0},
//              "layer_norm_eps": 1e-5, "init": "xtransformers" | "bert", "final_norm": true}
#pragma once
#include <cstdint>
#include <string>

#include "engine/config.h"

namespace coco::model {

struct DropoutConfig {
  double embedding = 0.0;
  double attention = 0.0;
  double residual = 0.0;
  double activation = 0.0;
};

struct EncoderConfig {
  int64_t embed_dim = 0;  // E: token/position embedding width (a Linear(E, d) follows when E != d)
  int64_t dim = 0;        // d
  int64_t depth = 0;
  int64_t heads = 0;
  int64_t dim_head = 0;  // Dh; attention inner width = heads * dim_head
  int64_t ff_mult = 4;
  bool pre_norm = true;  // "pre": x += f(LN(x)); "post": x = LN(x + f(x))
  bool embedding_norm = false;
  bool qkv_bias = false;
  bool out_bias = true;
  bool relative_position = false;
  int64_t rel_buckets = 32;
  int64_t rel_max_distance = 128;
  DropoutConfig dropout;
  double layer_norm_eps = 1e-5;
  std::string init = "xtransformers";  // or "bert"
  bool final_norm = true;              // a LayerNorm after the last layer (pre-norm stacks need it)

  int64_t inner_dim() const { return heads * dim_head; }
  int64_t ff_dim() const { return ff_mult * dim; }
};

struct ModelConfig {
  int64_t vocab_size = 0;
  int64_t max_positions = 0;
  bool tie_token_embedding = true;
  bool tie_position_embedding = true;
  bool tie_embedding_norm = true;
  std::string generator_head = "linear";  // "linear": Linear(d, V); "bert": Linear(d,d)-GELU-LN-tied E + bias
  EncoderConfig generator;
  EncoderConfig discriminator;
};

// Reads the "model" object; `reader` belongs to the caller, which finish()es the parent.
ModelConfig parse_model_config(ConfigObject reader);
// Cross-field checks (divisibility, tied widths): throws ConfigError naming `source`.
void validate_model_config(const ModelConfig& config, const std::string& source);
nlohmann::json model_config_to_json(const ModelConfig& config);

}  // namespace coco::model
