// clarena::core from outside: a matmul and its gradient, checked against hand-computed values.
#include <clarena/core/ops.h>
#include <clarena/core/tensor.h>

#include <cstdio>
#include <vector>

int main() {
  using namespace clarena;
  Tensor a = Tensor::from_vector(std::vector<float>{1, 2, 3, 4}, {2, 2});
  Tensor b = Tensor::from_vector(std::vector<float>{5, 6, 7, 8}, {2, 2});
  a.requires_grad_(true);
  Tensor c = matmul(a, b);  // [[19, 22], [43, 50]]
  sum(c).backward();        // d/da sum(a b) = row sums of b, in every row: [11, 15]
  const bool ok = c.to_vector<float>() == std::vector<float>{19, 22, 43, 50} &&
                  a.grad().to_vector<float>() == std::vector<float>{11, 15, 11, 15};
  std::printf("consumer core: %s\n", ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
