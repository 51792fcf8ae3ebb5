// No engine, kernel, model, objective or tool source calls the counted CUDA functions directly: they
// go through engine/runtime/cuda_calls.h, so that the runtime counters see every call.
#include <gtest/gtest.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

namespace {

// The counted CUDA entry points (cudaMemcpy* and cudaMemset* cover every variant).
const std::set<std::string> kCounted = {
    "cudaMalloc",      "cudaMallocAsync", "cudaMallocHost",        "cudaHostAlloc",         "cudaFree",
    "cudaFreeAsync",   "cudaFreeHost",    "cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize",
    "cudaGraphLaunch", "cublasLtMatmul"};

// True when `code` calls one of them (an identifier followed by '(') or launches with <<<...>>>.
bool calls_counted_function(const std::string& code) {
  if (code.find("<<<") != std::string::npos) return true;
  const auto word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  for (size_t i = 0; i < code.size();) {
    if (!word(code[i])) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < code.size() && word(code[end])) ++end;
    const std::string name = code.substr(i, end - i);
    size_t next = end;
    while (next < code.size() && code[next] == ' ') ++next;
    const bool counted = kCounted.count(name) || name.rfind("cudaMemcpy", 0) == 0 || name.rfind("cudaMemset", 0) == 0;
    if (counted && next < code.size() && code[next] == '(') return true;
    i = end;
  }
  return false;
}

// Every counted CUDA call in engine/, kernels/, model/, coco/ and tools/ goes through the wrappers;
// only the runtime layer (engine/runtime, engine/simt) calls CUDA directly. Comments are skipped.
TEST(CountedCallSites, SourcesCallCudaThroughTheCountedWrappers) {
  namespace fs = std::filesystem;
  EXPECT_TRUE(calls_counted_function("  COCO_CUDA_CHECK(cudaMemcpyAsync (dst, src, n, kind, s));"));
  EXPECT_TRUE(calls_counted_function("kernel<<<grid, block>>>(x);"));
  EXPECT_FALSE(calls_counted_function("COCO_CUDA_CHECK(runtime::memcpy_async(dst, src, n, kind, s));"));
  EXPECT_FALSE(calls_counted_function("const char* name = \"cudaMallocHost\";"));
  std::vector<std::string> offenders;
  size_t scanned = 0;
  for (const char* dir : {"engine", "kernels", "model", "coco", "tools"}) {
    const fs::path root = fs::path(COCO_SOURCE_DIR) / dir;
    if (!fs::exists(root)) continue;
    for (const auto& entry : fs::recursive_directory_iterator(root)) {
      const fs::path& path = entry.path();
      const std::string ext = path.extension().string();
      if (!entry.is_regular_file() || (ext != ".cpp" && ext != ".cu" && ext != ".h" && ext != ".cuh")) continue;
      const std::string relative = fs::relative(path, COCO_SOURCE_DIR).string();
      if (relative.rfind("engine/runtime/", 0) == 0 || relative.rfind("engine/simt/", 0) == 0) continue;
      ++scanned;
      std::ifstream in(path);
      std::string line;
      for (int number = 1; std::getline(in, line); ++number) {
        const std::string code = line.substr(0, line.find("//"));
        if (calls_counted_function(code)) offenders.push_back(relative + ":" + std::to_string(number) + ": " + line);
      }
    }
  }
  EXPECT_GT(scanned, 50u);
  std::string list;
  for (const std::string& o : offenders) list += "\n  " + o;
  EXPECT_TRUE(offenders.empty()) << "call CUDA through engine/runtime/cuda_calls.h (counted) instead:" << list;
}

}  // namespace
