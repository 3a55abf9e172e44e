// A small demo: trains the MLP 784→256→256 with a linear head on random data and prints the
// loss falling. The main job of the project is `clarena train` (cl/); this shows the engine.
#include <chrono>
#include <cstdio>

#include "clarena/clarena.h"

int main() {
  using namespace clarena;
  Generator gen(0);
  nn::MLP backbone(784, {256, 256}, gen);
  nn::Linear head(256, 10, gen);
  // A fixed random batch with random labels: the model can memorise it, so the loss falls.
  Tensor x = Tensor::normal({128, 784}, 0, 1, gen);
  std::vector<int64_t> labels(128);
  for (auto& y : labels)
    y = static_cast<int64_t>(gen.below(10));
  Tensor y = Tensor::from_vector(labels, {128});

  std::vector<Tensor> params = backbone.parameters();
  for (const Tensor& p : head.parameters())
    params.push_back(p);
  optim::SGD sgd(params, {.lr = 0.05, .momentum = 0.9});
  auto start = std::chrono::steady_clock::now();
  for (int step = 0; step <= 100; ++step) {
    Tensor loss = cross_entropy(head(backbone(x)), y);
    sgd.zero_grad();
    loss.backward();
    sgd.step();
    if (step % 10 == 0) std::printf("step %3d  loss %.4f\n", step, loss.item());
  }
  double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::printf("101 steps in %.1f ms\n", ms);
}
