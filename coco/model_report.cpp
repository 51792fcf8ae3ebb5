#include "coco/model_report.h"

#include <cstdio>

namespace coco::objective {

namespace {

// Tensors one encoder layer saves for its backward (see model/encoder.cpp), in elements:
//   LayerNorm inputs and outputs, the fused qkv projection and its split q/k/v, the attention
//   probabilities (B, H, T, T) (and their dropout mask, 1 byte each), the merged context, the FF
//   input, the GELU pre-activation and output (B, T, ff), and the residual dropout masks.
double layer_activation_bytes(const model::EncoderConfig& e, int64_t batch, int64_t seq_len, int bytes) {
  const double tokens = static_cast<double>(batch) * seq_len;
  const double hidden = tokens * e.dim * bytes;
  const double inner = tokens * e.inner_dim() * bytes;
  const double probs = static_cast<double>(batch) * e.heads * seq_len * seq_len;
  double total = 4 * hidden                          // block input, attention output, LayerNorm inputs/outputs
                 + 3 * inner + 3 * inner             // qkv and q, k, v
                 + inner                             // merged context
                 + probs * bytes                     // softmax probabilities
                 + 2 * tokens * e.ff_dim() * bytes;  // GELU pre-activation and output
  if (e.dropout.attention > 0) total += probs;       // u8 keep mask
  if (e.dropout.residual > 0) total += 2 * tokens * e.dim;
  if (e.dropout.activation > 0) total += tokens * e.ff_dim();
  return total;
}

double encoder_activation_bytes(const model::EncoderConfig& e, int64_t batch, int64_t seq_len, int bytes) {
  const double tokens = static_cast<double>(batch) * seq_len;
  double total = tokens * (e.embed_dim + e.dim) * bytes;  // embedding output (+ projection)
  total += e.depth * layer_activation_bytes(e, batch, seq_len, bytes);
  return total;
}

}  // namespace

ModelReport describe_model(const CocoModel& model, const model::ModelConfig& config, const ObjectiveConfig& objective,
                           int64_t micro_batch, int64_t seq_len, int bytes) {
  ModelReport report;
  for (const auto& p : model.named_parameters()) {
    const int64_t n = p.tensor.numel();
    report.total_parameters += n;
    if (p.name.rfind("generator", 0) == 0)
      report.generator_parameters += n;
    else if (p.name.rfind("discriminator.", 0) == 0)
      report.discriminator_parameters += n;
    else
      report.head_parameters += n;
  }
  const double masked = static_cast<double>(micro_batch) * seq_len * objective.mask_prob;
  double activations = encoder_activation_bytes(config.generator, micro_batch, seq_len, bytes);
  // The discriminator runs twice when the contrastive loss is on: corrupted and cropped views.
  const int discriminator_passes = objective.cl_weight > 0 ? 2 : 1;
  activations += discriminator_passes * encoder_activation_bytes(config.discriminator, micro_batch, seq_len, bytes);
  // Vocabulary logits at the masked positions: generator head, and the CLM head for paper.
  const int vocab_heads = objective.preset == Preset::paper ? 2 : 1;
  activations += vocab_heads * masked * config.vocab_size * 4.0;
  report.activation_bytes = activations;
  return report;
}

std::string ModelReport::text() const {
  char buffer[512];
  std::snprintf(buffer, sizeof buffer,
                "parameters: %.2fM total (generator %.2fM, discriminator %.2fM incl. shared embeddings, heads %.2fM)\n"
                "activation memory per micro-batch (estimate): %.1f MiB",
                total_parameters / 1e6, generator_parameters / 1e6, discriminator_parameters / 1e6,
                head_parameters / 1e6, activation_bytes / (1024.0 * 1024.0));
  return buffer;
}

}  // namespace coco::objective
