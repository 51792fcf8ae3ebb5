#include "coco/exit_code.h"

#include <stdexcept>

#include "coco/shards.h"
#include "coco/utf8.h"
#include "coco/wordpiece.h"
#include "engine/io/safetensors.h"
#include "engine/tensor.h"

namespace coco {

int exit_code_for(const std::exception& error) {
  if (dynamic_cast<const TensorError*>(&error)) return 1;            // an engine failure, not the user's input
  if (dynamic_cast<const std::invalid_argument*>(&error)) return 2;  // UsageError, ConfigError, DataError, bad options
  if (dynamic_cast<const text::ShardError*>(&error) || dynamic_cast<const text::Utf8Error*>(&error) ||
      dynamic_cast<const text::TokenizerError*>(&error) || dynamic_cast<const safetensors::FormatError*>(&error))
    return 2;  // damaged or malformed input files
  return 1;
}

}  // namespace coco
