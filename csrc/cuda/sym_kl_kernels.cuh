// Symmetric KL between two predictions (SPEC section 1): per-pixel math, kernels and launchers.
// Torch-free: compiles with nvcc alone.
#pragma once

#include "common.cuh"

namespace uda_ops {
namespace cuda {

// The class difference d_c of the shifted logits, shifted_diff (common.cuh): (a_c - max a) - (b_c - max b). It differs
// from a_c - b_c by a per-pixel constant, which cancels in every use below (sum_c (p_c - q_c) = 0, and
// d_c - sum_c p_c d_c), and it is exact near the maxima, so a per-pixel offset of the logits changes nothing (the CPU
// and Triton kernels do the same). 0 where both are -inf.

// d = 1/2 sum_c (p_c - q_c)(a_c - b_c) for one pixel (classes cs apart).
template <typename acc_t, typename T, typename L = OneLane>
UDA_HD acc_t sym_kl_pixel(const T* __restrict__ a, const T* __restrict__ b, int64_t cs, int64_t C,
                          const L& lanes = L()) {
  const SoftmaxStats<acc_t> sa = softmax_stats<acc_t>(a, cs, C, lanes),
                            sb = softmax_stats<acc_t>(b, cs, C, lanes);
  acc_t acc = acc_t(0);
  for (int64_t c = lanes.first(); c < C; c += lanes.step()) {
    const acc_t x = load<acc_t>(a + c * cs), y = load<acc_t>(b + c * cs);
    acc += mul0(sa.p(x) - sb.p(y), shifted_diff(x, sa.m, y, sb.m));
  }
  return acc_t(0.5) * lanes.sum(acc);
}

// Gradients w.r.t. a and b for the upstream gradient g of the pixel's value.
template <typename acc_t, typename T, typename L = OneLane>
UDA_HD void sym_kl_backward_pixel(const T* __restrict__ a, const T* __restrict__ b, int64_t cs, int64_t C,
                                  acc_t g, bool detach, T* __restrict__ ga, T* __restrict__ gb,
                                  const L& lanes = L()) {
  const SoftmaxStats<acc_t> sa = softmax_stats<acc_t>(a, cs, C, lanes),
                            sb = softmax_stats<acc_t>(b, cs, C, lanes);
  const acc_t hg = acc_t(0.5) * g;
  if (detach) {  // ADR code: each direction's target held constant
    for (int64_t c = lanes.first(); c < C; c += lanes.step()) {
      const acc_t d = hg * (sa.p(load<acc_t>(a + c * cs)) - sb.p(load<acc_t>(b + c * cs)));
      store(ga + c * cs, d);
      store(gb + c * cs, -d);
    }
    return;
  }
  acc_t s_a = acc_t(0), s_b = acc_t(0);
  for (int64_t c = lanes.first(); c < C; c += lanes.step()) {
    const acc_t x = load<acc_t>(a + c * cs), y = load<acc_t>(b + c * cs);
    const acc_t d = shifted_diff(x, sa.m, y, sb.m);
    s_a += mul0(sa.p(x), d);
    s_b -= mul0(sb.p(y), d);
  }
  s_a = lanes.sum(s_a);
  s_b = lanes.sum(s_b);
  for (int64_t c = lanes.first(); c < C; c += lanes.step()) {
    const acc_t x = load<acc_t>(a + c * cs), y = load<acc_t>(b + c * cs);
    const acc_t d = shifted_diff(x, sa.m, y, sb.m), p = sa.p(x), q = sb.p(y);
    store(ga + c * cs, hg * (mul0(p, d - s_a) + p - q));
    store(gb + c * cs, hg * (mul0(q, -d - s_b) + q - p));
  }
}

// ---- planes tiles (common.cuh). With d = diff0(a - max a, b - max b), A = sum e_a d, B = sum e_b d:
// value = (A / S_a - B / S_b) / 2; s_a = sum p d = A / S_a, s_b = -sum q d = -B / S_b.
template <typename T, typename S>
UDA_HD void sym_kl_tile_sums(int C, const S* s, TileSoftmax<T, 2>& st, acc_of<T> (&A)[kLanes<T>],
                             acc_of<T> (&B)[kLanes<T>]) {
  using acc_t = acc_of<T>;
  constexpr int V = kLanes<T>;
  for (int k = 0; k < V; ++k) A[k] = acc_t(0), B[k] = acc_t(0);
  st.compute(C, s, [&](int, const acc_t(&)[2][V], const acc_t(&x)[2][V], const acc_t(&e)[2][V]) {
UDA_UNROLL
    for (int k = 0; k < V; ++k) {
      const acc_t d = diff0(x[0][k], x[1][k]);  // x: the shifted logits
      A[k] += mul0(e[0][k], d);
      B[k] += mul0(e[1][k], d);
    }
  });
}

template <typename T_>
struct SymKlForward {
  using T = T_;
  using acc_t = acc_of<T>;
  static constexpr int kSlabs = 2, V = kLanes<T>;
  const T* a;
  const T* b;
  MapOut<acc_t> out;  // the per-pixel map, or the block partials of a reduced forward
  bool aligned() const { return aligned16(a) && aligned16(b) && aligned16(out.map); }

  template <typename S>
  UDA_HD acc_t operator()(const PlanesGeom& g, const TilePos& tp, S* s) const {
    const int C = load_slabs(g, tp, s, a, b);
    TileSoftmax<T, 2> st;
    acc_t A[V], B[V], v[V];
    sym_kl_tile_sums(C, s, st, A, B);
UDA_UNROLL
    for (int k = 0; k < V; ++k) v[k] = acc_t(0.5) * (A[k] / st.sum[0][k] - B[k] / st.sum[1][k]);
    return out.emit(tp, v);
  }
};

template <typename T_>
struct SymKlBackward {
  using T = T_;
  using acc_t = acc_of<T>;
  static constexpr int kSlabs = 2, V = kLanes<T>;
  const acc_t* grad;
  int64_t grad_stride;
  const T* a;
  const T* b;
  T* ga;
  T* gb;
  bool detach;
  bool aligned() const { return aligned16(grad) && aligned16(a) && aligned16(b) && aligned16(ga) && aligned16(gb); }
  UDA_HD T* staged(int j) const { return j == 0 ? ga : gb; }  // StagedRows: the output of slab j

  template <typename S>
  UDA_HD void operator()(const PlanesGeom& g, const TilePos& tp, S* s) const {
    const int C = load_slabs(g, tp, s, a, b);
    TileSoftmax<T, 2> st;
    acc_t A[V], B[V], hg[V], ia[V], ib[V];
    sym_kl_tile_sums(C, s, st, A, B);
    load_map(grad + tp.map * grad_stride, grad_stride, hg, tp);
UDA_UNROLL
    for (int k = 0; k < V; ++k) {
      ia[k] = acc_t(1) / st.sum[0][k], ib[k] = acc_t(1) / st.sum[1][k], hg[k] *= acc_t(0.5);
      A[k] *= ia[k], B[k] *= -ib[k];  // s_a, s_b
    }
    st.exps(C, s, [&](int c, const acc_t(&)[2][V], const acc_t(&x)[2][V], const acc_t(&e)[2][V]) {
      acc_t oa[V], ob[V];  // x: the shifted logits
UDA_UNROLL
      for (int k = 0; k < V; ++k) {
        const acc_t p = e[0][k] * ia[k], q = e[1][k] * ib[k];
        if (detach) {  // ADR code: each direction's target held constant
          oa[k] = hg[k] * (p - q);
          ob[k] = -oa[k];
        } else {
          const acc_t d = diff0(x[0][k], x[1][k]);
          oa[k] = hg[k] * (mul0(p, d - A[k]) + p - q);
          ob[k] = hg[k] * (mul0(q, -d - B[k]) + q - p);
        }
      }
      s[0].store(ga + tp.x, g.cs(), c, oa, tp);
      s[1].store(gb + tp.x, g.cs(), c, ob, tp);
    });
  }
};

#if defined(__CUDACC__)
template <typename T, int CB>
__global__ void UDA_TILE_BOUNDS sym_kl_forward_planes_kernel(const SymKlForward<T> op, const PlanesGeom g) {
  planes_kernel_body<CB>(op, g);
}

// "mean"/"sum": the block partial sums of the map's values, no map.
template <typename T, int CB>
__global__ void UDA_TILE_BOUNDS sym_kl_forward_partials_planes_kernel(const SymKlForward<T> op, const PlanesGeom g) {
  planes_partials_body<CB>(op, g);
}

template <typename T, int CB>
__global__ void UDA_TILE_BOUNDS sym_kl_backward_planes_kernel(const SymKlBackward<T> op, const PlanesGeom g) {
  planes_kernel_body<CB>(op, g);
}


// Per pixel, where the tile kernels' slab exceeds shared memory: a warp per pixel in the rows layout (L =
// WarpLanes), a thread per pixel with the classes in a loop in planes (OneLane); launch_rows picks.
template <typename T, typename L>
__global__ void UDA_ROWS_BOUNDS(T)
    sym_kl_forward_rows_kernel(const T* __restrict__ a, const T* __restrict__ b, MapOut<acc_of<T>> out,
                               PixelGeom geo) {
  acc_of<T> sum = 0;
  for_each_pixel<L>(geo.pixels(), [&](int64_t p, const L& lanes) {
    const int64_t o = geo.base(p);
    const acc_of<T> v = sym_kl_pixel<acc_of<T>>(a + o, b + o, geo.inner, geo.C, lanes);
    if (lanes.leader()) sum += out.emit(p, v);
  });
  block_partial(out, sum);
}

template <typename T, typename L>
__global__ void UDA_ROWS_BOUNDS(T)
    sym_kl_backward_rows_kernel(const acc_of<T>* __restrict__ grad, int64_t grad_stride, const T* __restrict__ a,
                           const T* __restrict__ b, T* __restrict__ ga, T* __restrict__ gb, PixelGeom geo,
                           bool detach) {
  for_each_pixel<L>(geo.pixels(), [&](int64_t p, const L& lanes) {
    const int64_t o = geo.base(p);
    sym_kl_backward_pixel<acc_of<T>>(a + o, b + o, geo.inner, geo.C, grad[p * grad_stride], detach, ga + o,
                                     gb + o, lanes);
  });
}

// Launchers: raw pointers into the canonical (outer, C, inner) view; out/grad are per pixel (P,),
// grad read as grad[p * grad_stride] (grad_stride 0: an expanded scalar). Return the launch status.
// partials == nullptr: out is the per-pixel map (P,). Else a reduced forward: out is the 0-d result (scale
// times the sum of the map) and partials a scratch of reduce_blocks_bound<T>(outer, C, inner) values.
template <typename T>
cudaError_t launch_sym_kl_forward(const T* a, const T* b, acc_of<T>* out, acc_of<T>* partials, double scale,
                                  int64_t outer, int64_t C, int64_t inner, cudaStream_t stream) {
  const PixelGeom geo{outer, C, inner};
  const MapOut<acc_of<T>> mo = map_out(out, partials);
  // the tile kernels, both layouts (tile_geom); the per-pixel kernel where the slab does not fit
  return launch_forward(
      SymKlForward<T>{a, b, mo}, out, scale, outer, C, inner, stream,
      [](auto cb) { return sym_kl_forward_planes_kernel<T, decltype(cb)::value>; },
      [](auto cb) { return sym_kl_forward_partials_planes_kernel<T, decltype(cb)::value>; },
      [&](auto lanes, unsigned int blocks, size_t smem) {
        sym_kl_forward_rows_kernel<T, decltype(lanes)><<<blocks, kPixelThreads, smem, stream>>>(a, b, mo, geo);
      });
}

template <typename T>
cudaError_t launch_sym_kl_backward(const acc_of<T>* grad, int64_t grad_stride, const T* a, const T* b, T* ga,
                                   T* gb, int64_t outer, int64_t C, int64_t inner, bool detach,
                                   cudaStream_t stream) {
  const PixelGeom geo{outer, C, inner};
  if (geo.pixels() == 0) return cudaSuccess;
  {  // the tile kernels, both layouts (tile_geom); the per-pixel kernel below where the slab does not fit
    bool launched = false;
    const cudaError_t e = launch_planes(SymKlBackward<T>{grad, grad_stride, a, b, ga, gb, detach}, outer, C, inner, &launched, stream,
                                        [](auto cb) { return sym_kl_backward_planes_kernel<T, decltype(cb)::value>; });
    if (e != cudaSuccess || launched) return e;
  }
  launch_rows(geo.pixels(), inner, [&](auto lanes, unsigned int blocks) {
    sym_kl_backward_rows_kernel<T, decltype(lanes)><<<blocks, kPixelThreads, 0, stream>>>(grad, grad_stride, a, b,
                                                                                          ga, gb, geo, detach);
  });
  return cudaGetLastError();
}
#endif  // __CUDACC__

}  // namespace cuda
}  // namespace uda_ops
