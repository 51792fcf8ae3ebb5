// `coco plot`: a run's metrics.jsonl drawn into a PNG (scripts/plot_metrics.py, matplotlib), and what it says when
// its input or its dependencies are missing.
#include <gtest/gtest.h>

#include <cstdlib>
#include <sstream>

#include "tests/train/train_test_util.h"

namespace coco {
namespace {

using testutil::run_coco;
using testutil::RunResult;
using testutil::TempDir;
namespace fs = std::filesystem;

// A paper-preset run's metrics.jsonl as `coco train` writes it: a record every 5 steps, an evaluation every 50.
void write_run(const fs::path& run, int steps) {
  fs::create_directories(run);
  std::ostringstream metrics;
  for (int step = 5; step <= steps; step += 5) {
    const double t = step / static_cast<double>(steps);
    nlohmann::json r = {{"step", step},
                        {"loss", 40 - 10 * t},
                        {"mlm_loss", 9 - 3 * t},
                        {"rtd_loss", 0.6 - 0.2 * t},
                        {"clm_loss", 4 - 3 * t},
                        {"cl_loss", 3.4 - 0.5 * t},
                        {"mlm_acc", 0.3 * t},
                        {"rtd_acc", 0.8 + 0.1 * t},
                        {"cl_acc", 0.5 * t},
                        {"clm_acc", 0.2 * t},
                        {"lr", step < 25 ? 1e-3 * step / 25 : 1e-3 * (1 - t)},
                        {"grad_norm", step == 35 ? nlohmann::json(nullptr) : nlohmann::json(5 - 3 * t)},
                        {"tokens_per_s", 2300 + (step % 20) * 10},
                        {"loss_scale", 1},
                        {"skipped", step == 35 ? 1 : 0},
                        {"epoch", 0}};
    metrics << r.dump() << "\n";
    if (step % 50 == 0) {
      r = {{"step", step},
           {"split", "valid"},
           {"loss", 41 - 10 * t},
           {"mlm_loss", 9.2 - 3 * t},
           {"rtd_loss", 0.62 - 0.2 * t},
           {"clm_loss", 4.1 - 3 * t},
           {"cl_loss", 3.5 - 0.5 * t},
           {"mlm_acc", 0.28 * t},
           {"rtd_acc", 0.79 + 0.1 * t},
           {"cl_acc", 0.45 * t},
           {"clm_acc", 0.18 * t},
           {"sequences", 64}};
      metrics << r.dump() << "\n";
    }
  }
  metrics << "{\"step\": 20";  // a torn last line, as a killed run can leave: skipped
  testutil::write_text(run / "metrics.jsonl", metrics.str());
  testutil::write_text(run / "config.json", R"({"objective": {"preset": "paper"}})");
}

uint32_t big_endian32(const std::string& bytes, size_t offset) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(bytes[offset + i]);
  return v;
}

// Pixel statistics of a PNG through matplotlib's reader: "distinct_colours non_white_fraction coloured_fraction".
std::vector<double> pixel_statistics(const fs::path& png, const fs::path& scratch) {
  const fs::path script = scratch / "stats.py", out = scratch / "stats.txt";
  testutil::write_text(script,
                       "import sys\n"
                       "import numpy as np, matplotlib.image as image\n"
                       "a = image.imread(sys.argv[1])[..., :3]\n"
                       "colours = len(np.unique((a * 255).astype(np.uint8).reshape(-1, 3), axis=0))\n"
                       "non_white = float((a < 0.98).any(axis=2).mean())\n"
                       "coloured = float(((a.max(axis=2) - a.min(axis=2)) > 0.3).mean())\n"
                       "print(colours, non_white, coloured)\n");
  const std::string command = "python3 " + script.string() + " " + png.string() + " > " + out.string() + " 2>&1";
  EXPECT_EQ(std::system(command.c_str()), 0) << testutil::read_text(out);
  std::istringstream in(testutil::read_text(out));
  std::vector<double> values(3, -1.0);
  in >> values[0] >> values[1] >> values[2];
  return values;
}

TEST(Plot, DrawsTheRunIntoAPng) {
  TempDir dir("plot");
  write_run(dir / "run", 200);
  const RunResult r = run_coco({"plot", (dir / "run").string()}, dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const fs::path png = dir / "run" / "metrics.png";  // the default --out
  EXPECT_NE(r.out.find(png.string()), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("40 training records to step 200, 4 held-out"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("skipped 1 line"), std::string::npos) << r.err;

  const std::string bytes = testutil::read_text(png);
  ASSERT_GT(bytes.size(), 24u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_EQ(bytes.substr(12, 4), "IHDR");
  EXPECT_EQ(big_endian32(bytes, 16), 1300u);  // 13 x 11 inches at 100 dpi
  EXPECT_EQ(big_endian32(bytes, 20), 1100u);
  EXPECT_GT(bytes.size(), 40000u);  // six panels of axes, text and curves, not an empty canvas

  const std::vector<double> stats = pixel_statistics(png, dir.path());
  EXPECT_GT(stats[0], 100) << "distinct colours";           // anti-aliased text and lines in several colours
  EXPECT_GT(stats[1], 0.02) << "non-white fraction";        // axes, ticks, labels
  EXPECT_LT(stats[1], 0.5) << "non-white fraction";         // ... on a white figure
  EXPECT_GT(stats[2], 0.002) << "coloured-pixel fraction";  // the curves themselves

  // --out elsewhere; a metrics.jsonl file instead of the run directory.
  const RunResult other =
      run_coco({"plot", (dir / "run" / "metrics.jsonl").string(), "--out", (dir / "other.png").string()}, dir.path());
  ASSERT_EQ(other.exit_code, 0) << other.err;
  EXPECT_EQ(testutil::read_text(dir / "other.png").substr(1, 3), "PNG");
}

TEST(Plot, BadInputIsExitTwoNamingTheFile) {
  TempDir dir("plot");
  RunResult r = run_coco({"plot", (dir / "no-run").string()}, dir.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find((dir / "no-run").string()), std::string::npos) << r.err;

  fs::create_directories(dir / "evals-only");
  testutil::write_text(dir / "evals-only" / "metrics.jsonl", R"({"step": 10, "split": "valid", "loss": 3})"
                                                             "\n");
  r = run_coco({"plot", (dir / "evals-only").string()}, dir.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("no training records"), std::string::npos) << r.err;

  write_run(dir / "run", 20);
  r = run_coco({"plot", (dir / "run").string(), "--out", (dir / "plot.jpg").string()}, dir.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(".png"), std::string::npos) << r.err;
  r = run_coco({"plot"}, dir.path());
  EXPECT_EQ(r.exit_code, 2);
  r = run_coco({"plot", "--help"}, dir.path());
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("--out"), std::string::npos);
}

TEST(Plot, MissingPythonOrMatplotlibSaysWhatToInstall) {
  TempDir dir("plot");
  write_run(dir / "run", 20);
  // A matplotlib that cannot be imported, ahead of the real one on the module path.
  fs::create_directories(dir / "shadow" / "matplotlib");
  testutil::write_text(dir / "shadow" / "matplotlib" / "__init__.py", "raise ImportError('no matplotlib here')\n");
  RunResult r = run_coco({"plot", (dir / "run").string()}, dir.path(), {{"PYTHONPATH", (dir / "shadow").string()}});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("matplotlib is not installed"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("scripts/setup.sh"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("pip install matplotlib"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir / "run" / "metrics.png"));

  r = run_coco({"plot", (dir / "run").string()}, dir.path(), {{"PATH", (dir / "no-bin").string()}});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("python3 was not found"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("scripts/setup.sh"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace coco
