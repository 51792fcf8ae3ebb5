// coco-bench --step (bench/step_profile.cpp): the step profile of a `coco train` config.
#pragma once

namespace coco::bench {

// argv holds "--step CONFIG" and its options; returns the process exit status.
int step_profile_main(int argc, char** argv);

}  // namespace coco::bench
