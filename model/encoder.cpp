#include "model/encoder.h"

#include "engine/ops/activation.h"
#include "engine/ops/attention.h"
#include "engine/ops/dropout.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/embedding.h"
#include "engine/ops/layernorm.h"
#include "engine/ops/permute.h"
#include "engine/ops/relpos.h"

namespace coco::model {

namespace {

// Dropout streams: purpose per dropout site, instance = pass * 64 + layer (depth <= 64 is validated),
// and the second residual dropout of a layer offset in the index space.
constexpr uint64_t kSecondSiteOffset = uint64_t{1} << 39;

rng::Stream dropout_stream(const ForwardOptions& o, rng::Purpose purpose, uint32_t layer) {
  return rng::Stream(o.seed, o.step, purpose, (o.instance & 3u) * 64u + (layer & 63u));
}

Tensor maybe_dropout(const Tensor& x, double p, const ForwardOptions& o, rng::Purpose purpose, uint32_t layer,
                     uint64_t index_offset = 0) {
  if (!o.training || p <= 0.0) return x;
  return ops::dropout(x, p, dropout_stream(o, purpose, layer), /*training=*/true, index_offset);
}

}  // namespace

const Tensor& RelativeBias::dense() const {
  if (table_.defined() && !dense_.defined()) dense_ = ops::relative_position_bias(table_, seq_len_, config_);
  return dense_;
}

Attention::Attention(const EncoderConfig& config, Initializer& init, Device device) : config_(config) {
  qkv_ = register_module("qkv",
                         std::make_shared<Linear>(config.dim, 3 * config.inner_dim(), config.qkv_bias, init, device));
  out_ =
      register_module("out", std::make_shared<Linear>(config.inner_dim(), config.dim, config.out_bias, init, device));
}

Tensor Attention::forward(const Tensor& x, const Tensor& key_mask, const RelativeBias& bias,
                          const ForwardOptions& options, uint32_t layer) const {
  const Tensor qkv = qkv_->forward(x);                  // (B, T, 3 H Dh)
  auto [q, k, v] = ops::split_qkv(qkv, config_.heads);  // 3 x (B, H, T, Dh)
  const double p = options.training ? config_.dropout.attention : 0.0;
  const rng::Stream stream = dropout_stream(options, rng::Purpose::dropout_attention, layer);
  // (B, H, T, Dh): the table inside the tensor-core kernels, or the shared dense bias.
  const Tensor context =
      bias.defined() && ops::attention_uses_tensor_cores(q)
          ? ops::attention_relative(q, k, v, key_mask, bias.table(), bias.config(), p, stream, options.training)
          : ops::attention(q, k, v, key_mask, bias.dense(), p, stream, options.training);
  return out_->forward(ops::merge_heads(context));  // (B, T, d)
}

FeedForward::FeedForward(const EncoderConfig& config, Initializer& init, Device device) : config_(config) {
  fc1_ = register_module("fc1", std::make_shared<Linear>(config.dim, config.ff_dim(), true, init, device));
  fc2_ = register_module("fc2", std::make_shared<Linear>(config.ff_dim(), config.dim, true, init, device));
}

Tensor FeedForward::forward(const Tensor& x, const ForwardOptions& options, uint32_t layer) const {
  Tensor h = fc1_->forward(x, ops::Activation::gelu_erf);  // (B, T, ff)
  h = maybe_dropout(h, config_.dropout.activation, options, rng::Purpose::dropout_activation, layer);
  return fc2_->forward(h);  // (B, T, d)
}

EncoderLayer::EncoderLayer(const EncoderConfig& config, Initializer& init, Device device) : config_(config) {
  attn_ = register_module("attn", std::make_shared<Attention>(config, init, device));
  norm1_ = register_module("attn_norm", std::make_shared<LayerNorm>(config.dim, config.layer_norm_eps, init, device));
  ff_ = register_module("ff", std::make_shared<FeedForward>(config, init, device));
  norm2_ = register_module("ff_norm", std::make_shared<LayerNorm>(config.dim, config.layer_norm_eps, init, device));
}

Tensor EncoderLayer::forward(const Tensor& x, const Tensor& key_mask, const RelativeBias& bias,
                             const ForwardOptions& options, uint32_t layer) const {
  const double p = config_.dropout.residual;
  if (config_.pre_norm) {
    Tensor a = attn_->forward(norm1_->forward(x), key_mask, bias, options, layer);
    Tensor h = ops::add(x, maybe_dropout(a, p, options, rng::Purpose::dropout_residual, layer));
    Tensor f = ff_->forward(norm2_->forward(h), options, layer);
    return ops::add(h, maybe_dropout(f, p, options, rng::Purpose::dropout_residual, layer, kSecondSiteOffset));
  }
  Tensor a = attn_->forward(x, key_mask, bias, options, layer);
  a = maybe_dropout(a, p, options, rng::Purpose::dropout_residual, layer);
  Tensor h = ops::residual_layernorm(a, x, norm1_->gamma(), norm1_->beta(), config_.layer_norm_eps);
  Tensor f = ff_->forward(h, options, layer);
  f = maybe_dropout(f, p, options, rng::Purpose::dropout_residual, layer, kSecondSiteOffset);
  return ops::residual_layernorm(f, h, norm2_->gamma(), norm2_->beta(), config_.layer_norm_eps);
}

Encoder::Encoder(const EncoderConfig& config, int64_t vocab_size, int64_t max_positions, int32_t pad_id,
                 SharedEmbeddings shared, Initializer& init, Device device)
    : config_(config), pad_id_(pad_id), max_positions_(max_positions), embeddings_(std::move(shared)) {
  if (!embeddings_.token.defined()) embeddings_.token = init.embedding(vocab_size, config.embed_dim, device, pad_id);
  if (!embeddings_.position.defined()) embeddings_.position = init.embedding(max_positions, config.embed_dim, device);
  register_parameter("token_embedding", embeddings_.token);
  register_parameter("position_embedding", embeddings_.position);
  if (config.embedding_norm) {
    if (!embeddings_.norm_gamma.defined()) {
      embeddings_.norm_gamma = init.constant(Shape{config.embed_dim}, 1.0, device);
      embeddings_.norm_beta = init.constant(Shape{config.embed_dim}, 0.0, device);
    }
    auto norm = register_module("embedding_norm", std::make_shared<Module>());
    norm->register_parameter("weight", embeddings_.norm_gamma, /*weight_decay=*/false);
    norm->register_parameter("bias", embeddings_.norm_beta, /*weight_decay=*/false);
  }
  if (config.embed_dim != config.dim)
    project_ = register_module("embedding_projection",
                               std::make_shared<Linear>(config.embed_dim, config.dim, true, init, device));
  if (config.relative_position)
    relative_bias_table_ = register_parameter(
        "relative_position_bias", init.scheme() == "bert"
                                      ? init.normal(Shape{config.rel_buckets, config.heads}, 0.02, device)
                                      : init.constant(Shape{config.rel_buckets, config.heads}, 0.0, device));
  auto layers = register_module("layers", std::make_shared<Module>());
  for (int64_t i = 0; i < config.depth; ++i)
    layers_.push_back(
        layers->register_module(std::to_string(i), std::make_shared<EncoderLayer>(config_, init, device)));
  if (config.final_norm)
    final_norm_ =
        register_module("final_norm", std::make_shared<LayerNorm>(config.dim, config.layer_norm_eps, init, device));
}

Tensor Encoder::forward(const Tensor& ids, const Tensor& key_mask, const ForwardOptions& options) const {
  check_rank("Encoder::forward", ids, 2);
  const int64_t seq_len = ids.size(1);
  // The bert scheme (paper) keeps the padding row at zero: it gets no gradient, like nn.Embedding(padding_idx).
  const int64_t padding_id = config_.init == "bert" ? pad_id_ : -1;
  Tensor x = ops::embedding(ids, embeddings_.token, embeddings_.position, padding_id);  // (B, T, E)
  if (config_.embedding_norm)
    x = ops::layernorm(x, embeddings_.norm_gamma, embeddings_.norm_beta, config_.layer_norm_eps);
  x = maybe_dropout(x, config_.dropout.embedding, options, rng::Purpose::dropout_embedding, 0);
  if (project_) x = project_->forward(x);  // (B, T, d)
  RelativeBias bias;
  if (config_.relative_position)
    bias = RelativeBias(relative_bias_table_,
                        {static_cast<int>(config_.rel_buckets), static_cast<int>(config_.rel_max_distance),
                         static_cast<int>(max_positions_)},
                        seq_len);
  for (size_t i = 0; i < layers_.size(); ++i)
    x = layers_[i]->forward(x, key_mask, bias, options, static_cast<uint32_t>(i));
  if (final_norm_) x = final_norm_->forward(x);
  return x;
}

}  // namespace coco::model
