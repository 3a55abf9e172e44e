// clarena::nn from outside: an MLP learns a fixed batch with SGD, in float32 and float64.
#include <clarena/clarena.h>

#include <cstdio>
#include <vector>

int main() {
  using namespace clarena;
  bool ok = true;
  for (DType dtype : {DType::Float32, DType::Float64}) {
    Generator gen(7);
    nn::MLP model(8, {16, 4}, gen);
    model.to(dtype);
    Tensor x = Tensor::normal({32, 8}, 0, 1, gen, dtype);
    Tensor y = Tensor::from_vector(std::vector<int64_t>(32, 1), {32});
    optim::SGD sgd(model.parameters(), {.lr = 0.1});
    double first = 0, last = 0;
    for (int step = 0; step < 20; ++step) {
      Tensor loss = cross_entropy(model(x), y);
      (step == 0 ? first : last) = loss.item();
      sgd.zero_grad();
      loss.backward();
      sgd.step();
    }
    std::printf("consumer nn (%s): loss %.4f -> %.4f\n", dtype_name(dtype), first, last);
    ok = ok && last < 0.5 * first && accuracy(model(x), y) == 1.0;
  }
  return ok ? 0 : 1;
}
