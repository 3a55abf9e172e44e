// The model and training step the benchmarks time: an MLP backbone with a linear head, in
// three modes. Shared by bench_step and bench_kernels so both time exactly the same shapes.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "clarena/clarena.h"

namespace clarena::bench {

enum class Mode { Trainable, Frozen, ForwardOnly };
inline const char* mode_name(Mode m) {
  return m == Mode::Trainable ? "trainable" : m == Mode::Frozen ? "frozen" : "forward_only";
}

struct ModelShape {
  std::string name;
  int64_t input;
  std::vector<int64_t> hidden;
  int64_t classes;
};

inline std::vector<ModelShape> model_shapes() {
  return {{"default", 784, {256, 256}, 10},
          {"deep", 784, std::vector<int64_t>(8, 256), 10},
          {"wide", 1024, {4096, 4096}, 100}};
}

/// FLOPs of the GEMMs one step executes: forward always; backward per mode (the first layer
/// never needs an input gradient; a frozen backbone needs only the head's weight gradient).
inline double step_flops(const ModelShape& s, int64_t batch, Mode mode) {
  std::vector<int64_t> dims{s.input};
  dims.insert(dims.end(), s.hidden.begin(), s.hidden.end());
  dims.push_back(s.classes);
  double forward = 0, backward = 0;
  for (size_t l = 0; l + 1 < dims.size(); ++l) {
    const double gemm = 2.0 * batch * dims[l] * dims[l + 1];
    const bool head = l + 2 == dims.size();
    forward += gemm;
    if (mode == Mode::Trainable) backward += gemm * (l == 0 ? 1 : 2);
    if (mode == Mode::Frozen && head) backward += gemm;
  }
  return forward + backward;
}

/// One model, one fixed batch, one optimizer: `step()` is a whole training step.
class StepModel {
 public:
  StepModel(const ModelShape& s, int64_t batch, Mode mode, Device device, uint64_t seed = 0)
      : mode_(mode) {
    Generator gen(seed);
    backbone_ = std::make_shared<nn::MLP>(s.input, s.hidden, gen);
    head_ = std::make_shared<nn::Linear>(s.hidden.back(), s.classes, gen);
    backbone_->to(device);
    head_->to(device);
    x_ = Tensor::normal({batch, s.input}, 0, 1, gen, DType::Float32, device);
    std::vector<int64_t> labels(static_cast<size_t>(batch));
    for (auto& y : labels)
      y = static_cast<int64_t>(gen.below(static_cast<uint64_t>(s.classes)));
    y_ = Tensor::from_vector(labels, {batch}, device);
    std::vector<Tensor> params = head_->parameters();
    if (mode == Mode::Frozen) {
      backbone_->requires_grad_(false);
      backbone_->eval();
    } else {
      for (const Tensor& p : backbone_->parameters())
        params.push_back(p);
    }
    sgd_ = std::make_unique<optim::SGD>(params, optim::SGDOptions{.lr = 0.01, .momentum = 0.9});
  }

  /// Forward, loss, backward, optimizer step, zero grad; returns the loss tensor.
  Tensor step(double* backward_seconds = nullptr);

 private:
  Mode mode_;
  std::shared_ptr<nn::MLP> backbone_;
  std::shared_ptr<nn::Linear> head_;
  Tensor x_, y_;
  std::unique_ptr<optim::SGD> sgd_;
};

}  // namespace clarena::bench
