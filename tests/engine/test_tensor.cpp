// Tensor basics: construction, views, device and dtype conversion, error messages.
#include <gtest/gtest.h>

#include "engine/tensor.h"

namespace coco {
namespace {

TEST(Shape, RankNumelAndPrinting) {
  Shape s{2, 3, 4};
  EXPECT_EQ(s.rank(), 3);
  EXPECT_EQ(s.numel(), 24);
  EXPECT_EQ(s.rows(), 6);
  EXPECT_EQ(s[-1], 4);
  EXPECT_EQ(s.str(), "(2, 3, 4)");
  EXPECT_EQ(Shape{}.numel(), 1);
  EXPECT_THROW((Shape{1, 2, 3, 4, 5, 6}), std::invalid_argument);
  EXPECT_THROW((Shape{2, -1}), std::invalid_argument);
  EXPECT_THROW(s[3], std::out_of_range);
}

TEST(Tensor, FromVectorRoundTripOnBothDevices) {
  std::vector<float> values{1, 2, 3, 4, 5, 6};
  for (Device device : {Device::cpu, Device::cuda}) {
    Tensor t = Tensor::from_vector(values, Shape{2, 3}, device);
    EXPECT_EQ(t.device(), device);
    EXPECT_EQ(t.dtype(), DType::f32);
    EXPECT_EQ(t.to_vector<float>(), values);
    EXPECT_EQ(t.to(Device::cpu).to(Device::cuda).to_vector<float>(), values);
  }
}

TEST(Tensor, RowsIsAViewSharingStorage) {
  Tensor t = Tensor::from_vector(std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7}, Shape{4, 2});
  Tensor middle = t.rows(1, 3);
  EXPECT_EQ(middle.shape(), (Shape{2, 2}));
  EXPECT_EQ(middle.to_vector<int32_t>(), (std::vector<int32_t>{2, 3, 4, 5}));
  middle.zero_();
  EXPECT_EQ(t.to_vector<int32_t>(), (std::vector<int32_t>{0, 1, 0, 0, 0, 0, 6, 7}));
  EXPECT_THROW(t.rows(3, 5), TensorError);
}

TEST(Tensor, ViewChecksElementCount) {
  Tensor t = Tensor::zeros(Shape{2, 6}, DType::f32);
  EXPECT_EQ(t.view(Shape{3, 4}).shape(), (Shape{3, 4}));
  try {
    t.view(Shape{5});
    FAIL() << "expected TensorError";
  } catch (const TensorError& e) {
    EXPECT_NE(std::string(e.what()).find("(2, 6)"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("(5,)"), std::string::npos) << e.what();
  }
}

TEST(Tensor, DtypeConversionsOnBothDevices) {
  std::vector<float> values{1.0f, -2.5f, 3.140625f, 0.0f};
  for (Device device : {Device::cpu, Device::cuda}) {
    Tensor t = Tensor::from_vector(values, Shape{4}, device);
    EXPECT_EQ(t.to(DType::bf16).to(DType::f32).to_vector<float>(), values);  // exactly representable
    EXPECT_EQ(t.to(DType::f16).to_f64(), (std::vector<double>{1.0, -2.5, 3.140625, 0.0}));
    Tensor rounded = Tensor::from_vector(std::vector<float>{1.00390625f}, Shape{1}, device).to(DType::bf16);
    EXPECT_EQ(rounded.item(), 1.0);  // bf16 keeps 8 bits of mantissa: round to nearest even
  }
}

TEST(Tensor, FillAndFull) {
  for (Device device : {Device::cpu, Device::cuda}) {
    for (DType dtype : {DType::f32, DType::bf16, DType::f16, DType::i32, DType::i64}) {
      Tensor t = Tensor::full(Shape{3, 5}, 2.0, dtype, device);
      for (double v : t.to_f64()) EXPECT_EQ(v, 2.0) << dtype_name(dtype);
    }
  }
}

TEST(Tensor, DtypeMismatchNamesTheOpAndShape) {
  Tensor t = Tensor::zeros(Shape{2, 2}, DType::bf16);
  try {
    (void)t.to_vector<float>();
    FAIL() << "expected TensorError";
  } catch (const TensorError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("to_vector"), std::string::npos) << message;
    EXPECT_NE(message.find("bf16"), std::string::npos) << message;
    EXPECT_NE(message.find("f32"), std::string::npos) << message;
  }
}

TEST(Tensor, ShapeChecksNameBothShapes) {
  Tensor a = Tensor::zeros(Shape{2, 3}, DType::f32);
  Tensor b = Tensor::zeros(Shape{3, 2}, DType::f32);
  try {
    check_same_shape("my_op", a, b);
    FAIL() << "expected TensorError";
  } catch (const TensorError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("my_op"), std::string::npos);
    EXPECT_NE(message.find("(2, 3)"), std::string::npos);
    EXPECT_NE(message.find("(3, 2)"), std::string::npos);
  }
  EXPECT_THROW(Tensor().shape(), TensorError);
}

TEST(Tensor, OnlyFloatTensorsRequireGrad) {
  Tensor ids = Tensor::zeros(Shape{4}, DType::i32);
  EXPECT_THROW(ids.set_requires_grad(true), TensorError);
  Tensor w = Tensor::zeros(Shape{4}, DType::f32);
  w.set_requires_grad(true).set_grad_dtype(DType::f32);
  EXPECT_TRUE(w.requires_grad());
  EXPECT_FALSE(w.detach().requires_grad());
  EXPECT_EQ(w.detach().data(), w.data());
}

}  // namespace
}  // namespace coco
