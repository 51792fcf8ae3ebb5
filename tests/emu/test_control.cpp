// The emulator's control surface from plain C++: environment parsing, ScopedConfig/ScopedSchedule,
// and the schedule-invariance oracle's reporting (driven here by a fake "kernel" that reads the
// configuration, so that the expected outcome is known exactly).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/simt/schedule_oracle.h"

namespace {

#if defined(COCO_CUDA_EMULATED)

TEST(Control, ScopedConfigAndScheduleRestoreThePreviousConfiguration) {
  const emu::Config before = emu::config();
  {
    emu::ScopedConfig scope;
    scope->strict = !before.strict;
    scope->poison = 0x42;
    {
      emu::ScopedSchedule schedule(emu::Schedule::Random, 99, 0x7F);
      EXPECT_EQ(emu::config().schedule, emu::Schedule::Random);
      EXPECT_EQ(emu::config().seed, 99u);
      EXPECT_EQ(emu::config().poison, 0x7F);
      EXPECT_EQ(emu::config().strict, !before.strict);
      EXPECT_EQ(emu::describe(emu::config()), "random(seed 99), poison 0x7F");
    }
    EXPECT_EQ(emu::config().poison, 0x42);
    EXPECT_EQ(emu::config().schedule, before.schedule);
  }
  EXPECT_EQ(emu::config().strict, before.strict);
  EXPECT_EQ(emu::config().poison, before.poison);
  EXPECT_EQ(emu::config().seed, before.seed);
}

// The environment is read once per process, so each case runs in a fresh child process.
TEST(Control, EnvironmentVariablesConfigureTheEmulator) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        setenv("EMU_SCHEDULE", "reverse", 1);
        setenv("EMU_SEED", "9", 1);
        setenv("EMU_POISON", "off", 1);
        setenv("EMU_STRICT", "0", 1);
        setenv("EMU_THREADS", "3", 1);
        setenv("EMU_STACK_KB", "128", 1);
        const emu::Config& c = emu::config();
        const bool ok = c.schedule == emu::Schedule::Reverse && c.seed == 9 && c.poison == emu::Config::kPoisonOff &&
                        !c.strict && c.threads == 3 && c.stack_bytes == 128 * 1024;
        std::exit(ok ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
  EXPECT_EXIT(
      {
        setenv("EMU_SCHEDULE", "sideways", 1);
        try {
          (void)emu::config();
        } catch (const std::invalid_argument& e) {
          std::fprintf(stderr, "%s\n", e.what());
          std::exit(3);
        }
        std::exit(0);
      },
      ::testing::ExitedWithCode(3), "EMU_SCHEDULE='sideways': expected forward, reverse or random");
  EXPECT_EXIT(
      {
        setenv("EMU_POISON", "0x100", 1);
        try {
          (void)emu::config();
        } catch (const std::invalid_argument& e) {
          std::fprintf(stderr, "%s\n", e.what());
          std::exit(3);
        }
        std::exit(0);
      },
      ::testing::ExitedWithCode(3), "EMU_POISON='0x100': expected an integer in \\[0, 255\\]");
}

TEST(Control, OracleRunsEveryScheduleAndPoisonOnce) {
  std::vector<std::string> seen;
  const emu::OracleResult result = emu::check_schedule_invariance(
      [&] {
        seen.push_back(emu::describe(emu::config()));
        return std::vector<uint8_t>{1, 2, 3};
      },
      3);
  EXPECT_TRUE(result.identical) << result.message;
  EXPECT_TRUE(static_cast<bool>(result));
  EXPECT_EQ(result.runs, 7);
  const std::vector<std::string> expected = {"forward, poison 0xFF",        "reverse, poison 0xFF",
                                             "forward, poison 0x7F",        "reverse, poison 0x7F",
                                             "random(seed 1), poison 0xFF", "random(seed 2), poison 0x7F",
                                             "random(seed 3), poison 0xFF"};
  EXPECT_EQ(seen, expected);
}

TEST(Control, OracleReportsTheFirstDifferingRunAndByte) {
  // Output that depends on the poison byte from the third configuration on.
  const emu::OracleResult result = emu::check_schedule_invariance([] {
    std::vector<uint8_t> out(64, 0);
    out[37] = static_cast<uint8_t>(emu::config().poison);
    return out;
  });
  EXPECT_FALSE(result.identical);
  EXPECT_EQ(result.runs, 3);  // stops at the first difference
  EXPECT_EQ(result.reference_run, "forward, poison 0xFF");
  EXPECT_EQ(result.differing_run, "forward, poison 0x7F");
  EXPECT_EQ(result.byte_offset, 37u);
  EXPECT_NE(result.message.find("at byte 37 (0x7F vs 0xFF"), std::string::npos) << result.message;

  const emu::OracleResult sizes = emu::check_schedule_invariance(
      [] { return std::vector<uint8_t>(emu::config().schedule == emu::Schedule::Reverse ? 9 : 10, 5); });
  EXPECT_FALSE(sizes.identical);
  EXPECT_EQ(sizes.byte_offset, 9u);
  EXPECT_EQ(sizes.differing_run, "reverse, poison 0xFF");
}

#else

TEST(Control, OracleRunsOnceOnAGpu) {
  int calls = 0;
  const emu::OracleResult result = emu::check_schedule_invariance([&] {
    ++calls;
    return std::vector<uint8_t>{1};
  });
  EXPECT_TRUE(result.identical);
  EXPECT_EQ(calls, 1);
}

#endif

}  // namespace
