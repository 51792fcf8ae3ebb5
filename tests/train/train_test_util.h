// Helpers for the train / tools / reliability tests: a synthetic corpus prepared into shards, tiny model
// configs, and running the `coco` binary (built next to the test executables) as a subprocess.
#pragma once
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "coco/prepare.h"

namespace coco::testutil {

namespace fs = std::filesystem;

// A fresh, empty directory under the system temp dir, removed on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    std::string pattern = (fs::temp_directory_path() / ("coco-" + tag + "-XXXXXX")).string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

inline std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

inline void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// Documents of random sentences over a small word list (blank lines between documents).
inline void write_corpus(const fs::path& path, int documents, uint32_t seed = 1) {
  static const char* kWords[] = {"the",  "cat",   "dog",   "sat",    "on",    "mat",  "ran",   "fast",  "slow",
                                 "big",  "small", "red",   "blue",   "house", "tree", "river", "stone", "light",
                                 "dark", "sings", "reads", "writes", "happy", "old",  "young"};
  std::mt19937 rng(seed);
  std::ofstream out(path);
  for (int d = 0; d < documents; ++d) {
    const int sentences = 1 + static_cast<int>(rng() % 4);
    for (int s = 0; s < sentences; ++s) {
      const int words = 4 + static_cast<int>(rng() % 9);
      for (int w = 0; w < words; ++w) out << kWords[rng() % (sizeof kWords / sizeof *kWords)] << ' ';
      out << ".\n";
    }
    out << "\n";
  }
}

// A prepared directory with a trained 64-token vocabulary ([PAD] [UNK] [CLS] [SEP] [MASK] = 0..4).
inline text::PrepareResult prepare_corpus(const fs::path& work, const fs::path& out_dir, int documents = 300,
                                          double valid_fraction = 0.1) {
  const fs::path corpus = work / "corpus.txt";
  write_corpus(corpus, documents);
  text::PrepareOptions options;
  options.inputs = {corpus};
  options.output_dir = out_dir;
  options.vocab_size = 64;
  options.valid_fraction = valid_fraction;
  options.threads = 1;
  return text::prepare(options);
}

// A tiny paper-preset config (d 32, 1 + 2 layers, T 16, vocab 64) on the CPU backend.
inline nlohmann::json tiny_paper_config(const fs::path& data_dir) {
  const nlohmann::json encoder = {{"dim", 32},
                                  {"depth", 1},
                                  {"heads", 2},
                                  {"ff_mult", 2},
                                  {"norm", "post"},
                                  {"embedding_norm", true},
                                  {"qkv_bias", true},
                                  {"out_bias", true},
                                  {"relative_position", {{"buckets", 8}, {"max_distance", 16}}},
                                  {"dropout", {{"embedding", 0.1}, {"attention", 0.1}, {"residual", 0.1}}},
                                  {"init", "bert"},
                                  {"final_norm", false}};
  nlohmann::json discriminator = encoder;
  discriminator["depth"] = 2;
  return {{"model",
           {{"vocab_size", 64},
            {"max_positions", 16},
            {"tie", {{"token_embedding", true}, {"position_embedding", true}, {"embedding_norm", true}}},
            {"generator_head", "bert"},
            {"generator", encoder},
            {"discriminator", discriminator}}},
          {"objective",
           {{"preset", "paper"},
            {"pad_id", 0},
            {"unk_id", 1},
            {"cls_id", 2},
            {"sep_id", 3},
            {"mask_id", 4},
            {"scl_dim", 32}}},
          {"data", {{"dir", data_dir.string()}, {"seq_len", 16}}},
          {"optim",
           {{"lr", 3e-3},
            {"betas", {0.9, 0.98}},
            {"eps", 1e-6},
            {"weight_decay", 0.01},
            {"warmup_steps", 5},
            {"schedule", "linear"},
            {"clip_norm", 2.0}}},
          {"train",
           {{"steps", 30},
            {"micro_batch", 8},
            {"grad_accum", 1},
            {"seed", 3},
            {"log_every", 5},
            {"eval_every", 10},
            {"eval_batches", 4},
            {"checkpoint_every", 10},
            {"keep_checkpoints", 2}}},
          {"precision", "f32"},
          {"runtime", {{"device", "cpu"}}}};
}

// A tiny lucidrains-preset config (pre-norm, no relative positions, CLS prepended by the objective).
inline nlohmann::json tiny_lucidrains_config(const fs::path& data_dir) {
  nlohmann::json c = tiny_paper_config(data_dir);
  const nlohmann::json encoder = {{"dim", 32},
                                  {"depth", 1},
                                  {"heads", 2},
                                  {"ff_mult", 2},
                                  {"norm", "pre"},
                                  {"relative_position", nullptr},
                                  {"init", "xtransformers"}};
  c["model"]["generator_head"] = "linear";
  c["model"]["tie"] = {{"token_embedding", true}, {"position_embedding", true}, {"embedding_norm", false}};
  c["model"]["generator"] = encoder;
  c["model"]["discriminator"] = encoder;
  c["model"]["discriminator"]["depth"] = 2;
  // sep_id / unk_id -1: explicitly unused (documents packed without [SEP]), as the seed library has no packing.
  c["objective"] = {{"preset", "lucidrains"}, {"pad_id", 0},  {"cls_id", 2},       {"mask_id", 4},
                    {"sep_id", -1},           {"unk_id", -1}, {"disc_weight", 1.0}};
  return c;
}

inline fs::path write_config(const fs::path& path, const nlohmann::json& config) {
  write_text(path, config.dump(2));
  return path;
}

// The `coco` executable: next to this test executable (both are built in the build directory's root).
inline fs::path coco_binary() {
  const fs::path self = fs::read_symlink("/proc/self/exe");
  return self.parent_path() / "coco";
}

struct RunResult {
  int exit_code = -1;    // when the process exited
  int signal = 0;        // when a signal ended it
  std::string out, err;  // captured stdout / stderr
};

// Runs `binary args...` with extra environment variables; stdout/stderr go to files in `scratch`.
inline RunResult run_program(const fs::path& program, const std::vector<std::string>& args, const fs::path& scratch,
                             const std::map<std::string, std::string>& env = {}) {
  static int counter = 0;
  const std::string tag = std::to_string(::getpid()) + "-" + std::to_string(counter++);
  const fs::path out_path = scratch / ("stdout-" + tag), err_path = scratch / ("stderr-" + tag);
  const std::string binary = program.string();
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(out, 1);
    ::dup2(err, 2);
    for (const auto& [key, value] : env) ::setenv(key.c_str(), value.c_str(), 1);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(binary.c_str()));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(binary.c_str(), argv.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  RunResult r;
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  r.out = read_text(out_path);
  r.err = read_text(err_path);
  return r;
}

// Runs `coco args...` (see run_program).
inline RunResult run_coco(const std::vector<std::string>& args, const fs::path& scratch,
                          const std::map<std::string, std::string>& env = {}) {
  return run_program(coco_binary(), args, scratch, env);
}

// metrics.jsonl records without the timing field and the step profile (coco/step_profile.h: measured
// once per process, so a resumed run measures another step), for exact comparison between runs.
inline std::vector<nlohmann::json> metrics_without_timing(const fs::path& run_dir) {
  std::vector<nlohmann::json> records;
  std::ifstream in(run_dir / "metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    nlohmann::json j = nlohmann::json::parse(line);
    j.erase("tokens_per_s");
    for (const char* key :
         {"launches_per_step", "syncs_per_step", "d2h_copies_per_step", "h2d_bytes_per_step", "cuda_mallocs_per_step",
          "kernels_per_step", "graph_launches_per_step", "gemms_per_step", "collectives_per_step", "profile_step"})
      j.erase(key);
    records.push_back(j);
  }
  return records;
}

}  // namespace coco::testutil
