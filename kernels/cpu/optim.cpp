// CPU kernels: Fused optimizer updates (torch.optim.SGD and Adam rules), split over the thread
// pool.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "../dispatch.h"
#include "clarena/base/errors.h"
#include "cpu_backend.h"
#include "thread_pool.h"

namespace clarena::kernels::cpu {
namespace {

/// torch.optim.SGD for one parameter, with the branches hoisted out of the loop so that each
/// variant is a straight vectorisable pass.
template <typename T, bool kNesterov, bool kFirstStep>
void sgd_momentum(int64_t n, T* p, const T* g, T* buf, T lr, T wd, T mom, T one_minus_damp) {
  for (int64_t i = 0; i < n; ++i) {
    const T d = g[i] + wd * p[i];
    const T b = kFirstStep ? d : mom * buf[i] + one_minus_damp * d;
    buf[i] = b;
    p[i] -= lr * (kNesterov ? d + mom * b : b);
  }
}

/// Optimizer updates are cut into tiles of this many elements (a multiple of 16, so every tile
/// starts on a vector bound): the same tiles at any thread count, each computed alike.
constexpr int64_t kOptimTile = 1 << 15;

}  // namespace

void CpuBackend::sgd_update(DType t, int64_t n, void* param, const void* grad, void* momentum_buf,
                            const SGDParams& o) {
  dispatch_float(t, "sgd", [&]<typename T>(T*) {
    T* p = CLARENA_TYPED(param);
    const T* g = CLARENA_CTYPED(grad);
    T* buf = CLARENA_TYPED(momentum_buf);
    // 1 - dampening in double, then rounded, as torch does.
    const T lr = T(o.lr), wd = T(o.weight_decay), mom = T(o.momentum), damp = T(1 - o.dampening);
    parallel_tiles(n, kOptimTile, [&](int64_t lo, int64_t hi) {
      const int64_t len = hi - lo;
      T *pp = p + lo, *bb = buf ? buf + lo : nullptr;
      const T* gg = g + lo;
      if (mom == T(0)) {
        for (int64_t i = 0; i < len; ++i)
          pp[i] -= lr * (gg[i] + wd * pp[i]);
      } else if (o.first_step) {
        (o.nesterov ? sgd_momentum<T, true, true>
                    : sgd_momentum<T, false, true>)(len, pp, gg, bb, lr, wd, mom, damp);
      } else {
        (o.nesterov ? sgd_momentum<T, true, false>
                    : sgd_momentum<T, false, false>)(len, pp, gg, bb, lr, wd, mom, damp);
      }
    });
  });
}

void CpuBackend::adam_update(DType t, int64_t n, void* param, const void* grad, void* exp_avg,
                             void* exp_avg_sq, const AdamParams& o) {
  dispatch_float(t, "adam", [&]<typename T>(T*) {
    T* p = CLARENA_TYPED(param);
    const T* g = CLARENA_CTYPED(grad);
    T* m = CLARENA_TYPED(exp_avg);
    T* v = CLARENA_TYPED(exp_avg_sq);
    // 1 - beta in double, then rounded, as torch does (for beta2 = 0.9999, 1 - float(beta2) is
    // 8e-5 off, relative).
    const T b1 = T(o.beta1), b2 = T(o.beta2), one_minus_b1 = T(1 - o.beta1),
            one_minus_b2 = T(1 - o.beta2), wd = T(o.weight_decay);
    if (!o.step) throw ValueError("adam: no step count given (AdamParams::step is null)");
    const double steps = *o.step;
    if (!(steps >= 1)) throw ValueError("adam: step must be >= 1, got " + std::to_string(steps));
    const T bc2_sqrt = T(std::sqrt(1 - std::pow(o.beta2, steps)));
    const T step_size = T(o.lr / (1 - std::pow(o.beta1, steps))), eps = T(o.eps);
    parallel_tiles(n, kOptimTile, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        const T d = g[i] + wd * p[i];
        m[i] = b1 * m[i] + one_minus_b1 * d;
        v[i] = b2 * v[i] + one_minus_b2 * d * d;
        p[i] -= step_size * m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps);
      }
    });
  });
}

}  // namespace clarena::kernels::cpu
