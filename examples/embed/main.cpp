// Embeds clarena: one training step of a small MLP, then checks the loss went down.
#include <clarena/clarena.h>

#include <cstdio>

int main() {
  using namespace clarena;
  Generator gen(7);
  nn::MLP model(8, {16, 4}, gen);
  Tensor x = Tensor::normal({32, 8}, 0, 1, gen);
  Tensor y = Tensor::from_vector(std::vector<int64_t>(32, 1), {32});
  optim::SGD sgd(model.parameters(), {.lr = 0.1});
  double first = 0, last = 0;
  for (int step = 0; step < 20; ++step) {
    Tensor loss = cross_entropy(model(x), y);
    if (step == 0) first = loss.item();
    last = loss.item();
    sgd.zero_grad();
    loss.backward();
    sgd.step();
  }
  std::printf("embed: loss %.4f -> %.4f\n", first, last);
  return last < first ? 0 : 1;
}
