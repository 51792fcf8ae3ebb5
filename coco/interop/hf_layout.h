// How one part (the discriminator, i.e. the main model, or the generator) of a coco model is laid out in a
// Hugging Face `transformers` folder, in one of two formats:
//
//   electra  transformers' own ELECTRA classes: ElectraForPreTraining (discriminator) and ElectraForMaskedLM
//            (generator). Only for what ELECTRA computes: post-norm, absolute positions, an embedding
//            LayerNorm, no relative-position bias, no final LayerNorm, dim_head = dim / heads, and for the
//            generator the "bert" head. q/k/v are split, missing biases written as zeros, the token-type
//            table added as zeros (COCO-LM has no segments).
//   cocolm   the COCO-LM architecture of coco/interop/python/modeling_cocolm.py (shipped in the folder,
//            loaded with trust_remote_code=True): any coco encoder, and every pretraining head.
//
// ElectraForPreTraining's head is act(h W_d^T + b_d) w_p^T + b_p (act = GELU, W_d square). coco's binary
// head is one Linear(d, 1), w.h + b, which that form reproduces exactly: W_d rows 0 and 1 are s*w and -s*w,
// the other rows and b_d zero, w_p = (1, -1, 0, ...), b_p = s*b, since GELU(z) - GELU(-z) = z. s is +1 for
// a replaced-token head (lucidrains preset) and -1 for the paper preset's copy head, whose positive class
// is "original": ELECTRA's logits mean "replaced".
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "coco/objective.h"
#include "model/hf_names.h"

namespace coco::interop {

// A problem with the checkpoint, the Hugging Face folder, or their agreement (exit code 2 in the CLI).
class InteropError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

enum class HfFormat { electra, cocolm };
enum class HfPart { discriminator, generator };

const char* format_name(HfFormat format);  // "electra", "cocolm"
const char* part_name(HfPart part);        // "discriminator", "generator"

struct HfLayout {
  HfFormat format = HfFormat::cocolm;
  HfPart part = HfPart::discriminator;
  std::string architecture;  // "ElectraForPreTraining", "COCOLMForMaskedLM", ...
  std::string prefix;        // "electra." or "cocolm."
  // Registry tensors written one to one (or q/k/v split), in registry order.
  std::vector<model::hf::TensorName> tensors;
  // ELECTRA only: the zero token-type table (2, E) and, for the discriminator, discriminator_predictions.*
  // built from the binary head (file comment); binary_head is its registry prefix ("copy_head" or "rtd_head").
  bool token_type_table = false;
  std::string binary_head;
  bool binary_head_is_original = false;  // the head's positive class is "original" (paper preset)
  // Registry tensors of this part that the class has no place for (not exported), with the reason.
  std::vector<std::string> not_exported;
};

// Why `format` cannot hold `part` of this model, or "" when it can.
std::string format_incompatibility(const model::ModelConfig& model, const objective::ObjectiveConfig& objective,
                                   HfPart part, HfFormat format);

// Throws InteropError with format_incompatibility()'s reason.
HfLayout hf_layout(const model::ModelConfig& model, const objective::ObjectiveConfig& objective, HfPart part,
                   HfFormat format);

// config.json of the folder (architecture, sizes, auto_map for cocolm).
nlohmann::ordered_json hf_config(const HfLayout& layout, const model::ModelConfig& model,
                                 const objective::ObjectiveConfig& objective);

// The encoder config of `part`.
const model::EncoderConfig& part_encoder(const model::ModelConfig& model, HfPart part);

}  // namespace coco::interop
