// Every typed error: triggered, and its message names what is at fault.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "clarena/clarena.h"

using namespace clarena;

namespace {

/// Runs `fn`, expects it to throw E, and returns the message (empty when it did not throw).
template <typename E, typename Fn>
std::string message_of(Fn&& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw another type: " << e.what();
    return "";
  }
  ADD_FAILURE() << "did not throw";
  return "";
}

/// Whether `text` contains every part; the failure message shows what is missing.
::testing::AssertionResult Names(const std::string& text,
                                 std::initializer_list<const char*> parts) {
  for (const char* part : parts)
    if (text.find(part) == std::string::npos)
      return ::testing::AssertionFailure() << "'" << text << "' lacks '" << part << "'";
  return ::testing::AssertionSuccess();
}

Tensor labels(std::vector<int64_t> v) {
  const auto n = static_cast<int64_t>(v.size());
  return Tensor::from_vector(v, {n});
}

}  // namespace

// --- ShapeError ----------------------------------------------------------------------------

TEST(ShapeError, AddNamesOpAndBothShapes) {
  const std::string m = message_of<ShapeError>([] {
    add(Tensor::zeros({2, 3}), Tensor::zeros({4, 5}));
  });
  EXPECT_TRUE(Names(m, {"add", "[2, 3]", "[4, 5]"}));
}

TEST(ShapeError, ElementwiseOps) {
  EXPECT_TRUE(Names(message_of<ShapeError>([] {
                      sub(Tensor::zeros({3}), Tensor::zeros({2, 4}));
                    }),
                    {"sub", "[3]", "[2, 4]"}));
  EXPECT_TRUE(Names(message_of<ShapeError>([] {
                      mul(Tensor::zeros({2, 3}), Tensor::zeros({3, 2}));
                    }),
                    {"mul", "[2, 3]", "[3, 2]"}));
}

TEST(ShapeError, MatmulInnerMismatch) {
  const std::string m = message_of<ShapeError>([] {
    matmul(Tensor::zeros({2, 3}), Tensor::zeros({4, 5}));
  });
  EXPECT_TRUE(Names(m, {"matmul", "[2, 3]", "[4, 5]"}));
  // With a transpose the stored shapes line up differently: [3,2]ᵀ·[4,5] still mismatches.
  EXPECT_TRUE(Names(message_of<ShapeError>([] {
                      matmul(Tensor::zeros({3, 2}), Tensor::zeros({4, 5}), true, false);
                    }),
                    {"matmul", "[3, 2]", "[4, 5]"}));
  EXPECT_NO_THROW(matmul(Tensor::zeros({3, 2}), Tensor::zeros({3, 5}), true, false));
  EXPECT_TRUE(Names(message_of<ShapeError>([] {
                      matmul(Tensor::zeros({6}), Tensor::zeros({6, 1}));
                    }),
                    {"matmul", "[6]"}));
}

TEST(ShapeError, Linear) {
  const std::string m = message_of<ShapeError>([] {
    linear(Tensor::zeros({2, 3}), Tensor::zeros({4, 5}), Tensor::zeros({4}));
  });
  EXPECT_TRUE(Names(m, {"linear", "[2, 3]", "[4, 5]"}));
  const std::string bias = message_of<ShapeError>([] {
    linear(Tensor::zeros({2, 5}), Tensor::zeros({4, 5}), Tensor::zeros({3}));
  });
  EXPECT_TRUE(Names(bias, {"linear", "[4, 5]", "[3]"}));
  EXPECT_TRUE(Names(message_of<ShapeError>([] {
                      linear_relu(Tensor::zeros({2, 3}), Tensor::zeros({4, 5}), Tensor::zeros({4}));
                    }),
                    {"linear_relu", "[2, 3]", "[4, 5]"}));
}

TEST(ShapeError, CrossEntropyLabelsShape) {
  const std::string m = message_of<ShapeError>([] {
    cross_entropy(Tensor::zeros({4, 3}), labels({0, 1, 2, 0, 1}));
  });
  EXPECT_TRUE(Names(m, {"cross_entropy", "[4, 3]", "[5]"}));
}

TEST(ShapeError, Concat) {
  const std::string m = message_of<ShapeError>([] {
    concat({Tensor::zeros({2, 3}), Tensor::zeros({2, 4})}, 0);
  });
  EXPECT_TRUE(Names(m, {"concat", "[2, 3]", "[2, 4]"}));
  EXPECT_NO_THROW(concat({Tensor::zeros({2, 3}), Tensor::zeros({2, 4})}, 1));
  EXPECT_TRUE(Names(message_of<ValueError>([] {
                      concat({Tensor::zeros({2, 3})}, 2);
                    }),
                    {"concat", "2"}));
  EXPECT_TRUE(Names(message_of<ValueError>([] { concat({}, 0); }), {"concat"}));
}

TEST(ShapeError, BackwardGradientShape) {
  Tensor x = Tensor::ones({3}).requires_grad_();
  Tensor y = x * 2.0;
  EXPECT_TRUE(Names(message_of<ShapeError>([&] { y.backward(Tensor::ones({4})); }),
                    {"backward", "[4]", "[3]"}));
}

// --- DTypeError ----------------------------------------------------------------------------

TEST(DTypeError, Float32PlusFloat64) {
  const std::string m =
      message_of<DTypeError>([] { add(Tensor::zeros({2}), Tensor::zeros({2}, DType::Float64)); });
  EXPECT_TRUE(Names(m, {"add", "float32", "float64"}));
  EXPECT_TRUE(Names(message_of<DTypeError>([] {
                      matmul(Tensor::zeros({2, 2}, DType::Float64), Tensor::zeros({2, 2}));
                    }),
                    {"matmul", "float32", "float64"}));
}

TEST(DTypeError, Int64WhereFloatExpected) {
  Tensor ints = Tensor::zeros({2, 2}, DType::Int64);
  EXPECT_TRUE(Names(message_of<DTypeError>([&] { relu(ints); }), {"relu", "int64"}));
  EXPECT_TRUE(Names(message_of<DTypeError>([&] { sum(ints); }), {"sum", "int64"}));
  EXPECT_TRUE(Names(message_of<DTypeError>([&] { add(ints, ints); }), {"add", "int64"}));
  // Labels must be int64.
  EXPECT_TRUE(Names(message_of<DTypeError>([] {
                      cross_entropy(Tensor::zeros({2, 3}), Tensor::zeros({2}));
                    }),
                    {"cross_entropy", "labels", "int64", "float32"}));
  EXPECT_TRUE(
      Names(message_of<DTypeError>([&] { ints.to_vector<float>(); }), {"float32", "int64"}));
}

// --- DeviceError ---------------------------------------------------------------------------

TEST(DeviceError, CudaTensorWithoutCuda) {
  if (cuda_is_available()) GTEST_SKIP() << "a CUDA device is present";
  const std::string m =
      message_of<DeviceError>([] { Tensor::zeros({2}, DType::Float32, Device::cuda(0)); });
  EXPECT_TRUE(Names(m, {"cuda"}));
  EXPECT_TRUE(
      Names(message_of<DeviceError>([] { Tensor::zeros({2}).to(Device::cuda(1)); }), {"cuda:1"}));
}

TEST(DeviceError, QueriesDoNotThrow) {
  EXPECT_NO_THROW(cuda_device_count());
  EXPECT_EQ(cuda_is_available(), cuda_device_count() > 0);
}

// --- ValueError ----------------------------------------------------------------------------

TEST(ValueError, BadDimForSum) {
  Tensor x = Tensor::zeros({2, 3});
  EXPECT_TRUE(Names(message_of<ValueError>([&] { sum(x, 2); }), {"sum", "2"}));
  EXPECT_TRUE(Names(message_of<ValueError>([&] { mean(x, -3); }), {"mean", "-3"}));
  EXPECT_NO_THROW(sum(x, -2));
}

TEST(ValueError, LabelOutOfRange) {
  const std::string m = message_of<ValueError>([] {
    cross_entropy(Tensor::zeros({2, 3}), labels({0, 7}));
  });
  EXPECT_TRUE(Names(m, {"cross_entropy", "7"}));
  EXPECT_TRUE(Names(message_of<ValueError>([] {
                      cross_entropy(Tensor::zeros({2, 3}), labels({-1, 0}));
                    }),
                    {"-1"}));
}

TEST(ValueError, DeviceParse) {
  EXPECT_TRUE(Names(message_of<ValueError>([] { Device::parse("tpu"); }), {"tpu"}));
  EXPECT_THROW(Device::parse("cuda:"), ValueError);
  EXPECT_THROW(Device::parse("cuda:x"), ValueError);
  EXPECT_EQ(Device::parse("cpu"), Device::cpu());
  EXPECT_EQ(Device::parse("cuda"), Device::cuda(0));
  EXPECT_EQ(Device::parse("cuda:3"), Device::cuda(3));
}

TEST(ValueError, OptimizerHyperParameters) {
  Tensor p = Tensor::zeros({2}).requires_grad_();
  EXPECT_TRUE(Names(message_of<ValueError>([&] {
                      optim::SGD({p}, {-0.1, 0, 0, 0, false});
                    }),
                    {"SGD", "lr"}));
  EXPECT_TRUE(Names(message_of<ValueError>([&] {
                      optim::SGD({p}, {0.1, 0.9, 0.1, 0, true});
                    }),
                    {"nesterov"}));
  EXPECT_TRUE(Names(message_of<ValueError>([&] {
                      optim::Adam({p}, {0.1, 1.0, 0.999, 1e-8, 0});
                    }),
                    {"Adam", "betas"}));
}

// --- AutogradError -------------------------------------------------------------------------

TEST(AutogradError, BackwardWithoutGrad) {
  Tensor x = Tensor::ones({1});
  EXPECT_TRUE(Names(message_of<AutogradError>([&] { sum(x).backward(); }), {"require"}));
}

TEST(AutogradError, SecondBackward) {
  Tensor x = Tensor::ones({2}).requires_grad_();
  Tensor y = sum(tanh(x));
  y.backward();
  EXPECT_TRUE(Names(message_of<AutogradError>([&] { y.backward(); }), {"retain_graph"}));
}

TEST(AutogradError, NonScalarBackwardNeedsAGradient) {
  Tensor x = Tensor::ones({3}).requires_grad_();
  EXPECT_TRUE(Names(message_of<AutogradError>([&] { (x * 2.0).backward(); }), {"scalar", "[3]"}));
}

TEST(AutogradError, RequiresGradOnNonLeaf) {
  Tensor x = Tensor::ones({3}).requires_grad_();
  Tensor y = x * 2.0;
  EXPECT_TRUE(Names(message_of<AutogradError>([&] { y.requires_grad_(false); }), {"non-leaf"}));
}

// --- IOError -------------------------------------------------------------------------------

TEST(IOError, MissingFileNamesThePath) {
  Generator gen(0);
  nn::Linear layer(2, 2, gen);
  const std::filesystem::path file =
      std::filesystem::temp_directory_path() / "clarena_test_errors_no_such_file.bin";
  std::filesystem::remove(file);
  EXPECT_TRUE(Names(message_of<IOError>([&] { nn::load(layer, file); }), {file.c_str()}));
}

TEST(Errors, AllDeriveFromError) {
  EXPECT_THROW(add(Tensor::zeros({2}), Tensor::zeros({3})), Error);
  EXPECT_THROW(Device::parse("x"), Error);
  EXPECT_THROW(Device::parse("x"), std::runtime_error);
}
