#include <gtest/gtest.h>
#include "clarena/clarena.h"
using namespace clarena;
TEST(Tensor, Smoke) {
  Tensor a = Tensor::ones({2, 3});
  EXPECT_EQ(a.numel(), 6);
}
