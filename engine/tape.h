// Tape-based reverse-mode autograd (flashlight style).
//
// While a Tape is recording on this thread (Tape::Recording scope) and any input of an op requires a
// gradient, the op pushes a node: its inputs' and outputs' autograd metadata plus a backward closure
// that captures exactly the tensors it needs (the saved activations). Tape::backward(loss) walks the
// nodes in reverse; each closure reads its outputs' gradients and accumulates into its inputs'.
// A node's closure (and so its saved tensors) is released as soon as it has run.
//
// Writing an op:
//   Tensor out = ...forward...;
//   if (Tape* tape = Tape::recording_for({&a, &b})) {
//     tape->record("mul", {a, b}, {out}, [a, b](BackwardContext& ctx) {
//       const Tensor& dout = ctx.grad_output(0);
//       if (ctx.needs_grad(0)) ctx.accumulate(0, mul(dout, b));
//       if (ctx.needs_grad(1)) ctx.accumulate(1, mul(dout, a));
//     });
//   }
// Backward closures run with recording disabled.
#pragma once
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace coco {

class BackwardContext;
using BackwardFn = std::function<void(BackwardContext&)>;

class Tape {
 public:
  Tape();
  ~Tape();
  Tape(const Tape&) = delete;
  Tape& operator=(const Tape&) = delete;

  // Makes this tape the current recording tape of the thread for the scope's lifetime.
  class Recording {
   public:
    explicit Recording(Tape& tape);
    ~Recording();
    Recording(const Recording&) = delete;
    Recording& operator=(const Recording&) = delete;

   private:
    Tape* previous_;
  };

  // The current tape if recording is on (not inside NoGrad) and any given input requires a gradient.
  static Tape* recording_for(std::initializer_list<const Tensor*> inputs);
  static Tape* current();

  // Pushes a node. Marks the outputs as requiring grad and as non-leaves.
  void record(const char* op, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
              BackwardFn backward);

  // Reverse pass from `root`. A scalar (single-element) root is seeded with 1; otherwise `seed`
  // (same shape) is required. Throws on a second backward over the same nodes, a root that does not
  // require grad, or a non-scalar root without a seed.
  void backward(const Tensor& root, const Tensor& seed = Tensor());

  // Called during backward for every leaf input (a tensor no recorded op produced: a parameter) as
  // soon as its gradient is final, i.e. right after the earliest recorded node that reads it has run
  // its backward. A tensor read by several nodes (tied weights) is reported once. Data-parallel
  // training starts a gradient bucket's all-reduce from here while backward continues
  // (engine/dist/grad_sync.h). The hook stays set across clear().
  using LeafGradHook = std::function<void(AutogradMeta& leaf)>;
  void set_leaf_grad_hook(LeafGradHook hook) { leaf_grad_hook_ = std::move(hook); }

  // Drops all nodes (and their saved tensors) so the tape can be reused for the next step.
  void clear();
  size_t size() const;
  // Names of the recorded ops in order (for tests and debugging).
  std::vector<std::string> op_names() const;

 private:
  struct Node;
  std::vector<std::unique_ptr<Node>> nodes_;
  bool backward_done_ = false;
  LeafGradHook leaf_grad_hook_;
  friend class BackwardContext;
};

class BackwardContext {
 public:
  // Gradient of the node's i-th output; zeros when no gradient reached that output.
  const Tensor& grad_output(size_t i = 0);
  size_t num_outputs() const;
  size_t num_inputs() const;
  // Whether the i-th input needs a gradient.
  bool needs_grad(size_t i) const;
  // Adds `grad` (same shape as input i; converted to the input's grad dtype if needed) into input i's
  // gradient; adopts the buffer without copying when nobody else holds it.
  void accumulate(size_t i, Tensor grad);
  // Input i's gradient buffer (zero-initialised on first use, dtype = the input's grad dtype), for
  // kernels that accumulate in place (GEMM with beta = 1, embedding scatter).
  Tensor grad_buffer(size_t i);

 private:
  friend class Tape;
  BackwardContext(Tape::Node& node) : node_(node) {}
  Tape::Node& node_;
};

// Disables recording on this thread for the scope's lifetime.
class NoGrad {
 public:
  NoGrad();
  ~NoGrad();
  NoGrad(const NoGrad&) = delete;
  NoGrad& operator=(const NoGrad&) = delete;

 private:
  bool previous_;
};

}  // namespace coco
