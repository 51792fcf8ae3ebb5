// The transformer encoder shared by the generator and the discriminator.
//
//   ids (B, T) i32, key_mask (B, T) u8 (1 = token, 0 = pad)
//   x = tok[ids] + pos[0..T)                          (B, T, E)
//   x = LN_emb(x) (optional); x = dropout(x)
//   x = x W_proj^T + b_proj   when E != d            (B, T, d)
//   pre-norm:  x += Attn(LN1(x));  x += FF(LN2(x));  ... final LN
//   post-norm: x = LN1(x + Attn(x)); x = LN2(x + FF(x))
//   Attn(h) = merge(softmax(q k^T / sqrt(Dh) + rel_bias + pad_mask) v) W_o^T + b_o, q/k/v from one fused Linear
//   FF(h)   = GELU(h W1^T + b1) W2^T + b2
// Returns the final hidden states (B, T, d).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/module.h"
#include "engine/rng/philox.h"
#include "kernels/relpos.h"
#include "model/config.h"
#include "model/layers.h"

namespace coco::model {

// Everything random in one forward pass is keyed by (seed, step, instance): `instance` separates the
// passes of one step (generator, discriminator on the corrupted view, discriminator on the crop). Dropout
// draws are keyed by element of the global batch: the batch's rows are rows first_row.. of it (a
// data-parallel rank's share; 0 for a whole batch), so a row drops what it drops in any split of the batch.
struct ForwardOptions {
  bool training = false;
  uint64_t seed = 0;
  rng::StepKey step = 0;  // a counter in device memory for a forward captured in a CUDA graph
  uint32_t instance = 0;
  uint64_t first_row = 0;
};

// Token and position tables (and the embedding LayerNorm), possibly shared by two encoders.
struct SharedEmbeddings {
  Tensor token;                  // (V, E)
  Tensor position;               // (T_max, E)
  Tensor norm_gamma, norm_beta;  // (E), defined when the embedding LayerNorm is on
};

// The relative-position bias of one forward pass, shared by the layers. Tensor-core attention (bf16/f16
// on CUDA) applies the (buckets, H) table inside its kernels; every other path reads the dense (H, T, T)
// bias, built on first use and then shared, so the table's gather and scatter happen once per pass.
class RelativeBias {
 public:
  RelativeBias() = default;  // no bias
  RelativeBias(Tensor table, const kernels::RelativePositionConfig& config, int64_t seq_len)
      : table_(std::move(table)), config_(config), seq_len_(seq_len) {}
  bool defined() const { return table_.defined(); }
  const Tensor& table() const { return table_; }
  const kernels::RelativePositionConfig& config() const { return config_; }
  // (H, T, T) in the table's dtype; undefined when there is no table.
  const Tensor& dense() const;

 private:
  Tensor table_;
  kernels::RelativePositionConfig config_{};
  int64_t seq_len_ = 0;
  mutable Tensor dense_;
};

class Attention : public Module {
 public:
  Attention(const EncoderConfig& config, Initializer& init, Device device);
  // x (B, T, d), key_mask (B, T), bias: the relative-position bias or none -> (B, T, d)
  Tensor forward(const Tensor& x, const Tensor& key_mask, const RelativeBias& bias, const ForwardOptions& options,
                 uint32_t layer) const;

 private:
  const EncoderConfig& config_;
  std::shared_ptr<Linear> qkv_, out_;
};

class FeedForward : public Module {
 public:
  FeedForward(const EncoderConfig& config, Initializer& init, Device device);
  Tensor forward(const Tensor& x, const ForwardOptions& options, uint32_t layer) const;

 private:
  const EncoderConfig& config_;
  std::shared_ptr<Linear> fc1_, fc2_;
};

class EncoderLayer : public Module {
 public:
  EncoderLayer(const EncoderConfig& config, Initializer& init, Device device);
  Tensor forward(const Tensor& x, const Tensor& key_mask, const RelativeBias& bias, const ForwardOptions& options,
                 uint32_t layer) const;

 private:
  const EncoderConfig& config_;
  std::shared_ptr<LayerNorm> norm1_, norm2_;
  std::shared_ptr<Attention> attn_;
  std::shared_ptr<FeedForward> ff_;
};

class Encoder : public Module {
 public:
  // `shared` holds tables to reuse (tied with another encoder); undefined members are created here.
  Encoder(const EncoderConfig& config, int64_t vocab_size, int64_t max_positions, int32_t pad_id,
          SharedEmbeddings shared, Initializer& init, Device device);

  Tensor forward(const Tensor& ids, const Tensor& key_mask, const ForwardOptions& options) const;

  const SharedEmbeddings& embeddings() const { return embeddings_; }
  const EncoderConfig& config() const { return config_; }

 private:
  EncoderConfig config_;
  int32_t pad_id_;
  int64_t max_positions_;
  SharedEmbeddings embeddings_;
  std::shared_ptr<Linear> project_;
  std::vector<std::shared_ptr<EncoderLayer>> layers_;
  std::shared_ptr<LayerNorm> final_norm_;
  Tensor relative_bias_table_;  // (buckets, H), shared by all layers of this encoder
};

}  // namespace coco::model
