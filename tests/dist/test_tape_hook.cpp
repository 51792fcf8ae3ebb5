// Tape::set_leaf_grad_hook: each leaf is reported once, right after its earliest reader's backward,
// with its gradient final (equal to what it holds when backward returns).
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "engine/ops/elementwise.h"
#include "engine/ops/linear.h"
#include "engine/tape.h"

namespace coco {
namespace {

TEST(TapeHook, LeavesReportedOnceWhenFinal) {
  Tensor a = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3}).set_requires_grad().set_name("a");
  Tensor w = Tensor::from_vector<float>({0.5f, -1, 2, 1, 0, -0.5f}, {2, 3}).set_requires_grad().set_name("w");
  Tensor b = Tensor::from_vector<float>({0.25f, -0.75f}, {2}).set_requires_grad().set_name("b");
  std::vector<std::string> order;
  std::map<std::string, std::vector<double>> at_hook;
  Tape tape;
  tape.set_leaf_grad_hook([&](AutogradMeta& leaf) {
    order.push_back(leaf.name);
    at_hook[leaf.name] = leaf.grad.to_f64();
  });
  {
    Tape::Recording recording(tape);
    const Tensor h = ops::linear(a, w, b);  // node 0 reads a, w, b: (2, 2)
    const Tensor y = ops::matmul(h, w);     // w again (tied): not final before node 0
    tape.backward(ops::sum(ops::mul(y, y)));
  }
  ASSERT_EQ(order.size(), 3u);
  // a, w and b are all read first by node 0, so they become final last, in input order.
  EXPECT_EQ(order, (std::vector<std::string>{"a", "w", "b"}));
  EXPECT_EQ(at_hook["w"], w.grad().to_f64());
  EXPECT_EQ(at_hook["a"], a.grad().to_f64());
  EXPECT_EQ(at_hook["b"], b.grad().to_f64());
}

TEST(TapeHook, LaterFirstUseIsReportedEarlier) {
  Tensor x = Tensor::from_vector<float>({1, 2}, {2}).set_requires_grad().set_name("x");
  Tensor y = Tensor::from_vector<float>({3, 4}, {2}).set_requires_grad().set_name("y");
  std::vector<std::string> order;
  Tape tape;
  tape.set_leaf_grad_hook([&](AutogradMeta& leaf) { order.push_back(leaf.name); });
  {
    Tape::Recording recording(tape);
    const Tensor s = ops::scale(x, 2.0);  // x first used here
    const Tensor t = ops::mul(s, y);      // y first used here: final before x
    tape.backward(ops::sum(t));
  }
  EXPECT_EQ(order, (std::vector<std::string>{"y", "x"}));
  // The hook stays across clear(); no hook, no calls.
  tape.clear();
  tape.set_leaf_grad_hook(nullptr);
  order.clear();
  x.clear_grad();
  {
    Tape::Recording recording(tape);
    tape.backward(ops::sum(ops::scale(x, 3.0)));
  }
  EXPECT_TRUE(order.empty());
  EXPECT_EQ(x.grad().to_f64(), (std::vector<double>{3, 3}));
}

}  // namespace
}  // namespace coco
