#include "coco/objective.h"

#include <cmath>

#include "engine/ops/activation.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/gather.h"
#include "engine/ops/linear.h"
#include "engine/ops/losses.h"
#include "engine/ops/masking.h"
#include "engine/ops/sampling.h"
#include "engine/ops/scalars.h"
#include "engine/tape.h"

namespace coco::objective {

ObjectiveConfig parse_objective_config(ConfigObject r) {
  ObjectiveConfig c;
  c.preset =
      r.get_choice("preset", "lucidrains", {"lucidrains", "paper"}) == "paper" ? Preset::paper : Preset::lucidrains;
  const bool paper = c.preset == Preset::paper;
  const int32_t max_id = INT32_MAX;
  c.pad_id = static_cast<int32_t>(r.get_int("pad_id", paper ? 0 : 0, 0, max_id));
  c.cls_id = static_cast<int32_t>(r.get_int("cls_id", paper ? 101 : 1, 0, max_id));
  c.sep_id = static_cast<int32_t>(r.get_int("sep_id", paper ? 102 : -1, -1, max_id));
  c.mask_id = static_cast<int32_t>(r.get_int("mask_id", paper ? 103 : 2, 0, max_id));
  c.unk_id = static_cast<int32_t>(r.get_int("unk_id", paper ? 100 : -1, -1, max_id));
  c.mask_prob = r.get_double("mask_prob", 0.15, 0.0, 1.0);
  for (int64_t id : r.get_int_list("mask_ignore_token_ids", {})) {
    if (id < 0 || id > max_id) r.fail("mask_ignore_token_ids", "a list of token ids >= 0");
    c.mask_ignore_token_ids.push_back(static_cast<int32_t>(id));
  }
  c.replace_prob = r.get_double("replace_prob", 0.85, 0.0, 1.0);
  c.random_token_prob = r.get_double("random_token_prob", 0.0, 0.0, 1.0);
  c.crop_percentage = r.get_double("crop_percentage", paper ? 0.9 : 0.5, 0.0, 1.0);
  c.temperature = r.get_double("temperature", 1.0, 1e-6, 1e6);
  c.sampler = r.get_choice("sampler", paper ? "multinomial" : "gumbel", {"gumbel", "multinomial"});
  c.gen_weight = r.get_double("gen_weight", 1.0, 0.0, 1e6);
  c.disc_weight = r.get_double("disc_weight", 50.0, 0.0, 1e6);
  c.clm_weight = r.get_double("clm_weight", paper ? 1.0 : 0.0, 0.0, 1e6);
  c.cl_weight = r.get_double("cl_weight", 1.0, 0.0, 1e6);
  c.cl_initial_theta = r.get_double("cl_initial_theta", 1.0, -20.0, 20.0);
  c.scl_dim = r.get_int("scl_dim", 768, 1, 1 << 16);
  c.scl_temperature = r.get_double("scl_temperature", 1.0, 1e-6, 1e6);
  c.clm_form = r.get_choice("clm_form", "code", {"code", "paper"});
  c.prepend_cls = r.get_bool("prepend_cls", !paper);
  if (!paper && r.has("clm_weight") && c.clm_weight != 0.0)
    r.fail("clm_weight", "0 for the lucidrains preset (it has no CLM head)");
  if (!paper && c.clm_form != "code")
    r.fail("clm_form", "\"code\" or absent for the lucidrains preset (it has no CLM head)");
  r.finish();
  return c;
}

void validate_objective_config(const ObjectiveConfig& c, const model::ModelConfig& m, int64_t micro_batch,
                               const std::string& source) {
  auto fail = [&](const std::string& message) { throw ConfigError(source + ": " + message); };
  const int64_t v = m.vocab_size;
  auto check_id = [&](const char* key, int32_t id, bool optional) {
    if (optional && id < 0) return;
    if (id < 0 || id >= v)
      fail(std::string("key 'objective.") + key + "': token id " + std::to_string(id) +
           " is outside the vocabulary [0, " + std::to_string(v) + ")");
  };
  check_id("pad_id", c.pad_id, false);
  check_id("cls_id", c.cls_id, false);
  check_id("mask_id", c.mask_id, false);
  check_id("sep_id", c.sep_id, true);
  check_id("unk_id", c.unk_id, true);
  for (int32_t id : c.mask_ignore_token_ids) check_id("mask_ignore_token_ids", id, false);
  if (c.cl_weight > 0 && micro_batch < 2)
    fail("the contrastive loss (objective.cl_weight = " + std::to_string(c.cl_weight) +
         ") needs at least 2 rows per micro-batch, got train.micro_batch = " + std::to_string(micro_batch) +
         " (set objective.cl_weight to 0 or raise the micro-batch)");
  if (c.preset == Preset::paper) {
    if (m.generator_head != "bert") fail("the paper preset needs model.generator_head = \"bert\" (tied output)");
    if (m.generator.dim != m.discriminator.dim)
      fail(
          "the paper preset ties the generator's output and the CLM head to the token embedding, so "
          "model.generator.dim must equal model.discriminator.dim");
  }
  if (m.discriminator.embed_dim != m.discriminator.dim && c.preset == Preset::paper)
    fail("the paper preset's CLM head uses the tied token embedding: model.discriminator.embed_dim must equal dim");
  for (const auto* e : {&m.generator, &m.discriminator})
    if (e->depth > 64) fail("encoders deeper than 64 layers are not supported (dropout streams are keyed per layer)");
}

nlohmann::json objective_config_to_json(const ObjectiveConfig& c) {
  return {{"preset", c.preset == Preset::paper ? "paper" : "lucidrains"},
          {"pad_id", c.pad_id},
          {"cls_id", c.cls_id},
          {"sep_id", c.sep_id},
          {"mask_id", c.mask_id},
          {"unk_id", c.unk_id},
          {"mask_prob", c.mask_prob},
          {"mask_ignore_token_ids", c.mask_ignore_token_ids},
          {"replace_prob", c.replace_prob},
          {"random_token_prob", c.random_token_prob},
          {"crop_percentage", c.crop_percentage},
          {"temperature", c.temperature},
          {"sampler", c.sampler},
          {"gen_weight", c.gen_weight},
          {"disc_weight", c.disc_weight},
          {"clm_weight", c.clm_weight},
          {"cl_weight", c.cl_weight},
          {"cl_initial_theta", c.cl_initial_theta},
          {"scl_dim", c.scl_dim},
          {"scl_temperature", c.scl_temperature},
          {"clm_form", c.clm_form},
          {"prepend_cls", c.prepend_cls}};
}

namespace {

constexpr uint32_t kGeneratorPass = 0, kCorruptedPass = 1, kCropPass = 2, kGeneratorEvalPass = 3;

bool any_dropout(const model::EncoderConfig& e) {
  return e.dropout.embedding > 0 || e.dropout.attention > 0 || e.dropout.residual > 0 || e.dropout.activation > 0;
}

// Flat row index of position 0 of each sequence: the CLS hidden state.
Tensor cls_rows(int64_t batch, int64_t seq_len, Device device) {
  std::vector<int32_t> rows(static_cast<size_t>(batch));
  for (int64_t b = 0; b < batch; ++b) rows[b] = static_cast<int32_t>(b * seq_len);
  return Tensor::from_vector(rows, Shape{batch}, device);
}

}  // namespace

Counts Outputs::read_counts() const {
  const std::vector<double> c = counts.to_vector<double>();
  const auto at = [&](OutputCount slot) { return static_cast<int64_t>(c.at(static_cast<size_t>(slot))); };
  Counts out;
  out.masked = at(kMasked);
  out.mlm_correct = at(kMlmCorrect);
  out.valid_tokens = at(kValidTokens);
  out.replaced = at(kReplaced);
  out.rtd_correct = at(kRtdCorrect);
  out.rtd_count = at(kRtdCount);
  out.cl_correct = at(kClCorrect);
  out.cl_count = at(kClCount);
  out.clm_correct = at(kClmCorrect);
  return out;
}

CocoModel::CocoModel(const model::ModelConfig& m, const ObjectiveConfig& c, uint64_t seed, Device device, DType dtype)
    : model_config_(m), config_(c), seed_(seed), device_(device), dtype_(dtype) {
  const bool paper = c.preset == Preset::paper;
  model::Initializer gen_init(seed ^ 0x67656E00ull, m.generator.init, dtype);
  model::Initializer disc_init(seed ^ 0x64697300ull, m.discriminator.init, dtype);
  model::Initializer head_init(seed ^ 0x68656164ull, m.discriminator.init, dtype);
  discriminator_ = register_module(
      "discriminator", std::make_shared<model::Encoder>(m.discriminator, m.vocab_size, m.max_positions, c.pad_id,
                                                        model::SharedEmbeddings{}, disc_init, device));
  model::SharedEmbeddings shared;
  if (m.tie_token_embedding) shared.token = discriminator_->embeddings().token;
  if (m.tie_position_embedding) shared.position = discriminator_->embeddings().position;
  if (m.tie_embedding_norm && m.generator.embedding_norm) {
    shared.norm_gamma = discriminator_->embeddings().norm_gamma;
    shared.norm_beta = discriminator_->embeddings().norm_beta;
  }
  generator_ = register_module("generator", std::make_shared<model::Encoder>(m.generator, m.vocab_size, m.max_positions,
                                                                             c.pad_id, shared, gen_init, device));
  auto gen_head = register_module("generator_head", std::make_shared<Module>());
  if (m.generator_head == "linear") {
    gen_out_ = gen_head->register_module(
        "out", std::make_shared<model::Linear>(m.generator.dim, m.vocab_size, true, head_init, device));
  } else {
    gen_transform_ = gen_head->register_module(
        "dense", std::make_shared<model::Linear>(m.generator.dim, m.generator.dim, true, head_init, device));
    gen_norm_ = gen_head->register_module(
        "norm", std::make_shared<model::LayerNorm>(m.generator.dim, m.generator.layer_norm_eps, head_init, device));
    gen_bias_ = gen_head->register_parameter("bias", head_init.constant(Shape{m.vocab_size}, 0.0, device), false);
  }
  binary_head_ = register_module(paper ? "copy_head" : "rtd_head",
                                 std::make_shared<model::Linear>(m.discriminator.dim, 1, true, head_init, device));
  if (paper) {
    auto clm = register_module("clm_head", std::make_shared<Module>());
    clm_bias_ = clm->register_parameter("bias", head_init.constant(Shape{m.vocab_size}, 0.0, device), false);
    auto scl = register_module("scl_head", std::make_shared<Module>());
    scl_dense_ = scl->register_module(
        "dense", std::make_shared<model::Linear>(m.discriminator.dim, c.scl_dim, true, head_init, device));
    scl_norm_ = scl->register_module(
        "norm", std::make_shared<model::LayerNorm>(c.scl_dim, m.discriminator.layer_norm_eps, head_init, device));
  } else {
    cl_theta_ = register_parameter("cl_theta", head_init.constant(Shape{1}, c.cl_initial_theta, device), false);
  }
}

Tensor CocoModel::generator_logits(const Tensor& rows) const {
  if (gen_out_) return gen_out_->forward(rows);  // (M, V)
  Tensor h = gen_norm_->forward(gen_transform_->forward(rows, ops::Activation::gelu_erf));
  return ops::linear(h, generator_->embeddings().token, gen_bias_);  // tied: (M, d) x (V, d)^T
}

Tensor CocoModel::device_tokens(const Tensor& input, PinnedUpload* upload) const {
  check_rank("CocoModel::forward", input, 2);
  input.check_dtype(DType::i32, "CocoModel::forward");
  const int64_t batch = input.size(0), seq_len = input.size(1);
  if (seq_len > model_config_.max_positions)
    throw TensorError("CocoModel::forward: sequence length " + std::to_string(seq_len) +
                      " exceeds model.max_positions (" + std::to_string(model_config_.max_positions) + ")");
  std::vector<int32_t> host = input.to_vector<int32_t>();
  for (size_t i = 0; i < host.size(); ++i)
    if (host[i] < 0 || host[i] >= model_config_.vocab_size)
      throw TensorError("CocoModel::forward: token id " + std::to_string(host[i]) + " at row " +
                        std::to_string(i / seq_len) + ", position " + std::to_string(i % seq_len) +
                        " is outside the vocabulary [0, " + std::to_string(model_config_.vocab_size) + ")");
  if (config_.prepend_cls) {  // x = [CLS] + x[:, :T-1]
    for (int64_t b = 0; b < batch; ++b) {
      int32_t* row = host.data() + b * seq_len;
      for (int64_t t = seq_len - 1; t > 0; --t) row[t] = row[t - 1];
      row[0] = config_.cls_id;
    }
  }
  const Shape shape{batch, seq_len};
  if (device_ == Device::cuda) {  // through a pinned slot: an asynchronous upload at a fixed address
    if (!upload) {
      if (!token_upload_) token_upload_ = std::make_shared<PinnedUpload>(1);
      upload = token_upload_.get();
    }
    return upload->upload(host.data(), shape, DType::i32);
  }
  return Tensor::from_vector(host, shape, device_);
}

Outputs CocoModel::forward(const Tensor& input, rng::StepKey step, bool training, uint64_t first_row) {
  return forward_device_tokens(device_tokens(input), step, training, first_row);
}

Outputs CocoModel::forward_device_tokens(const Tensor& tokens, rng::StepKey step, bool training, uint64_t first_row) {
  check_rank("CocoModel::forward_device_tokens", tokens, 2);
  tokens.check_dtype(DType::i32, "CocoModel::forward_device_tokens");
  if (tokens.device() != device_)
    throw TensorError("CocoModel::forward_device_tokens: tokens on " + std::string(device_name(tokens.device())) +
                      ", expected the model's device " + device_name(device_));
  if (tokens.size(1) > model_config_.max_positions)
    throw TensorError("CocoModel::forward_device_tokens: sequence length " + std::to_string(tokens.size(1)) +
                      " exceeds model.max_positions (" + std::to_string(model_config_.max_positions) + ")");
  const bool paper = config_.preset == Preset::paper;
  const int64_t batch = tokens.size(0), seq_len = tokens.size(1);
  Outputs out;
  const Tensor key_mask = ops::key_mask(tokens, config_.pad_id);

  kernels::MaskingConfig masking;
  masking.preset = paper ? kernels::MaskPreset::paper : kernels::MaskPreset::lucidrains;
  masking.pad_id = config_.pad_id;
  masking.cls_id = config_.cls_id;
  masking.mask_id = config_.mask_id;
  masking.ignore_ids = config_.mask_ignore_token_ids;
  masking.mask_prob = config_.mask_prob;
  masking.replace_prob = config_.replace_prob;
  masking.random_token_prob = config_.random_token_prob;
  masking.vocab_size = static_cast<int32_t>(model_config_.vocab_size);
  for (int32_t id : {config_.pad_id, config_.cls_id, config_.sep_id, config_.mask_id, config_.unk_id})
    if (id >= 0) masking.special_ids.push_back(id);
  masking.crop_fraction = config_.crop_percentage;

  // 1. Generator: masked LM at the selected positions, in a capacity fixed by (B, T) and the config:
  //    padding entries gather row 0 and carry the ignored target -1, so they add nothing.
  const ops::MaskedBatch masked = ops::select_mask(tokens, masking, seed_, step, first_row);
  constexpr int32_t kPaddingTarget = -1;
  model::ForwardOptions gen_options{training, seed_, step, kGeneratorPass, first_row};
  const Tensor gen_hidden = generator_->forward(masked.generator_input, key_mask, gen_options);  // (B, T, dg)
  Tensor samples;
  ops::LossResult mlm;
  if (masked.capacity > 0) {
    const Tensor gen_logits = generator_logits(ops::gather_rows(gen_hidden, masked.gather_rows));  // (M, V)
    ops::CrossEntropyOptions mlm_options;
    mlm_options.ignore_index = kPaddingTarget;
    mlm = ops::cross_entropy(gen_logits, masked.targets, mlm_options);
    out.mlm_loss = mlm.loss;
    // 2. Samples from the generator, without gradient; paper samples from a dropout-free pass.
    NoGrad no_grad;
    Tensor sample_logits = gen_logits.detach();
    if (paper && training && any_dropout(model_config_.generator)) {
      model::ForwardOptions eval_options{false, seed_, step, kGeneratorEvalPass, first_row};
      sample_logits = generator_logits(
          ops::gather_rows(generator_->forward(masked.generator_input, key_mask, eval_options), masked.gather_rows));
    }
    if (sample_logits.dtype() == DType::f16) sample_logits = sample_logits.to(DType::f32);  // samplers read f32/bf16
    // Each sample keyed by the global flat position (row * T + pos) of the token it replaces.
    samples = ops::sample_tokens(sample_logits,
                                 config_.sampler == "gumbel" ? ops::Sampler::gumbel : ops::Sampler::multinomial,
                                 static_cast<float>(config_.temperature), seed_, step, /*instance=*/0,
                                 masked.gather_rows, first_row * static_cast<uint64_t>(seq_len));
  } else {
    out.mlm_loss = Tensor::zeros(Shape{}, dtype_, device_);
    samples = Tensor::zeros(Shape{0}, DType::i32, device_);
  }

  // 3. Discriminator on the corrupted sequence.
  const auto convention = paper ? kernels::LabelConvention::original_is_one : kernels::LabelConvention::replaced_is_one;
  const ops::Corruption corrupted = ops::corrupt(tokens, masked.positions, samples, config_.pad_id, convention);
  const Tensor replaced = ops::count_nonzero(corrupted.replaced);
  model::ForwardOptions disc_options{training, seed_, step, kCorruptedPass, first_row};
  const Tensor disc_hidden = discriminator_->forward(corrupted.tokens, key_mask, disc_options);  // (B, T, d)
  const Tensor binary_logits = binary_head_->forward(disc_hidden);                               // (B, T, 1)
  ops::BceOptions bce;
  bce.valid = key_mask;
  bce.labels = paper ? ops::BceLabels::original_is_one : ops::BceLabels::replaced_is_one;
  const ops::LossResult binary = ops::bce_with_logits(binary_logits, corrupted.replaced, bce);
  out.rtd_loss = binary.loss;

  // 4. Paper: corrective LM at the masked positions, weighted by the stop-gradient copy probability
  //    ("code" form) or as the paper's copy/LM mixture ("paper" form).
  ops::LossResult clm;
  if (paper) {
    if (masked.capacity > 0) {
      Tensor copy_logits;  // (M, 1), stop-gradient
      if (frozen_clm_copy_logits_.defined()) {
        if (frozen_clm_copy_logits_.numel() != masked.capacity)
          throw std::logic_error("CocoModel: frozen CLM copy logits do not match the masked positions");
        copy_logits = frozen_clm_copy_logits_;
      } else {
        copy_logits = ops::gather_rows(binary_logits.detach(), masked.gather_rows);
      }
      out.clm_copy_logits = copy_logits;
      ops::CorrectiveLmOptions clm_options;
      clm_options.form = config_.clm_form == "paper" ? ops::CorrectiveLmForm::paper : ops::CorrectiveLmForm::code;
      clm_options.ignore_index = kPaddingTarget;
      const Tensor clm_logits =
          ops::linear(ops::gather_rows(disc_hidden, masked.gather_rows), discriminator_->embeddings().token, clm_bias_);
      clm = ops::corrective_lm_loss(clm_logits, masked.targets, copy_logits, samples, clm_options);
      out.clm_loss = clm.loss;
    } else {
      out.clm_loss = Tensor::zeros(Shape{}, dtype_, device_);
    }
  }

  // 5. Sequence contrastive learning against a crop of the original.
  ops::LossResult cl;
  if (config_.cl_weight > 0) {
    const ops::CropView crop = ops::crop_view(tokens, masking, seed_, step, first_row);
    model::ForwardOptions crop_options{training, seed_, step, kCropPass, first_row};
    const Tensor crop_hidden =
        discriminator_->forward(crop.tokens, ops::length_mask(crop.length, seq_len), crop_options);
    auto cached = cls_rows_.find({batch, seq_len});
    if (cached == cls_rows_.end())
      cached = cls_rows_.emplace(std::pair{batch, seq_len}, cls_rows(batch, seq_len, device_)).first;
    const Tensor& cls = cached->second;
    Tensor corrupted_cls = ops::gather_rows(disc_hidden, cls), crop_cls = ops::gather_rows(crop_hidden, cls);  // (B, d)
    if (paper) {
      auto head = [&](const Tensor& h) {
        return scl_norm_->forward(scl_dense_->forward(h, ops::Activation::gelu_erf));
      };
      cl = ops::nt_xent(ops::l2_normalize(head(crop_cls)), ops::l2_normalize(head(corrupted_cls)),
                        config_.scl_temperature);
    } else {
      cl = ops::info_nce(ops::l2_normalize(corrupted_cls), ops::l2_normalize(crop_cls), cl_theta_);
    }
    out.cl_loss = cl.loss;
  } else {
    out.cl_loss = Tensor::zeros(Shape{}, dtype_, device_);
  }

  // The counts, gathered on the device in one launch (slots OutputCount).
  out.counts = Tensor::empty(Shape{kOutputCounts}, DType::f64, device_);
  std::vector<ops::ScalarRef> counts(kOutputCounts);
  counts[kMasked] = {mlm.counts, 1};
  counts[kMlmCorrect] = {mlm.counts, 0};
  counts[kValidTokens] = {binary.counts, 1};
  counts[kReplaced] = {replaced, 0};
  counts[kRtdCorrect] = {binary.counts, 0};
  counts[kRtdCount] = {binary.counts, 1};
  counts[kClCorrect] = {cl.counts, 0};
  counts[kClCount] = {cl.counts, 1};
  counts[kClmCorrect] = {clm.counts, 0};
  ops::gather_scalars(counts, out.counts, ops::ScalarUpdate::assign);

  Tensor total = ops::scale(out.mlm_loss, config_.gen_weight);
  total = ops::add_scaled(total, out.rtd_loss, config_.disc_weight);
  if (paper) total = ops::add_scaled(total, out.clm_loss, config_.clm_weight);
  total = ops::add_scaled(total, out.cl_loss, config_.cl_weight);
  out.loss = total;
  return out;
}

}  // namespace coco::objective
