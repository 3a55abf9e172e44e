// Tensor handles: factories, determinism by seed, views that share storage, copies, dtypes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "clarena/clarena.h"

using namespace clarena;

namespace {

template <typename T>
bool all_equal_to(const std::vector<T>& v, T value) {
  for (T x : v)
    if (x != value) return false;
  return true;
}

template <typename T>
bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

}  // namespace

// --- factories ---------------------------------------------------------------------------

TEST(Factories, ZerosOnesFull) {
  Tensor z = Tensor::zeros({2, 3});
  EXPECT_EQ(z.shape(), (Shape{2, 3}));
  EXPECT_EQ(z.numel(), 6);
  EXPECT_EQ(z.dim(), 2);
  EXPECT_EQ(z.dtype(), DType::Float32);
  EXPECT_EQ(z.device(), Device::cpu());
  EXPECT_EQ(z.nbytes(), 24u);
  EXPECT_TRUE(all_equal_to(z.to_vector<float>(), 0.0f));
  EXPECT_TRUE(all_equal_to(Tensor::ones({5}).to_vector<float>(), 1.0f));
  EXPECT_TRUE(all_equal_to(Tensor::full({3, 1}, -2.5).to_vector<float>(), -2.5f));
  Tensor f64 = Tensor::full({4}, 0.1, DType::Float64);
  EXPECT_EQ(f64.dtype(), DType::Float64);
  EXPECT_TRUE(all_equal_to(f64.to_vector<double>(), 0.1));  // not rounded through float
  EXPECT_TRUE(all_equal_to(Tensor::full({2}, 7, DType::Int64).to_vector<int64_t>(), int64_t{7}));
}

TEST(Factories, ShapeAccessors) {
  Tensor t = Tensor::zeros({4, 5, 6});
  EXPECT_EQ(t.size(0), 4);
  EXPECT_EQ(t.size(-1), 6);
  EXPECT_EQ(t.size(-3), 4);
  EXPECT_EQ(t.str(), "float32[4, 5, 6] on cpu");
  EXPECT_EQ(shape_str({}), "[]");
  Tensor scalar = Tensor::full({}, 3.0);
  EXPECT_EQ(scalar.numel(), 1);
  EXPECT_EQ(scalar.item(), 3.0);
}

TEST(Factories, UniformIsDeterministicBySeed) {
  Generator g1(123), g2(123), g3(124);
  const auto a = Tensor::uniform({100}, -2, 3, g1).to_vector<float>();
  const auto b = Tensor::uniform({100}, -2, 3, g2).to_vector<float>();
  const auto c = Tensor::uniform({100}, -2, 3, g3).to_vector<float>();
  EXPECT_TRUE(bitwise_equal(a, b));
  EXPECT_FALSE(bitwise_equal(a, c));
  for (float x : a) {
    EXPECT_GE(x, -2.0f);
    EXPECT_LT(x, 3.0f);
  }
  // The generator advances: a second draw differs from the first.
  EXPECT_FALSE(bitwise_equal(a, Tensor::uniform({100}, -2, 3, g1).to_vector<float>()));
}

TEST(Factories, NormalIsDeterministicBySeedWithRightMoments) {
  Generator g1(9), g2(9), g3(10);
  const auto a = Tensor::normal({4000}, 1.5, 2.0, g1, DType::Float64).to_vector<double>();
  const auto b = Tensor::normal({4000}, 1.5, 2.0, g2, DType::Float64).to_vector<double>();
  const auto c = Tensor::normal({4000}, 1.5, 2.0, g3, DType::Float64).to_vector<double>();
  EXPECT_TRUE(bitwise_equal(a, b));
  EXPECT_FALSE(bitwise_equal(a, c));
  double mean = 0, var = 0;
  for (double x : a)
    mean += x;
  mean /= static_cast<double>(a.size());
  for (double x : a)
    var += (x - mean) * (x - mean);
  var /= static_cast<double>(a.size());
  EXPECT_NEAR(mean, 1.5, 0.15);  // 5 standard errors
  EXPECT_NEAR(std::sqrt(var), 2.0, 0.15);
}

TEST(Factories, FromVectorAndFromData) {
  const std::vector<float> v = {1, 2, 3, 4, 5, 6};
  Tensor t = Tensor::from_vector(v, {2, 3});
  EXPECT_EQ(t.to_vector<float>(), v);
  EXPECT_THROW(Tensor::from_vector(v, {4, 2}), ShapeError);

  const double raw[] = {0.5, -1.25, 3};
  Tensor d = Tensor::from_data(raw, {3}, DType::Float64);
  EXPECT_EQ(d.dtype(), DType::Float64);
  EXPECT_EQ(d.to_vector<double>(), (std::vector<double>{0.5, -1.25, 3}));
  // from_data copies: changing the source afterwards does not show.
  std::vector<float> src = {1, 2};
  Tensor c = Tensor::from_data(src.data(), {2}, DType::Float32);
  src[0] = 100;
  EXPECT_EQ(c.to_vector<float>(), (std::vector<float>{1, 2}));
}

TEST(Factories, Int64Tensors) {
  Tensor labels = Tensor::from_vector(std::vector<int64_t>{3, -1, 1LL << 40}, {3});
  EXPECT_EQ(labels.dtype(), DType::Int64);
  EXPECT_EQ(labels.nbytes(), 24u);
  EXPECT_EQ(labels.to_vector<int64_t>(), (std::vector<int64_t>{3, -1, 1LL << 40}));
  EXPECT_THROW(labels.to_vector<float>(), DTypeError);
  EXPECT_THROW(labels.requires_grad_(true), DTypeError);
  Generator gen(1);
  EXPECT_THROW(Tensor::uniform({2}, 0, 1, gen, DType::Int64), DTypeError);
  EXPECT_EQ(Tensor::from_vector(std::vector<int64_t>{42}, {1}).item(), 42.0);
}

TEST(Factories, Float64KeepsDoublePrecision) {
  const double tiny = 1.0 + 1e-12;
  Tensor t = Tensor::from_vector(std::vector<double>{tiny}, {1});
  EXPECT_EQ(t.item(), tiny);
  EXPECT_EQ(t.nbytes(), 8u);
  Tensor s = sum(Tensor::full({3}, tiny, DType::Float64));
  EXPECT_EQ(s.dtype(), DType::Float64);
  EXPECT_NEAR(s.item(), 3 * tiny, 1e-15);
  EXPECT_THROW(t.to_vector<float>(), DTypeError);
}

// --- handles, views and copies -------------------------------------------------------------

TEST(Handles, CopiesShareStorage) {
  Tensor a = Tensor::zeros({3});
  Tensor b = a;
  b.data<float>()[1] = 5;
  EXPECT_EQ(a.to_vector<float>(), (std::vector<float>{0, 5, 0}));
  EXPECT_TRUE(a.same(b));
}

TEST(Handles, ReshapeSharesStorageBothWays) {
  Tensor a = Tensor::from_vector(std::vector<float>{0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor b = a.reshape({3, 2});
  EXPECT_EQ(b.shape(), (Shape{3, 2}));
  EXPECT_EQ(b.raw(), a.raw());
  b.data<float>()[4] = 40;                 // write through the view...
  EXPECT_EQ(a.to_vector<float>()[4], 40);  // ...read through the original
  a.data<float>()[0] = -1;
  EXPECT_EQ(b.to_vector<float>()[0], -1);
}

TEST(Handles, ReshapeInfersOneDim) {
  Tensor a = Tensor::zeros({4, 6});
  EXPECT_EQ(a.reshape({-1}).shape(), (Shape{24}));
  EXPECT_EQ(a.reshape({3, -1}).shape(), (Shape{3, 8}));
  EXPECT_EQ(a.reshape({-1, 2, 3}).shape(), (Shape{4, 2, 3}));
  EXPECT_THROW(a.reshape({5, -1}), ShapeError);
  EXPECT_THROW(a.reshape({5, 5}), ShapeError);
  EXPECT_THROW(a.reshape({-1, -1}), ShapeError);
}

TEST(Handles, CloneIsIndependent) {
  Tensor a = Tensor::from_vector(std::vector<float>{1, 2, 3}, {3});
  Tensor c = a.clone();
  EXPECT_NE(c.raw(), a.raw());
  EXPECT_EQ(c.to_vector<float>(), a.to_vector<float>());
  c.data<float>()[0] = 9;
  a.data<float>()[2] = 7;
  EXPECT_EQ(a.to_vector<float>(), (std::vector<float>{1, 2, 7}));
  EXPECT_EQ(c.to_vector<float>(), (std::vector<float>{9, 2, 3}));
}

TEST(Handles, CloneKeepsTheGraph) {
  Tensor a = Tensor::ones({2}).requires_grad_();
  Tensor c = a.clone();
  EXPECT_TRUE(c.requires_grad());
  EXPECT_FALSE(c.is_leaf());
}

TEST(Handles, DetachSharesStorageWithoutHistory) {
  Tensor a = Tensor::ones({2}).requires_grad_();
  Tensor y = a * 2.0;
  Tensor d = y.detach();
  EXPECT_FALSE(d.requires_grad());
  EXPECT_TRUE(d.is_leaf());
  EXPECT_EQ(d.raw(), y.raw());
  d.data<float>()[0] = 10;
  EXPECT_EQ(y.to_vector<float>()[0], 10);
  EXPECT_FALSE(relu(d).requires_grad());
}

TEST(Handles, Item) {
  EXPECT_EQ(Tensor::full({1, 1}, 2.5).item(), 2.5);
  EXPECT_EQ(Tensor::full({}, -4, DType::Float64).item(), -4);
  EXPECT_THROW(Tensor::zeros({2}).item(), ShapeError);
}

TEST(Handles, CopyInPlace) {
  Tensor dst = Tensor::zeros({2, 2});
  Tensor alias = dst;
  dst.copy_(Tensor::from_vector(std::vector<float>{1, 2, 3, 4}, {2, 2}));
  EXPECT_EQ(alias.to_vector<float>(), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_THROW(dst.copy_(Tensor::zeros({4})), ShapeError);
  EXPECT_THROW(dst.copy_(Tensor::zeros({2, 2}, DType::Float64)), Error);
  // copy_ records no graph.
  Tensor src = Tensor::ones({2, 2}).requires_grad_();
  dst.copy_(src);
  EXPECT_FALSE(dst.requires_grad());
}

TEST(Handles, UndefinedTensor) {
  Tensor t;
  EXPECT_FALSE(t.defined());
  EXPECT_THROW(t.shape(), ValueError);
  EXPECT_TRUE(Tensor::zeros({1}).defined());
}

TEST(Handles, ToSameDeviceIsItself) {
  Tensor a = Tensor::zeros({3});
  EXPECT_TRUE(a.to(Device::cpu()).same(a));
}

TEST(Handles, ConcatRowsAndColumns) {
  Tensor a = Tensor::from_vector(std::vector<float>{1, 2, 3, 4}, {2, 2});
  Tensor rows = concat({a, Tensor::from_vector(std::vector<float>{5, 6}, {1, 2})}, 0);
  EXPECT_EQ(rows.shape(), (Shape{3, 2}));
  EXPECT_EQ(rows.to_vector<float>(), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  Tensor cols = concat({a, Tensor::from_vector(std::vector<float>{7, 8}, {2, 1})}, 1);
  EXPECT_EQ(cols.shape(), (Shape{2, 3}));
  EXPECT_EQ(cols.to_vector<float>(), (std::vector<float>{1, 2, 7, 3, 4, 8}));
  EXPECT_NE(concat({a}, 0).raw(), a.raw());  // a copy, even of one tensor
}

// A correct-prediction counter kept on the device: argmax (int64), eq of int64 tensors, and the
// per-batch masks concatenated as int64 [1, B] rows along dim 1; read back once at the end.
TEST(Handles, Int64CorrectMasksOnEveryDevice) {
  std::vector<Device> devices{Device::cpu()};
  if (cuda_is_available()) devices.push_back(Device::cuda());
  for (Device device : devices) {
    SCOPED_TRACE(device.str());
    const Tensor logits1 =
        Tensor::from_vector(std::vector<float>{0, 2, 1, 5, 0, 0, 1, 1, 3}, {3, 3}).to(device);
    const Tensor logits2 = Tensor::from_vector(std::vector<double>{1, 0, 0, 1}, {2, 2}).to(device);
    const Tensor labels1 = Tensor::from_vector(std::vector<int64_t>{1, 1, 2}, {3}).to(device);
    const Tensor labels2 = Tensor::from_vector(std::vector<int64_t>{0, 0}, {2}).to(device);
    const Tensor pred1 = argmax(logits1, 1), pred2 = argmax(logits2, 1);
    EXPECT_EQ(pred1.dtype(), DType::Int64);
    EXPECT_EQ(pred1.to(Device::cpu()).to_vector<int64_t>(), (std::vector<int64_t>{1, 0, 2}));
    const Tensor mask1 = eq(pred1, labels1), mask2 = eq(pred2, labels2);
    EXPECT_EQ(mask1.dtype(), DType::Int64);
    const Tensor masks = concat({mask1.reshape({1, 3}), mask2.reshape({1, 2})}, 1);
    EXPECT_EQ(masks.dtype(), DType::Int64);
    EXPECT_EQ(masks.shape(), (Shape{1, 5}));
    EXPECT_EQ(masks.to(Device::cpu()).to_vector<int64_t>(), (std::vector<int64_t>{1, 0, 1, 1, 0}));
    // Rows of int64 too, and eq of two int64 tensors of any values.
    const Tensor big = Tensor::from_vector(std::vector<int64_t>{int64_t{1} << 40, -7}, {1, 2});
    const Tensor stacked = concat({big.to(device), big.to(device)}, 0);
    EXPECT_EQ(stacked.to(Device::cpu()).to_vector<int64_t>(),
              (std::vector<int64_t>{int64_t{1} << 40, -7, int64_t{1} << 40, -7}));
    EXPECT_EQ(eq(stacked, stacked).to(Device::cpu()).to_vector<int64_t>(),
              (std::vector<int64_t>{1, 1, 1, 1}));
  }
}

TEST(Generator, DeriveAndBelow) {
  EXPECT_EQ(Generator::derive(1, 2, 3), Generator::derive(1, 2, 3));
  EXPECT_NE(Generator::derive(1, 2, 3), Generator::derive(1, 3, 2));
  Generator g(5);
  std::vector<int> seen(7, 0);
  for (int i = 0; i < 700; ++i) {
    const uint64_t v = g.below(7);
    ASSERT_LT(v, 7u);
    ++seen[v];
  }
  for (int count : seen)
    EXPECT_GT(count, 50);
}

namespace clarena {
namespace {

TEST(GeneratorReference, XoshiroStarStarFromRawState) {
  Generator g({1, 2, 3, 4});  // reference outputs of xoshiro256** 1.0
  EXPECT_EQ(g.next_u64(), 11520ULL);
  EXPECT_EQ(g.next_u64(), 0ULL);
  EXPECT_EQ(g.next_u64(), 1509978240ULL);
  EXPECT_EQ(g.next_u64(), 1215971899390074240ULL);
}

TEST(GeneratorReference, SeedingIsSplitMix64) {
  // SplitMix64(1234567)'s first outputs (Rosetta Code) are the state of Generator(1234567).
  Generator seeded(1234567);
  Generator raw({6457827717110365317ULL, 3203168211198807973ULL, 9817491932198370423ULL,
                 4593380528125082431ULL});
  for (int i = 0; i < 8; ++i)
    EXPECT_EQ(seeded.next_u64(), raw.next_u64());
}

TEST(GeneratorReference, BelowIsInRangeAndRefusesZero) {
  Generator g(7);
  std::vector<int> hits(3, 0);
  for (int i = 0; i < 3000; ++i)
    ++hits[static_cast<size_t>(g.below(3))];
  for (int h : hits)
    EXPECT_GT(h, 800);
  EXPECT_THROW(g.below(0), ValueError);
  EXPECT_THROW(Generator({0, 0, 0, 0}), ValueError);
}

}  // namespace
}  // namespace clarena
