// The engine's safetensors files against the reference implementation (PyPI `safetensors` + numpy,
// driven through scripts/safetensors_interop.py): the reference loads what we write (and its writer
// produces the same bytes), and we load what the reference writes. Skipped, with the reason, when
// python3 or the modules are missing.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "engine/io/safetensors.h"

namespace {

namespace st = coco::safetensors;
using coco::DType;
namespace fs = std::filesystem;

const std::string kScript = std::string(COCO_SOURCE_DIR) + "/scripts/safetensors_interop.py";

struct CommandResult {
  int status;  // exit status, or -1 when the command could not run / was killed
  std::string output;
};

CommandResult run(const std::string& command) {
  CommandResult result{-1, ""};
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return result;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.output.append(buffer, n);
  const int status = ::pclose(pipe);
  if (status != -1 && WIFEXITED(status)) result.status = WEXITSTATUS(status);
  return result;
}

std::string quoted(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Skips the calling test unless python3 and the reference modules are importable.
#define REQUIRE_REFERENCE_PYTHON()                                                         \
  do {                                                                                     \
    const CommandResult python = run("python3 --version");                                 \
    if (python.status != 0) GTEST_SKIP() << "python3 is not available: " << python.output; \
    const CommandResult probe = run("python3 " + quoted(kScript) + " probe");              \
    if (probe.status == 3) GTEST_SKIP() << "reference modules missing: " << probe.output;  \
    ASSERT_EQ(probe.status, 0) << probe.output;                                            \
  } while (0)

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() / ("coco_st_interop_" + std::to_string(::getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

template <class T>
std::vector<uint8_t> as_bytes(const std::vector<T>& values) {
  std::vector<uint8_t> b(values.size() * sizeof(T));
  if (!b.empty()) std::memcpy(b.data(), values.data(), b.size());
  return b;
}

// The C++ twin of expected_tensors() in scripts/safetensors_interop.py.
struct Expected {
  std::vector<std::vector<uint8_t>> storage;
  std::vector<st::TensorData> tensors;

  Expected() {
    std::vector<float> emb(12);
    for (int i = 0; i < 12; ++i) emb[i] = static_cast<float>((i - 5) * 0.375);
    add("emb.f32", DType::f32, {3, 4}, as_bytes(emb));
    std::vector<double> w(6);
    for (int i = 0; i < 6; ++i) w[i] = i / 3.0;
    add("w.f64", DType::f64, {2, 3}, as_bytes(w));
    // (i - 2) * 0.5 for i < 5 in IEEE half: -1, -0.5, 0, 0.5, 1
    add("h.f16", DType::f16, {5}, as_bytes(std::vector<uint16_t>{0xBC00, 0xB800, 0x0000, 0x3800, 0x3C00}));
    std::vector<uint16_t> bf(6);
    for (int i = 0; i < 6; ++i) {
      const float f = static_cast<float>((i - 3) * 0.25);
      uint32_t u;
      std::memcpy(&u, &f, 4);
      bf[i] = static_cast<uint16_t>(u >> 16);
    }
    add("b.bf16", DType::bf16, {2, 3}, as_bytes(bf));
    std::vector<int32_t> ids(4);
    for (int i = 0; i < 4; ++i) ids[i] = i * 1000003 - 2000000;
    add("ids.i32", DType::i32, {4}, as_bytes(ids));
    add("step.i64", DType::i64, {}, as_bytes(std::vector<int64_t>{1234567890123}));
    std::vector<int64_t> big(3);
    for (int i = 0; i < 3; ++i) big[i] = (i + 1) * (int64_t{1} << 40) + 7 * (1 - 2 * (i % 2));
    add("big.i64", DType::i64, {3}, as_bytes(big));
    std::vector<uint8_t> mask(8);
    for (int i = 0; i < 8; ++i) mask[i] = static_cast<uint8_t>((i * 37 + 11) % 256);
    add("mask.u8", DType::u8, {2, 2, 2}, mask);
    add("empty.f32", DType::f32, {0, 3}, {});
    for (size_t i = 0; i < tensors.size(); ++i) tensors[i].bytes = storage[i];
  }

 private:
  void add(std::string name, DType dtype, std::vector<int64_t> shape, std::vector<uint8_t> bytes) {
    storage.push_back(std::move(bytes));
    tensors.push_back({std::move(name), dtype, std::move(shape), {}});
  }
};

TEST(SafetensorsInterop, ReferenceLoadsOurFileAndWritesTheSameBytes) {
  REQUIRE_REFERENCE_PYTHON();
  TempDir dir;
  const Expected expected;
  const std::string path = dir.file("ours.safetensors");
  st::write_file(path, expected.tensors, {});
  const CommandResult check = run("python3 " + quoted(kScript) + " check " + quoted(path));
  EXPECT_EQ(check.status, 0) << check.output;
}

TEST(SafetensorsInterop, WeLoadTheReferenceWritersFile) {
  REQUIRE_REFERENCE_PYTHON();
  TempDir dir;
  const Expected expected;
  const std::string path = dir.file("reference.safetensors");
  const CommandResult write = run("python3 " + quoted(kScript) + " write " + quoted(path));
  ASSERT_EQ(write.status, 0) << write.output;

  const st::Reader r = st::Reader::open(path);
  EXPECT_EQ(r.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"writer", "safetensors-python"}}));
  ASSERT_EQ(r.tensors().size(), expected.tensors.size());
  for (const st::TensorData& t : expected.tensors) {
    const st::TensorInfo* info = r.find(t.name);
    ASSERT_NE(info, nullptr) << t.name;
    EXPECT_EQ(info->dtype, t.dtype) << t.name;
    EXPECT_EQ(info->shape, t.shape) << t.name;
    const auto data = r.data(*info);
    ASSERT_EQ(data.size(), t.bytes.size()) << t.name;
    EXPECT_TRUE(std::equal(data.begin(), data.end(), t.bytes.begin())) << t.name;
  }

  // Same layout decisions: re-serializing gives the reference's data section and offsets (the header
  // text may order the two metadata keys differently, the reference keeps them in a hash map).
  const std::vector<uint8_t> ours = st::serialize(expected.tensors, r.metadata());
  const st::Reader again = st::Reader::from_bytes(ours, "reserialized");
  ASSERT_EQ(again.tensors().size(), r.tensors().size());
  for (size_t i = 0; i < r.tensors().size(); ++i) {
    EXPECT_EQ(again.tensors()[i].name, r.tensors()[i].name);
    EXPECT_EQ(again.tensors()[i].begin, r.tensors()[i].begin) << r.tensors()[i].name;
  }
  std::vector<uint8_t> ours_data, ref_data;
  for (const auto& t : again.tensors()) ours_data.insert(ours_data.end(), again.data(t).begin(), again.data(t).end());
  for (const auto& t : r.tensors()) ref_data.insert(ref_data.end(), r.data(t).begin(), r.data(t).end());
  EXPECT_EQ(ours_data, ref_data);
}

}  // namespace
