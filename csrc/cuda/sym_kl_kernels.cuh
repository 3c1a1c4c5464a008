// Symmetric KL between two predictions (SPEC section 1): per-pixel math, kernels and launchers.
// Torch-free: compiles with nvcc alone.
#pragma once

#include "common.cuh"

namespace uda_ops {
namespace cuda {

// d = 1/2 sum_c (p_c - q_c)(a_c - b_c) for one pixel (classes cs apart).
template <typename acc_t, typename T>
UDA_HD acc_t sym_kl_pixel(const T* __restrict__ a, const T* __restrict__ b, int64_t cs, int64_t C) {
  const SoftmaxStats<acc_t> sa = softmax_stats<acc_t>(a, cs, C), sb = softmax_stats<acc_t>(b, cs, C);
  acc_t acc = acc_t(0);
  for (int64_t c = 0; c < C; ++c) {
    const acc_t x = load<acc_t>(a + c * cs), y = load<acc_t>(b + c * cs);
    acc += mul0(sa.p(x) - sb.p(y), diff0(x, y));
  }
  return acc_t(0.5) * acc;
}

// Gradients w.r.t. a and b for the upstream gradient g of the pixel's value.
template <typename acc_t, typename T>
UDA_HD void sym_kl_backward_pixel(const T* __restrict__ a, const T* __restrict__ b, int64_t cs, int64_t C,
                                  acc_t g, bool detach, T* __restrict__ ga, T* __restrict__ gb) {
  const SoftmaxStats<acc_t> sa = softmax_stats<acc_t>(a, cs, C), sb = softmax_stats<acc_t>(b, cs, C);
  const acc_t hg = acc_t(0.5) * g;
  if (detach) {  // ADR code: each direction's target held constant
    for (int64_t c = 0; c < C; ++c) {
      const acc_t d = hg * (sa.p(load<acc_t>(a + c * cs)) - sb.p(load<acc_t>(b + c * cs)));
      store(ga + c * cs, d);
      store(gb + c * cs, -d);
    }
    return;
  }
  acc_t s_a = acc_t(0), s_b = acc_t(0);
  for (int64_t c = 0; c < C; ++c) {
    const acc_t x = load<acc_t>(a + c * cs), y = load<acc_t>(b + c * cs);
    const acc_t d = diff0(x, y);
    s_a += mul0(sa.p(x), d);
    s_b -= mul0(sb.p(y), d);
  }
  for (int64_t c = 0; c < C; ++c) {
    const acc_t x = load<acc_t>(a + c * cs), y = load<acc_t>(b + c * cs);
    const acc_t d = diff0(x, y), p = sa.p(x), q = sb.p(y);
    store(ga + c * cs, hg * (mul0(p, d - s_a) + p - q));
    store(gb + c * cs, hg * (mul0(q, -d - s_b) + q - p));
  }
}

#if defined(__CUDACC__)
template <typename T>
__global__ void __launch_bounds__(kPixelThreads)
    sym_kl_forward_kernel(const T* __restrict__ a, const T* __restrict__ b, acc_of<T>* __restrict__ out,
                          PixelGeom geo) {
  UDA_GRID_STRIDE_LOOP(p, geo.pixels()) {
    const int64_t o = geo.base(p);
    out[p] = sym_kl_pixel<acc_of<T>>(a + o, b + o, geo.inner, geo.C);
  }
}

template <typename T>
__global__ void __launch_bounds__(kPixelThreads)
    sym_kl_backward_kernel(const acc_of<T>* __restrict__ grad, int64_t grad_stride, const T* __restrict__ a,
                           const T* __restrict__ b, T* __restrict__ ga, T* __restrict__ gb, PixelGeom geo,
                           bool detach) {
  UDA_GRID_STRIDE_LOOP(p, geo.pixels()) {
    const int64_t o = geo.base(p);
    sym_kl_backward_pixel<acc_of<T>>(a + o, b + o, geo.inner, geo.C, grad[p * grad_stride], detach, ga + o,
                                     gb + o);
  }
}

// Launchers: raw pointers into the canonical (outer, C, inner) view; out/grad are per pixel (P,),
// grad read as grad[p * grad_stride] (grad_stride 0: an expanded scalar). Return the launch status.
template <typename T>
cudaError_t launch_sym_kl_forward(const T* a, const T* b, acc_of<T>* out, int64_t outer, int64_t C,
                                  int64_t inner, cudaStream_t stream) {
  const PixelGeom geo{outer, C, inner};
  if (geo.pixels() == 0) return cudaSuccess;
  sym_kl_forward_kernel<T><<<pixel_blocks(geo.pixels()), kPixelThreads, 0, stream>>>(a, b, out, geo);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_sym_kl_backward(const acc_of<T>* grad, int64_t grad_stride, const T* a, const T* b, T* ga,
                                   T* gb, int64_t outer, int64_t C, int64_t inner, bool detach,
                                   cudaStream_t stream) {
  const PixelGeom geo{outer, C, inner};
  if (geo.pixels() == 0) return cudaSuccess;
  sym_kl_backward_kernel<T><<<pixel_blocks(geo.pixels()), kPixelThreads, 0, stream>>>(
      grad, grad_stride, a, b, ga, gb, geo, detach);
  return cudaGetLastError();
}
#endif  // __CUDACC__

}  // namespace cuda
}  // namespace uda_ops
