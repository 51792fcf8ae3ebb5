// The COCO-LM objective: generator MLM, corruption by sampling, the discriminator's corrective loss
// (replaced-token detection for `lucidrains`, copy + CLM for `paper`) and sequence contrastive
// learning between the corrupted sequence and a cropped view of the original. Exact semantics:
// ../shared/reference/coco-spec.md. Every knob is a config key ("objective": {...}) with the spec's
// default for the chosen preset, except the special-token ids: `coco train` takes those the config leaves out (or
// sets to "auto") from the prepared data (coco/train_config.h), so the defaults below only serve direct users.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/config.h"
#include "engine/module.h"
#include "engine/pinned_upload.h"
#include "model/config.h"
#include "model/encoder.h"

namespace coco::objective {

enum class Preset { lucidrains, paper };

struct ObjectiveConfig {
  Preset preset = Preset::lucidrains;
  int32_t pad_id = 0, cls_id = 1, sep_id = -1, mask_id = 2, unk_id = -1;
  double mask_prob = 0.15;
  std::vector<int32_t> mask_ignore_token_ids;
  double replace_prob = 0.85;      // lucidrains
  double random_token_prob = 0.0;  // lucidrains
  double crop_percentage = 0.5;    // lucidrains 0.5 (subset), paper 0.9 (contiguous span)
  double temperature = 1.0;        // sampling temperature (lucidrains Gumbel-max)
  std::string sampler = "gumbel";  // "gumbel" (lucidrains) | "multinomial" (paper)
  double gen_weight = 1.0;         // MLM
  double disc_weight = 50.0;       // rtd (lucidrains) or copy (paper, lambda_copy)
  double clm_weight = 1.0;         // paper only
  double cl_weight = 1.0;          // contrastive
  double cl_initial_theta = 1.0;   // lucidrains learnable log-scale
  int64_t scl_dim = 768;           // paper SCL head width
  double scl_temperature = 1.0;    // paper NT-Xent tau (fixed)
  std::string clm_form = "code";   // paper: "code" (released loss) | "paper" (mixture)
  bool prepend_cls = true;         // lucidrains: x = [CLS] + x[:, :T-1]
};

ObjectiveConfig parse_objective_config(ConfigObject reader);
void validate_objective_config(const ObjectiveConfig& objective, const model::ModelConfig& model, int64_t micro_batch,
                               const std::string& source);
nlohmann::json objective_config_to_json(const ObjectiveConfig& config);

// Slots of Outputs::counts.
enum OutputCount : int {
  kMasked,       // masked positions (the MLM's rows)
  kMlmCorrect,   // masked positions whose generator argmax is the original token
  kValidTokens,  // non-pad tokens of the corrupted sequence
  kReplaced,     // tokens the generator's samples changed
  kRtdCorrect,   // discriminator binary predictions that are right (over kRtdCount valid tokens)
  kRtdCount,
  kClCorrect,  // contrastive anchors whose positive scores highest (over kClCount anchors)
  kClCount,
  kClmCorrect,  // paper: masked positions whose CLM argmax is the original token
  kOutputCounts
};

// The counts of one forward, on the host.
struct Counts {
  int64_t masked = 0, mlm_correct = 0;
  int64_t valid_tokens = 0, replaced = 0;
  int64_t rtd_correct = 0, rtd_count = 0;
  int64_t cl_correct = 0, cl_count = 0;
  int64_t clm_correct = 0;
  double mlm_accuracy() const { return masked ? double(mlm_correct) / masked : 0.0; }
  double replaced_fraction() const { return valid_tokens ? double(replaced) / valid_tokens : 0.0; }
  double rtd_accuracy() const { return rtd_count ? double(rtd_correct) / rtd_count : 0.0; }
  double cl_accuracy() const { return cl_count ? double(cl_correct) / cl_count : 0.0; }
  double clm_accuracy() const { return masked ? double(clm_correct) / masked : 0.0; }
};

// Losses are 0-d tensors on the model's device (`loss` is the weighted total, recorded on the tape).
// Metric counts stay on the device too: forward never reads a device value back, so on CUDA it
// issues no synchronisation.
struct Outputs {
  Tensor loss, mlm_loss, rtd_loss, clm_loss, cl_loss;  // clm_loss undefined for lucidrains
  Tensor counts;                                       // (kOutputCounts) f64 on the model's device, slots OutputCount
  // paper: the copy logits at the masked positions' capacity (ops::MaskedBatch), the CLM loss's
  // stop-gradient input.
  Tensor clm_copy_logits;
  // Reads `counts` back (one device-to-host copy on CUDA).
  Counts read_counts() const;
};

// Generator + discriminator + heads. Parameter names: generator.*, discriminator.*, generator_head.*,
// rtd_head.* (lucidrains) / copy_head.* + clm_head.bias + scl_head.* (paper), cl_theta (lucidrains).
class CocoModel : public Module {
 public:
  // Parameters are stored as `dtype`: f32 for training, f64 for gradient checks on the CPU.
  CocoModel(const model::ModelConfig& model, const ObjectiveConfig& objective, uint64_t seed, Device device,
            DType dtype = DType::f32);

  // tokens (B, T) i32, right-padded with pad_id, best on the CPU: the ids are validated there and
  // uploaded once (a CUDA tensor is read back first). `step` keys every random decision. Shapes
  // depend on B, T and the config only (the masked positions have a fixed capacity).
  // `first_row`: the global row of tokens' row 0 when the batch is a share of a larger one (data
  // parallelism, gradient accumulation): masks, crops, samples and dropout are keyed by (step, global row,
  // position), so a row draws the same numbers however the global batch is split.
  // `step` may be a counter in device memory (rng::StepKey::from_counter): see forward_device_tokens.
  Outputs forward(const Tensor& tokens, rng::StepKey step, bool training, uint64_t first_row = 0);

  // forward's two halves. device_tokens validates and prepares the ids on the host ([CLS] prepended
  // when the objective asks) and uploads them; forward_device_tokens runs the model on ids that
  // device_tokens produced, with no host read, upload or synchronisation, so that it can be captured in
  // a CUDA graph: the graph reads its ids from the tensor of the capture (refill it with copy_from before
  // a replay) and, with a step counter in device memory, draws the replayed step's masks, samples and
  // dropout. Ids are not checked again. Once per new (B, T) it uploads a small table, so a capture
  // comes after a warm-up forward of the same shape. `upload`: the pinned ring to upload through on CUDA
  // (a CUDA graph's fixed input buffers, coco/step_graph.h); null: the model's own one-slot ring.
  Tensor device_tokens(const Tensor& tokens, PinnedUpload* upload = nullptr) const;
  Outputs forward_device_tokens(const Tensor& tokens, rng::StepKey step, bool training, uint64_t first_row = 0);

  const model::Encoder& generator() const { return *generator_; }
  const model::Encoder& discriminator() const { return *discriminator_; }
  Device device() const { return device_; }
  // Stop-gradient inputs are constants of the function being differentiated: finite-difference checks
  // freeze the CLM loss's copy logits at their value in the unperturbed forward (Outputs::clm_copy_logits);
  // an undefined tensor unfreezes them.
  void freeze_clm_copy_logits(Tensor copy_logits) { frozen_clm_copy_logits_ = std::move(copy_logits); }
  uint64_t seed() const { return seed_; }

 private:
  Tensor generator_logits(const Tensor& hidden_rows) const;

  model::ModelConfig model_config_;
  ObjectiveConfig config_;
  uint64_t seed_;
  Device device_;
  DType dtype_;
  std::shared_ptr<model::Encoder> generator_, discriminator_;
  // generator head: "linear": out; "bert": transform + norm + tied embedding + bias
  std::shared_ptr<model::Linear> gen_out_, gen_transform_;
  std::shared_ptr<model::LayerNorm> gen_norm_;
  Tensor gen_bias_;
  std::shared_ptr<model::Linear> binary_head_;  // Linear(d, 1)
  Tensor clm_bias_;                             // (V), paper
  std::shared_ptr<model::Linear> scl_dense_;    // paper
  std::shared_ptr<model::LayerNorm> scl_norm_;  // paper
  Tensor cl_theta_;                             // lucidrains, (1)
  Tensor frozen_clm_copy_logits_;
  // Flat row index b * T of each sequence's [CLS], per (B, T): uploaded once, not every forward.
  std::map<std::pair<int64_t, int64_t>, Tensor> cls_rows_;
  // CUDA: the token ids go up through one pinned staging slot (no synchronisation, and the same copy
  // every step); created by the first forward.
  mutable std::shared_ptr<PinnedUpload> token_upload_;  // device_tokens uploads through it
};

}  // namespace coco::objective
