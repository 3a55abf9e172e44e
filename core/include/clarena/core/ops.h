// The differentiable ops. Each is written once (core/src/ops_*.cpp): forward and backward side
// by side, dispatched to the backend of the inputs' device. Results record a graph node only
// when grad mode is on and some input requires grad.
#pragma once

#include <array>
#include <vector>

#include "clarena/core/tensor.h"

namespace clarena {

// --- element-wise, with a [N] (or [1, N]) row broadcast over a [B, N] operand ---------------
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, double scalar);
Tensor relu(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor exp(const Tensor& x);
/// x * x; the backward is 2x * grad.
Tensor square(const Tensor& x);

inline Tensor operator+(const Tensor& a, const Tensor& b) {
  return add(a, b);
}
inline Tensor operator-(const Tensor& a, const Tensor& b) {
  return sub(a, b);
}
inline Tensor operator*(const Tensor& a, const Tensor& b) {
  return mul(a, b);
}
inline Tensor operator*(const Tensor& a, double s) {
  return mul(a, s);
}
inline Tensor operator*(double s, const Tensor& a) {
  return mul(a, s);
}

// --- products --------------------------------------------------------------------------
/// 2-D product op(a) op(b), op = transpose when asked.
Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a = false, bool transpose_b = false);
/// x [B, in] · weightᵀ + bias, with PyTorch's weight layout [out, in]; bias [out] optional.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
/// relu(linear(x, weight, bias)) in one node: the bias and ReLU ride one pass over the output.
Tensor linear_relu(const Tensor& x, const Tensor& weight, const Tensor& bias);

/// Concatenates 2-D tensors along dim 0 (rows) or 1 (columns).
Tensor concat(const std::vector<Tensor>& tensors, int64_t dim);
/// Rows (dim 0) or columns (dim 1) [start, start + length) of a 2-D tensor, as a new tensor;
/// the gradient flows back into that block (torch.narrow, copied).
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);

// --- reductions --------------------------------------------------------------------------
Tensor sum(const Tensor& x);               // all elements → shape []
Tensor sum(const Tensor& x, int64_t dim);  // removes `dim` (negative counts from the end)
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, int64_t dim);
/// The element-wise sum of tensors of one shape, added in order (e.g. one penalty term per
/// parameter); throws ValueError when the list is empty.
Tensor sum(const std::vector<Tensor>& tensors);

// --- classification ----------------------------------------------------------------------
/// Log-softmax of x / temperature along the last dimension (temperature > 0).
Tensor log_softmax(const Tensor& x, double temperature = 1.0);
/// Softmax of x / temperature along the last dimension: exp(log_softmax(x, temperature)).
Tensor softmax(const Tensor& x, double temperature = 1.0);
/// Mean over the batch of -log softmax(logits)[label]; logits [B, C], labels int64 [B].
Tensor cross_entropy(const Tensor& logits, const Tensor& labels);

/// Batch normalisation per channel: over the rows of [B, C] (PyTorch's BatchNorm1d) or over
/// N·H·W of [N, C, H, W] (BatchNorm2d). Training: batch statistics, updates
/// running_mean/var in place (unbiased variance); eval: running statistics.
Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                  const Tensor& running_mean, const Tensor& running_var, bool training,
                  double momentum = 0.1, double eps = 1e-5);

// --- images, NCHW ----------------------------------------------------------------------
using Pair = std::array<int64_t, 2>;  // (height, width)
struct Conv2dOptions {
  Pair stride{1, 1}, padding{0, 0}, dilation{1, 1};
  int64_t groups = 1;
};
/// torch.nn.functional.conv2d: x [N, C_in, H, W], weight [C_out, C_in / groups, kH, kW],
/// bias [C_out] or undefined; zero padding. The backward computes only what needs a gradient.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
              const Conv2dOptions& options = {});
/// Max pooling over kernel windows (stride {0, 0}: the kernel; padding counts as -inf); the
/// gradient goes to the first maximum of each window, as PyTorch's does.
Tensor max_pool2d(const Tensor& x, Pair kernel, Pair stride = {0, 0}, Pair padding = {0, 0});
/// Average pooling, padding counted in the divisor (PyTorch's count_include_pad=True).
Tensor avg_pool2d(const Tensor& x, Pair kernel, Pair stride = {0, 0}, Pair padding = {0, 0});
/// Adaptive average pooling; output_size {1, 1} (the mean over H and W) is what is supported.
Tensor adaptive_avg_pool2d(const Tensor& x, Pair output_size);
/// Merges dimensions start_dim.. into one: [N, C, H, W] → [N, C·H·W] (a view, as reshape).
Tensor flatten(const Tensor& x, int64_t start_dim = 1);

// --- not differentiable ----------------------------------------------------------------
Tensor argmax(const Tensor& x, int64_t dim);  // int64, `dim` removed
Tensor eq(const Tensor& a, const Tensor& b);  // int64 0/1, same shape
int64_t count_correct(const Tensor& logits, const Tensor& labels);
double accuracy(const Tensor& logits, const Tensor& labels);  // in [0, 1]

}  // namespace clarena
