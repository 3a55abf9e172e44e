// Every typed error: triggered, and its message names what is at fault.
#include <gtest/gtest.h>

#include <cmath>
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

TEST(ShapeError, ElementCountOverflowIsRefusedBeforeAllocating) {
  // 2^62 float32 elements: the count fits int64 but the bytes (2^64) do not.
  EXPECT_TRUE(Names(message_of<ShapeError>([] { Tensor::zeros({int64_t{1} << 62}); }),
                    {"zeros", "[4611686018427387904]", "float32"}));
  // 2^32 * 2^32 overflows int64 itself.
  EXPECT_TRUE(Names(message_of<ShapeError>([] {
                      Tensor::zeros({int64_t{1} << 32, int64_t{1} << 32});
                    }),
                    {"zeros", "[4294967296, 4294967296]", "overflow"}));
  // Also when a zero dimension would hide the overflow: partial products must fit as well.
  EXPECT_TRUE(Names(message_of<ShapeError>([] {
                      Tensor::empty({int64_t{1} << 32, int64_t{1} << 32, 0});
                    }),
                    {"empty", "[4294967296, 4294967296, 0]"}));
  // 2^60 float64 elements: 2^63 bytes do not fit either.
  EXPECT_TRUE(
      Names(message_of<ShapeError>([] { Tensor::ones({int64_t{1} << 60}, DType::Float64); }),
            {"ones", "float64", "bytes"}));
  EXPECT_TRUE(Names(message_of<ShapeError>([] {
                      Tensor::full({2, -3}, 1.0);
                    }),
                    {"full", "[2, -3]", "negative"}));
  Generator gen(0);
  EXPECT_THROW(Tensor::uniform({int64_t{1} << 62}, 0, 1, gen), ShapeError);
  EXPECT_THROW(Tensor::normal({int64_t{1} << 40, int64_t{1} << 40}, 0, 1, gen), ShapeError);
  // A huge tensor never reaches to_vector's std::vector (std::length_error is not ours).
  EXPECT_THROW(Tensor::zeros({int64_t{1} << 62}).to_vector<float>(), ShapeError);
  // Big but representable shapes with a zero dimension are fine.
  EXPECT_EQ(Tensor::zeros({int64_t{1} << 40, 0}).numel(), 0);
}

TEST(ShapeError, FromVectorWithOverflowingShape) {
  // The wrapped product is 0, which old code accepted for an empty vector.
  EXPECT_TRUE(
      Names(message_of<ShapeError>([] {
              Tensor::from_vector(std::vector<float>{}, {int64_t{1} << 32, int64_t{1} << 32});
            }),
            {"from_vector", "[4294967296, 4294967296]"}));
  EXPECT_TRUE(Names(message_of<ShapeError>([] {
                      Tensor::from_vector(std::vector<int64_t>{}, {0, -5});
                    }),
                    {"from_vector", "[0, -5]"}));
  const float one = 1;
  EXPECT_THROW(Tensor::from_data(&one, {int64_t{1} << 62}, DType::Float32), ShapeError);
}

TEST(ShapeError, ReshapeToOverflowingOrNegativeShape) {
  Tensor none = Tensor::zeros({0});
  EXPECT_TRUE(Names(message_of<ShapeError>([&] { none.reshape({-2, 0}); }), {"[-2, 0]"}));
  EXPECT_TRUE(Names(message_of<ShapeError>([&] {
                      // (the zero first: reshape's own product must not overflow either)
                      none.reshape({0, int64_t{1} << 32, int64_t{1} << 32});
                    }),
                    {"[0, 4294967296, 4294967296]"}));
  // The zero last: the product of the given sizes is checked before it can overflow (UBSan).
  EXPECT_THROW(none.reshape({int64_t{1} << 32, int64_t{1} << 32, 0}), ShapeError);
  EXPECT_THROW(none.reshape({-1, int64_t{1} << 32, int64_t{1} << 32, 0}), ShapeError);
  EXPECT_EQ(none.reshape({5, 0}).shape(), (Shape{5, 0}));
}

TEST(EmptyDim, RowBroadcastOverEmptyRows) {
  // Rows of width 0 (a division by the width was a SIGFPE).
  Tensor a = Tensor::zeros({3, 0}), row = Tensor::zeros({0});
  a.requires_grad_(true);
  row.requires_grad_(true);
  Tensor out = add(a, row);
  EXPECT_EQ(out.shape(), (Shape{3, 0}));
  sum(mul(out, row)).backward();
  EXPECT_EQ(row.grad().shape(), (Shape{0}));
}

// --- empty dimensions: PyTorch's results where it defines one, ValueError where it raises --

TEST(EmptyDim, LogSoftmaxOfEmptyRows) {
  Tensor x = Tensor::zeros({3, 0}).requires_grad_();
  Tensor y = log_softmax(x);
  EXPECT_EQ(y.shape(), (Shape{3, 0}));
  sum(y).backward();
  EXPECT_EQ(x.grad().shape(), (Shape{3, 0}));
  EXPECT_EQ(log_softmax(Tensor::zeros({0}, DType::Float64)).shape(), Shape{0});
  EXPECT_EQ(log_softmax(Tensor::zeros({0, 4})).shape(), (Shape{0, 4}));
}

TEST(EmptyDim, SumIsZeroMeanIsNaN) {
  EXPECT_EQ(sum(Tensor::zeros({0})).item(), 0.0);
  EXPECT_TRUE(std::isnan(mean(Tensor::zeros({0})).item()));
  EXPECT_TRUE(std::isnan(mean(Tensor::zeros({2, 0}, DType::Float64)).item()));
  EXPECT_EQ(sum(Tensor::ones({2, 0}), 1).to_vector<float>(), (std::vector<float>{0, 0}));
  EXPECT_EQ(sum(Tensor::ones({0, 3}), 0).to_vector<float>(), (std::vector<float>{0, 0, 0}));
  for (float v : mean(Tensor::ones({0, 3}), 0).to_vector<float>())
    EXPECT_TRUE(std::isnan(v));
  for (double v : mean(Tensor::ones({2, 0, 2}, DType::Float64), 1).to_vector<double>())
    EXPECT_TRUE(std::isnan(v));
  EXPECT_EQ(sum(Tensor::ones({2, 0}), 0).shape(), Shape{0});
  // Gradients through an empty reduction are empty or zero-sized, never a crash.
  Tensor x = Tensor::ones({2, 0}).requires_grad_();
  sum(mean(x, 1)).backward();
  EXPECT_EQ(x.grad().shape(), (Shape{2, 0}));
  Tensor w = Tensor::ones({0, 3}).requires_grad_();
  sum(sum(w, 0)).backward();
  EXPECT_EQ(w.grad().shape(), (Shape{0, 3}));
}

TEST(EmptyDim, ArgmaxOverEmptyDimIsAValueError) {
  EXPECT_TRUE(Names(message_of<ValueError>([] {
                      argmax(Tensor::zeros({2, 0}), 1);
                    }),
                    {"argmax", "[2, 0]"}));
  EXPECT_TRUE(Names(message_of<ValueError>([] {
                      argmax(Tensor::zeros({0, 3}), 0);
                    }),
                    {"argmax", "[0, 3]"}));
  EXPECT_EQ(argmax(Tensor::zeros({0, 3}), 1).shape(), Shape{0});
}

TEST(EmptyDim, CrossEntropyWithNoClasses) {
  EXPECT_TRUE(Names(message_of<ValueError>([] {
                      cross_entropy(Tensor::zeros({2, 0}), labels({0, 0}));
                    }),
                    {"cross_entropy", "[2, 0]", "class"}));
  EXPECT_TRUE(Names(message_of<ValueError>([] {
                      count_correct(Tensor::zeros({2, 0}), labels({0, 0}));
                    }),
                    {"argmax", "[2, 0]"}));
}

TEST(EmptyDim, BatchNormWithNoRows) {
  Tensor gamma = Tensor::ones({3}), beta = Tensor::zeros({3});
  Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3});
  EXPECT_TRUE(Names(message_of<ValueError>([&] {
                      batch_norm(Tensor::zeros({0, 3}), gamma, beta, rm, rv, true, 0.1, 1e-5);
                    }),
                    {"batch_norm", "[0, 3]"}));
  EXPECT_EQ(rm.to_vector<float>(), (std::vector<float>{0, 0, 0}));  // untouched
  EXPECT_EQ(batch_norm(Tensor::zeros({0, 3}), gamma, beta, rm, rv, false, 0.1, 1e-5).shape(),
            (Shape{0, 3}));
  Tensor none = Tensor::zeros({0});
  EXPECT_EQ(batch_norm(Tensor::zeros({4, 0}), none, none, none, none, true, 0.1, 1e-5).shape(),
            (Shape{4, 0}));
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

// copy_state_from copies values between modules of one structure and refuses any other
// structure before copying anything.
TEST(ModuleState, CopyStateFromSameStructureOnly) {
  Generator a_gen(1), b_gen(2), c_gen(3);
  nn::MLP a(5, {4, 3}, a_gen, {.batch_norm = true}), b(5, {4, 3}, b_gen, {.batch_norm = true});
  nn::MLP other(5, {4, 2}, c_gen);
  const std::vector<float> b_before = b.named_parameters().front().second.to_vector<float>();
  EXPECT_THROW(b.copy_state_from(other), ShapeError);
  EXPECT_EQ(b.named_parameters().front().second.to_vector<float>(), b_before);
  b.requires_grad_(false);
  b.copy_state_from(a);
  for (size_t i = 0; i < a.named_parameters().size(); ++i) {
    EXPECT_EQ(b.named_parameters()[i].second.to_vector<float>(),
              a.named_parameters()[i].second.to_vector<float>());
    EXPECT_FALSE(b.named_parameters()[i].second.requires_grad()) << "requires_grad is kept";
  }
  for (size_t i = 0; i < a.named_buffers().size(); ++i)
    EXPECT_EQ(b.named_buffers()[i].second.to_vector<float>(),
              a.named_buffers()[i].second.to_vector<float>());
}

// GCC 12.2 with -march=native (AVX-512) built a default Conv2dOptions passed by value with
// padding {1, 0} (its SLP vectorizer; CMakeLists.txt turns that pass off for GCC < 12.3).
namespace {
[[gnu::noinline]] Conv2dOptions pass_by_value(Conv2dOptions options) {
  return options;
}
}  // namespace

TEST(Compiler, DefaultOptionStructsSurviveBeingPassedByValue) {
  Conv2dOptions local;
  for (const Conv2dOptions& o :
       {pass_by_value(Conv2dOptions{}), pass_by_value(local), pass_by_value({.groups = 2})}) {
    EXPECT_EQ(o.stride, (Pair{1, 1}));
    EXPECT_EQ(o.padding, (Pair{0, 0}));
    EXPECT_EQ(o.dilation, (Pair{1, 1}));
  }
}
