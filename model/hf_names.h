// Hugging Face names of an encoder's parameters: the BERT / ELECTRA layout (`transformers`'
// modeling_bert.py / modeling_electra.py), which the COCO-LM modeling code that `coco export` ships
// follows as well. The registry names (model/encoder.h) on the left, the Hugging Face names on the right
// (without the model prefix such as "electra."):
//
//   token_embedding                  embeddings.word_embeddings.weight              (V, E)
//   position_embedding               embeddings.position_embeddings.weight          (P, E)
//   embedding_norm.{weight,bias}     embeddings.LayerNorm.{weight,bias}             (E)
//   embedding_projection.*           embeddings_project.*                           (d, E), (d)
//   relative_position_bias           encoder.rel_pos_bias.weight                    (buckets, H)   [COCO-LM only]
//   layers.i.attn.qkv.*              encoder.layer.i.attention.self.{query,key,value}.*  rows [q | k | v] split
//   layers.i.attn.out.*              encoder.layer.i.attention.output.dense.*
//   layers.i.attn_norm.*             encoder.layer.i.attention.output.LayerNorm.*
//   layers.i.ff.fc1.*                encoder.layer.i.intermediate.dense.*
//   layers.i.ff.fc2.*                encoder.layer.i.output.dense.*
//   layers.i.ff_norm.*               encoder.layer.i.output.LayerNorm.*
//   final_norm.*                     encoder.LayerNorm.*                            [COCO-LM only]
//
// Pre-norm layers keep the same names: the LayerNorm of the attention block is "attention.output.LayerNorm"
// whether it runs before the attention (pre-norm) or after the residual sum (post-norm).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace coco::model::hf {

// One registry tensor and the Hugging Face tensor(s) it becomes: one name, or three for the fused q/k/v
// projection, whose rows [0, n), [n, 2n), [2n, 3n) are the query, key and value (n = heads * dim_head).
struct TensorName {
  std::string coco;             // dotted registry name, e.g. "discriminator.layers.0.attn.qkv.weight"
  std::vector<int64_t> shape;   // the registry tensor's shape
  std::vector<std::string> hf;  // Hugging Face name(s), model prefix included
  bool split_qkv() const { return hf.size() == 3; }
};

// Registry prefixes ("discriminator.") of the encoders that own the embedding tables an encoder reads:
// a table tied to another encoder is stored once, under the first owner's name.
struct EmbeddingOwners {
  std::string token, position, norm;
};

// The tensors of one encoder, in registry order. `coco_prefix` is the encoder's registry prefix
// ("generator."), `hf_prefix` the model prefix of the Hugging Face names ("electra.", "cocolm." or "").
std::vector<TensorName> encoder_names(const EncoderConfig& config, int64_t vocab_size, int64_t max_positions,
                                      const std::string& coco_prefix, const std::string& hf_prefix,
                                      const EmbeddingOwners& owners);

// The same with every table owned by the encoder itself.
std::vector<TensorName> encoder_names(const EncoderConfig& config, int64_t vocab_size, int64_t max_positions,
                                      const std::string& coco_prefix, const std::string& hf_prefix);

}  // namespace coco::model::hf
