// The exit code a failure means, for `coco` and for a data-parallel rank that ends the whole job after one (the
// Trainer under a launch): 2 for what the user can fix in the input (usage, configuration, data, damaged or
// malformed files: std::invalid_argument such as ConfigError and DataError, text::ShardError, text::Utf8Error,
// text::TokenizerError, safetensors::FormatError), 1 for everything else (an engine failure such as TensorError, a
// CUDA or communication error).
#pragma once
#include <exception>

namespace coco {

int exit_code_for(const std::exception& error);

}  // namespace coco
