// Tiny model/objective configurations for model and objective tests: small enough for f64 gradient
// checks and emulated-CUDA steps in seconds.
#pragma once
#include <string>

#include "coco/objective.h"
#include "engine/config.h"
#include "model/config.h"

namespace coco::testing {

struct TinySetup {
  model::ModelConfig model;
  objective::ObjectiveConfig objective;
};

// preset "paper" (post-norm, relative-position bias, bert head, dropout), "paper-mixture" (the same with
// objective.clm_form = "paper") or "lucidrains" (pre-norm, E != d projection, linear head, no dropout).
inline TinySetup tiny_setup(const std::string& preset, bool dropout = true, int vocab = 24, int dim = 8) {
  const std::string drop = dropout ? "0.1" : "0.0";
  std::string json;
  if (preset == "paper" || preset == "paper-mixture") {
    const std::string encoder = R"("dim": )" + std::to_string(dim) + R"(, "heads": 2, "ff_mult": 2, "norm": "post",
        "embedding_norm": true, "qkv_bias": true, "out_bias": true, "init": "bert", "final_norm": false,
        "relative_position": {"buckets": 8, "max_distance": 16},
        "dropout": {"embedding": )" +
                                drop + R"(, "attention": )" + drop + R"(, "residual": )" + drop +
                                R"(, "activation": 0.0})";
    json = R"({"model": {"vocab_size": )" + std::to_string(vocab) + R"(, "max_positions": 16, "generator_head": "bert",
      "generator": {"depth": 1, )" +
           encoder + R"(}, "discriminator": {"depth": 2, )" + encoder + R"(}},
      "objective": {"preset": "paper", "pad_id": 0, "unk_id": 1, "cls_id": 2, "sep_id": 3, "mask_id": 4, "scl_dim": 6,
                    "mask_prob": 0.3, "clm_form": ")" +
           std::string(preset == "paper" ? "code" : "paper") + R"("}})";
  } else {
    json = R"({"model": {"vocab_size": )" + std::to_string(vocab) +
           R"(, "max_positions": 16, "generator_head": "linear",
      "tie": {"embedding_norm": false},
      "generator": {"embed_dim": 6, "dim": )" +
           std::to_string(dim) + R"(, "depth": 1, "heads": 2, "ff_mult": 2},
      "discriminator": {"embed_dim": 6, "dim": )" +
           std::to_string(dim + 4) + R"(, "depth": 2, "heads": 2, "ff_mult": 2}},
      "objective": {"preset": "lucidrains", "pad_id": 0, "cls_id": 1, "mask_id": 2, "mask_prob": 0.3,
                    "disc_weight": 2.0}})";
  }
  const nlohmann::json root = nlohmann::json::parse(json);
  ConfigObject top(root, "tiny-" + preset, "");
  TinySetup setup;
  setup.model = model::parse_model_config(top.get_object("model"));
  setup.objective = objective::parse_objective_config(top.get_object("objective"));
  top.finish();
  model::validate_model_config(setup.model, "tiny-" + preset);
  return setup;
}

}  // namespace coco::testing
