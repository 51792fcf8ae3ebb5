#include "tools/lib/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <stdexcept>

#include "engine/io/safetensors.h"

namespace coco::tools {

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

safetensors::TensorData tensor_data(const std::string& name, const Tensor& t, const std::vector<float>& values) {
  std::vector<int64_t> shape;
  for (int d = 0; d < t.rank(); ++d) shape.push_back(t.size(d));
  return {name, DType::f32, shape,
          std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(values.data()), values.size() * sizeof(float))};
}

// Reads tensor `name` from `reader` into `target` (shape and f32 checked).
void copy_into(const safetensors::Reader& reader, const std::string& name, const Tensor& target) {
  const safetensors::TensorInfo* info = reader.find(name);
  if (!info) throw std::runtime_error(reader.label() + ": missing tensor '" + name + "'");
  std::vector<int64_t> shape;
  for (int d = 0; d < target.rank(); ++d) shape.push_back(target.size(d));
  if (info->dtype != DType::f32 || info->shape != shape) {
    std::string want, got;
    for (auto s : shape) want += (want.empty() ? "" : ", ") + std::to_string(s);
    for (auto s : info->shape) got += (got.empty() ? "" : ", ") + std::to_string(s);
    throw std::runtime_error(reader.label() + ": tensor '" + name + "' has shape [" + got +
                             "], the model expects f32 [" + want + "]");
  }
  const auto bytes = reader.data(*info);
  std::vector<float> values(static_cast<size_t>(target.numel()));
  std::memcpy(values.data(), bytes.data(), values.size() * sizeof(float));
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
  }
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

nlohmann::json read_json_file(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path.string() + ": cannot open the file");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(path.string() + ": invalid JSON: " + e.what());
  }
}

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
  for (const auto& [file, contents] : data.files) write_file_synced(temporary / file, contents);
  fsync_path(temporary, true);
  fault_point("checkpoint:before-rename:" + std::to_string(step));

  // A directory of this name that `latest` does not point to is debris of a crashed run.
  fs::remove_all(final_dir);
  fs::rename(temporary, final_dir);
  fsync_path(root, true);
  fault_point("checkpoint:before-latest:" + std::to_string(step));
  replace_file_atomically(root / "latest", name + "\n");
  fault_point("checkpoint:after-latest:" + std::to_string(step));

  // Retention: drop debris (temporary dirs, checkpoints newer than the one just committed, which a
  // crashed timeline left), then all but the newest `keep`.
  std::vector<std::pair<int64_t, fs::path>> committed;
  for (const auto& entry : fs::directory_iterator(root)) {
    const std::string entry_name = entry.path().filename().string();
    if (entry_name.rfind(".tmp-", 0) == 0) {
      fs::remove_all(entry.path());
      continue;
    }
    const auto entry_step = step_of(entry_name);
    if (!entry_step || !entry.is_directory()) continue;
    if (*entry_step > step)
      fs::remove_all(entry.path());
    else
      committed.emplace_back(*entry_step, entry.path());
  }
  std::sort(committed.begin(), committed.end());
  for (size_t i = 0; i + static_cast<size_t>(std::max<int64_t>(keep, 1)) < committed.size(); ++i)
    fs::remove_all(committed[i].second);
  return final_dir;
}

std::optional<fs::path> latest_checkpoint(const fs::path& run_dir) {
  const fs::path latest = run_dir / "checkpoints" / "latest";
  std::error_code error;
  if (!fs::exists(latest, error)) return std::nullopt;
  std::ifstream in(latest);
  std::string name;
  std::getline(in, name);
  if (!step_of(name))
    throw std::runtime_error(latest.string() + ": expected a checkpoint name like \"step-00000100\", got \"" + name +
                             "\"");
  const fs::path dir = run_dir / "checkpoints" / name;
  if (!fs::exists(dir / "trainer_state.json"))
    throw std::runtime_error(latest.string() + " names " + dir.string() + ", which has no trainer_state.json");
  return dir;
}

fs::path resolve_checkpoint_dir(const fs::path& path) {
  if (fs::exists(path / "trainer_state.json")) return path;
  if (auto latest = latest_checkpoint(path)) return *latest;
  throw std::invalid_argument(path.string() +
                              ": not a checkpoint directory (no trainer_state.json) nor a run directory "
                              "with checkpoints/latest");
}

void load_weights(const fs::path& checkpoint_dir, const std::vector<NamedParameter>& parameters) {
  const auto reader = safetensors::Reader::open((checkpoint_dir / "model.safetensors").string());
  for (const auto& p : parameters) copy_into(reader, p.name, p.tensor);
  if (reader.tensors().size() != parameters.size()) {
    for (const auto& info : reader.tensors()) {
      const bool known = std::any_of(parameters.begin(), parameters.end(),
                                     [&](const NamedParameter& p) { return p.name == info.name; });
      if (!known)
        throw std::runtime_error(reader.label() + ": tensor '" + info.name + "' is not a parameter of the model");
    }
  }
}

void load_optimizer(const fs::path& checkpoint_dir, optim::AdamW& optimizer) {
  const auto reader = safetensors::Reader::open((checkpoint_dir / "optimizer.safetensors").string());
  nlohmann::json counts;
  try {
    counts = nlohmann::json::parse(reader.metadata().at("step_counts"));
  } catch (const std::exception&) {
    throw std::runtime_error(reader.label() + ": missing or invalid \"step_counts\" metadata");
  }
  if (reader.tensors().size() != 2 * optimizer.size())
    throw std::runtime_error(reader.label() + ": holds " + std::to_string(reader.tensors().size()) +
                             " tensors, the optimizer has " + std::to_string(2 * optimizer.size()));
  for (size_t i = 0; i < optimizer.size(); ++i) {
    const std::string& name = optimizer.param(i).name;
    if (!counts.contains(name) || !counts[name].is_number_integer())
      throw std::runtime_error(reader.label() + ": no step count for '" + name + "'");
    Tensor exp_avg = Tensor::zeros(optimizer.exp_avg(i).shape(), DType::f32, Device::cpu);
    Tensor exp_avg_sq = Tensor::zeros(optimizer.exp_avg_sq(i).shape(), DType::f32, Device::cpu);
    copy_into(reader, name + ".exp_avg", exp_avg);
    copy_into(reader, name + ".exp_avg_sq", exp_avg_sq);
    optimizer.set_state(i, counts[name].get<int64_t>(), exp_avg, exp_avg_sq);
  }
}

}  // namespace coco::tools
