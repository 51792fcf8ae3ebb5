// coco-bench --cpu-step (bench/cpu_step.cpp): whole training steps on the CPU backend.
#pragma once

namespace coco::bench {

// argv holds "--cpu-step CONFIG" and its options; returns the process exit status.
int cpu_step_main(int argc, char** argv);

}  // namespace coco::bench
