#include "model/hf_names.h"

namespace coco::model::hf {

std::vector<TensorName> encoder_names(const EncoderConfig& e, int64_t vocab_size, int64_t max_positions,
                                      const std::string& coco_prefix, const std::string& hf_prefix,
                                      const EmbeddingOwners& owners) {
  std::vector<TensorName> out;
  auto add = [&](std::string coco, std::vector<int64_t> shape, std::vector<std::string> hf) {
    for (auto& name : hf) name = hf_prefix + name;
    out.push_back({std::move(coco), std::move(shape), std::move(hf)});
  };
  // Linear / LayerNorm pairs: `coco` and `hf` are module paths, ".weight" / ".bias" appended.
  auto linear = [&](const std::string& coco, const std::string& hf, int64_t in, int64_t out_features, bool bias) {
    add(coco_prefix + coco + ".weight", {out_features, in}, {hf + ".weight"});
    if (bias) add(coco_prefix + coco + ".bias", {out_features}, {hf + ".bias"});
  };
  auto norm = [&](const std::string& coco_module, const std::string& hf, int64_t dim) {
    add(coco_module + ".weight", {dim}, {hf + ".weight"});
    add(coco_module + ".bias", {dim}, {hf + ".bias"});
  };

  add(owners.token + "token_embedding", {vocab_size, e.embed_dim}, {"embeddings.word_embeddings.weight"});
  add(owners.position + "position_embedding", {max_positions, e.embed_dim}, {"embeddings.position_embeddings.weight"});
  if (e.embedding_norm) norm(owners.norm + "embedding_norm", "embeddings.LayerNorm", e.embed_dim);
  if (e.embed_dim != e.dim) linear("embedding_projection", "embeddings_project", e.embed_dim, e.dim, true);
  if (e.relative_position)
    add(coco_prefix + "relative_position_bias", {e.rel_buckets, e.heads}, {"encoder.rel_pos_bias.weight"});
  const int64_t inner = e.inner_dim();
  for (int64_t i = 0; i < e.depth; ++i) {
    const std::string c = "layers." + std::to_string(i) + ".";
    const std::string h = "encoder.layer." + std::to_string(i) + ".";
    const std::string self = h + "attention.self.";
    add(coco_prefix + c + "attn.qkv.weight", {3 * inner, e.dim},
        {self + "query.weight", self + "key.weight", self + "value.weight"});
    if (e.qkv_bias)
      add(coco_prefix + c + "attn.qkv.bias", {3 * inner},
          {self + "query.bias", self + "key.bias", self + "value.bias"});
    linear(c + "attn.out", h + "attention.output.dense", inner, e.dim, e.out_bias);
    norm(coco_prefix + c + "attn_norm", h + "attention.output.LayerNorm", e.dim);
    linear(c + "ff.fc1", h + "intermediate.dense", e.dim, e.ff_dim(), true);
    linear(c + "ff.fc2", h + "output.dense", e.ff_dim(), e.dim, true);
    norm(coco_prefix + c + "ff_norm", h + "output.LayerNorm", e.dim);
  }
  if (e.final_norm) norm(coco_prefix + "final_norm", "encoder.LayerNorm", e.dim);
  return out;
}

std::vector<TensorName> encoder_names(const EncoderConfig& config, int64_t vocab_size, int64_t max_positions,
                                      const std::string& coco_prefix, const std::string& hf_prefix) {
  return encoder_names(config, vocab_size, max_positions, coco_prefix, hf_prefix,
                       {coco_prefix, coco_prefix, coco_prefix});
}

}  // namespace coco::model::hf
