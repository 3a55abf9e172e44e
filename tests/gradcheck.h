// A float64 gradient checker in the manner of torch.autograd.gradcheck.
//
// For a function f of float64 inputs it compares the analytic vector-Jacobian product
// d/dx sum(f(x) * w) (by backward with w as the output gradient, w random) against central
// differences of the same projection, element by element:
//     |analytic - numeric| <= atol + rtol * |numeric|.
// Only inputs marked in `needs` are checked; the others must come back with an undefined
// grad(). The projection is computed on the host, so the check does not rely on the ops it
// tests.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "clarena/clarena.h"

namespace gradcheck {

using clarena::Tensor;
using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

struct Options {
  double eps = 1e-6;
  double atol = 1e-5;
  double rtol = 1e-3;
  uint64_t seed = 1234;
};

/// sum(out * w) in double on the host.
inline double project(const Tensor& out, const std::vector<double>& w) {
  const std::vector<double> v = out.to_vector<double>();
  double total = 0;
  for (size_t i = 0; i < v.size(); ++i)
    total += v[i] * w[i];
  return total;
}

/// Checks f's gradients for the inputs whose `needs` flag is set (all when empty).
inline ::testing::AssertionResult check(const Fn& f, std::vector<Tensor> inputs,
                                        std::vector<bool> needs = {}, Options opt = {}) {
  namespace ag = clarena::autograd;
  if (needs.empty()) needs.assign(inputs.size(), true);
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].dtype() != clarena::DType::Float64)
      return ::testing::AssertionFailure() << "input " << i << " is not float64";
    inputs[i].zero_grad();
    inputs[i].requires_grad_(needs[i]);
  }

  // Analytic: backward with a random output gradient w.
  const int64_t saved_before = ag::stats().saved_bytes;
  std::vector<double> w;
  {
    Tensor out = f(inputs);
    if (out.dtype() != clarena::DType::Float64)
      return ::testing::AssertionFailure() << "output is " << out.str();
    if (!out.requires_grad())
      return ::testing::AssertionFailure() << "output does not require grad";
    clarena::Generator gen(opt.seed);
    Tensor weights = Tensor::normal(out.shape(), 0.0, 1.0, gen, clarena::DType::Float64);
    w = weights.to_vector<double>();
    out.backward(weights);
  }
  if (ag::stats().saved_bytes != saved_before)
    return ::testing::AssertionFailure()
           << "saved bytes not released after backward: " << ag::stats().saved_bytes << " vs "
           << saved_before;

  // Numeric: central differences of the same projection, perturbing each element in place.
  ag::NoGradGuard no_grad;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor grad = inputs[i].grad();
    if (!needs[i]) {
      if (grad.defined())
        return ::testing::AssertionFailure()
               << "input " << i << " does not require grad but got a gradient";
      continue;
    }
    if (!grad.defined())
      return ::testing::AssertionFailure() << "input " << i << " got no gradient";
    if (grad.shape() != inputs[i].shape())
      return ::testing::AssertionFailure()
             << "input " << i << ": grad " << grad.str() << " for " << inputs[i].str();
    const std::vector<double> analytic = grad.to_vector<double>();
    double* x = inputs[i].data<double>();
    for (int64_t j = 0; j < inputs[i].numel(); ++j) {
      const double keep = x[j];
      x[j] = keep + opt.eps;
      const double plus = project(f(inputs), w);
      x[j] = keep - opt.eps;
      const double minus = project(f(inputs), w);
      x[j] = keep;
      const double numeric = (plus - minus) / (2 * opt.eps);
      const double a = analytic[static_cast<size_t>(j)];
      if (!(std::abs(a - numeric) <= opt.atol + opt.rtol * std::abs(numeric)))
        return ::testing::AssertionFailure()
               << "input " << i << " " << inputs[i].str() << " element " << j << ": analytic " << a
               << " vs numeric " << numeric;
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace gradcheck
