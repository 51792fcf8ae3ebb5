// DType lives in the runtime layer so that kernels (below the engine) can name element types too.
#pragma once
#include "engine/runtime/dtype.h"
