// No engine, kernel, model, objective or tool source calls the counted CUDA functions directly: they
// go through engine/runtime/cuda_calls.h, so that the runtime counters see every call.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

namespace {

// Every counted CUDA call in engine/, kernels/, model/, coco/ and tools/ goes through the wrappers;
// only the runtime layer (engine/runtime, engine/simt) calls CUDA directly. Comments are skipped.
TEST(CountedCallSites, SourcesCallCudaThroughTheCountedWrappers) {
  namespace fs = std::filesystem;
  const std::regex direct(
      R"(\b(cudaMalloc|cudaMallocAsync|cudaMallocHost|cudaHostAlloc|cudaFree|cudaFreeAsync|cudaFreeHost|)"
      R"(cudaMemcpy\w*|cudaMemset\w*|cudaStreamSynchronize|cudaDeviceSynchronize|cudaEventSynchronize|)"
      R"(cudaGraphLaunch|cublasLtMatmul)\s*\(|<<<)");
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
        if (std::regex_search(code, direct)) offenders.push_back(relative + ":" + std::to_string(number) + ": " + line);
      }
    }
  }
  EXPECT_GT(scanned, 50u);
  std::string list;
  for (const std::string& o : offenders) list += "\n  " + o;
  EXPECT_TRUE(offenders.empty()) << "call CUDA through engine/runtime/cuda_calls.h (counted) instead:" << list;
}

}  // namespace
