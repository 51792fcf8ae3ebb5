#include "coco/trainer.h"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <unistd.h>
#include "coco/checkpoint.h"
#include "coco/data_loader.h"
#include "coco/interop/tokenizer_files.h"
#include "coco/metrics.h"
#include "coco/model_report.h"
#include "coco/objective.h"
#include "coco/step_metrics.h"
#include "coco/exit_code.h"
#include "coco/step_graph.h"
#include "coco/step_profile.h"
#include "coco/progress.h"
#include "coco/train_config.h"
#include "coco/vocab_identity.h"
#include "engine/config.h"
#include "engine/dist/communicator.h"
#include "engine/dist/consistency.h"
#include "engine/dist/grad_sync.h"
#include "engine/dist/launch.h"
#include "engine/dist/zero.h"
#include "engine/io/checked_read.h"
#include "engine/ops/device_checks.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/optim.h"
#include "engine/ops/step_control.h"
#include "engine/runtime/cpu_backend.h"
#include "engine/tape.h"

namespace coco {

namespace fs = std::filesystem;
using namespace coco::checkpoint;
using objective::CocoModel;

namespace {

// ---------------------------------------------------------------------------------------------------
// Metrics

// %.9g (round-trips a float exactly), null when not finite (JSON has no NaN).
std::string number(double v) { return std::isfinite(v) ? format("%.9g", v) : std::string("null"); }

class JsonRecord {
 public:
  JsonRecord& add(const char* key, double value) { return raw(key, number(value)); }
  JsonRecord& add_int(const char* key, int64_t value) { return raw(key, std::to_string(value)); }
  JsonRecord& add_string(const char* key, const std::string& value) { return raw(key, nlohmann::json(value).dump()); }
  std::string str() const { return "{" + text_ + "}"; }

 private:
  JsonRecord& raw(const char* key, const std::string& value) {
    text_ += (text_.empty() ? "\"" : ",\"") + std::string(key) + "\":" + value;
    return *this;
  }
  std::string text_;
};

// Keeps the records of steps <= `last_step` (drops everything when last_step < 0) and any line that
// does not parse (a torn write of a killed process).
void truncate_metrics(const fs::path& path, int64_t last_step) {
  std::error_code error;
  if (!fs::exists(path, error)) return;
  std::istringstream in(io::read_regular_file(path, uint64_t{1} << 34, "the metrics log"));
  std::string kept, line;
  while (std::getline(in, line)) {
    try {
      const auto j = io::parse_json_checked(line, "");
      if (j.contains("step") && j["step"].is_number_integer() && j["step"].get<int64_t>() <= last_step)
        kept += line + "\n";
    } catch (const ConfigError&) {
    } catch (const nlohmann::json::exception&) {
    }
  }
  replace_file_atomically(path, kept);
}

// A failed write (full disk, I/O error) is remembered, not thrown: the step loop checkpoints first, then
// stops the run with it (exit 1), so no step goes unlogged silently and no work is lost.
class MetricsLog {
 public:
  explicit MetricsLog(const fs::path& path) : path_(path), file_(std::fopen(path.c_str(), "a")) {
    if (!file_) throw std::runtime_error(path.string() + ": cannot open for appending");
  }
  ~MetricsLog() { std::fclose(file_); }
  void write(const std::string& record) {
    if (!error_.empty()) return;
    const std::string line = record + "\n";
    errno = 0;
    // Test hook (reliability tests): COCO_FAULT_INJECT=metrics-enospc fails every write as a full disk would.
    const char* fault = std::getenv("COCO_FAULT_INJECT");
    const bool injected = fault && std::string(fault) == "metrics-enospc";
    if (injected || std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0) {
      if (injected) errno = ENOSPC;
      error_ = path_.string() + ": cannot write the metrics record: " + std::strerror(errno ? errno : EIO);
    }
  }
  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }

 private:
  fs::path path_;
  std::FILE* file_;
  std::string error_;
};

// ---------------------------------------------------------------------------------------------------
// Step statistics (sums over micro-batches)

struct StepStats {
  double loss = 0, mlm = 0, rtd = 0, clm = 0, cl = 0;
  bool has_clm = false, has_cl = false;
  int64_t micro_batches = 0, rows = 0;
  int64_t masked = 0, mlm_correct = 0, rtd_correct = 0, rtd_count = 0, cl_correct = 0, cl_count = 0;
  int64_t clm_correct = 0;
  int64_t tokens = 0;

  void add(const objective::Outputs& out, int64_t batch_rows) {
    const double w = static_cast<double>(batch_rows);
    const objective::Counts c = out.read_counts();
    loss += w * out.loss.item();
    if (out.mlm_loss.defined()) mlm += w * out.mlm_loss.item();
    if (out.rtd_loss.defined()) rtd += w * out.rtd_loss.item();
    if (out.clm_loss.defined()) {
      has_clm = true;
      clm += w * out.clm_loss.item();
      clm_correct += c.clm_correct;
    }
    if (out.cl_loss.defined()) {
      has_cl = true;
      cl += w * out.cl_loss.item();
    }
    ++micro_batches;
    rows += batch_rows;
    masked += c.masked;
    mlm_correct += c.mlm_correct;
    rtd_correct += c.rtd_correct;
    rtd_count += c.rtd_count;
    cl_correct += c.cl_correct;
    cl_count += c.cl_count;
  }
  // A training micro-batch whose sums accumulate on the device (objective::StepMetrics); take() adds
  // them once per step.
  void count(const objective::Outputs& out, int64_t batch_rows) {
    has_clm = has_clm || out.clm_loss.defined();
    has_cl = has_cl || out.cl_loss.defined();
    ++micro_batches;
    rows += batch_rows;
  }
  void take(const objective::StepSums& s) {
    loss += s.loss;
    mlm += s.mlm;
    rtd += s.rtd;
    clm += s.clm;
    cl += s.cl;
    masked += s.masked;
    mlm_correct += s.mlm_correct;
    rtd_correct += s.rtd_correct;
    rtd_count += s.rtd_count;
    cl_correct += s.cl_correct;
    cl_count += s.cl_count;
    clm_correct += s.clm_correct;
  }
  double mean(double sum) const { return rows ? sum / static_cast<double>(rows) : 0.0; }
  static double ratio(int64_t a, int64_t b) { return b ? static_cast<double>(a) / static_cast<double>(b) : 0.0; }

  // The value of each metric key (coco/metrics.h); clm_* only when the objective has a CLM head.
  double value(std::string_view key) const {
    if (key == "loss") return mean(loss);
    if (key == "mlm_loss") return mean(mlm);
    if (key == "rtd_loss") return mean(rtd);
    if (key == "clm_loss") return mean(clm);
    if (key == "cl_loss") return has_cl ? mean(cl) : 0.0;
    if (key == "mlm_acc") return ratio(mlm_correct, masked);
    if (key == "rtd_acc") return ratio(rtd_correct, rtd_count);
    if (key == "clm_acc") return ratio(clm_correct, masked);
    if (key == "cl_acc") return ratio(cl_correct, cl_count);
    throw std::logic_error("StepStats: unknown metric " + std::string(key));
  }
  bool reports(std::string_view key) const { return has_clm || !key.starts_with("clm_"); }

  // metrics.jsonl / eval JSON: losses, then accuracies (the order users' tooling has always seen).
  void put(JsonRecord& r) const {
    for (const char* key : all_keys())
      if (reports(key)) r.add(key, value(key));
  }
  // The progress line: "loss 41.9161 mlm_loss 8.8490 rtd_loss 0.5242 clm_loss 3.4294 cl_loss 3.4277".
  std::string summary(bool with_accuracies = false) const {
    std::string s;
    for (const char* key :
         with_accuracies ? all_keys()
                         : std::vector<const char*>(std::begin(objective::kLossKeys), std::end(objective::kLossKeys)))
      if (reports(key)) s += format("%s%s %.4f", s.empty() ? "" : " ", key, value(key));
    return s;
  }
  static std::vector<const char*> all_keys() {
    std::vector<const char*> keys(std::begin(objective::kLossKeys), std::end(objective::kLossKeys));
    keys.insert(keys.end(), std::begin(objective::kAccuracyKeys), std::end(objective::kAccuracyKeys));
    return keys;
  }
  // coco eval's table: every metric with what it means for this objective.
  std::string table(const objective::ObjectiveConfig& objective) const {
    std::string s = format("%-9s %12s  %s\n", "metric", "value", "meaning");
    for (const auto& key : objective::metric_keys(objective))
      if (reports(key))
        s += format("%-9s %12.6f  %s\n", key.c_str(), value(key), objective::describe_metric(key, objective).c_str());
    return s;
  }
};

// Evaluation over the first `max_batches` micro-batches (0: all) of `sequences`, in order, with a fixed
// Philox step key and each sequence keyed by its index in the split, so every evaluation of a run sees the
// same masks, whatever the micro-batch size.
constexpr uint64_t kEvalStepKey = uint64_t{1} << 62;

StepStats evaluate_sequences(CocoModel& model, const data::PackedSequences& sequences, int64_t micro_batch,
                             int64_t max_batches, int64_t min_rows) {
  StepStats stats;
  const uint64_t n = sequences.size();
  data::LoaderOptions options;
  options.shuffle = false;
  uint64_t start = 0;
  for (int64_t b = 0; start < n && (max_batches == 0 || b < max_batches); ++b) {
    options.micro_batch = static_cast<int64_t>(std::min<uint64_t>(static_cast<uint64_t>(micro_batch), n - start));
    if (options.micro_batch < min_rows) break;
    const data::Batch batch = data::make_batch(sequences, options, start);
    const Tensor tokens = Tensor::from_vector(batch.tokens, Shape{batch.rows, batch.seq_len}, Device::cpu);
    NoGrad no_grad;
    stats.add(model.forward(tokens, kEvalStepKey, /*training=*/false, /*first_row=*/start), batch.rows);
    stats.tokens += batch.non_pad_tokens;
    start += static_cast<uint64_t>(options.micro_batch);
  }
  return stats;
}

// ---------------------------------------------------------------------------------------------------
// Data setup

// Test hook (reliability tests): COCO_FAULT_INJECT=nonfinite-from-step:N treats the gradients of step N
// and every later step as non-finite, exercising the skip / stop path without a diverging model.
bool injected_nonfinite(int64_t step) {
  static const int64_t from = [] {
    const char* value = std::getenv("COCO_FAULT_INJECT");
    const std::string prefix = "nonfinite-from-step:";
    if (!value || std::string(value).rfind(prefix, 0) != 0) return int64_t{-1};
    return static_cast<int64_t>(std::stoll(std::string(value).substr(prefix.size())));
  }();
  return from >= 0 && step >= from;
}

// The tokenizer files checkpoints carry, from the data folder (generated from vocab.txt + meta.json for
// folders prepared before prepare wrote them). A folder without a vocabulary trains all the same.
std::vector<std::pair<std::string, std::string>> checkpoint_tokenizer_files(
    const fs::path& data_dir, const std::function<void(const std::string&)>& message) {
  if (!interop::has_vocabulary(data_dir)) {
    message(
        format("warning: %s has no vocab.txt or tokenizer.json: checkpoints will carry no tokenizer files "
               "(coco export will need --tokenizer)",
               data_dir.c_str()));
    return {};
  }
  return interop::read_tokenizer_files(data_dir).files;
}

data::PackingLayout packing_for(const train::TrainConfig& config) {
  data::PackingLayout layout;
  layout.seq_len = config.data.seq_len;
  layout.cls_id = config.objective.prepend_cls ? -1 : config.objective.cls_id;
  layout.sep_id = config.objective.sep_id;
  layout.pad_id = config.objective.pad_id;
  return layout;
}

// An estimate of the bytes a training step needs (f32 weights, gradients and two AdamW moments; activations
// kept for the backward pass; the vocabulary-sized logits), so that an absurd configuration (dim 65536,
// micro_batch 1048576) is refused with the keys to change instead of dying in std::bad_alloc.
double estimated_training_bytes(const train::TrainConfig& config) {
  const double rows = static_cast<double>(config.train.micro_batch), tokens = rows * config.data.seq_len;
  const double vocab = static_cast<double>(config.model.vocab_size);
  double parameters = 0, activations = 0;
  for (const model::EncoderConfig* e : {&config.model.generator, &config.model.discriminator}) {
    const double d = static_cast<double>(e->dim), inner = static_cast<double>(e->inner_dim());
    const double ff = static_cast<double>(e->ff_dim()), depth = static_cast<double>(e->depth);
    const double embed = static_cast<double>(e->embed_dim > 0 ? e->embed_dim : e->dim);
    parameters += (vocab + static_cast<double>(config.model.max_positions)) * embed + embed * d +
                  depth * (4 * d * inner + 2 * d * ff + 4 * d + ff);
    activations += depth * tokens * (8 * d + 4 * inner + 2 * ff + 2.0 * e->heads * config.data.seq_len) + tokens * d;
  }
  activations += 3 * tokens * vocab;  // generator and CLM logits, their softmax
  return 4.0 * (4 * parameters + activations);
}

void refuse_absurd_memory(const train::TrainConfig& config, const std::string& source) {
  const double needed = estimated_training_bytes(config);
  const double pages = static_cast<double>(::sysconf(_SC_PHYS_PAGES)),
               page = static_cast<double>(::sysconf(_SC_PAGESIZE));
  // The CPU backend needs it in host memory; no accelerator holds more than a few TiB either.
  const double limit = config.device == Device::cpu && pages > 0 && page > 0 ? pages * page : 16.0 * (1ull << 40);
  if (needed <= limit) return;
  throw ConfigError(format(
      "%s: the configuration needs about %.3g GiB to train (model.*.dim %lld/%lld, model.*.depth %lld/%lld, "
      "model.vocab_size %lld, train.micro_batch %lld, data.seq_len %lld), more than the %.3g GiB available; "
      "expected a smaller model or micro-batch",
      source.c_str(), needed / (1ull << 30), static_cast<long long>(config.model.generator.dim),
      static_cast<long long>(config.model.discriminator.dim), static_cast<long long>(config.model.generator.depth),
      static_cast<long long>(config.model.discriminator.depth), static_cast<long long>(config.model.vocab_size),
      static_cast<long long>(config.train.micro_batch), static_cast<long long>(config.data.seq_len),
      limit / (1ull << 30)));
}

std::vector<NamedParameter> trainable_parameters(const CocoModel& model, const train::OptimConfig& optim) {
  std::vector<NamedParameter> params = model.named_parameters();
  for (auto& p : params)
    for (const auto& pattern : optim.no_decay)
      if (p.name.find(pattern) != std::string::npos) p.weight_decay = false;
  return params;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// The Trainer: run_train's state as members, its loop body as train_step().

struct Trainer::Impl {
  TrainerOptions options;
  std::string source;
  train::TrainConfig config;
  fs::path run_dir;
  std::unique_ptr<checkpoint::RunDirectoryLock> lock;
  data::PreparedMeta meta;
  std::optional<fs::path> resume_dir;
  checkpoint::TrainerState saved_state;
  nlohmann::json resolved;
  std::vector<std::pair<std::string, std::string>> tokenizer_files;
  data::PackingLayout layout;
  std::shared_ptr<const data::PackedSequences> train_sequences, valid_sequences;
  DType param_dtype = DType::f32;
  std::unique_ptr<CocoModel> model;
  std::vector<NamedParameter> params, masters;
  std::unique_ptr<optim::AdamW> optimizer;  // null with ZeRO-1 (zero holds the sharded state)
  std::vector<optim::AdamWParam> adam_params;
  optim::AdamWOptions adam_options;
  optim::GradScaler scaler;
  int64_t start_step = 0, step = 0;
  int64_t skipped_total = 0, consecutive_skips = 0, tokens_seen = 0;
  uint64_t cursor = 0, epoch = 0;
  std::unique_ptr<data::DataLoader> loader;
  std::unique_ptr<MetricsLog> metrics;
  std::string hash, run_id;
  std::optional<fs::path> last_checkpoint;
  int64_t last_checkpoint_step = -1;
  std::chrono::steady_clock::time_point run_start;
  Tape tape;
  // Issue #14: the step's metric sums accumulate on the device and validation of device data is
  // counted there (read with the logged records), so a step reads the device only for its sums and
  // the gradients' norm and finiteness.
  std::unique_ptr<objective::StepMetrics> step_metrics;
  std::unique_ptr<train::StepProfiler> profiler;  // the step profile (coco/step_profile.h)
  std::unique_ptr<ops::DeviceChecks> device_checks;
  // The step is decided on the device (optim::StepControl: skip, clip, the AdamW scalars, the f16 loss
  // scale) and its record comes off the device only at the logging cadence (on the CPU, where reading
  // costs nothing, every step). The host's counters (skipped_total, consecutive_skips, scaler, AdamW's
  // step counts) mirror the device's: refreshed from each record taken and before each checkpoint. Plain
  // data parallelism decides on the device too (synchronize_device_step: the decision's inputs are
  // the same on every rank), and so does ZeRO-1 (zero_device_step).
  std::unique_ptr<optim::StepControl> control;
  std::unique_ptr<objective::StepRecordCopy> record_copy;
  // Data parallelism (a launch by mpirun/srun): null for one process started without a launcher, which
  // then trains exactly as before. Rank 0 alone writes the run directory (config.json, metrics.jsonl,
  // checkpoints) and reports; every rank reads its rows of each global micro-batch.
  std::unique_ptr<dist::Communicator> comm;
  // What the backward of a step's last micro-batch drives (the tape hook that starts gradient buckets while
  // backward runs): all_reduce_sync for plain data parallelism, zero for ZeRO-1; null for one process.
  dist::BackwardSync* grad_sync = nullptr;
  std::unique_ptr<dist::GradSync> all_reduce_sync;
  // optim.zero = 1 under a launch: AdamW state and f32 masters sharded over the ranks (engine/dist/zero.h); its
  // buckets are reduce-scattered into the shards during backward. Its step is decided on the device too:
  // zero_device_step().
  std::unique_ptr<dist::ZeroAdamW> zero;
  // runtime.cuda_graph (coco/step_graph.h): the device-decided step captured once and replayed; while it lives
  // every CUDA call of the Trainer runs on its stream (Trainer's methods enter work_stream()). Declared last so
  // that it is destroyed first: it waits for its stream before the tensors the step used are freed.
  std::unique_ptr<train::StepGraph> step_graph;
  bool graph_has_clm = false, graph_has_cl = false;  // the captured step's outputs (for StepStats)
  // The validation counts that came with this step's record (DeviceChecks::verify without a second wait).
  std::optional<std::vector<int32_t>> record_checks;

  int rank() const { return comm ? comm->rank() : 0; }

  // Under a launch, a failure on this rank in a step (with its scheduled evaluation) or a checkpoint (a collective that
  // failed: a peer died or hangs past dist.timeout_s, an MPI/NCCL error; or anything else this rank threw: a CUDA
  // error, a failed graph capture, damaged data) leaves the other ranks in, or on their way to, a collective this rank
  // will not join: the job cannot go on. Say which rank saw what and end every rank at once (MPI_Abort; ncclCommAbort
  // first) with the exit code the failure means (coco/exit_code.h: 2 for bad input, else 1), so that no rank waits in a
  // collective until dist.timeout_s. The last committed checkpoint is where --resume continues.
  [[noreturn]] void abort_job(const std::exception& error) const {
    std::string what = error.what();
    const std::string prefix = format("rank %d of %d: ", rank(), world_size());
    if (what.rfind(prefix, 0) == 0) what.erase(0, prefix.size());  // the communicator's messages name the rank
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s%s; aborting the job on every rank\n", prefix.c_str(), what.c_str());
    std::fflush(stderr);
    const int code = exit_code_for(error);
    comm->abort(code);
    std::_Exit(code);  // not reached: abort() ends the process (the attribute does not travel through the virtual call)
  }
  int world_size() const { return comm ? comm->world_size() : 1; }
  bool writes_run_dir() const { return rank() == 0; }

  void message(const std::string& line) const {
    if (options.on_message && writes_run_dir()) options.on_message(line);
  }
  void record(const std::string& json_text) {
    if (!writes_run_dir()) return;
    metrics->write(json_text);
    if (options.on_metrics && !metrics->failed()) options.on_metrics(nlohmann::json::parse(json_text));
  }
  void refresh_working_copies() {
    if (param_dtype == DType::f32) return;
    for (size_t i = 0; i < params.size(); ++i) params[i].tensor.copy_from(masters[i].tensor.to(param_dtype));
  }

  // ---- The device-decided step -------------------------------------------------------------------

  void open_step_control() {
    const auto& t = config.train;
    if (t.steps > optim::StepControl::kMaxSteps)
      throw ConfigError(format(
          "%s: key 'train.steps': expected at most %lld (the device-side training step keeps a "
          "learning-rate table of one entry per step), got %lld",
          source.c_str(), static_cast<long long>(optim::StepControl::kMaxSteps), static_cast<long long>(t.steps)));
    optim::StepControlOptions o;
    o.lr.resize(static_cast<size_t>(t.steps));
    for (int64_t s = 0; s < t.steps; ++s) o.lr[static_cast<size_t>(s)] = train::learning_rate(config.optim, t.steps, s);
    o.clip_norm = config.optim.clip_norm;
    o.grad_accum = global_micro_batches();  // the f16 backward seed: loss_scale / this
    if (param_dtype == DType::f16) o.loss_scaler = scaler.options();
    control = std::make_unique<optim::StepControl>(config.device, std::move(o), adam_options);
    kernels::StepState state = control->initial_state();
    state.step = step;
    state.applied = step - skipped_total;  // AdamW's step count: the updates applied
    state.skipped_total = skipped_total;
    state.consecutive_skips = consecutive_skips;
    const optim::GradScaler::State scaler_state = scaler.state();
    state.loss_scale = scaler_state.scale;  // used only with f16 scaling
    state.growth_tracker = scaler_state.growth_tracker;
    state.hysteresis_left = scaler_state.hysteresis_left;
    state.scaler_skipped = scaler_state.skipped_steps;
    control->load(state);
    record_copy = std::make_unique<objective::StepRecordCopy>(config.device);
  }

  // The host's counters from a state read off the device.
  void mirror(const kernels::StepState& state) {
    skipped_total = state.skipped_total;
    consecutive_skips = state.consecutive_skips;
    if (param_dtype == DType::f16)
      scaler.load_state({state.loss_scale, state.growth_tracker, state.hysteresis_left, state.scaler_skipped});
    if (optimizer) optimizer->sync_step_counts(state.applied);
    if (zero) zero->sync_step_counts(state.applied);  // its shard's counts (a checkpoint gathers them)
  }

  // ---- One CUDA graph per step (runtime.cuda_graph, coco/step_graph.h) --------------------------------------

  void open_step_graph() {
    if (!train::use_cuda_graph(config)) return;
    if (!control) throw std::logic_error("Trainer: runtime.cuda_graph needs the device-decided step");
    step_graph = std::make_unique<train::StepGraph>(config.train.grad_accum);
    message(
        format("runtime.cuda_graph: the training step is captured as one CUDA graph once it is steady (after "
               "at least %d warm-up steps) and replayed",
               train::StepGraph::kWarmupSteps));
  }

  // The stream the Trainer's CUDA work goes to: the step graph's while graphs are on.
  cudaStream_t work_stream() const { return step_graph ? step_graph->stream() : current_stream(); }

  // The host part of a step under runtime.cuda_graph: each micro-batch's ids validated and uploaded to its fixed
  // device buffer, the fault-injection hook, then the device work (device_step) run, captured or replayed.
  void graphed_step(StepStats& stats) {
    const auto& t = config.train;
    for (int64_t micro = 0; micro < t.grad_accum; ++micro) {
      const data::Batch batch = loader->next();
      epoch = batch.epoch;
      if (batch.rows != t.micro_batch)  // the data loader always fills a training micro-batch
        throw std::logic_error(format("Trainer: a training micro-batch of %lld rows, expected train.micro_batch = %lld",
                                      static_cast<long long>(batch.rows), static_cast<long long>(t.micro_batch)));
      const Tensor tokens = Tensor::from_vector(batch.tokens, Shape{batch.rows, batch.seq_len}, Device::cpu);
      step_graph->set_input(micro, model->device_tokens(tokens, &step_graph->uploads()));
      ++stats.micro_batches;
      stats.rows += batch.rows;
      stats.tokens += batch.non_pad_tokens;
    }
    if (injected_nonfinite(step + 1)) control->force_skip();  // read by the decision inside the graph
    if (comm) agree_capture();
    const bool captures = step_graph->next_phase() == train::StepGraph::Phase::capture;
    step_graph->run([this] { device_step(); });
    if (captures)
      message(format("runtime.cuda_graph: step %lld captured as one CUDA graph of %zu nodes after %lld warm-up steps",
                     static_cast<long long>(step + 1), step_graph->nodes(),
                     static_cast<long long>(step_graph->warm_up_steps())));
    else if (!step_graph->captured() && !step_graph->settled() &&
             step_graph->warm_up_steps() == train::StepGraph::kMaxWarmupSteps)
      message(
          format("warning: runtime.cuda_graph: the training step kept new device memory in each of its first %d "
                 "steps (or other work between steps did), so it is not captured yet: it runs uncaptured until a "
                 "step leaves the device memory as it found it",
                 train::StepGraph::kMaxWarmupSteps));
    stats.has_clm = graph_has_clm;
    stats.has_cl = graph_has_cl;
  }

  // Under a launch every rank must capture the same step (the captured collectives' argument checks run at the
  // capture): once the warm-up could end, the ranks agree before each step whether the last one settled on all of
  // them, and no other work disturbed the cache since (an evaluation, a checkpoint: StepGraph::other_work_ran), with
  // one exchange of a host value that does not wait for the device. Only during the warm-up (at most
  // StepGraph::kMaxWarmupSteps steps), so a replayed step has no exchange more.
  void agree_capture() {
    if (step_graph->captured() || step_graph->warm_up_steps() < train::StepGraph::kWarmupSteps) return;
    int64_t unsettled = step_graph->settled() ? 0 : 1;
    comm->sum_on_host(&unsettled, 1);
    step_graph->set_settled(unsettled == 0);
  }

  // The step's device work, as train_step's device-decided path issues it, with nothing that varies from
  // step to step in a launch: the ids come from the graph's input buffers, the Philox step from the
  // StepControl's counter (its value during the step: the steps taken before it), the f16 backward seed
  // and every scalar of the decision and update from its state. The metric sums start from zero here
  // (the previous step's record copy, if any, was queued before).
  void device_step() {
    const auto& t = config.train;
    const rng::StepKey step_key =
        rng::StepKey::from_counter(reinterpret_cast<const uint64_t*>(&control->device_state()->step));
    step_metrics->reset();
    for (int64_t micro = 0; micro < t.grad_accum; ++micro) {
      objective::Outputs out;
      Tensor scaled;
      {
        Tape::Recording recording(tape);
        out =
            model->forward_device_tokens(step_graph->input(micro), step_key, /*training=*/true, micro_first_row(micro));
        if (param_dtype == DType::f16)
          scaled = ops::mul(out.loss, control->backward_seed().view(out.loss.shape()));
        else
          scaled = global_micro_batches() == 1
                       ? out.loss
                       : ops::scale(out.loss, 1.0 / static_cast<double>(global_micro_batches()));
      }
      // Data parallel: the last micro-batch's backward starts the gradient buckets' collectives (captured too).
      const bool sync_in_backward = grad_sync && micro + 1 == t.grad_accum;
      if (sync_in_backward) grad_sync->attach(tape);
      tape.backward(scaled);
      if (sync_in_backward) grad_sync->detach(tape);
      tape.clear();
      step_metrics->add(out, t.micro_batch);
      graph_has_clm = out.clm_loss.defined();
      graph_has_cl = out.cl_loss.defined();
    }
    if (step_graph->next_phase() == train::StepGraph::Phase::capture) checkpoint::fault_point("step-graph:capture");
    if (comm) synchronize_device_step();
    if (zero) {
      zero_device_step();
      return;
    }
    control->decide(optimizer->gradients(), step_metrics->loss_sum());
    optimizer->step(*control);
    if (param_dtype == DType::f16) refresh_working_copies();  // unchanged weights when skipped
    optimizer->zero_grad();
  }

  // ---- Data parallelism (engine/dist) --------------------------------------------------------------
  // N ranks with train.grad_accum g train what one process trains with grad_accum N g (same micro_batch),
  // or with the same global batch in larger micro-batches: at micro-batch k of a step, rank r reads the
  // rows of the global micro-batch index k N + r (the data loader's rank layout) and keys its masks,
  // samples and dropout by the global row (micro_first_row), so each row sees the tokens and random
  // numbers it sees in the one-process run. Each micro-batch's backward is seeded with
  // loss_scale / (N g) (global_micro_batches) and the ranks' gradients are summed (GradSync's all-reduce,
  // ZeRO-1's reduce-scatter): the mean over all N g micro-batches, each back-propagated exactly as the
  // one-process run back-propagates it (the same 16-bit roundings, the same f16 overflows), so the two differ
  // only by the order of the reduction. (An average over ranks of a 1 / g seed would back-propagate N times
  // the magnitude and round differently in bf16/f16.)

  // The micro-batches whose gradients make one step, over all ranks: the backward seed's divisor.
  int64_t global_micro_batches() const { return config.train.grad_accum * world_size(); }

  void open_communicator() {
    const dist::LaunchInfo launch = dist::detect_launch();
    if (!launch.distributed()) return;  // one process: today's path, untouched
    dist::CommOptions comm_options;
    comm_options.timeout_s = config.dist_timeout_s;
    comm = dist::make_communicator(config.device, launch, comm_options);
  }

  size_t bucket_bytes() const { return static_cast<size_t>(config.dist_bucket_mb * double(1 << 20)); }

  void open_grad_sync() {
    if (!comm || config.optim.zero == 1) return;  // ZeRO-1's reduce-scatter is the gradient synchronisation
    std::vector<Tensor> trainable;
    for (const NamedParameter& p : params) trainable.push_back(p.tensor);
    dist::GradSyncOptions sync_options;
    sync_options.bucket_bytes = bucket_bytes();
    sync_options.reduce_dtype = config.dist_reduce_dtype == "bf16" ? DType::bf16 : DType::f32;
    all_reduce_sync = std::make_unique<dist::GradSync>(*comm, trainable, sync_options);
    grad_sync = all_reduce_sync.get();
  }

  // The global row (within the step's global batch) of row 0 of this rank's micro-batch `micro`: the data
  // loader gives rank r the rows [(micro N + r) B, + B) of the step's N g B rows. The forward keys its masks,
  // crops, samples and dropout by (step, global row), so any split of a global batch over ranks, micro-batches
  // and accumulation steps draws the same numbers for the same row.
  uint64_t micro_first_row(int64_t micro) const {
    return static_cast<uint64_t>((micro * world_size() + rank()) * config.train.micro_batch);
  }

  // optim.zero = 1 under a launch: the optimizer is built sharded (open_zero), never whole.
  bool zero_sharded() const { return config.optim.zero == 1 && comm != nullptr; }

  // ZeRO-1: the shards are built from the weights (final here: loaded from a checkpoint, or fresh), and a
  // checkpoint's optimizer state is streamed into them one parameter at a time, so that no rank holds the
  // whole optimizer state. With mixed precision the shards take their f32 masters from the whole masters, which
  // are freed then: the model keeps its 16-bit working copies, which each step's all-gather rewrites.
  void open_zero() {
    if (config.optim.zero != 1) return;
    if (!comm) {
      message("note: optim.zero = 1 in one process: nothing to shard, the optimizer state stays whole");
      return;
    }
    dist::ZeroOptions zero_options;
    zero_options.bucket_bytes = bucket_bytes();
    zero_options.reduce_dtype = config.dist_reduce_dtype == "bf16" ? DType::bf16 : DType::f32;
    std::vector<Tensor> whole_masters;
    for (const NamedParameter& m : masters) whole_masters.push_back(m.tensor);
    zero = std::make_unique<dist::ZeroAdamW>(*comm, params, whole_masters, adam_options, zero_options);
    if (zero->parameters().size() != adam_params.size())
      throw std::logic_error("ZeRO-1: the sharded optimizer and the trainer list different parameters");
    if (resume_dir) {
      std::vector<std::pair<std::string, Shape>> names;
      for (const NamedParameter& p : zero->parameters()) names.emplace_back(p.name, p.tensor.shape());
      checkpoint::load_optimizer_state(
          *resume_dir, names, saved_state.step - saved_state.skipped_steps,
          [this](size_t i, int64_t count, const Tensor& exp_avg, const Tensor& exp_avg_sq) {
            zero->load_param_state(i, count, exp_avg, exp_avg_sq);
          });
    }
    if (param_dtype != DType::f32) {  // f32: the masters are the model's own tensors
      whole_masters.clear();
      for (NamedParameter& m : masters) m.tensor = Tensor();
      for (optim::AdamWParam& p : adam_params) p.master = Tensor();
    }
    grad_sync = zero.get();  // its buckets' reduce-scatter starts from the backward hook
  }

  // ZeRO-1 on the device-decided step, after synchronize_device_step: the decision reads the global norm and
  // non-finite flag of the step's gradients, from each rank's gradient shard summed over the ranks on the
  // device (StepControl::decide's combine: two one-element all-reduces between the shard's statistics and the
  // decision), so every rank decides alike; then each rank's AdamW updates its shard with the decision's scalars
  // (a skipped step leaves it alone) and the working copies are all-gathered. Nothing comes back to the host.
  void zero_device_step() {
    control->decide({zero->gradient_shard()}, step_metrics->loss_sum(),
                    [this](const Tensor& sum_sq, const Tensor& nonfinite) {
                      comm->all_reduce(sum_sq, dist::ReduceOp::sum);
                      comm->all_reduce(nonfinite, dist::ReduceOp::sum);
                      comm->wait();
                    });
    zero->apply(*control);
    zero->zero_grad();
  }

  // What a checkpoint stores with ZeRO-1: the shards gathered (a collective: every rank calls it) into the
  // whole f32 masters and a whole AdamW over them, on rank 0 (empty elsewhere): the format of the
  // single-process run of the same precision.
  struct GatheredZero {
    std::vector<NamedParameter> masters;
    std::unique_ptr<optim::AdamW> optimizer;
  };
  GatheredZero gathered_zero() {
    const std::vector<dist::ZeroAdamW::ParamState> state = zero->gathered_state();
    GatheredZero out;
    if (!writes_run_dir()) return out;
    std::vector<optim::AdamWParam> whole;
    for (size_t i = 0; i < state.size(); ++i) {
      const NamedParameter& p = zero->parameters()[i];
      out.masters.push_back({p.name, state[i].master, p.weight_decay});
      whole.push_back({p.name, state[i].master, Tensor(), Tensor(), p.weight_decay});
    }
    out.optimizer = std::make_unique<optim::AdamW>(std::move(whole), adam_options);
    for (size_t i = 0; i < state.size(); ++i)
      out.optimizer->set_state(i, state[i].step, state[i].exp_avg, state[i].exp_avg_sq);
    return out;
  }

  // The first step's report of the gradient synchronisation (after its buckets finished).
  void report_data_parallel_start() const {
    if (step == start_step && all_reduce_sync)
      message(format("data parallel: %d ranks (%s), %zu gradient buckets, %zu of them all-reduced during backward",
                     world_size(), comm->backend(), grad_sync->bucket_count(), grad_sync->overlapped_buckets()));
    if (step == start_step && zero)
      message(
          format("data parallel: %d ranks (%s), ZeRO-1: AdamW state and f32 masters sharded, %lld of %lld "
                 "elements per rank; %zu gradient buckets, %zu of them reduce-scattered during backward",
                 world_size(), comm->backend(), static_cast<long long>(zero->shard_size()),
                 static_cast<long long>(zero->total_elements()), zero->bucket_count(), zero->overlapped_buckets()));
  }

  // Plain data parallelism on the device-decided step, before the decision: the gradient buckets complete
  // (summed over the ranks in place; on cuda the communication stream is ordered by events, no host
  // wait), then the step's metric sums are summed over the ranks on the device (one collective of
  // StepMetrics::kSlots f64). So every rank's StepControl::decide sees the global loss sum (a non-finite
  // loss on any rank skips the step on every rank) and the same summed gradients: every rank takes the
  // same decision (skip, clip factor, f16 loss scale) with no value read back, and the record, taken at the
  // logging cadence, holds the global batch's sums. The host-side counts follow in agree_after_step.
  void synchronize_device_step() {
    grad_sync->finish();
    report_data_parallel_start();
    comm->all_reduce(step_metrics->sums(), dist::ReduceOp::sum);
    comm->wait();
  }

  // Data parallelism, after every step: one exchange of host values (Communicator::sum_on_host: MPI on host
  // memory, so it neither queues device work nor waits for the device). It agrees on the stop signal (a
  // stop that reached any rank stops every rank after the same step) and makes the step's host counts
  // global (the device already added its sums over the ranks): rows and micro-batches are the same on every rank, so
  // world x this rank's; non-pad tokens differ by rank and are summed here exactly, every step, so tokens_per_s and the
  // tokens_seen of any checkpoint (which may fall between logging steps) are the global batch's. They ride on the
  // message the stop agreement needs anyway; taking them from the device sums would need an upload per step and would
  // be known only at the logging cadence. Returns whether the job stops.
  bool agree_after_step(StepStats& stats) {
    int64_t values[2] = {options.stop_requested && options.stop_requested() ? 1 : 0, stats.tokens};
    comm->sum_on_host(values, 2);
    stats.tokens = values[1];
    stats.rows *= world_size();
    stats.micro_batches *= world_size();
    return values[0] > 0;
  }

  // Ranks other than 0 write no checkpoint: they wait until rank 0 has committed it and name it.
  fs::path checkpoint_written_by_rank_0() {
    comm->barrier();
    const checkpoint::ResumePoint latest = checkpoint::find_resume_checkpoint(run_dir);
    if (!latest.dir) throw std::runtime_error(run_dir.string() + ": rank 0 wrote no checkpoint (checkpoints/latest)");
    return *latest.dir;
  }

  // A collective that fails while the trainer opens (a peer dead or hanging at start-up: the configuration
  // check, checkpoint agreement) ends the job like one in a step (abort_job): while the communicator still
  // lives, or this rank's exit could wait on the missing peer in MPI's finalisation.
  Impl(train::TrainConfig parsed, std::string config_source, TrainerOptions trainer_options)
      : options(std::move(trainer_options)), source(std::move(config_source)), config(std::move(parsed)) {
    try {
      open();
    } catch (const dist::CommError& error) {
      if (comm) abort_job(error);
      throw;
    }
  }

  void open() {
    if (options.run_dir.empty()) throw std::invalid_argument("TrainerOptions::run_dir: expected the run directory");
    run_dir = options.run_dir;
    open_communicator();
    checkpoint::fault_point("trainer:start");               // tests: a rank that hangs before the first collective
    train::apply_world_size(config, world_size(), source);  // train.global_batch -> grad_accum for this launch
    if (writes_run_dir()) {
      fs::create_directories(run_dir);
      lock = std::make_unique<checkpoint::RunDirectoryLock>(run_dir);  // held while the Trainer lives
    }

    // Resume point.
    const checkpoint::ResumePoint resume_point = checkpoint::find_resume_checkpoint(run_dir);
    if (!resume_point.note.empty()) message(resume_point.note);
    resume_dir = resume_point.dir;
    meta = data::PreparedMeta::read(config.data.dir);
    if (resume_dir) {
      // Another vocabulary first: with the vocabulary left to the data it also shows as a shape change.
      saved_state = checkpoint::read_trainer_state(*resume_dir);
      const std::string warning =
          data::require_checkpoint_vocabulary(*resume_dir, saved_state.json, meta, "resume training from");
      if (!warning.empty()) message(warning);
      const fs::path saved_config_path = *resume_dir / "config.json";
      const train::TrainConfig saved =
          train::parse_train_config(checkpoint::read_json_file(saved_config_path), saved_config_path.string());
      const auto differences = train::model_shape_differences(saved, config);
      if (!differences.empty()) {
        std::string text = source + ": refusing to resume from " + resume_dir->string() +
                           ": the configuration changes the model's shape (checkpoint -> config):";
        for (const auto& d : differences) text += "\n  " + d;
        throw ConfigError(text);
      }
    }

    // Data.
    train::check_data_against_config(meta, config, source, train::ConfigOrigin::user);
    tokenizer_files = checkpoint_tokenizer_files(meta.dir, [this](const std::string& line) { message(line); });
    // The resolved configuration (every default and every value taken from the data filled in), once the data
    // agrees.
    resolved = train::train_config_to_json(config);
    if (comm) dist::require_same_on_all_ranks(*comm, "configuration " + source, resolved.dump());
    if (writes_run_dir()) checkpoint::replace_file_atomically(run_dir / "config.json", resolved.dump(2) + "\n");
    auto train_set = std::make_shared<const data::TokenDataset>(
        data::TokenDataset::open(meta, "train", static_cast<uint64_t>(config.model.vocab_size)));
    if (train_set->tokens() == 0)
      throw data::DataError((meta.dir / "meta.json").string() + ": the train split has no tokens: nothing to train on");
    layout = packing_for(config);
    train_sequences = std::make_shared<const data::PackedSequences>(train_set, layout);
    if (!meta.valid_shards.empty()) {
      auto valid_set = std::make_shared<const data::TokenDataset>(
          data::TokenDataset::open(meta, "valid", static_cast<uint64_t>(config.model.vocab_size)));
      if (valid_set->tokens() > 0) valid_sequences = std::make_shared<const data::PackedSequences>(valid_set, layout);
    }

    // Model and optimizer.
    const auto& t = config.train;
    // Mixed precision: the model's registered tensors are 16-bit working copies that the forward and
    // backward use (with f32 gradient buffers); f32 masters, updated by AdamW, own the values and go
    // into checkpoints. bf16 copies are rewritten by the AdamW kernel itself, f16 copies after each step.
    param_dtype = config.precision == "bf16" ? DType::bf16 : config.precision == "f16" ? DType::f16 : DType::f32;
    refuse_absurd_memory(config, source);
    runtime::cpu::set_threads(static_cast<int>(config.threads));
    model = std::make_unique<CocoModel>(config.model, config.objective, t.seed, config.device, param_dtype);
    params = trainable_parameters(*model, config.optim);
    masters = params;
    for (size_t i = 0; i < params.size(); ++i) {
      NamedParameter& p = params[i];
      if (param_dtype == DType::f32) {
        adam_params.push_back({p.name, p.tensor, Tensor(), Tensor(), p.weight_decay});
        continue;
      }
      p.tensor.set_grad_dtype(DType::f32);
      masters[i].tensor = p.tensor.to(DType::f32).set_name(p.name);
      adam_params.push_back(
          {p.name, masters[i].tensor, param_dtype == DType::bf16 ? p.tensor : Tensor(), p.tensor, p.weight_decay});
    }
    optim::AdamWOptions& adam = adam_options;
    adam.beta1 = config.optim.beta1;
    adam.beta2 = config.optim.beta2;
    adam.eps = config.optim.eps;
    adam.weight_decay = config.optim.weight_decay;
    if (!zero_sharded()) optimizer = std::make_unique<optim::AdamW>(adam_params, adam);  // else open_zero's shards
    open_grad_sync();

    if (resume_dir) {
      checkpoint::load_weights(*resume_dir, masters);
      refresh_working_copies();
      if (optimizer) checkpoint::load_optimizer(*resume_dir, *optimizer, saved_state.step - saved_state.skipped_steps);
      try {
        start_step = saved_state.step;
        cursor = saved_state.cursor;
        skipped_total = saved_state.skipped_steps;
        consecutive_skips = saved_state.consecutive_skips;
        tokens_seen = saved_state.tokens_seen;
        if (saved_state.grad_scaler) scaler.load_state(*saved_state.grad_scaler);
        if (start_step > 0 && saved_state.sequences != train_sequences->size())
          message(
              format("warning: the train split now packs into %llu sequences, the checkpoint saw %llu: the data order "
                     "after resume differs from the original run's",
                     static_cast<unsigned long long>(train_sequences->size()),
                     static_cast<unsigned long long>(saved_state.sequences)));
      } catch (const std::invalid_argument& e) {
        throw checkpoint::CheckpointError((*resume_dir / "trainer_state.json").string() + ": " + e.what());
      }
      message(format("resuming from %s (step %lld)", resume_dir->c_str(), static_cast<long long>(start_step)));
    }
    open_zero();
    step = start_step;
    if (writes_run_dir()) truncate_metrics(run_dir / "metrics.jsonl", resume_dir ? start_step : -1);
    last_checkpoint = resume_dir;
    last_checkpoint_step = resume_dir ? start_step : -1;
    if (step >= t.steps) return;  // nothing to do: no report, no loader, no log

    const int64_t rows_per_step = t.micro_batch * t.grad_accum * world_size();
    message(objective::describe_model(*model, config.model, config.objective, t.micro_batch, layout.seq_len,
                                      param_dtype == DType::f32 ? 4 : 2)
                .text());
    if (config.device == Device::cpu) message(runtime::cpu::report());
    message(format(
        "model: %zu parameters (%zu tensors) on %s | data: %llu train sequences of %lld tokens (%.2f "
        "epochs planned)%s | %lld steps x %lld sequences",
        model->parameter_count(), params.size(), device_name(config.device),
        static_cast<unsigned long long>(train_sequences->size()), static_cast<long long>(layout.seq_len),
        static_cast<double>(t.steps * rows_per_step) / static_cast<double>(train_sequences->size()),
        valid_sequences ? format(", %llu valid", static_cast<unsigned long long>(valid_sequences->size())).c_str() : "",
        static_cast<long long>(t.steps), static_cast<long long>(rows_per_step)));
    open_step_control();
    open_step_graph();
    open_loop();
  }

  void open_loop() {
    const auto& t = config.train;
    data::LoaderOptions loader_options;
    loader_options.micro_batch = t.micro_batch;
    loader_options.seed = t.seed;
    loader_options.shuffle = config.data.shuffle;
    loader_options.start_cursor = cursor;
    loader_options.prefetch = config.data.prefetch;
    loader_options.rank = rank();
    loader_options.world_size = world_size();
    loader = std::make_unique<data::DataLoader>(train_sequences, loader_options);
    if (writes_run_dir()) metrics = std::make_unique<MetricsLog>(run_dir / "metrics.jsonl");
    hash = train::config_hash(config);
    // Which checkpoints are this run's (write_checkpoint's retention drops no other run's).
    run_id = saved_state.run_id.empty() ? checkpoint::new_run_id() : saved_state.run_id;
    run_start = std::chrono::steady_clock::now();
  }

  fs::path save_now() {
    const train::StepGraph::OtherWork other_work(step_graph.get());  // before the capture: did it keep memory?
    const auto& t = config.train;
    if (!loader) open_loop();
    if (control) mirror(control->read());  // the counters and step counts the checkpoint holds
    const int64_t completed = step;
    nlohmann::json s;
    s["format"] = "coco-trainer-state";
    s["version"] = 1;
    s["step"] = completed;
    s["data"] = {{"cursor", loader->cursor()},
                 {"epoch", loader->cursor() / train_sequences->size()},
                 {"sequences", train_sequences->size()},
                 {"dir", config.data.dir}};
    s["rng"] = {{"seed", t.seed},
                {"generator", "philox4x32-10 keyed by (seed, step, purpose, global row); stateless"},
                {"next_step_key", static_cast<uint64_t>(completed)}};
    s["loss_scale"] = param_dtype == DType::f16 ? scaler.scale() : 1.0;
    const optim::GradScaler::State scaler_state = scaler.state();
    s["grad_scaler"] = {{"scale", scaler_state.scale},
                        {"growth_tracker", scaler_state.growth_tracker},
                        {"hysteresis_left", scaler_state.hysteresis_left},
                        {"skipped_steps", scaler_state.skipped_steps}};
    s["skipped_steps"] = skipped_total;
    s["consecutive_skips"] = consecutive_skips;
    s["tokens_seen"] = tokens_seen;
    s["config_hash"] = hash;
    s["run_id"] = run_id;
    s["vocab"] = data::vocab_identity_to_json({meta.vocab_hash, meta.vocab_size});
    if (comm) s["world_size"] = world_size();
    const GatheredZero gathered = zero ? gathered_zero() : GatheredZero{};  // every rank
    if (comm && !writes_run_dir()) {
      last_checkpoint = checkpoint_written_by_rank_0();
    } else {
      checkpoint::CheckpointData data{gathered.optimizer ? gathered.masters : masters,
                                      gathered.optimizer ? gathered.optimizer.get() : optimizer.get(), s, resolved,
                                      tokenizer_files};
      last_checkpoint = checkpoint::write_checkpoint(run_dir, completed, data, t.keep_checkpoints);
      if (comm) comm->barrier();
    }
    last_checkpoint_step = completed;
    message(format("checkpoint: %s", last_checkpoint->c_str()));
    return *last_checkpoint;
  }

  StepStats evaluate_now(int64_t batches) {
    if (!valid_sequences)
      throw data::DataError((meta.dir / "meta.json").string() + ": the data has no valid split to evaluate on");
    // Before the capture: one more warm-up step if the evaluation kept device memory (StepGraph::OtherWork; under a
    // launch the ranks agree on it before the capture, agree_capture, so an evaluation on some ranks delays it on all).
    const train::StepGraph::OtherWork other_work(step_graph.get());
    return evaluate_sequences(*model, *valid_sequences, config.train.micro_batch,
                              batches >= 0 ? batches : config.train.eval_batches,
                              config.objective.cl_weight > 0 ? 2 : 1);
  }

  void scheduled_eval() {
    const StepStats stats = evaluate_now(-1);
    if (stats.rows == 0) return;
    JsonRecord r;
    r.add_int("step", step).add_string("split", "valid");
    stats.put(r);
    r.add_int("sequences", stats.rows);
    if (comm) r.add_int("world_size", world_size());
    record(r.str());
    message(format("eval  %lld/%lld valid %s (%lld sequences)", static_cast<long long>(step),
                   static_cast<long long>(config.train.steps), stats.summary(/*with_accuracies=*/true).c_str(),
                   static_cast<long long>(stats.rows)));
  }

  StepReport train_step() {
    const auto& t = config.train;
    if (step >= t.steps)
      throw std::logic_error(format("Trainer::train_step: the run is at step %lld of train.steps = %lld",
                                    static_cast<long long>(step), static_cast<long long>(t.steps)));
    const auto step_start = std::chrono::steady_clock::now();
    record_checks.reset();
    const double loss_scale = param_dtype == DType::f16 ? scaler.scale() : 1.0;
    if (!step_metrics) {
      step_metrics = std::make_unique<objective::StepMetrics>(config.device);
      device_checks = std::make_unique<ops::DeviceChecks>(config.device);
      // Measured: the first steady step (with graphs, the first replay after the capture).
      profiler = std::make_unique<train::StepProfiler>(config.device == Device::cuda && writes_run_dir(),
                                                       step_graph ? train::StepGraph::kWarmupSteps + 1 : 2);
    }
    // With graphs only a replay is measured (the steady step the run repeats).
    profiler->begin(step + 1, (step + 1) % t.log_every == 0 || step + 1 == t.steps,
                    !step_graph || step_graph->next_phase() == train::StepGraph::Phase::replay);
    StepStats stats;
    if (step_graph) graphed_step(stats);
    const int64_t host_issued_micro_batches = step_graph ? 0 : t.grad_accum;  // else the graph ran them
    for (int64_t micro = 0; micro < host_issued_micro_batches; ++micro) {
      const data::Batch batch = loader->next();
      epoch = batch.epoch;
      // Data parallel: the gradients of the last micro-batch start their buckets' all-reduce during its backward.
      const bool sync_in_backward = grad_sync && micro + 1 == t.grad_accum;
      const Tensor tokens = Tensor::from_vector(batch.tokens, Shape{batch.rows, batch.seq_len}, Device::cpu);
      objective::Outputs out;
      Tensor scaled;
      {
        Tape::Recording recording(tape);
        out = model->forward(tokens, static_cast<uint64_t>(step), /*training=*/true, micro_first_row(micro));
        const double factor = loss_scale / static_cast<double>(global_micro_batches());
        if (param_dtype == DType::f16)  // the scale the device decided: no host value
          scaled = ops::mul(out.loss, control->backward_seed().view(out.loss.shape()));
        else
          scaled = factor == 1.0 ? out.loss : ops::scale(out.loss, factor);
      }
      if (sync_in_backward) grad_sync->attach(tape);
      tape.backward(scaled);
      if (sync_in_backward) grad_sync->detach(tape);
      tape.clear();
      step_metrics->add(out, batch.rows);
      stats.count(out, batch.rows);
      stats.tokens += batch.non_pad_tokens;
    }
    const double lr = train::learning_rate(config.optim, t.steps, step);
    // The step is decided on the device (with data parallelism every rank alike); the host knows its outcome
    // only when its record is read: at the logging cadence (every step on the CPU).
    if (!step_graph) {  // else all of this ran in the graph
      if (comm) synchronize_device_step();
      if (injected_nonfinite(step + 1)) control->force_skip();
      if (zero) {
        zero_device_step();
      } else {
        control->decide(optimizer->gradients(), step_metrics->loss_sum());
        optimizer->step(*control);
        if (param_dtype == DType::f16) refresh_working_copies();  // unchanged weights when skipped
        optimizer->zero_grad();
      }
    }
    const int64_t completed = step + 1;
    const bool known = config.device == Device::cpu || completed % t.log_every == 0 || completed == t.steps;
    bool nonfinite = false;
    double grad_norm = std::numeric_limits<double>::quiet_NaN(), step_loss_scale = loss_scale;
    if (known) {
      // With the validation counts: a logging step waits for the device once.
      record_copy->capture(*step_metrics, control->state(), device_checks->counters());
      if (!step_graph) step_metrics->reset();  // the graph resets the sums when it starts a step
      objective::StepRecordCopy::Record record = record_copy->take();
      record_checks = std::move(record.checks);
      stats.take(record.sums);
      mirror(record.state);
      nonfinite = record.state.apply == 0;
      grad_norm = record.state.grad_norm;
      step_loss_scale = record.state.step_loss_scale;
    } else if (!step_graph) {
      step_metrics->reset();
    }
    step = completed;
    if (profiler->end(nonfinite)) message(profiler->line());
    checkpoint::fault_point("after-step:" + std::to_string(completed));
    std::optional<bool> stop;  // under a launch: agreed by every rank
    if (comm) stop = agree_after_step(stats);
    tokens_seen += stats.tokens;
    return finish_step(stats, completed, lr, grad_norm, step_loss_scale, nonfinite, known, step_start, stop);
  }

  // Metrics record, progress report, evaluation and checkpoint of the step just completed.
  // `known`: whether the host holds this step's losses (on the device-decided path only at the logging
  // cadence); `step_loss_scale`: the loss scale the step's backward used; `agreed_stop`: the ranks' agreed stop
  // signal under a launch (agree_after_step), else options.stop_requested is asked here.
  StepReport finish_step(const StepStats& stats, int64_t completed, double lr, double grad_norm, double step_loss_scale,
                         bool nonfinite, bool known, std::chrono::steady_clock::time_point step_start,
                         std::optional<bool> agreed_stop) {
    const auto& t = config.train;
    const auto now = std::chrono::steady_clock::now();
    const double step_seconds = std::chrono::duration<double>(now - step_start).count();
    const double elapsed = std::chrono::duration<double>(now - run_start).count();
    StepReport report;
    report.step = completed;
    report.total_steps = t.steps;
    report.skipped = nonfinite;
    report.loss = known ? stats.value("loss") : std::numeric_limits<double>::quiet_NaN();
    report.lr = lr;
    report.grad_norm = grad_norm;
    report.seconds = step_seconds;
    report.tokens_per_s = step_seconds > 0 ? static_cast<double>(stats.tokens) / step_seconds : 0.0;
    report.summary = known ? stats.summary() : std::string();
    report.eta_seconds =
        elapsed / static_cast<double>(completed - start_step) * static_cast<double>(t.steps - completed);
    report.status = format("step %lld/%lld ", static_cast<long long>(completed), static_cast<long long>(t.steps)) +
                    (known ? report.summary + " " : std::string()) +
                    format("lr %.3g tokens_per_s %.0f | ETA %s%s", lr, report.tokens_per_s,
                           format_duration(report.eta_seconds).c_str(), nonfinite ? " | SKIPPED" : "");
    report.logged = completed % t.log_every == 0 || completed == t.steps || nonfinite;
    if (report.logged) {
      // A failed device-side validation stops the run here (counts from the step's record when it came with one).
      if (record_checks)
        device_checks->verify(*record_checks);
      else
        device_checks->verify();
      JsonRecord r;
      r.add_int("step", completed);
      stats.put(r);
      r.add("lr", lr)
          .add("grad_norm", grad_norm)
          .add("tokens_per_s", report.tokens_per_s)
          .add("loss_scale", step_loss_scale);
      r.add_int("skipped", nonfinite ? 1 : 0).add_int("epoch", static_cast<int64_t>(epoch));
      if (comm) r.add_int("world_size", world_size());
      if (profiler->take_pending())  // once, in the first step record after the measured step
        for (const auto& [key, value] : profiler->fields()) r.add_int(key.c_str(), static_cast<int64_t>(value));
      record(r.str());
    }
    if (options.on_step && writes_run_dir()) options.on_step(report);
    // The record of the failing step is written first, so the log shows every skipped step.
    if (nonfinite && consecutive_skips > t.max_consecutive_skips)
      throw std::runtime_error(format(
          "step %lld: non-finite loss or gradients in %lld consecutive steps (train.max_consecutive_skips = %lld); "
          "stopping. The last good checkpoint is %s",
          static_cast<long long>(completed), static_cast<long long>(consecutive_skips),
          static_cast<long long>(t.max_consecutive_skips),
          last_checkpoint ? last_checkpoint->c_str() : "(none: no checkpoint was written yet)"));

    if (valid_sequences && ((t.eval_every > 0 && completed % t.eval_every == 0) || completed == t.steps)) {
      if (writes_run_dir()) scheduled_eval();  // every rank holds the same weights: rank 0 evaluates
    }
    const bool stopping = agreed_stop ? *agreed_stop : options.stop_requested && options.stop_requested();
    if ((t.checkpoint_every > 0 && completed % t.checkpoint_every == 0) || completed == t.steps || stopping)
      report.checkpoint = save_now();  // a skipped step left the weights untouched, so they are still good
    if (metrics && metrics->failed()) {
      if (last_checkpoint_step != completed) save_now();
      throw std::runtime_error(metrics->error() + "; stopped after step " + std::to_string(completed) +
                               " (checkpoint " + last_checkpoint->string() + " written)");
    }
    report.stopped = stopping;
    return report;
  }
};

Trainer::Trainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Trainer::Trainer(Trainer&&) noexcept = default;
Trainer& Trainer::operator=(Trainer&&) noexcept = default;
Trainer::~Trainer() = default;

Trainer Trainer::from_file(const fs::path& config_path, TrainerOptions options) {
  return Trainer(std::make_unique<Impl>(train::load_train_config(config_path.string(), options.overrides),
                                        config_path.string(), std::move(options)));
}

Trainer Trainer::from_json(const nlohmann::json& config, const std::string& source, TrainerOptions options) {
  return Trainer(std::make_unique<Impl>(train::load_train_config_json(config, source, options.overrides), source,
                                        std::move(options)));
}

int64_t Trainer::step() const { return impl_->step; }
int64_t Trainer::total_steps() const { return impl_->config.train.steps; }
std::optional<fs::path> Trainer::resumed_from() const { return impl_->resume_dir; }
std::optional<fs::path> Trainer::last_checkpoint() const { return impl_->last_checkpoint; }
const nlohmann::json& Trainer::config() const { return impl_->resolved; }
fs::path Trainer::run_dir() const { return impl_->run_dir; }
StepReport Trainer::train_step() {
  const StreamScope on_stream(impl_->work_stream());
  try {
    return impl_->train_step();
  } catch (const std::exception& error) {
    if (impl_->comm) impl_->abort_job(error);  // under a launch: the job ends on every rank
    throw;
  }
}
fs::path Trainer::save() {
  const StreamScope on_stream(impl_->work_stream());
  try {
    return impl_->save_now();
  } catch (const std::exception& error) {
    if (impl_->comm) impl_->abort_job(error);
    throw;
  }
}

nlohmann::json Trainer::evaluate(int64_t batches) {
  const StreamScope on_stream(impl_->work_stream());
  const StepStats stats = impl_->evaluate_now(batches);  // no collective: a failure is this rank's to handle
  JsonRecord r;
  r.add_int("step", impl_->step).add_string("split", "valid");
  stats.put(r);
  r.add_int("sequences", stats.rows);
  return nlohmann::json::parse(r.str());
}

int64_t Trainer::run() {
  int64_t taken = 0;
  while (!done()) {
    const StepReport report = train_step();
    ++taken;
    if (report.stopped) break;
  }
  return taken;
}

EvalReport evaluate_checkpoint(const EvalOptions& options) {
  EvalReport report;
  const fs::path checkpoint = checkpoint::resolve_checkpoint_dir(options.checkpoint);
  const fs::path config_path = checkpoint / "config.json";
  const nlohmann::json saved_json = checkpoint::read_json_file(config_path);
  nlohmann::json config_json = saved_json;
  if (!options.device.empty()) config_json["runtime"]["device"] = options.device;
  if (!options.data_dir.empty())
    config_json["data"]["dir"] = fs::absolute(options.data_dir).lexically_normal().string();
  if (options.micro_batch > 0) config_json["train"]["micro_batch"] = options.micro_batch;
  for (const auto& assignment : options.overrides) apply_override(config_json, assignment);
  const std::string source =
      options.overrides.empty() ? config_path.string() : config_path.string() + " (with --set overrides)";
  const train::TrainConfig config = train::parse_train_config(config_json, source);
  // The weights fix the model: an override may change how it is evaluated, never its shape.
  const auto differences =
      train::model_shape_differences(train::parse_train_config(saved_json, config_path.string()), config);
  if (!differences.empty()) {
    std::string message = source +
                          ": coco eval cannot change the shape of the checkpoint's model (checkpoint -> "
                          "override):";
    for (const auto& d : differences) message += "\n  " + d;
    throw ConfigError(message);
  }

  const nlohmann::json state = checkpoint::read_json_file(checkpoint / "trainer_state.json");
  const data::PreparedMeta meta = data::PreparedMeta::read(config.data.dir);
  const std::string warning = data::require_checkpoint_vocabulary(checkpoint, state, meta, "evaluate");
  if (!warning.empty()) report.warnings.push_back(warning);
  train::check_data_against_config(meta, config, source, train::ConfigOrigin::checkpoint);
  if (meta.shards(options.split).empty())
    throw data::DataError((meta.dir / "meta.json").string() + ": the " + options.split + " split has no shards");
  auto dataset = std::make_shared<const data::TokenDataset>(
      data::TokenDataset::open(meta, options.split, static_cast<uint64_t>(config.model.vocab_size)));
  const data::PackedSequences sequences(dataset, packing_for(config));

  CocoModel model(config.model, config.objective, config.train.seed, config.device);
  checkpoint::load_weights(checkpoint, model.named_parameters());
  const int64_t batches = options.batches >= 0 ? options.batches : config.train.eval_batches;
  const StepStats stats =
      evaluate_sequences(model, sequences, config.train.micro_batch, batches, config.objective.cl_weight > 0 ? 2 : 1);
  if (stats.rows == 0) throw data::DataError("the " + options.split + " split has too few sequences to evaluate");

  const int64_t step = state.value("step", int64_t{0});
  report.checkpoint_line = format("checkpoint  %s (step %lld)", checkpoint.c_str(), static_cast<long long>(step));
  report.data_line =
      format("data        %s, split %s: %lld sequences in %lld batches", config.data.dir.c_str(), options.split.c_str(),
             static_cast<long long>(stats.rows), static_cast<long long>(stats.micro_batches));
  report.table = stats.table(config.objective);
  JsonRecord r;
  r.add_string("checkpoint", checkpoint.string()).add_int("step", step).add_string("split", options.split);
  stats.put(r);
  r.add_int("sequences", stats.rows).add_int("masked_tokens", stats.masked);
  report.json = r.str();
  report.record = nlohmann::json::parse(report.json);
  return report;
}

}  // namespace coco
