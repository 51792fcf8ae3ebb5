#include "coco/interop/hf_layout.h"

namespace coco::interop {

using nlohmann::ordered_json;

namespace {

bool is_paper(const objective::ObjectiveConfig& o) { return o.preset == objective::Preset::paper; }

std::string binary_head_name(const objective::ObjectiveConfig& o) { return is_paper(o) ? "copy_head" : "rtd_head"; }

// Registry prefixes of the tables the generator reads (tied ones live under "discriminator.").
model::hf::EmbeddingOwners generator_owners(const model::ModelConfig& m) {
  const std::string own = "generator.", shared = "discriminator.";
  return {m.tie_token_embedding ? shared : own, m.tie_position_embedding ? shared : own,
          m.tie_embedding_norm && m.generator.embedding_norm ? shared : own};
}

void add(HfLayout& layout, std::string coco, std::vector<int64_t> shape, const std::string& hf) {
  layout.tensors.push_back({std::move(coco), std::move(shape), {hf}});
}

}  // namespace

const char* format_name(HfFormat format) { return format == HfFormat::electra ? "electra" : "cocolm"; }
const char* part_name(HfPart part) { return part == HfPart::discriminator ? "discriminator" : "generator"; }

const model::EncoderConfig& part_encoder(const model::ModelConfig& m, HfPart part) {
  return part == HfPart::discriminator ? m.discriminator : m.generator;
}

std::string format_incompatibility(const model::ModelConfig& m, const objective::ObjectiveConfig& o, HfPart part,
                                   HfFormat format) {
  (void)o;
  if (format == HfFormat::cocolm) return "";
  const model::EncoderConfig& e = part_encoder(m, part);
  const std::string key = std::string("model.") + part_name(part) + ".";
  if (e.relative_position) return key + "relative_position is set (ELECTRA has no relative-position bias)";
  if (e.pre_norm) return key + "norm is \"pre\" (ELECTRA is post-norm)";
  if (e.final_norm) return key + "final_norm is true (ELECTRA has no final LayerNorm)";
  if (!e.embedding_norm) return key + "embedding_norm is false (ELECTRA always normalizes the embeddings)";
  if (e.inner_dim() != e.dim)
    return key + "heads * dim_head = " + std::to_string(e.inner_dim()) +
           " differs from dim = " + std::to_string(e.dim) + " (ELECTRA's heads split the hidden size)";
  if (part == HfPart::generator && m.generator_head != "bert")
    return "model.generator_head is \"" + m.generator_head +
           "\" (ElectraForMaskedLM's head is dense, GELU, LayerNorm and the tied embedding: \"bert\")";
  return "";
}

HfLayout hf_layout(const model::ModelConfig& m, const objective::ObjectiveConfig& o, HfPart part, HfFormat format) {
  const std::string why = format_incompatibility(m, o, part, format);
  if (!why.empty())
    throw InteropError(std::string("the ") + part_name(part) + " cannot be exported as ELECTRA: " + why +
                       "; use --format cocolm (the COCO-LM architecture, loaded with trust_remote_code=True)");
  HfLayout layout;
  layout.format = format;
  layout.part = part;
  const bool electra = format == HfFormat::electra;
  layout.prefix = electra ? "electra." : "cocolm.";
  const model::EncoderConfig& e = part_encoder(m, part);
  if (part == HfPart::discriminator) {
    layout.architecture = electra ? "ElectraForPreTraining" : "COCOLMForPreTraining";
    layout.tensors = model::hf::encoder_names(e, m.vocab_size, m.max_positions, "discriminator.", layout.prefix);
  } else {
    layout.architecture = electra ? "ElectraForMaskedLM" : "COCOLMForMaskedLM";
    layout.tensors =
        model::hf::encoder_names(e, m.vocab_size, m.max_positions, "generator.", layout.prefix, generator_owners(m));
  }
  layout.token_type_table = electra;

  const std::string binary = binary_head_name(o);
  if (part == HfPart::discriminator) {
    if (electra) {
      if (e.dim >= 2) {
        layout.binary_head = binary;
        layout.binary_head_is_original = is_paper(o);
      } else {
        layout.not_exported.push_back(binary + ".* (discriminator_predictions needs a hidden size of at least 2)");
      }
      if (is_paper(o)) {
        layout.not_exported.push_back("clm_head.bias (ElectraForPreTraining has no corrective-LM head)");
        layout.not_exported.push_back("scl_head.* (ElectraForPreTraining has no sequence-contrastive head)");
      } else {
        layout.not_exported.push_back("cl_theta (ElectraForPreTraining has no contrastive head)");
      }
    } else {
      add(layout, binary + ".weight", {1, e.dim}, "binary_head.weight");
      add(layout, binary + ".bias", {1}, "binary_head.bias");
      if (is_paper(o)) {
        add(layout, "clm_head.bias", {m.vocab_size}, "clm_head.bias");
        add(layout, "scl_head.dense.weight", {o.scl_dim, e.dim}, "scl_head.dense.weight");
        add(layout, "scl_head.dense.bias", {o.scl_dim}, "scl_head.dense.bias");
        add(layout, "scl_head.norm.weight", {o.scl_dim}, "scl_head.LayerNorm.weight");
        add(layout, "scl_head.norm.bias", {o.scl_dim}, "scl_head.LayerNorm.bias");
      } else {
        add(layout, "cl_theta", {1}, "cl_theta");
      }
    }
  } else if (m.generator_head == "bert") {
    add(layout, "generator_head.dense.weight", {e.dim, e.dim}, "generator_predictions.dense.weight");
    add(layout, "generator_head.dense.bias", {e.dim}, "generator_predictions.dense.bias");
    add(layout, "generator_head.norm.weight", {e.dim}, "generator_predictions.LayerNorm.weight");
    add(layout, "generator_head.norm.bias", {e.dim}, "generator_predictions.LayerNorm.bias");
    add(layout, "generator_head.bias", {m.vocab_size}, "generator_lm_head.bias");
  } else {
    add(layout, "generator_head.out.weight", {m.vocab_size, e.dim}, "generator_lm_head.weight");
    add(layout, "generator_head.out.bias", {m.vocab_size}, "generator_lm_head.bias");
  }
  return layout;
}

nlohmann::ordered_json hf_config(const HfLayout& layout, const model::ModelConfig& m,
                                 const objective::ObjectiveConfig& o) {
  const model::EncoderConfig& e = part_encoder(m, layout.part);
  ordered_json j;
  j["architectures"] = {layout.architecture};
  if (layout.format == HfFormat::electra) {
    j["model_type"] = "electra";
  } else {
    j["model_type"] = "cocolm";
    j["auto_map"] = {{"AutoConfig", "configuration_cocolm.COCOLMConfig"},
                     {"AutoModel", "modeling_cocolm.COCOLMModel"},
                     {"AutoModelForPreTraining", "modeling_cocolm.COCOLMForPreTraining"},
                     {"AutoModelForMaskedLM", "modeling_cocolm.COCOLMForMaskedLM"},
                     {"AutoModelForSequenceClassification", "modeling_cocolm.COCOLMForSequenceClassification"},
                     {"AutoModelForTokenClassification", "modeling_cocolm.COCOLMForTokenClassification"}};
  }
  j["vocab_size"] = m.vocab_size;
  j["embedding_size"] = e.embed_dim;
  j["hidden_size"] = e.dim;
  j["num_hidden_layers"] = e.depth;
  j["num_attention_heads"] = e.heads;
  if (layout.format == HfFormat::cocolm) j["attention_head_size"] = e.dim_head;
  j["intermediate_size"] = e.ff_dim();
  j["hidden_act"] = "gelu";  // coco's GELU is the exact erf form, which transformers calls "gelu"
  j["hidden_dropout_prob"] = e.dropout.residual;
  j["attention_probs_dropout_prob"] = e.dropout.attention;
  j["max_position_embeddings"] = m.max_positions;
  j["layer_norm_eps"] = e.layer_norm_eps;
  j["initializer_range"] = 0.02;
  j["pad_token_id"] = o.pad_id;
  if (layout.format == HfFormat::electra) {
    j["type_vocab_size"] = 2;
    j["position_embedding_type"] = "absolute";
    j["summary_type"] = "first";
    j["summary_use_proj"] = true;
    j["summary_activation"] = "gelu";
    j["summary_last_dropout"] = 0.1;
  } else {
    j["embedding_dropout_prob"] = e.dropout.embedding;
    j["activation_dropout_prob"] = e.dropout.activation;
    j["pre_norm"] = e.pre_norm;
    j["embedding_layer_norm"] = e.embedding_norm;
    j["final_layer_norm"] = e.final_norm;
    j["qkv_bias"] = e.qkv_bias;
    j["out_bias"] = e.out_bias;
    j["rel_pos_buckets"] = e.relative_position ? e.rel_buckets : 0;
    j["max_rel_pos"] = e.rel_max_distance;
    const bool discriminator = layout.part == HfPart::discriminator;
    j["binary_head_label"] = is_paper(o) ? "original" : "replaced";
    j["clm_head"] = discriminator && is_paper(o);
    j["scl_dim"] = discriminator && is_paper(o) ? o.scl_dim : 0;
    j["contrastive_theta"] = discriminator && !is_paper(o);
    j["generator_head"] = m.generator_head;
  }
  j["classifier_dropout"] = nullptr;
  j["dtype"] = "float32";
  return j;
}

}  // namespace coco::interop
