// Optimizer updates fused into one element-wise pass over a parameter.
//
// SGD follows torch.optim.SGD (foreach=False): d = g + wd*p; with momentum, buf = d on the first
// step, else buf = momentum*buf + (1 - dampening)*d; d = nesterov ? d + momentum*buf : buf;
// p -= lr*d. Adam follows torch.optim.Adam (L2 weight decay, not AdamW): d = g + wd*p;
// m = b1*m + (1-b1)*d; v = b2*v + (1-b2)*d^2; p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps) with
// bc_i = 1 - beta_i^step. The bias corrections are computed on the host in double.
#include "common.cuh"

namespace clarena::kernels::cuda {
namespace {

template <typename T, bool kMomentum, bool kFirst, bool kNesterov>
__global__ void sgd_kernel(int64_t n, T* __restrict__ p, const T* __restrict__ g,
                           T* __restrict__ buf, T lr, T wd, T mom, T damp) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const T pv = p[i];
    T d = g[i] + wd * pv;
    if constexpr (kMomentum) {
      T b;
      if constexpr (kFirst) {
        b = d;
      } else {
        b = mom * buf[i] + (T(1) - damp) * d;
      }
      buf[i] = b;
      d = kNesterov ? d + mom * b : b;
    }
    p[i] = pv - lr * d;
  }
}

template <typename T>
__global__ void adam_kernel(int64_t n, T* __restrict__ p, const T* __restrict__ g,
                            T* __restrict__ m, T* __restrict__ v, T b1, T b2, T wd, T step_size,
                            T bc2_sqrt, T eps) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const T pv = p[i];
    const T d = g[i] + wd * pv;
    const T mi = b1 * m[i] + (T(1) - b1) * d;
    const T vi = b2 * v[i] + (T(1) - b2) * d * d;
    m[i] = mi;
    v[i] = vi;
    p[i] = pv - step_size * mi / (dsqrt(vi) / bc2_sqrt + eps);
  }
}

template <typename T, bool kMomentum, bool kFirst, bool kNesterov>
void sgd_launch(const Ctx& ctx, int64_t n, T* p, const T* g, T* buf, const SGDParams& o) {
  sgd_kernel<T, kMomentum, kFirst, kNesterov><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(
      n, p, g, buf, static_cast<T>(o.lr), static_cast<T>(o.weight_decay),
      static_cast<T>(o.momentum), static_cast<T>(o.dampening));
}

}  // namespace

void sgd_update(const Ctx& ctx, DType t, int64_t n, void* param, const void* grad,
                void* momentum_buf, const SGDParams& o) {
  if (n <= 0) return;
  const bool momentum = o.momentum != 0.0;
  if (momentum && !momentum_buf)
    throw ValueError("sgd (cuda): momentum " + std::to_string(o.momentum) +
                     " needs a momentum buffer, got null");
  dispatch_float(t, "sgd", [&]<typename T>(T*) {
    T* p = static_cast<T*>(param);
    const T* g = static_cast<const T*>(grad);
    T* b = static_cast<T*>(momentum_buf);
    if (!momentum)
      sgd_launch<T, false, false, false>(ctx, n, p, g, b, o);
    else if (o.first_step && o.nesterov)
      sgd_launch<T, true, true, true>(ctx, n, p, g, b, o);
    else if (o.first_step)
      sgd_launch<T, true, true, false>(ctx, n, p, g, b, o);
    else if (o.nesterov)
      sgd_launch<T, true, false, true>(ctx, n, p, g, b, o);
    else
      sgd_launch<T, true, false, false>(ctx, n, p, g, b, o);
  });
  after_launch(ctx);
}

void adam_update(const Ctx& ctx, DType t, int64_t n, void* param, const void* grad, void* exp_avg,
                 void* exp_avg_sq, const AdamParams& o) {
  if (n <= 0) return;
  if (o.step < 1) throw ValueError("adam (cuda): step must be >= 1, got " + std::to_string(o.step));
  const double bc1 = 1.0 - std::pow(o.beta1, static_cast<double>(o.step));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(o.beta2, static_cast<double>(o.step)));
  dispatch_float(t, "adam", [&]<typename T>(T*) {
    // Like the CPU backend: the corrections are rounded to T first, then divided in T.
    const T step_size = static_cast<T>(o.lr) / static_cast<T>(bc1);
    adam_kernel<T><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(
        n, static_cast<T*>(param), static_cast<const T*>(grad), static_cast<T*>(exp_avg),
        static_cast<T*>(exp_avg_sq), static_cast<T>(o.beta1), static_cast<T>(o.beta2),
        static_cast<T>(o.weight_decay), step_size, static_cast<T>(bc2_sqrt), static_cast<T>(o.eps));
  });
  after_launch(ctx);
}

}  // namespace clarena::kernels::cuda
