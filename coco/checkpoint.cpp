#include "coco/checkpoint.h"
#include "engine/io/checked_read.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <stdexcept>

#include "coco/checkpoint_manifest.h"
#include "engine/config.h"
#include "engine/io/safetensors.h"

namespace coco::checkpoint {

namespace fs = std::filesystem;

namespace {

[[noreturn]] void throw_io(const fs::path& path, const std::string& what) {
  throw std::runtime_error(path.string() + ": " + what + ": " + std::strerror(errno));
}

void fsync_path(const fs::path& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) throw_io(path, "cannot open to fsync");
  const int status = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  errno = saved;
  if (status != 0 && errno != EINVAL) throw_io(path, "fsync failed");
}

// f32 host bytes of a tensor on any device.
std::vector<float> host_f32(const Tensor& t) { return t.to(Device::cpu).to(DType::f32).to_vector<float>(); }

using checkpoint::CheckpointError;

// A checkpoint of non-finite values would be resumed from forever after: refuse to write one.
void require_finite(const std::string& name, const std::vector<float>& values) {
  for (size_t i = 0; i < values.size(); ++i)
    if (!std::isfinite(values[i]))
      throw std::runtime_error("refusing to write a checkpoint: tensor '" + name + "' holds a non-finite value (" +
                               std::to_string(values[i]) + " at element " + std::to_string(i) + ")");
}

safetensors::TensorData tensor_data(const std::string& name, const Tensor& t, const std::vector<float>& values) {
  require_finite(name, values);
  std::vector<int64_t> shape;
  for (int d = 0; d < t.rank(); ++d) shape.push_back(t.size(d));
  return {name, DType::f32, shape,
          std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(values.data()), values.size() * sizeof(float))};
}

// Reads tensor `name` from `reader` into `target` (shape and f32 checked).
void copy_into(const safetensors::Reader& reader, const std::string& name, const Tensor& target) {
  const safetensors::TensorInfo* info = reader.find(name);
  if (!info) throw CheckpointError(reader.label() + ": missing tensor '" + name + "'");
  std::vector<int64_t> shape;
  for (int d = 0; d < target.rank(); ++d) shape.push_back(target.size(d));
  if (info->dtype != DType::f32 || info->shape != shape) {
    std::string want, got;
    for (auto s : shape) want += (want.empty() ? "" : ", ") + std::to_string(s);
    for (auto s : info->shape) got += (got.empty() ? "" : ", ") + std::to_string(s);
    throw CheckpointError(reader.label() + ": tensor '" + name + "' has shape [" + got + "], the model expects f32 [" +
                          want + "]");
  }
  const auto bytes = reader.data(*info);
  std::vector<float> values(static_cast<size_t>(target.numel()));
  std::memcpy(values.data(), bytes.data(), values.size() * sizeof(float));
  for (size_t i = 0; i < values.size(); ++i)
    if (!std::isfinite(values[i]))
      throw CheckpointError(reader.label() + ": tensor '" + name + "' holds a non-finite value (" +
                            std::to_string(values[i]) + " at element " + std::to_string(i) + ")");
  Tensor host = Tensor::from_vector(values, target.shape(), Device::cpu);
  Tensor destination = target.detach();
  destination.copy_from(target.dtype() == DType::f32 ? host : host.to(target.dtype()));
}

std::optional<int64_t> step_of(const std::string& name) {
  if (name.size() != 13 || name.rfind("step-", 0) != 0) return std::nullopt;
  for (size_t i = 5; i < name.size(); ++i)
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
  return std::stoll(name.substr(5));
}

}  // namespace

std::string checkpoint_name(int64_t step) {
  char text[32];
  std::snprintf(text, sizeof text, "step-%08lld", static_cast<long long>(step));
  return text;
}

void fault_point(const std::string& point) {
  const char* wanted = std::getenv("COCO_FAULT_INJECT");
  if (!wanted) return;
  const std::string w = wanted;
  if (w == point) {
    std::fflush(nullptr);
    ::kill(::getpid(), SIGKILL);
  } else if (w == "sigint@" + point) {
    ::raise(SIGINT);
  } else if (w == "sigterm@" + point) {
    ::raise(SIGTERM);
  } else if (w == "throw@" + point) {
    // A failure on this rank alone (an exception where the others go on): the data-parallel tests.
    throw std::runtime_error("COCO_FAULT_INJECT: a failure injected at " + point);
  } else if (w == "hang@" + point) {
    // A rank that stops responding (a stuck device, a deadlocked thread): the others' collectives time out.
    for (;;) ::pause();
  }
}

RunDirectoryLock::RunDirectoryLock(const fs::path& run_dir) {
  const fs::path path = run_dir / ".lock";
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_NONBLOCK | O_CLOEXEC, 0644);
  if (fd_ < 0) throw_io(path, "cannot open the run directory's lock file");
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int saved = errno;
    char pid[32] = {};
    const ssize_t n = ::pread(fd_, pid, sizeof pid - 1, 0);
    ::close(fd_);
    fd_ = -1;
    if (saved != EWOULDBLOCK) {
      errno = saved;
      throw_io(path, "cannot lock the run directory");
    }
    std::string holder = n > 0 ? std::string(pid, static_cast<size_t>(n)) : std::string();
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    throw std::invalid_argument(run_dir.string() + " is in use by another coco process (pid " +
                                (holder.empty() ? std::string("unknown") : holder) + ", holding " + path.string() +
                                "); two runs in one directory would overwrite each other's checkpoints");
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    // The lock holds regardless; only the message a second process prints lacks the pid.
  }
}

RunDirectoryLock::~RunDirectoryLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

void write_file_synced(const fs::path& path, const std::string& contents) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw_io(path, "cannot create");
  size_t done = 0;
  while (done < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int saved = errno;
      ::close(fd);
      errno = saved;
      throw_io(path, "write failed");
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int saved = errno;
    ::close(fd);
    errno = saved;
    throw_io(path, "fsync failed");
  }
  if (::close(fd) != 0) throw_io(path, "close failed");
}

void replace_file_atomically(const fs::path& path, const std::string& contents) {
  const fs::path temporary = path.string() + ".tmp";
  write_file_synced(temporary, contents);
  if (::rename(temporary.c_str(), path.c_str()) != 0) throw_io(path, "cannot rename " + temporary.string() + " to it");
  fsync_path(path.parent_path().empty() ? fs::path(".") : path.parent_path(), true);
}

nlohmann::json read_json_file(const fs::path& path) { return io::read_json_checked(path); }

fs::path write_checkpoint(const fs::path& run_dir, int64_t step, const CheckpointData& data, int64_t keep) {
  const fs::path root = run_dir / "checkpoints";
  fs::create_directories(root);
  const std::string name = checkpoint_name(step);
  const fs::path temporary = root / (".tmp-" + name);
  const fs::path final_dir = root / name;
  fs::remove_all(temporary);
  fs::create_directory(temporary);

  {
    std::vector<std::vector<float>> values;
    values.reserve(data.parameters.size());
    std::vector<safetensors::TensorData> tensors;
    for (const auto& p : data.parameters) {
      values.push_back(host_f32(p.tensor));
      tensors.push_back(tensor_data(p.name, p.tensor, values.back()));
    }
    safetensors::write_file((temporary / "model.safetensors").string(), tensors,
                            {{"format", "pt"}, {"step", std::to_string(step)}});
  }
  fault_point("checkpoint:after-model:" + std::to_string(step));
  if (data.optimizer) {
    const optim::AdamW& optimizer = *data.optimizer;
    std::vector<std::vector<float>> values;
    values.reserve(2 * optimizer.size());
    std::vector<safetensors::TensorData> tensors;
    nlohmann::json counts = nlohmann::json::object();
    for (size_t i = 0; i < optimizer.size(); ++i) {
      const std::string& pname = optimizer.param(i).name;
      values.push_back(host_f32(optimizer.exp_avg(i)));
      tensors.push_back(tensor_data(pname + ".exp_avg", optimizer.exp_avg(i), values.back()));
      values.push_back(host_f32(optimizer.exp_avg_sq(i)));
      tensors.push_back(tensor_data(pname + ".exp_avg_sq", optimizer.exp_avg_sq(i), values.back()));
      counts[pname] = optimizer.step_count(i);
    }
    safetensors::write_file((temporary / "optimizer.safetensors").string(), tensors,
                            {{"format", "coco-adamw"}, {"step_counts", counts.dump()}});
  }
  write_file_synced(temporary / "trainer_state.json", data.trainer_state.dump(2) + "\n");
  write_file_synced(temporary / "config.json", data.config.dump(2) + "\n");
  std::vector<std::string> listed = {"model.safetensors", "trainer_state.json", "config.json"};
  if (data.optimizer) listed.push_back("optimizer.safetensors");
  for (const auto& [file, contents] : data.files) {
    write_file_synced(temporary / file, contents);
    listed.push_back(file);
  }
  // Last: a directory with a manifest is complete (the rename below commits it).
  write_file_synced(temporary / checkpoint::kManifestFile, checkpoint::manifest_for(temporary, listed));
  fsync_path(temporary, true);
  fault_point("checkpoint:before-rename:" + std::to_string(step));

  // A directory of this name that `latest` does not point to is debris of a crashed run.
  fs::remove_all(final_dir);
  fs::rename(temporary, final_dir);
  fsync_path(root, true);
  fault_point("checkpoint:before-latest:" + std::to_string(step));
  replace_file_atomically(root / "latest", name + "\n");
  fault_point("checkpoint:after-latest:" + std::to_string(step));

  // Retention: drop temporary directories (debris of a crash; the run lock keeps out live writers), then
  // all but the newest `keep` checkpoints of this run up to this step. Later steps may be the only copy of
  // work this run did not see (its `latest` was lost); other runs' checkpoints are not this run's to drop.
  const std::string run_id =
      data.trainer_state.is_object() ? data.trainer_state.value("run_id", std::string()) : std::string();
  auto same_run = [&](const fs::path& dir) {
    if (run_id.empty()) return true;
    try {
      const nlohmann::json state = read_json_file(dir / "trainer_state.json");
      return state.is_object() && state.value("run_id", std::string()) == run_id;
    } catch (const std::exception&) {
      return false;  // unreadable: not provably ours
    }
  };
  std::vector<std::pair<int64_t, fs::path>> committed;
  for (const auto& entry : fs::directory_iterator(root)) {
    const std::string entry_name = entry.path().filename().string();
    if (entry_name.rfind(".tmp-", 0) == 0) {
      fs::remove_all(entry.path());
      continue;
    }
    const auto entry_step = step_of(entry_name);
    if (!entry_step || entry.is_symlink() || !entry.is_directory()) continue;
    if (*entry_step < step && same_run(entry.path())) committed.emplace_back(*entry_step, entry.path());
  }
  std::sort(committed.begin(), committed.end());
  const size_t keep_older = static_cast<size_t>(std::max<int64_t>(keep, 1) - 1);  // plus the one just written
  for (size_t i = 0; i + keep_older < committed.size(); ++i) fs::remove_all(committed[i].second);
  return final_dir;
}

std::string new_run_id() {
  std::random_device device;
  const uint64_t value = (static_cast<uint64_t>(device()) << 32) ^ device() ^
                         static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(value));
  return text;
}

std::optional<fs::path> latest_checkpoint(const fs::path& run_dir) {
  const fs::path latest = run_dir / "checkpoints" / "latest";
  std::error_code error;
  if (!fs::exists(latest, error)) return std::nullopt;
  const std::string text = io::read_regular_file(latest, 4096, "checkpoints/latest");
  const std::string name = text.substr(0, text.find('\n'));
  if (!step_of(name))
    throw std::runtime_error(latest.string() + ": expected a checkpoint name like \"step-00000100\", got \"" + name +
                             "\"");
  const fs::path dir = run_dir / "checkpoints" / name;
  if (!fs::exists(dir / "trainer_state.json"))
    throw std::runtime_error(latest.string() + " names " + dir.string() + ", which has no trainer_state.json");
  return dir;
}

namespace {

// Verifies `dir` against its manifest, telling the user when there is none to verify against.
void verify_or_warn(const fs::path& dir) {
  if (checkpoint::verify_checkpoint(dir) == checkpoint::Verified::no_manifest)
    std::printf("warning: %s has no %s (written before checkpoints carried checksums): not verified\n", dir.c_str(),
                checkpoint::kManifestFile);
}

}  // namespace

ResumePoint find_resume_checkpoint(const fs::path& run_dir) {
  const fs::path root = run_dir / "checkpoints";
  const fs::path latest = root / "latest";
  std::error_code error;
  std::string problem;  // why `latest` cannot be used
  const fs::file_status link = fs::symlink_status(latest, error);
  if (!fs::exists(link)) {
    problem = "is missing";
  } else {
    try {
      const std::string text = io::read_regular_file(latest, 4096, "checkpoints/latest");
      const std::string name = text.substr(0, text.find('\n'));
      if (!step_of(name)) {
        problem = "does not name a checkpoint (\"" + name.substr(0, 40) + "\")";
      } else if (!fs::is_directory(root / name, error) || !fs::exists(root / name / "trainer_state.json", error)) {
        problem = "names " + name + ", which is not a checkpoint directory";
      } else {
        verify_or_warn(root / name);  // damaged: refused, never silently replaced by an older one
        return {root / name, ""};
      }
    } catch (const ConfigError& e) {
      problem = fs::is_symlink(link) ? "is a dangling symbolic link or a loop" : "cannot be read";
      problem += std::string(" (") + e.what() + ")";
    }
  }
  std::vector<std::pair<int64_t, fs::path>> candidates;
  if (fs::is_directory(root, error))
    for (const auto& entry : fs::directory_iterator(root)) {
      const auto entry_step = step_of(entry.path().filename().string());
      if (entry_step && !entry.is_symlink() && entry.is_directory()) candidates.emplace_back(*entry_step, entry.path());
    }
  if (candidates.empty()) {
    if (problem == "is missing") return {std::nullopt, ""};
    return {std::nullopt, latest.string() + " " + problem + " and there are no checkpoint directories"};
  }
  std::sort(candidates.rbegin(), candidates.rend());
  std::string skipped;
  for (const auto& [candidate_step, dir] : candidates) {
    try {
      if (!fs::exists(dir / "trainer_state.json", error))
        throw CheckpointError(dir.string() + ": no trainer_state.json");
      verify_or_warn(dir);
      return {dir, latest.string() + " " + problem + ": resuming from " + dir.filename().string() +
                       ", the newest valid checkpoint found in " + root.string() + skipped};
    } catch (const std::invalid_argument& e) {
      skipped += std::string("\n  skipped: ") + e.what();
    }
  }
  throw CheckpointError(latest.string() + " " + problem + " and no checkpoint directory in " + root.string() +
                        " is valid; refusing to start over in it (use another --out):" + skipped);
}

fs::path resolve_checkpoint_dir(const fs::path& path) {
  std::error_code error;
  if (fs::exists(path / "trainer_state.json", error)) {
    verify_or_warn(path);
    return path;
  }
  const ResumePoint point = find_resume_checkpoint(path);
  if (!point.note.empty()) std::printf("%s\n", point.note.c_str());
  if (point.dir) return *point.dir;
  throw std::invalid_argument(path.string() +
                              ": not a checkpoint directory (no trainer_state.json) nor a run directory "
                              "with checkpoints/latest");
}

namespace {

[[noreturn]] void state_error(const fs::path& file, const std::string& key, const std::string& problem) {
  throw CheckpointError(file.string() + ": key '" + key + "': " + problem);
}

int64_t state_int(const nlohmann::json& object, const std::string& key, const std::string& path, const fs::path& file,
                  int64_t min = 0) {
  if (!object.is_object() || !object.contains(key)) state_error(file, path, "missing");
  const nlohmann::json& value = object.at(key);
  if (!value.is_number_integer()) state_error(file, path, "expected an integer, got " + value.dump());
  if (value.is_number_unsigned() && value.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
    state_error(file, path, "out of range: " + value.dump());
  const int64_t v = value.get<int64_t>();
  if (v < min) state_error(file, path, "expected an integer >= " + std::to_string(min) + ", got " + value.dump());
  return v;
}

}  // namespace

TrainerState read_trainer_state(const fs::path& checkpoint_dir) {
  const fs::path file = checkpoint_dir / "trainer_state.json";
  TrainerState s;
  try {
    s.json = read_json_file(file);
  } catch (const ConfigError& e) {
    throw CheckpointError(e.what());
  }
  const nlohmann::json& j = s.json;
  if (!j.is_object()) throw CheckpointError(file.string() + ": expected a JSON object");
  s.step = state_int(j, "step", "step", file);
  if (const auto named = step_of(checkpoint_dir.filename().string()); named && *named != s.step)
    state_error(file, "step",
                std::to_string(s.step) + " disagrees with the directory name " + checkpoint_dir.filename().string());
  s.skipped_steps = state_int(j, "skipped_steps", "skipped_steps", file);
  if (s.skipped_steps > s.step)
    state_error(file, "skipped_steps", std::to_string(s.skipped_steps) + " exceeds step " + std::to_string(s.step));
  s.consecutive_skips = state_int(j, "consecutive_skips", "consecutive_skips", file);
  if (s.consecutive_skips > s.skipped_steps)
    state_error(file, "consecutive_skips",
                std::to_string(s.consecutive_skips) + " exceeds skipped_steps " + std::to_string(s.skipped_steps));
  s.tokens_seen = state_int(j, "tokens_seen", "tokens_seen", file);
  if (!j.contains("data") || !j["data"].is_object()) state_error(file, "data", "expected an object");
  const nlohmann::json& data = j["data"];
  s.cursor = static_cast<uint64_t>(state_int(data, "cursor", "data.cursor", file));
  s.sequences = static_cast<uint64_t>(state_int(data, "sequences", "data.sequences", file));
  if (s.step > 0 && s.sequences == 0) state_error(file, "data.sequences", "0 after training steps");
  if (data.contains("epoch") && s.sequences > 0) {
    const int64_t epoch = state_int(data, "epoch", "data.epoch", file);
    if (static_cast<uint64_t>(epoch) != s.cursor / s.sequences)
      state_error(file, "data.epoch",
                  std::to_string(epoch) +
                      " disagrees with data.cursor / data.sequences = " + std::to_string(s.cursor / s.sequences));
  }
  // The loader consumes at least one sequence per step; far more than any run could is damage.
  if (s.sequences > 0 && s.cursor / s.sequences > static_cast<uint64_t>(s.step) + 1 &&
      s.cursor > static_cast<uint64_t>(s.step) * (uint64_t{1} << 24))
    state_error(file, "data.cursor",
                std::to_string(s.cursor) + " is beyond what " + std::to_string(s.step) + " steps can have read");
  if (j.contains("run_id")) {
    if (!j["run_id"].is_string()) state_error(file, "run_id", "expected a string, got " + j["run_id"].dump());
    s.run_id = j["run_id"].get<std::string>();
  }
  if (j.contains("grad_scaler")) {
    const nlohmann::json& g = j["grad_scaler"];
    if (!g.is_object() || !g.contains("scale") || !g["scale"].is_number())
      state_error(file, "grad_scaler.scale", "expected a number");
    const double scale = g["scale"].get<double>();
    if (!std::isfinite(scale) || scale <= 0)
      state_error(file, "grad_scaler.scale", "expected a finite number > 0, got " + g["scale"].dump());
    s.grad_scaler = optim::GradScaler::State{scale, state_int(g, "growth_tracker", "grad_scaler.growth_tracker", file),
                                             state_int(g, "hysteresis_left", "grad_scaler.hysteresis_left", file),
                                             state_int(g, "skipped_steps", "grad_scaler.skipped_steps", file)};
  }
  return s;
}

void load_weights(const fs::path& checkpoint_dir, const std::vector<NamedParameter>& parameters) {
  const auto reader = safetensors::Reader::open((checkpoint_dir / "model.safetensors").string());
  for (const auto& p : parameters) copy_into(reader, p.name, p.tensor);
  if (reader.tensors().size() != parameters.size()) {
    for (const auto& info : reader.tensors()) {
      const bool known = std::any_of(parameters.begin(), parameters.end(),
                                     [&](const NamedParameter& p) { return p.name == info.name; });
      if (!known)
        throw CheckpointError(reader.label() + ": tensor '" + info.name + "' is not a parameter of the model");
    }
  }
}

void load_optimizer_state(
    const fs::path& checkpoint_dir, const std::vector<std::pair<std::string, Shape>>& parameters,
    int64_t max_step_count,
    const std::function<void(size_t, int64_t, const Tensor& exp_avg, const Tensor& exp_avg_sq)>& load) {
  const auto reader = safetensors::Reader::open((checkpoint_dir / "optimizer.safetensors").string());
  nlohmann::json counts;
  try {
    counts = io::parse_json_checked(reader.metadata().at("step_counts"), "");
  } catch (const std::exception&) {
    throw CheckpointError(reader.label() + ": missing or invalid \"step_counts\" metadata");
  }
  if (reader.tensors().size() != 2 * parameters.size())
    throw CheckpointError(reader.label() + ": holds " + std::to_string(reader.tensors().size()) +
                          " tensors, the optimizer has " + std::to_string(2 * parameters.size()));
  for (size_t i = 0; i < parameters.size(); ++i) {
    const auto& [name, shape] = parameters[i];
    if (!counts.is_object() || !counts.contains(name) || !counts[name].is_number_integer())
      throw CheckpointError(reader.label() + ": no step count for '" + name + "'");
    const int64_t count = counts[name].get<int64_t>();
    if (count < 0 || count > max_step_count)
      throw CheckpointError(reader.label() + ": step count " + counts[name].dump() + " of '" + name +
                            "' is outside [0, " + std::to_string(max_step_count) +
                            "] (the checkpoint's step less its skipped steps)");
    Tensor exp_avg = Tensor::zeros(shape, DType::f32, Device::cpu);
    Tensor exp_avg_sq = Tensor::zeros(shape, DType::f32, Device::cpu);
    copy_into(reader, name + ".exp_avg", exp_avg);
    copy_into(reader, name + ".exp_avg_sq", exp_avg_sq);
    load(i, count, exp_avg, exp_avg_sq);
  }
}

void load_optimizer(const fs::path& checkpoint_dir, optim::AdamW& optimizer, int64_t max_step_count) {
  std::vector<std::pair<std::string, Shape>> parameters;
  for (size_t i = 0; i < optimizer.size(); ++i)
    parameters.emplace_back(optimizer.param(i).name, optimizer.exp_avg(i).shape());
  load_optimizer_state(checkpoint_dir, parameters, max_step_count,
                       [&](size_t i, int64_t count, const Tensor& exp_avg, const Tensor& exp_avg_sq) {
                         optimizer.set_state(i, count, exp_avg, exp_avg_sq);
                       });
}

}  // namespace coco::checkpoint
