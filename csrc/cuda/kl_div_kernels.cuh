// Directed KL(softmax(target) || softmax(input)) on logits (SPEC section 1): per-pixel math, kernels
// and launchers. Torch-free: compiles with nvcc alone.
#pragma once

#include "common.cuh"

namespace uda_ops {
namespace cuda {

// sum_c q_c (log q_c - log p_c), p = softmax(x) (input), q = softmax(y) (target).
template <typename acc_t, typename T>
UDA_HD acc_t kl_div_pixel_stats(const T* __restrict__ x, const T* __restrict__ y, int64_t cs, int64_t C,
                                const SoftmaxStats<acc_t>& sx, const SoftmaxStats<acc_t>& sy) {
  acc_t kl = acc_t(0);
  for (int64_t c = 0; c < C; ++c) {
    const acc_t xv = load<acc_t>(x + c * cs), yv = load<acc_t>(y + c * cs);
    kl += mul0(sy.p(yv), diff0(sy.logp(yv), sx.logp(xv)));
  }
  return kl;
}

template <typename acc_t, typename T>
UDA_HD acc_t kl_div_pixel(const T* __restrict__ x, const T* __restrict__ y, int64_t cs, int64_t C) {
  const SoftmaxStats<acc_t> sx = softmax_stats<acc_t>(x, cs, C), sy = softmax_stats<acc_t>(y, cs, C);
  return kl_div_pixel_stats(x, y, cs, C, sx, sy);
}

// d/dinput = g (p - q); when gy != nullptr also d/dtarget_j = g q_j ((log q_j - log p_j) - KL).
template <typename acc_t, typename T>
UDA_HD void kl_div_backward_pixel(const T* __restrict__ x, const T* __restrict__ y, int64_t cs, int64_t C,
                                  acc_t g, T* __restrict__ gx, T* __restrict__ gy) {
  const SoftmaxStats<acc_t> sx = softmax_stats<acc_t>(x, cs, C), sy = softmax_stats<acc_t>(y, cs, C);
  const acc_t kl = gy != nullptr ? kl_div_pixel_stats(x, y, cs, C, sx, sy) : acc_t(0);
  for (int64_t c = 0; c < C; ++c) {
    const acc_t xv = load<acc_t>(x + c * cs), yv = load<acc_t>(y + c * cs);
    const acc_t q = sy.p(yv);
    store(gx + c * cs, g * (sx.p(xv) - q));
    if (gy != nullptr) store(gy + c * cs, g * mul0(q, diff0(sy.logp(yv), sx.logp(xv)) - kl));
  }
}

#if defined(__CUDACC__)
template <typename T>
__global__ void __launch_bounds__(kPixelThreads)
    kl_div_forward_kernel(const T* __restrict__ x, const T* __restrict__ y, acc_of<T>* __restrict__ out,
                          PixelGeom geo) {
  UDA_GRID_STRIDE_LOOP(p, geo.pixels()) {
    const int64_t o = geo.base(p);
    out[p] = kl_div_pixel<acc_of<T>>(x + o, y + o, geo.inner, geo.C);
  }
}

template <typename T>
__global__ void __launch_bounds__(kPixelThreads)
    kl_div_backward_kernel(const acc_of<T>* __restrict__ grad, int64_t grad_stride, const T* __restrict__ x,
                           const T* __restrict__ y, T* __restrict__ gx, T* __restrict__ gy, PixelGeom geo) {
  UDA_GRID_STRIDE_LOOP(p, geo.pixels()) {
    const int64_t o = geo.base(p);
    kl_div_backward_pixel<acc_of<T>>(x + o, y + o, geo.inner, geo.C, grad[p * grad_stride], gx + o,
                                     gy != nullptr ? gy + o : nullptr);
  }
}

template <typename T>
cudaError_t launch_kl_div_forward(const T* x, const T* y, acc_of<T>* out, int64_t outer, int64_t C,
                                  int64_t inner, cudaStream_t stream) {
  const PixelGeom geo{outer, C, inner};
  if (geo.pixels() == 0) return cudaSuccess;
  kl_div_forward_kernel<T><<<pixel_blocks(geo.pixels()), kPixelThreads, 0, stream>>>(x, y, out, geo);
  return cudaGetLastError();
}

// gy == nullptr: the target gradient is not needed (not computed, not written).
template <typename T>
cudaError_t launch_kl_div_backward(const acc_of<T>* grad, int64_t grad_stride, const T* x, const T* y, T* gx,
                                   T* gy, int64_t outer, int64_t C, int64_t inner, cudaStream_t stream) {
  const PixelGeom geo{outer, C, inner};
  if (geo.pixels() == 0) return cudaSuccess;
  kl_div_backward_kernel<T><<<pixel_blocks(geo.pixels()), kPixelThreads, 0, stream>>>(grad, grad_stride, x, y,
                                                                                        gx, gy, geo);
  return cudaGetLastError();
}
#endif  // __CUDACC__

}  // namespace cuda
}  // namespace uda_ops
