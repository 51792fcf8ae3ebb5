// Helpers of the reliability tests: planting faults into run directories and checkpoints, running `coco`
// with a watchdog (a hang is a failure, not a stuck test), and fingerprints that show nothing changed.
#pragma once
#include <sys/resource.h>
#include <sys/stat.h>

#include <chrono>
#include <thread>

#include "coco/checkpoint_manifest.h"
#include "coco/shards.h"
#include "engine/io/safetensors.h"
#include "tests/train/train_test_util.h"

namespace coco::reliability {

namespace fs = std::filesystem;
using testutil::RunResult;

// Runs `coco args...` like testutil::run_coco, killing it (and failing the test) after `seconds`.
// `address_space_bytes` > 0 sets RLIMIT_AS (ulimit -v) for the child.
inline RunResult run_coco_bounded(const std::vector<std::string>& args, const fs::path& scratch,
                                  const std::map<std::string, std::string>& env = {}, int seconds = 120,
                                  uint64_t address_space_bytes = 0) {
  static int counter = 0;
  const std::string tag = "bounded-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  const fs::path out_path = scratch / ("stdout-" + tag), err_path = scratch / ("stderr-" + tag);
  const std::string binary = testutil::coco_binary().string();
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(out, 1);
    ::dup2(err, 2);
    for (const auto& [key, value] : env) ::setenv(key.c_str(), value.c_str(), 1);
    if (address_space_bytes > 0) {
      const struct rlimit limit = {address_space_bytes, address_space_bytes};
      ::setrlimit(RLIMIT_AS, &limit);
    }
    std::vector<char*> argv = {const_cast<char*>(binary.c_str())};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(binary.c_str(), argv.data());
    ::_exit(127);
  }
  RunResult r;
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      ADD_FAILURE() << "coco hung (killed after " << seconds << " s)";
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  r.out = testutil::read_text(out_path);
  r.err = testutil::read_text(err_path);
  return r;
}

// Every file under `dir` (recursively) with its size and XXH64: equal fingerprints = nothing changed.
inline std::map<std::string, std::string> fingerprint(const fs::path& dir) {
  std::map<std::string, std::string> files;
  if (!fs::exists(dir)) return files;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    const std::string name = fs::relative(entry.path(), dir).string();
    if (entry.is_symlink())
      files[name] = "link:" + fs::read_symlink(entry.path()).string();
    else if (entry.is_regular_file())
      files[name] = std::to_string(entry.file_size()) + ":" + std::to_string(text::xxh64_file(entry.path()));
    else if (entry.is_directory())
      files[name] = "dir";
  }
  return files;
}

// Rewrites manifest.json of `checkpoint_dir` for its current files: a planted fault that the checksums
// would catch first then reaches the check under test.
inline void reseal(const fs::path& checkpoint_dir) {
  const auto manifest = nlohmann::json::parse(testutil::read_text(checkpoint_dir / checkpoint::kManifestFile));
  std::vector<std::string> files;
  for (const auto& [name, entry] : manifest["files"].items()) files.push_back(name);
  testutil::write_text(checkpoint_dir / checkpoint::kManifestFile, checkpoint::manifest_for(checkpoint_dir, files));
}

// The file offset of element `element` of tensor `name` in the safetensors file `path`.
inline uint64_t tensor_offset(const fs::path& path, const std::string& name, uint64_t element = 0) {
  const auto reader = safetensors::Reader::open(path.string());
  const safetensors::TensorInfo* info = reader.find(name);
  if (!info) throw std::runtime_error(path.string() + ": no tensor " + name);
  const std::string bytes = testutil::read_text(path);
  uint64_t header = 0;
  for (int i = 7; i >= 0; --i) header = (header << 8) | static_cast<unsigned char>(bytes[static_cast<size_t>(i)]);
  return 8 + header + info->begin + element * sizeof(float);
}

// The name of the largest tensor of the safetensors file `path` whose name ends with `suffix`.
inline std::string largest_tensor(const fs::path& path, const std::string& suffix = "") {
  const auto reader = safetensors::Reader::open(path.string());
  std::string best;
  uint64_t best_size = 0;
  for (const auto& info : reader.tensors())
    if (info.name.ends_with(suffix) && info.byte_size() > best_size) {
      best = info.name;
      best_size = info.byte_size();
    }
  return best;
}

inline void patch_bytes(const fs::path& path, uint64_t offset, const void* data, size_t size) {
  std::string bytes = testutil::read_text(path);
  std::memcpy(bytes.data() + offset, data, size);
  testutil::write_text(path, bytes);
}

inline void flip_byte(const fs::path& path, uint64_t offset) {
  std::string bytes = testutil::read_text(path);
  bytes[offset] = static_cast<char>(bytes[offset] ^ 0x40);
  testutil::write_text(path, bytes);
}

// "[[[[...]]]]" nested `depth` deep, as the value of `key` in an object.
inline std::string deep_json(const std::string& key, int depth) {
  return "{\"" + key + "\": " + std::string(static_cast<size_t>(depth), '[') +
         std::string(static_cast<size_t>(depth), ']') + "}";
}

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace coco::reliability
