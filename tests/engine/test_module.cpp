// The parameter registry: dotted names, tied parameters listed once, lookups and errors.
#include <gtest/gtest.h>

#include "engine/module.h"

namespace coco {
namespace {

struct Linearish : Module {
  Linearish(int in, int out) {
    register_parameter("weight", Tensor::zeros(Shape{out, in}, DType::f32));
    register_parameter("bias", Tensor::zeros(Shape{out}, DType::f32), /*weight_decay=*/false);
  }
};

struct Block : Module {
  Block() {
    attn = register_module("attn", std::make_shared<Linearish>(4, 4));
    ff = register_module("ff", std::make_shared<Linearish>(4, 8));
  }
  std::shared_ptr<Linearish> attn, ff;
};

struct Tower : Module {
  explicit Tower(Tensor shared_embedding) {
    register_parameter("token_emb", std::move(shared_embedding));
    auto layers = register_module("layers", std::make_shared<Module>());
    for (int i = 0; i < 2; ++i) layers->register_module(std::to_string(i), std::make_shared<Block>());
  }
};

TEST(Module, DottedNamesInRegistrationOrder) {
  Tensor emb = Tensor::zeros(Shape{10, 4}, DType::f32);
  Tower tower(emb);
  std::vector<std::string> names;
  for (const auto& p : tower.named_parameters("discriminator")) names.push_back(p.name);
  ASSERT_EQ(names.size(), 9u);
  EXPECT_EQ(names[0], "discriminator.token_emb");
  EXPECT_EQ(names[1], "discriminator.layers.0.attn.weight");
  EXPECT_EQ(names[4], "discriminator.layers.0.ff.bias");
  EXPECT_EQ(names[8], "discriminator.layers.1.ff.bias");
  EXPECT_EQ(tower.parameter_count(), 40u + 2u * (16 + 4 + 32 + 8));
}

TEST(Module, TiedParametersAreListedOnceAndShareGradients) {
  Tensor emb = Tensor::zeros(Shape{10, 4}, DType::f32);
  struct Pair : Module {
    explicit Pair(Tensor e) {
      generator = register_module("generator", std::make_shared<Tower>(e));
      discriminator = register_module("discriminator", std::make_shared<Tower>(e));
    }
    std::shared_ptr<Tower> generator, discriminator;
  } pair(emb);
  const auto params = pair.named_parameters();
  int embeddings = 0;
  for (const auto& p : params) embeddings += p.name.find("token_emb") != std::string::npos;
  EXPECT_EQ(embeddings, 1);
  EXPECT_TRUE(pair.parameter("discriminator.token_emb").same(pair.parameter("generator.token_emb")) ||
              pair.parameter("discriminator.token_emb").data() == pair.parameter("generator.token_emb").data());
  EXPECT_TRUE(emb.requires_grad());
}

TEST(Module, WeightDecayFlagsAndMissingNames) {
  Block block;
  for (const auto& p : block.named_parameters())
    EXPECT_EQ(p.weight_decay, p.name.find("bias") == std::string::npos) << p.name;
  try {
    block.parameter("attn.wieght");
    FAIL() << "expected out_of_range";
  } catch (const std::out_of_range& e) {
    EXPECT_NE(std::string(e.what()).find("attn.weight"), std::string::npos) << e.what();
  }
  EXPECT_THROW(block.register_parameter("attn", Tensor::zeros(Shape{1}, DType::f32)), std::invalid_argument);
  EXPECT_THROW(block.register_parameter("a.b", Tensor::zeros(Shape{1}, DType::f32)), std::invalid_argument);
}

TEST(Module, TrainModePropagates) {
  Block block;
  block.train(false);
  EXPECT_FALSE(block.attn->training());
  block.train(true);
  EXPECT_TRUE(block.ff->training());
}

}  // namespace
}  // namespace coco
