// cocolm's public C++ API, one include for everything (docs/library.md):
//
//   training     coco::Trainer (coco/trainer.h): pretraining from a config file or JSON object and a prepared
//                data directory; step, evaluate, save, resume; a callback per metrics record; the files and
//                semantics of `coco train`. coco::evaluate_checkpoint is `coco eval`.
//   encoding     coco::TextEncoder (coco/encode.h): load a checkpoint with its vocabulary, tokenize, run the
//                discriminator in inference mode in batches on cpu or cuda, per-token hidden states and CLS /
//                mean sentence vectors; thread-safe for concurrent callers.
//   building     coco::Tensor, coco::Tape and NoGrad (reverse-mode autograd), coco::ops::* (the differentiable
//   blocks       ops, each with a CPU reference and a CUDA kernel), coco::Module and coco::model::Linear /
//                LayerNorm / Encoder, coco::optim::AdamW, coco::safetensors (read and write weights).
//
// Installed by `cmake --install` under include/cocolm/; CMake users get it with find_package(cocolm) and
// target_link_libraries(app PRIVATE cocolm::cocolm).
#pragma once

#include "coco/encode.h"
#include "coco/trainer.h"
#include "engine/device.h"
#include "engine/dtype.h"
#include "engine/io/safetensors.h"
#include "engine/module.h"
#include "engine/ops/activation.h"
#include "engine/ops/attention.h"
#include "engine/ops/cast.h"
#include "engine/ops/dropout.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/embedding.h"
#include "engine/ops/gather.h"
#include "engine/ops/layernorm.h"
#include "engine/ops/linear.h"
#include "engine/ops/losses.h"
#include "engine/ops/optim.h"
#include "engine/ops/permute.h"
#include "engine/ops/softmax.h"
#include "engine/shape.h"
#include "engine/tape.h"
#include "engine/tensor.h"
#include "model/encoder.h"
#include "model/init.h"
#include "model/layers.h"

namespace cocolm {

// "0.1.0": the version of the installed package (CMake's cocolm_VERSION).
const char* version();
// "gpu" or "emulated": how this build runs CUDA kernels (CMake's cocolm_CUDA_MODE).
const char* cuda_mode();

}  // namespace cocolm
