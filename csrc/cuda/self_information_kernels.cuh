// Weighted self-information map I_c = -p_c log p_c / log C (SPEC section 2), same shape as the input:
// per-pixel math, kernels and launchers. Torch-free: compiles with nvcc alone.
#pragma once

#include <type_traits>

#include "common.cuh"
#include "entropy_kernels.cuh"

namespace uda_ops {
namespace cuda {

template <typename acc_t, typename T, typename L = OneLane>
UDA_HD void self_information_pixel(const T* __restrict__ z, int64_t cs, int64_t C, T* __restrict__ out,
                                   const L& lanes = L()) {
  const SoftmaxStats<acc_t> st = softmax_stats<acc_t>(z, cs, C, lanes);
  const acc_t w = -inv_log_classes<acc_t>(C);
  for (int64_t c = lanes.first(); c < C; c += lanes.step()) {
    const acc_t v = load<acc_t>(z + c * cs);
    store(out + c * cs, w * mul0(st.p(v), st.logp(v)));
  }
}

// Upstream gradient G read as G[c * gcs] (gcs = cs: a full gradient in the input's layout; gcs = 0:
// an expanded scalar). With u_c = G_c (1 + log p_c): dL/dz_j = -(1 / log C)(p_j u_j - p_j sum_c p_c u_c).
template <typename acc_t, typename T, typename G, typename L = OneLane>
UDA_HD void self_information_backward_pixel(const T* __restrict__ z, int64_t cs, int64_t C,
                                            const G* __restrict__ grad, int64_t gcs, T* __restrict__ gz,
                                            const L& lanes = L()) {
  const SoftmaxStats<acc_t> st = softmax_stats<acc_t>(z, cs, C, lanes);
  acc_t s = acc_t(0);
  for (int64_t c = lanes.first(); c < C; c += lanes.step()) {
    const acc_t v = load<acc_t>(z + c * cs);
    s += mul0(st.p(v), load<acc_t>(grad + c * gcs) * (acc_t(1) + st.logp(v)));
  }
  s = lanes.sum(s);
  const acc_t w = -inv_log_classes<acc_t>(C);
  for (int64_t c = lanes.first(); c < C; c += lanes.step()) {
    const acc_t v = load<acc_t>(z + c * cs), p = st.p(v);
    const acc_t pu = mul0(p, load<acc_t>(grad + c * gcs) * (acc_t(1) + st.logp(v)));
    store(gz + c * cs, w * (pu - p * s));
  }
}

// ---- planes tiles (common.cuh): I_c = -(1 / log C) p_c log p_c with p = e / S, log p = d - log S.
template <typename T_>
struct SelfInformationForward {
  using T = T_;
  using acc_t = acc_of<T>;
  static constexpr int kSlabs = 1, V = kLanes<T>;
  const T* z;
  T* out;
  bool aligned() const { return aligned16(z) && aligned16(out); }
  UDA_HD T* staged(int j) const { return j == 0 ? out : nullptr; }  // StagedRows: the output of slab j

  template <typename S>
  UDA_HD void operator()(const PlanesGeom& g, const TilePos& tp, S* s) const {
    const int C = load_slabs(g, tp, s, z);
    const acc_t w = -inv_log_classes<acc_t>(C);
    TileSoftmax<T, 1> st;
    st.compute(C, s);
    acc_t inv[V], ls[V];
UDA_UNROLL
    for (int k = 0; k < V; ++k) inv[k] = acc_t(1) / st.sum[0][k], ls[k] = uda_log(st.sum[0][k]);
    st.exps(C, s, [&](int c, const acc_t(&)[1][V], const acc_t(&d)[1][V], const acc_t(&e)[1][V]) {
      acc_t o[V];
UDA_UNROLL
      for (int k = 0; k < V; ++k) o[k] = w * mul0(e[0][k] * inv[k], d[0][k] - ls[k]);
      s[0].store(out + tp.x, g.cs(), c, o, tp);
    });
  }
};

// kFull: the upstream gradient G is laid out like z (a second slab); else one expanded value (acc_t).
// With u_c = G_c (1 + log p_c): dL/dz_j = -(1 / log C)(p_j u_j - p_j sum_c p_c u_c).
template <typename T_, bool kFull>
struct SelfInformationBackward {
  using T = T_;
  using acc_t = acc_of<T>;
  using G = typename std::conditional<kFull, T, acc_t>::type;
  static constexpr int kSlabs = kFull ? 2 : 1, V = kLanes<T>;
  const G* grad;
  const T* z;
  T* gz;
  bool aligned() const { return aligned16(grad) && aligned16(z) && aligned16(gz); }
  UDA_HD T* staged(int j) const { return j == 0 ? gz : nullptr; }  // StagedRows: the output of slab j

  template <typename S>
  UDA_HD void operator()(const PlanesGeom& g, const TilePos& tp, S* s) const {
    const int C = load_slabs(g, tp, s, z);
    const acc_t w = -inv_log_classes<acc_t>(C);
    if constexpr (kFull) s[1].load(grad + tp.x, g.cs(), C, tp);
    TileSoftmax<T, 1> st;
    st.compute(C, s);
    acc_t inv[V], ls[V], su[V];
UDA_UNROLL
    for (int k = 0; k < V; ++k) inv[k] = acc_t(1) / st.sum[0][k], ls[k] = uda_log(st.sum[0][k]), su[k] = acc_t(0);
    // p_c u_c of every element, handed to f(c, p, pu)
    auto each_pu = [&](auto&& f) {
      st.exps(C, s, [&](int c, const acc_t(&)[1][V], const acc_t(&d)[1][V], const acc_t(&e)[1][V]) {
        acc_t G_[V], p[V], pu[V];
        if constexpr (kFull) {
          unpack<T>(s[1].at(c), G_);
        } else {
UDA_UNROLL
          for (int k = 0; k < V; ++k) G_[k] = Num<G>::load(grad[0]);
        }
UDA_UNROLL
        for (int k = 0; k < V; ++k) {
          p[k] = e[0][k] * inv[k];
          pu[k] = mul0(p[k], G_[k] * (acc_t(1) + d[0][k] - ls[k]));
        }
        f(c, p, pu);
      });
    };
    each_pu([&](int, const acc_t(&)[V], const acc_t(&pu)[V]) {
UDA_UNROLL
      for (int k = 0; k < V; ++k) su[k] += pu[k];
    });
    each_pu([&](int c, const acc_t(&p)[V], const acc_t(&pu)[V]) {
      acc_t o[V];
UDA_UNROLL
      for (int k = 0; k < V; ++k) o[k] = w * (pu[k] - p[k] * su[k]);
      s[0].store(gz + tp.x, g.cs(), c, o, tp);
    });
  }
};

#if defined(__CUDACC__)
template <typename T, int CB>
__global__ void UDA_TILE_BOUNDS self_information_forward_planes_kernel(const SelfInformationForward<T> op, const PlanesGeom g) {
  planes_kernel_body<CB>(op, g);
}

template <typename T, bool kFull, int CB>
__global__ void UDA_TILE_BOUNDS self_information_backward_planes_kernel(const SelfInformationBackward<T, kFull> op, const PlanesGeom g) {
  planes_kernel_body<CB>(op, g);
}

// Per pixel, where the tile kernels' slab exceeds shared memory: a warp per pixel in the rows layout (L =
// WarpLanes), a thread per pixel with the classes in a loop in planes (OneLane); launch_rows picks.
template <typename T, typename L>
__global__ void UDA_ROWS_BOUNDS(T)
    self_information_forward_rows_kernel(const T* __restrict__ z, T* __restrict__ out, PixelGeom geo) {
  for_each_pixel<L>(geo.pixels(), [&](int64_t p, const L& lanes) {
    const int64_t o = geo.base(p);
    self_information_pixel<acc_of<T>>(z + o, geo.inner, geo.C, out + o, lanes);
  });
}

// grad_scalar: `grad` points at one value (an expanded scalar upstream gradient), else at a gradient
// laid out like z.
template <typename T, typename G, typename L>
__global__ void UDA_ROWS_BOUNDS(T)
    self_information_backward_rows_kernel(const G* __restrict__ grad, bool grad_scalar, const T* __restrict__ z,
                                     T* __restrict__ gz, PixelGeom geo) {
  for_each_pixel<L>(geo.pixels(), [&](int64_t p, const L& lanes) {
    const int64_t o = geo.base(p);
    self_information_backward_pixel<acc_of<T>>(z + o, geo.inner, geo.C, grad_scalar ? grad : grad + o,
                                               grad_scalar ? 0 : geo.inner, gz + o, lanes);
  });
}

template <typename T>
cudaError_t launch_self_information_forward(const T* z, T* out, int64_t outer, int64_t C, int64_t inner,
                                            cudaStream_t stream) {
  const PixelGeom geo{outer, C, inner};
  if (geo.pixels() == 0) return cudaSuccess;
  {  // the tile kernels, both layouts (tile_geom); the per-pixel kernel below where the slab does not fit
    bool launched = false;
    const cudaError_t e = launch_planes(SelfInformationForward<T>{z, out}, outer, C, inner, &launched, stream,
                                        [](auto cb) { return self_information_forward_planes_kernel<T, decltype(cb)::value>; });
    if (e != cudaSuccess || launched) return e;
  }
  launch_rows(geo.pixels(), inner, [&](auto lanes, unsigned int blocks) {
    self_information_forward_rows_kernel<T, decltype(lanes)><<<blocks, kPixelThreads, 0, stream>>>(z, out, geo);
  });
  return cudaGetLastError();
}

// G = T (a gradient in z's layout and dtype) or acc_of<T> (with grad_scalar: one expanded value).
template <typename T, typename G>
cudaError_t launch_self_information_backward(const G* grad, bool grad_scalar, const T* z, T* gz, int64_t outer,
                                             int64_t C, int64_t inner, cudaStream_t stream) {
  const PixelGeom geo{outer, C, inner};
  if (geo.pixels() == 0) return cudaSuccess;
  {  // the tile kernels, both layouts (tile_geom); the per-pixel kernel below where the slab does not fit
    bool launched = false;
    const cudaError_t e =
        grad_scalar
            ? launch_planes(SelfInformationBackward<T, false>{reinterpret_cast<const acc_of<T>*>(grad), z, gz}, outer,
                            C, inner, &launched, stream,
                            [](auto cb) { return self_information_backward_planes_kernel<T, false, decltype(cb)::value>; })
            : launch_planes(SelfInformationBackward<T, true>{reinterpret_cast<const T*>(grad), z, gz}, outer, C,
                            inner, &launched, stream,
                            [](auto cb) { return self_information_backward_planes_kernel<T, true, decltype(cb)::value>; });
    if (e != cudaSuccess || launched) return e;
  }
  launch_rows(geo.pixels(), inner, [&](auto lanes, unsigned int blocks) {
    self_information_backward_rows_kernel<T, G, decltype(lanes)><<<blocks, kPixelThreads, 0, stream>>>(
        grad, grad_scalar, z, gz, geo);
  });
  return cudaGetLastError();
}
#endif  // __CUDACC__

}  // namespace cuda
}  // namespace uda_ops
