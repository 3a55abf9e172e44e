// Optimizer updates fused into one element-wise pass over a parameter, over 16-byte packs when
// every buffer is aligned.
//
// SGD follows torch.optim.SGD (foreach=False): d = g + wd*p; with momentum, buf = d on the first
// step, else buf = momentum*buf + (1 - dampening)*d; d = nesterov ? d + momentum*buf : buf;
// p -= lr*d. Adam follows torch.optim.Adam (L2 weight decay, not AdamW): d = g + wd*p;
// m = b1*m + (1-b1)*d; v = b2*v + (1-b2)*d^2; p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps) with
// bc_i = 1 - beta_i^step. As on the CPU (kernels/cpu/optim.cpp), 1 - dampening, 1 - beta1,
// 1 - beta2, lr/bc1 and sqrt(bc2) are computed in double on the host and then rounded to the
// element type (1 - float(0.9999) is 8e-5 off, relative).
#include "common.cuh"
#include "cuda_backend.cuh"

namespace clarena::kernels::cuda {
namespace {

template <typename T>
struct SgdScalars {
  T lr, wd, mom, one_minus_damp;
};

template <typename T, bool kMomentum, bool kFirst, bool kNesterov>
__device__ __forceinline__ void sgd_one(T& p, T g, T& buf, const SgdScalars<T>& s) {
  const T d = g + s.wd * p;
  if constexpr (kMomentum) {
    T b;
    if constexpr (kFirst) {
      b = d;
    } else {
      b = s.mom * buf + s.one_minus_damp * d;
    }
    buf = b;
    p -= s.lr * (kNesterov ? d + s.mom * b : b);
  } else {
    p -= s.lr * d;
  }
}

template <bool kVector, typename T, bool kMomentum, bool kFirst, bool kNesterov>
__global__ void CLARENA_BOUNDS(kBlock)
    sgd_kernel(int64_t n, T* __restrict__ p, const T* __restrict__ g, T* __restrict__ buf,
               SgdScalars<T> s) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  const int64_t first = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  int64_t tail = 0;
  if constexpr (kVector) {
    constexpr int V = kVec<T>;
    const int64_t packs = n / V;
    for (int64_t k = first; k < packs; k += stride) {
      Packed<T> pv = load_packed(p + k * V);
      const Packed<T> gv = load_packed(g + k * V);
      Packed<T> bv;
      if constexpr (kMomentum && !kFirst) bv = load_packed(buf + k * V);
#pragma unroll
      for (int e = 0; e < V; ++e)
        sgd_one<T, kMomentum, kFirst, kNesterov>(pv.v[e], gv.v[e], bv.v[e], s);
      store_packed(p + k * V, pv);
      if constexpr (kMomentum) store_packed(buf + k * V, bv);
    }
    tail = packs * V;
  }
  for (int64_t i = tail + first; i < n; i += stride) {
    T pv = p[i];
    T bv = T(0);
    if constexpr (kMomentum && !kFirst) bv = buf[i];
    sgd_one<T, kMomentum, kFirst, kNesterov>(pv, g[i], bv, s);
    p[i] = pv;
    if constexpr (kMomentum) buf[i] = bv;
  }
}

template <typename T>
struct AdamScalars {
  T b1, b2, one_minus_b1, one_minus_b2, wd, step_size, bc2_sqrt, eps;
};

/// What the bias corrections are made of: the step count is read on the device, so the launch
/// carries nothing that changes from step to step (a captured step replays correctly).
struct AdamStep {
  const double* step;  // 1-based, advanced before the launch
  double lr, beta1, beta2;
};

template <typename T>
__device__ __forceinline__ void adam_one(T& p, T g, T& m, T& v, const AdamScalars<T>& s) {
  const T d = g + s.wd * p;
  m = s.b1 * m + s.one_minus_b1 * d;
  v = s.b2 * v + s.one_minus_b2 * d * d;
  p -= s.step_size * m / (dsqrt(v) / s.bc2_sqrt + s.eps);
}

template <bool kVector, typename T>
__global__ void CLARENA_BOUNDS(kBlock)
    adam_kernel(int64_t n, T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m,
                T* __restrict__ v, AdamScalars<T> s, AdamStep at) {
  // One thread per block forms the corrections in double, as the CPU does.
  __shared__ T step_size, bc2_sqrt;
  if (threadIdx.x == 0) {
    const double t = *at.step;
    step_size = static_cast<T>(at.lr / (1.0 - pow(at.beta1, t)));
    bc2_sqrt = static_cast<T>(sqrt(1.0 - pow(at.beta2, t)));
  }
  __syncthreads();
  s.step_size = step_size;
  s.bc2_sqrt = bc2_sqrt;
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  const int64_t first = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  int64_t tail = 0;
  if constexpr (kVector) {
    constexpr int V = kVec<T>;
    const int64_t packs = n / V;
    for (int64_t k = first; k < packs; k += stride) {
      Packed<T> pv = load_packed(p + k * V), mv = load_packed(m + k * V),
                vv = load_packed(v + k * V);
      const Packed<T> gv = load_packed(g + k * V);
#pragma unroll
      for (int e = 0; e < V; ++e)
        adam_one(pv.v[e], gv.v[e], mv.v[e], vv.v[e], s);
      store_packed(p + k * V, pv);
      store_packed(m + k * V, mv);
      store_packed(v + k * V, vv);
    }
    tail = packs * V;
  }
  for (int64_t i = tail + first; i < n; i += stride) {
    T pv = p[i], mv = m[i], vv = v[i];
    adam_one(pv, g[i], mv, vv, s);
    p[i] = pv;
    m[i] = mv;
    v[i] = vv;
  }
}

template <typename T, bool kMomentum, bool kFirst, bool kNesterov>
void sgd_launch(const Ctx& ctx, int64_t n, T* p, const T* g, T* buf, const SgdScalars<T>& s) {
  const bool vec = all_aligned16(p, g) && (!kMomentum || aligned16(buf));
  if (vec)
    sgd_kernel<true, T, kMomentum, kFirst, kNesterov>
        <<<grid_for(ctx, (n + kVec<T> - 1) / kVec<T>), kBlock, 0, ctx.stream>>>(n, p, g, buf, s);
  else
    sgd_kernel<false, T, kMomentum, kFirst, kNesterov>
        <<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(n, p, g, buf, s);
}

}  // namespace

void CudaBackend::sgd_update(DType t, int64_t n, void* param, const void* grad, void* momentum_buf,
                             const SGDParams& o) {
  Lock lock(*this);
  const Ctx& ctx = ctx_;
  if (n <= 0) return;
  dispatch_float(t, "sgd", [&]<typename T>(T*) {
    const SgdScalars<T> s{static_cast<T>(o.lr), static_cast<T>(o.weight_decay),
                          static_cast<T>(o.momentum), static_cast<T>(1.0 - o.dampening)};
    const bool momentum = s.mom != T(0);  // as the CPU decides, on the rounded value
    if (momentum && !momentum_buf)
      throw ValueError("sgd (cuda): momentum " + std::to_string(o.momentum) +
                       " needs a momentum buffer, got null");
    T* p = static_cast<T*>(param);
    const T* g = static_cast<const T*>(grad);
    T* b = static_cast<T*>(momentum_buf);
    if (!momentum)
      sgd_launch<T, false, false, false>(ctx, n, p, g, b, s);
    else if (o.first_step && o.nesterov)
      sgd_launch<T, true, true, true>(ctx, n, p, g, b, s);
    else if (o.first_step)
      sgd_launch<T, true, true, false>(ctx, n, p, g, b, s);
    else if (o.nesterov)
      sgd_launch<T, true, false, true>(ctx, n, p, g, b, s);
    else
      sgd_launch<T, true, false, false>(ctx, n, p, g, b, s);
  });
  after_launch(ctx);
}

void CudaBackend::adam_update(DType t, int64_t n, void* param, const void* grad, void* exp_avg,
                              void* exp_avg_sq, const AdamParams& o) {
  Lock lock(*this);
  const Ctx& ctx = ctx_;
  if (n <= 0) return;
  if (!o.step) throw ValueError("adam (cuda): no step count given (AdamParams::step is null)");
  const AdamStep at{o.step, o.lr, o.beta1, o.beta2};
  dispatch_float(t, "adam", [&]<typename T>(T*) {
    // step_size and bc2_sqrt are formed on the device from *o.step.
    const AdamScalars<T> s{static_cast<T>(o.beta1),
                           static_cast<T>(o.beta2),
                           static_cast<T>(1.0 - o.beta1),
                           static_cast<T>(1.0 - o.beta2),
                           static_cast<T>(o.weight_decay),
                           T(0),
                           T(1),
                           static_cast<T>(o.eps)};
    T* p = static_cast<T*>(param);
    const T* g = static_cast<const T*>(grad);
    T* m = static_cast<T*>(exp_avg);
    T* v = static_cast<T*>(exp_avg_sq);
    if (all_aligned16(p, g, m, v))
      adam_kernel<true, T><<<grid_for(ctx, (n + kVec<T> - 1) / kVec<T>), kBlock, 0, ctx.stream>>>(
          n, p, g, m, v, s, at);
    else
      adam_kernel<false, T><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(n, p, g, m, v, s, at);
  });
  after_launch(ctx);
}

}  // namespace clarena::kernels::cuda
