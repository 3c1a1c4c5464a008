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

template <typename acc_t, typename T, typename L = OneLane>
UDA_HD CosineStats<acc_t> cosine_stats(const T* __restrict__ z1, const T* __restrict__ z2, int64_t cs,
                                       int64_t C, const L& lanes = L()) {
  CosineStats<acc_t> st;
  st.s1 = softmax_stats<acc_t>(z1, cs, C, lanes);
  st.s2 = softmax_stats<acc_t>(z2, cs, C, lanes);
  acc_t d12 = acc_t(0), n11 = acc_t(0), n22 = acc_t(0);
  for (int64_t c = lanes.first(); c < C; c += lanes.step()) {
    const acc_t p1 = st.s1.p(load<acc_t>(z1 + c * cs)), p2 = st.s2.p(load<acc_t>(z2 + c * cs));
    d12 += p1 * p2;
    n11 += p1 * p1;
    n22 += p2 * p2;
  }
  d12 = lanes.sum(d12);
  n11 = lanes.sum(n11);
  n22 = lanes.sum(n22);
  st.inv12 = acc_t(1) / uda_sqrt(n11 * n22);  // |p|^2 >= 1/C: no eps needed
  st.cos = d12 * st.inv12;
  st.inv11 = acc_t(1) / n11;
  st.inv22 = acc_t(1) / n22;
  return st;
}

// dL/dz1_j = -gm p1_j (b1_j - sum_c p1_c b1_c), b1 = p2 / (|p1||p2|) - cos p1 / |p1|^2, symmetrically for z2;
// gm = dL/dM. The softmax-Jacobian term sum_c p1_c b1_c is 0 in exact arithmetic; computed from the same
// rounded b1 it takes out most of their rounding (b1 cancels where the softmaxes nearly agree): as
// csrc/cpu/cosine.h. Only for fp32 and fp64 inputs (kCosineJacobian): a half-type gradient is stored with a
// rounding far above what the term takes out, and in the tile kernels it costs a second pass over the classes.
template <typename acc_t>
UDA_HD acc_t cosine_b(acc_t p, acc_t q, acc_t i12, acc_t ci) {
  return q * i12 - ci * p;  // dcos/dp for this class: ci = cos / |p|^2
}
template <typename T>
constexpr bool kCosineJacobian = sizeof(T) >= 4;

template <typename acc_t, typename T, typename L = OneLane>
UDA_HD void cosine_grad_pixel(const T* __restrict__ z1, const T* __restrict__ z2, int64_t cs, int64_t C,
                              const CosineStats<acc_t>& st, acc_t gm, T* __restrict__ g1, T* __restrict__ g2,
                              const L& lanes = L()) {
  const acc_t c1 = st.cos * st.inv11, c2 = st.cos * st.inv22;
  acc_t r1 = acc_t(0), r2 = acc_t(0);
  if constexpr (kCosineJacobian<T>) {
    for (int64_t c = lanes.first(); c < C; c += lanes.step()) {
      const acc_t p1 = st.s1.p(load<acc_t>(z1 + c * cs)), p2 = st.s2.p(load<acc_t>(z2 + c * cs));
      r1 += p1 * cosine_b(p1, p2, st.inv12, c1);
      r2 += p2 * cosine_b(p2, p1, st.inv12, c2);
    }
    r1 = lanes.sum(r1);
    r2 = lanes.sum(r2);
  }
  for (int64_t c = lanes.first(); c < C; c += lanes.step()) {
    const acc_t p1 = st.s1.p(load<acc_t>(z1 + c * cs)), p2 = st.s2.p(load<acc_t>(z2 + c * cs));
    store(g1 + c * cs, -gm * p1 * (cosine_b(p1, p2, st.inv12, c1) - r1));
    store(g2 + c * cs, -gm * p2 * (cosine_b(p2, p1, st.inv12, c2) - r2));
  }
}

template <typename acc_t, typename T, typename L = OneLane>
UDA_HD acc_t cosine_discrepancy_pixel(const T* __restrict__ z1, const T* __restrict__ z2, int64_t cs, int64_t C,
                                      const L& lanes = L()) {
  return acc_t(1) - cosine_stats<acc_t>(z1, z2, cs, C, lanes).cos;
}

// ---- planes tiles (common.cuh): with e = exp(x - m) and S = sum e (the 1/S factors cancel in the cosine),
// E12 = sum e1 e2, E11 = sum e1^2, E22 = sum e2^2: cos = E12 / sqrt(E11 E22), and with
// b1_j = e2_j / sqrt(E11 E22) - cos e1_j / E11 (S1 times cosine_grad_pixel's b1):
// dL/dz1_j = -gm e1_j (b1_j - sum_c e1_c b1_c / S1), symmetrically for z2.
template <typename T>
struct CosineTile {
  using acc_t = acc_of<T>;
  static constexpr int V = kLanes<T>;
  TileSoftmax<T, 2> st;
  acc_t cos[V], i12[V], i11[V], i22[V];  // i11 = 1 / E11, i22 = 1 / E22

  template <typename S>
  UDA_HD void compute(int C, const S* s) {
    acc_t e12[V], e11[V], e22[V];
    for (int k = 0; k < V; ++k) e12[k] = acc_t(0), e11[k] = acc_t(0), e22[k] = acc_t(0);
    st.compute(C, s, [&](int, const acc_t(&)[2][V], const acc_t(&)[2][V], const acc_t(&e)[2][V]) {
UDA_UNROLL
      for (int k = 0; k < V; ++k) {
        e12[k] += e[0][k] * e[1][k];
        e11[k] += e[0][k] * e[0][k];
        e22[k] += e[1][k] * e[1][k];
      }
    });
UDA_UNROLL
    for (int k = 0; k < V; ++k) {
      // an all -inf or NaN pixel: the sums of exps are NaN (or 0 from x - m = NaN), so is everything here
      const bool bad = is_nan(st.sum[0][k]) || is_nan(st.sum[1][k]);
      i12[k] = bad ? quiet_nan<acc_t>() : acc_t(1) / uda_sqrt(e11[k] * e22[k]);
      cos[k] = e12[k] * i12[k];
      i11[k] = acc_t(1) / e11[k];
      i22[k] = acc_t(1) / e22[k];
    }
  }

  // Writes the gradients for gm = dL/dM per lane into g1, g2 (class rows of the tile). fp32/fp64: a first pass
  // for the softmax-Jacobian terms r (0 in exact arithmetic, they take out the rounding of b); half types: the
  // closed form, b written directly.
  template <typename S>
  UDA_HD void grads(int C, const S* s, const acc_t (&gm)[V], const PlanesGeom& g, const TilePos& tp, T* g1,
                    T* g2) const {
    if constexpr (kCosineJacobian<T>) {
      acc_t c1[V], c2[V], r1[V], r2[V];
UDA_UNROLL
      for (int k = 0; k < V; ++k) c1[k] = cos[k] * i11[k], c2[k] = cos[k] * i22[k], r1[k] = r2[k] = acc_t(0);
      st.exps(C, s, [&](int, const acc_t(&)[2][V], const acc_t(&)[2][V], const acc_t(&e)[2][V]) {
UDA_UNROLL
        for (int k = 0; k < V; ++k) {
          r1[k] += e[0][k] * cosine_b(e[0][k], e[1][k], i12[k], c1[k]);
          r2[k] += e[1][k] * cosine_b(e[1][k], e[0][k], i12[k], c2[k]);
        }
      });
UDA_UNROLL
      for (int k = 0; k < V; ++k) r1[k] /= st.sum[0][k], r2[k] /= st.sum[1][k];
      st.exps(C, s, [&](int c, const acc_t(&)[2][V], const acc_t(&)[2][V], const acc_t(&e)[2][V]) {
        acc_t o1[V], o2[V];
UDA_UNROLL
        for (int k = 0; k < V; ++k) {
          const acc_t e1 = e[0][k], e2 = e[1][k];
          o1[k] = -gm[k] * e1 * (cosine_b(e1, e2, i12[k], c1[k]) - r1[k]);
          o2[k] = -gm[k] * e2 * (cosine_b(e2, e1, i12[k], c2[k]) - r2[k]);
        }
        s[0].store(g1 + tp.x, g.cs(), c, o1, tp);
        s[1].store(g2 + tp.x, g.cs(), c, o2, tp);
      });
    } else {
      st.exps(C, s, [&](int c, const acc_t(&)[2][V], const acc_t(&)[2][V], const acc_t(&e)[2][V]) {
        acc_t o1[V], o2[V];
UDA_UNROLL
        for (int k = 0; k < V; ++k) {
          const acc_t e1 = e[0][k], e2 = e[1][k], both = e1 * e2 * i12[k];
          o1[k] = -gm[k] * (both - cos[k] * e1 * e1 * i11[k]);
          o2[k] = -gm[k] * (both - cos[k] * e2 * e2 * i22[k]);
        }
        s[0].store(g1 + tp.x, g.cs(), c, o1, tp);
        s[1].store(g2 + tp.x, g.cs(), c, o2, tp);
      });
    }
  }
};

template <typename T_>
struct CosineForward {
  using T = T_;
  using acc_t = acc_of<T>;
  static constexpr int kSlabs = 2, V = kLanes<T>;
  const T* z1;
  const T* z2;
  acc_t* out;
  bool aligned() const { return aligned16(z1) && aligned16(z2) && aligned16(out); }

  template <typename S>
  UDA_HD void operator()(const PlanesGeom& g, const TilePos& tp, S* s) const {
    const int C = load_slabs(g, tp, s, z1, z2);
    CosineTile<T> ct;
    ct.compute(C, s);
    acc_t v[V];
UDA_UNROLL
    for (int k = 0; k < V; ++k) v[k] = acc_t(1) - ct.cos[k];
    store_map(out + tp.map, v, tp);
  }
};

template <typename T_>
struct CosineBackward {
  using T = T_;
  using acc_t = acc_of<T>;
  static constexpr int kSlabs = 2, V = kLanes<T>;
  const acc_t* grad;
  int64_t grad_stride;
  const T* z1;
  const T* z2;
  T* g1;
  T* g2;
  bool aligned() const { return aligned16(grad) && aligned16(z1) && aligned16(z2) && aligned16(g1) && aligned16(g2); }
  UDA_HD T* staged(int j) const { return j == 0 ? g1 : g2; }  // StagedRows: the output of slab j

  template <typename S>
  UDA_HD void operator()(const PlanesGeom& g, const TilePos& tp, S* s) const {
    const int C = load_slabs(g, tp, s, z1, z2);
    CosineTile<T> ct;
    ct.compute(C, s);
    acc_t gm[V];
    load_map(grad + tp.map * grad_stride, grad_stride, gm, tp);
    ct.grads(C, s, gm, g, tp, g1, g2);
  }
};

#if defined(__CUDACC__)
template <typename T, int CB>
__global__ void UDA_TILE_BOUNDS cosine_discrepancy_forward_planes_kernel(const CosineForward<T> op, const PlanesGeom g) {
  planes_kernel_body<CB>(op, g);
}

template <typename T, int CB>
__global__ void UDA_TILE_BOUNDS cosine_discrepancy_backward_planes_kernel(const CosineBackward<T> op, const PlanesGeom g) {
  planes_kernel_body<CB>(op, g);
}

// Per pixel, where the tile kernels' slab exceeds shared memory: a warp per pixel in the rows layout (L =
// WarpLanes), a thread per pixel with the classes in a loop in planes (OneLane); launch_rows picks.
template <typename T, typename L>
__global__ void UDA_ROWS_BOUNDS(T)
    cosine_discrepancy_forward_rows_kernel(const T* __restrict__ z1, const T* __restrict__ z2,
                                      acc_of<T>* __restrict__ out, PixelGeom geo) {
  for_each_pixel<L>(geo.pixels(), [&](int64_t p, const L& lanes) {
    const int64_t o = geo.base(p);
    const acc_of<T> v = cosine_discrepancy_pixel<acc_of<T>>(z1 + o, z2 + o, geo.inner, geo.C, lanes);
    if (lanes.leader()) out[p] = v;
  });
}

template <typename T, typename L>
__global__ void UDA_ROWS_BOUNDS(T)
    cosine_discrepancy_backward_rows_kernel(const acc_of<T>* __restrict__ grad, int64_t grad_stride,
                                       const T* __restrict__ z1, const T* __restrict__ z2, T* __restrict__ g1,
                                       T* __restrict__ g2, PixelGeom geo) {
  using acc_t = acc_of<T>;
  for_each_pixel<L>(geo.pixels(), [&](int64_t p, const L& lanes) {
    const int64_t o = geo.base(p);
    const CosineStats<acc_t> st = cosine_stats<acc_t>(z1 + o, z2 + o, geo.inner, geo.C, lanes);
    cosine_grad_pixel(z1 + o, z2 + o, geo.inner, geo.C, st, grad[p * grad_stride], g1 + o, g2 + o, lanes);
  });
}

template <typename T>
cudaError_t launch_cosine_discrepancy_forward(const T* z1, const T* z2, acc_of<T>* out, int64_t outer, int64_t C,
                                              int64_t inner, cudaStream_t stream) {
  const PixelGeom geo{outer, C, inner};
  if (geo.pixels() == 0) return cudaSuccess;
  {  // the tile kernels, both layouts (tile_geom); the per-pixel kernel below where the slab does not fit
    bool launched = false;
    const cudaError_t e = launch_planes(CosineForward<T>{z1, z2, out}, outer, C, inner, &launched, stream,
                                        [](auto cb) { return cosine_discrepancy_forward_planes_kernel<T, decltype(cb)::value>; });
    if (e != cudaSuccess || launched) return e;
  }
  launch_rows(geo.pixels(), inner, [&](auto lanes, unsigned int blocks) {
    cosine_discrepancy_forward_rows_kernel<T, decltype(lanes)><<<blocks, kPixelThreads, 0, stream>>>(z1, z2, out, geo);
  });
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_cosine_discrepancy_backward(const acc_of<T>* grad, int64_t grad_stride, const T* z1,
                                               const T* z2, T* g1, T* g2, int64_t outer, int64_t C, int64_t inner,
                                               cudaStream_t stream) {
  const PixelGeom geo{outer, C, inner};
  if (geo.pixels() == 0) return cudaSuccess;
  {  // the tile kernels, both layouts (tile_geom); the per-pixel kernel below where the slab does not fit
    bool launched = false;
    const cudaError_t e = launch_planes(CosineBackward<T>{grad, grad_stride, z1, z2, g1, g2}, outer, C, inner, &launched, stream,
                                        [](auto cb) { return cosine_discrepancy_backward_planes_kernel<T, decltype(cb)::value>; });
    if (e != cudaSuccess || launched) return e;
  }
  launch_rows(geo.pixels(), inner, [&](auto lanes, unsigned int blocks) {
    cosine_discrepancy_backward_rows_kernel<T, decltype(lanes)><<<blocks, kPixelThreads, 0, stream>>>(
        grad, grad_stride, z1, z2, g1, g2, geo);
  });
  return cudaGetLastError();
}
#endif  // __CUDACC__

}  // namespace cuda
}  // namespace uda_ops
