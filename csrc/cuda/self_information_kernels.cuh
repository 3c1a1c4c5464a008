// Weighted self-information map I_c = -p_c log p_c / log C (SPEC section 2), same shape as the input:
// per-pixel math, kernels and launchers. Torch-free: compiles with nvcc alone.
#pragma once

#include "common.cuh"
#include "entropy_kernels.cuh"

namespace uda_ops {
namespace cuda {

template <typename acc_t, typename T>
UDA_HD void self_information_pixel(const T* __restrict__ z, int64_t cs, int64_t C, T* __restrict__ out) {
  const SoftmaxStats<acc_t> st = softmax_stats<acc_t>(z, cs, C);
  const acc_t w = -inv_log_classes<acc_t>(C);
  for (int64_t c = 0; c < C; ++c) {
    const acc_t v = load<acc_t>(z + c * cs);
    store(out + c * cs, w * mul0(st.p(v), st.logp(v)));
  }
}

// Upstream gradient G read as G[c * gcs] (gcs = cs: a full gradient in the input's layout; gcs = 0:
// an expanded scalar). With u_c = G_c (1 + log p_c): dL/dz_j = -(1 / log C)(p_j u_j - p_j sum_c p_c u_c).
template <typename acc_t, typename T, typename G>
UDA_HD void self_information_backward_pixel(const T* __restrict__ z, int64_t cs, int64_t C,
                                            const G* __restrict__ grad, int64_t gcs, T* __restrict__ gz) {
  const SoftmaxStats<acc_t> st = softmax_stats<acc_t>(z, cs, C);
  acc_t s = acc_t(0);
  for (int64_t c = 0; c < C; ++c) {
    const acc_t v = load<acc_t>(z + c * cs);
    s += mul0(st.p(v), load<acc_t>(grad + c * gcs) * (acc_t(1) + st.logp(v)));
  }
  const acc_t w = -inv_log_classes<acc_t>(C);
  for (int64_t c = 0; c < C; ++c) {
    const acc_t v = load<acc_t>(z + c * cs), p = st.p(v);
    const acc_t pu = mul0(p, load<acc_t>(grad + c * gcs) * (acc_t(1) + st.logp(v)));
    store(gz + c * cs, w * (pu - p * s));
  }
}

#if defined(__CUDACC__)
template <typename T>
__global__ void __launch_bounds__(kPixelThreads)
    self_information_forward_kernel(const T* __restrict__ z, T* __restrict__ out, PixelGeom geo) {
  UDA_GRID_STRIDE_LOOP(p, geo.pixels()) {
    const int64_t o = geo.base(p);
    self_information_pixel<acc_of<T>>(z + o, geo.inner, geo.C, out + o);
  }
}

// grad_scalar: `grad` points at one value (an expanded scalar upstream gradient), else at a gradient
// laid out like z.
template <typename T, typename G>
__global__ void __launch_bounds__(kPixelThreads)
    self_information_backward_kernel(const G* __restrict__ grad, bool grad_scalar, const T* __restrict__ z,
                                     T* __restrict__ gz, PixelGeom geo) {
  UDA_GRID_STRIDE_LOOP(p, geo.pixels()) {
    const int64_t o = geo.base(p);
    self_information_backward_pixel<acc_of<T>>(z + o, geo.inner, geo.C, grad_scalar ? grad : grad + o,
                                               grad_scalar ? 0 : geo.inner, gz + o);
  }
}

template <typename T>
cudaError_t launch_self_information_forward(const T* z, T* out, int64_t outer, int64_t C, int64_t inner,
                                            cudaStream_t stream) {
  const PixelGeom geo{outer, C, inner};
  if (geo.pixels() == 0) return cudaSuccess;
  self_information_forward_kernel<T><<<pixel_blocks(geo.pixels()), kPixelThreads, 0, stream>>>(z, out, geo);
  return cudaGetLastError();
}

// G = T (a gradient in z's layout and dtype) or acc_of<T> (with grad_scalar: one expanded value).
template <typename T, typename G>
cudaError_t launch_self_information_backward(const G* grad, bool grad_scalar, const T* z, T* gz, int64_t outer,
                                             int64_t C, int64_t inner, cudaStream_t stream) {
  const PixelGeom geo{outer, C, inner};
  if (geo.pixels() == 0) return cudaSuccess;
  self_information_backward_kernel<T, G><<<pixel_blocks(geo.pixels()), kPixelThreads, 0, stream>>>(
      grad, grad_scalar, z, gz, geo);
  return cudaGetLastError();
}
#endif  // __CUDACC__

}  // namespace cuda
}  // namespace uda_ops
