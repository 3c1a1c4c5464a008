// Cosine discrepancy M = 1 - cos(softmax(z1), softmax(z2)) per pixel (SPEC section 3): per-pixel math
// (shared with clan_adversarial), kernels and launchers. Torch-free: compiles with nvcc alone.
#pragma once

#include "common.cuh"

namespace uda_ops {
namespace cuda {

template <typename acc_t>
struct CosineStats {
  SoftmaxStats<acc_t> s1, s2;
  acc_t cos, inv12, inv11, inv22;  // cos(p1, p2), 1/(|p1||p2|), 1/|p1|^2, 1/|p2|^2
};

template <typename acc_t, typename T>
UDA_HD CosineStats<acc_t> cosine_stats(const T* __restrict__ z1, const T* __restrict__ z2, int64_t cs,
                                       int64_t C) {
  CosineStats<acc_t> st;
  st.s1 = softmax_stats<acc_t>(z1, cs, C);
  st.s2 = softmax_stats<acc_t>(z2, cs, C);
  acc_t d12 = acc_t(0), n11 = acc_t(0), n22 = acc_t(0);
  for (int64_t c = 0; c < C; ++c) {
    const acc_t p1 = st.s1.p(load<acc_t>(z1 + c * cs)), p2 = st.s2.p(load<acc_t>(z2 + c * cs));
    d12 += p1 * p2;
    n11 += p1 * p1;
    n22 += p2 * p2;
  }
  st.inv12 = acc_t(1) / uda_sqrt(n11 * n22);  // |p|^2 >= 1/C: no eps needed
  st.cos = d12 * st.inv12;
  st.inv11 = acc_t(1) / n11;
  st.inv22 = acc_t(1) / n22;
  return st;
}

// dL/dz1_j = -gm p1_j (p2_j / (|p1||p2|) - cos p1_j / |p1|^2), symmetrically for z2; gm = dL/dM.
// (The softmax-Jacobian correction sum_c p1_c dcos/dp1_c is exactly 0 for the cosine.)
template <typename acc_t, typename T>
UDA_HD void cosine_grad_pixel(const T* __restrict__ z1, const T* __restrict__ z2, int64_t cs, int64_t C,
                              const CosineStats<acc_t>& st, acc_t gm, T* __restrict__ g1, T* __restrict__ g2) {
  for (int64_t c = 0; c < C; ++c) {
    const acc_t p1 = st.s1.p(load<acc_t>(z1 + c * cs)), p2 = st.s2.p(load<acc_t>(z2 + c * cs));
    store(g1 + c * cs, -gm * p1 * (p2 * st.inv12 - st.cos * p1 * st.inv11));
    store(g2 + c * cs, -gm * p2 * (p1 * st.inv12 - st.cos * p2 * st.inv22));
  }
}

template <typename acc_t, typename T>
UDA_HD acc_t cosine_discrepancy_pixel(const T* __restrict__ z1, const T* __restrict__ z2, int64_t cs, int64_t C) {
  return acc_t(1) - cosine_stats<acc_t>(z1, z2, cs, C).cos;
}

#if defined(__CUDACC__)
template <typename T>
__global__ void __launch_bounds__(kPixelThreads)
    cosine_discrepancy_forward_kernel(const T* __restrict__ z1, const T* __restrict__ z2,
                                      acc_of<T>* __restrict__ out, PixelGeom geo) {
  UDA_GRID_STRIDE_LOOP(p, geo.pixels()) {
    const int64_t o = geo.base(p);
    out[p] = cosine_discrepancy_pixel<acc_of<T>>(z1 + o, z2 + o, geo.inner, geo.C);
  }
}

template <typename T>
__global__ void __launch_bounds__(kPixelThreads)
    cosine_discrepancy_backward_kernel(const acc_of<T>* __restrict__ grad, int64_t grad_stride,
                                       const T* __restrict__ z1, const T* __restrict__ z2, T* __restrict__ g1,
                                       T* __restrict__ g2, PixelGeom geo) {
  using acc_t = acc_of<T>;
  UDA_GRID_STRIDE_LOOP(p, geo.pixels()) {
    const int64_t o = geo.base(p);
    const CosineStats<acc_t> st = cosine_stats<acc_t>(z1 + o, z2 + o, geo.inner, geo.C);
    cosine_grad_pixel(z1 + o, z2 + o, geo.inner, geo.C, st, grad[p * grad_stride], g1 + o, g2 + o);
  }
}

template <typename T>
cudaError_t launch_cosine_discrepancy_forward(const T* z1, const T* z2, acc_of<T>* out, int64_t outer, int64_t C,
                                              int64_t inner, cudaStream_t stream) {
  const PixelGeom geo{outer, C, inner};
  if (geo.pixels() == 0) return cudaSuccess;
  cosine_discrepancy_forward_kernel<T><<<pixel_blocks(geo.pixels()), kPixelThreads, 0, stream>>>(z1, z2, out,
                                                                                                  geo);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_cosine_discrepancy_backward(const acc_of<T>* grad, int64_t grad_stride, const T* z1,
                                               const T* z2, T* g1, T* g2, int64_t outer, int64_t C, int64_t inner,
                                               cudaStream_t stream) {
  const PixelGeom geo{outer, C, inner};
  if (geo.pixels() == 0) return cudaSuccess;
  cosine_discrepancy_backward_kernel<T><<<pixel_blocks(geo.pixels()), kPixelThreads, 0, stream>>>(
      grad, grad_stride, z1, z2, g1, g2, geo);
  return cudaGetLastError();
}
#endif  // __CUDACC__

}  // namespace cuda
}  // namespace uda_ops
