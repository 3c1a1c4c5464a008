// Normalised entropy map E = -sum_c p_c log p_c / log C (SPEC section 2): per-pixel math, kernels and
// launchers. Torch-free: compiles with nvcc alone.
#pragma once

#include "common.cuh"

namespace uda_ops {
namespace cuda {

// h = -sum_c p_c log p_c (natural log, not normalised).
template <typename acc_t, typename T>
UDA_HD acc_t entropy_nats(const T* __restrict__ z, int64_t cs, int64_t C, const SoftmaxStats<acc_t>& st) {
  acc_t h = acc_t(0);
  for (int64_t c = 0; c < C; ++c) {
    const acc_t v = load<acc_t>(z + c * cs);
    h -= mul0(st.p(v), st.logp(v));
  }
  return h;
}

template <typename acc_t>
UDA_HD acc_t inv_log_classes(int64_t C) {
  return acc_t(1) / uda_log(static_cast<acc_t>(C));
}

template <typename acc_t, typename T>
UDA_HD acc_t entropy_pixel(const T* __restrict__ z, int64_t cs, int64_t C) {
  const SoftmaxStats<acc_t> st = softmax_stats<acc_t>(z, cs, C);
  return entropy_nats(z, cs, C, st) * inv_log_classes<acc_t>(C);
}

// dE/dz_j = -(g p_j / log C)(log p_j + h).
template <typename acc_t, typename T>
UDA_HD void entropy_backward_pixel(const T* __restrict__ z, int64_t cs, int64_t C, acc_t g, T* __restrict__ gz) {
  const SoftmaxStats<acc_t> st = softmax_stats<acc_t>(z, cs, C);
  const acc_t h = entropy_nats(z, cs, C, st);
  const acc_t w = -g * inv_log_classes<acc_t>(C);
  for (int64_t c = 0; c < C; ++c) {
    const acc_t v = load<acc_t>(z + c * cs);
    store(gz + c * cs, w * mul0(st.p(v), st.logp(v) + h));
  }
}

#if defined(__CUDACC__)
template <typename T>
__global__ void __launch_bounds__(kPixelThreads)
    entropy_forward_kernel(const T* __restrict__ z, acc_of<T>* __restrict__ out, PixelGeom geo) {
  UDA_GRID_STRIDE_LOOP(p, geo.pixels()) {
    out[p] = entropy_pixel<acc_of<T>>(z + geo.base(p), geo.inner, geo.C);
  }
}

template <typename T>
__global__ void __launch_bounds__(kPixelThreads)
    entropy_backward_kernel(const acc_of<T>* __restrict__ grad, int64_t grad_stride, const T* __restrict__ z,
                            T* __restrict__ gz, PixelGeom geo) {
  UDA_GRID_STRIDE_LOOP(p, geo.pixels()) {
    const int64_t o = geo.base(p);
    entropy_backward_pixel<acc_of<T>>(z + o, geo.inner, geo.C, grad[p * grad_stride], gz + o);
  }
}

template <typename T>
cudaError_t launch_entropy_forward(const T* z, acc_of<T>* out, int64_t outer, int64_t C, int64_t inner,
                                   cudaStream_t stream) {
  const PixelGeom geo{outer, C, inner};
  if (geo.pixels() == 0) return cudaSuccess;
  entropy_forward_kernel<T><<<pixel_blocks(geo.pixels()), kPixelThreads, 0, stream>>>(z, out, geo);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_entropy_backward(const acc_of<T>* grad, int64_t grad_stride, const T* z, T* gz, int64_t outer,
                                    int64_t C, int64_t inner, cudaStream_t stream) {
  const PixelGeom geo{outer, C, inner};
  if (geo.pixels() == 0) return cudaSuccess;
  entropy_backward_kernel<T><<<pixel_blocks(geo.pixels()), kPixelThreads, 0, stream>>>(grad, grad_stride, z, gz,
                                                                                         geo);
  return cudaGetLastError();
}
#endif  // __CUDACC__

}  // namespace cuda
}  // namespace uda_ops
