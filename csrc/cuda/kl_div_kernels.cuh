// Directed KL(softmax(target) || softmax(input)) on logits (SPEC section 1): per-pixel math, kernels
// and launchers. Torch-free: compiles with nvcc alone.
#pragma once

#include "common.cuh"

namespace uda_ops {
namespace cuda {

// sum_c q_c (log q_c - log p_c), p = softmax(x) (input), q = softmax(y) (target).
template <typename acc_t, typename T, typename L = OneLane>
UDA_HD acc_t kl_div_pixel_stats(const T* __restrict__ x, const T* __restrict__ y, int64_t cs, int64_t C,
                                const SoftmaxStats<acc_t>& sx, const SoftmaxStats<acc_t>& sy,
                                const L& lanes = L()) {
  acc_t kl = acc_t(0);
  for (int64_t c = lanes.first(); c < C; c += lanes.step()) {
    const acc_t xv = load<acc_t>(x + c * cs), yv = load<acc_t>(y + c * cs);
    kl += mul0(sy.p(yv), diff0(sy.logp(yv), sx.logp(xv)));
  }
  return lanes.sum(kl);
}

template <typename acc_t, typename T, typename L = OneLane>
UDA_HD acc_t kl_div_pixel(const T* __restrict__ x, const T* __restrict__ y, int64_t cs, int64_t C,
                          const L& lanes = L()) {
  const SoftmaxStats<acc_t> sx = softmax_stats<acc_t>(x, cs, C, lanes),
                            sy = softmax_stats<acc_t>(y, cs, C, lanes);
  return kl_div_pixel_stats(x, y, cs, C, sx, sy, lanes);
}

// d/dinput = g (p - q); when gy != nullptr also d/dtarget_j = g q_j ((log q_j - log p_j) - KL).
template <typename acc_t, typename T, typename L = OneLane>
UDA_HD void kl_div_backward_pixel(const T* __restrict__ x, const T* __restrict__ y, int64_t cs, int64_t C,
                                  acc_t g, T* __restrict__ gx, T* __restrict__ gy, const L& lanes = L()) {
  const SoftmaxStats<acc_t> sx = softmax_stats<acc_t>(x, cs, C, lanes),
                            sy = softmax_stats<acc_t>(y, cs, C, lanes);
  const acc_t kl = gy != nullptr ? kl_div_pixel_stats(x, y, cs, C, sx, sy, lanes) : acc_t(0);
  for (int64_t c = lanes.first(); c < C; c += lanes.step()) {
    const acc_t xv = load<acc_t>(x + c * cs), yv = load<acc_t>(y + c * cs);
    const acc_t q = sy.p(yv);
    store(gx + c * cs, g * (sx.p(xv) - q));
    if (gy != nullptr) store(gy + c * cs, g * mul0(q, diff0(sy.logp(yv), sx.logp(xv)) - kl));
  }
}

// ---- planes tiles (common.cuh): x = input (p), y = target (q). With A = sum e_y (d_y - d_x):
// KL = A / S_y - log S_y + log S_x (the q-weighted log-ratio, exps computed once).
template <typename T, typename S>
UDA_HD void kl_div_tile_sums(int C, const S* s, TileSoftmax<T, 2>& st, acc_of<T> (&kl)[kLanes<T>]) {
  using acc_t = acc_of<T>;
  constexpr int V = kLanes<T>;
  for (int k = 0; k < V; ++k) kl[k] = acc_t(0);
  st.compute(C, s, [&](int, const acc_t(&)[2][V], const acc_t(&d)[2][V], const acc_t(&e)[2][V]) {
UDA_UNROLL
    for (int k = 0; k < V; ++k) kl[k] += mul0(e[1][k], d[1][k] - d[0][k]);
  });
UDA_UNROLL
  for (int k = 0; k < V; ++k) kl[k] = kl[k] / st.sum[1][k] - uda_log(st.sum[1][k]) + uda_log(st.sum[0][k]);
}

template <typename T_>
struct KlDivForward {
  using T = T_;
  using acc_t = acc_of<T>;
  static constexpr int kSlabs = 2, V = kLanes<T>;
  const T* x;
  const T* y;
  MapOut<acc_t> out;  // the per-pixel map, or the block partials of a reduced forward
  bool aligned() const { return aligned16(x) && aligned16(y) && aligned16(out.map); }

  template <typename S>
  UDA_HD acc_t operator()(const PlanesGeom& g, const TilePos& tp, S* s) const {
    const int C = load_slabs(g, tp, s, x, y);
    TileSoftmax<T, 2> st;
    acc_t kl[V];
    kl_div_tile_sums(C, s, st, kl);
    return out.emit(tp, kl);
  }
};

// d/dinput = g (p - q); with gy: d/dtarget_j = g q_j ((log q_j - log p_j) - KL).
template <typename T_>
struct KlDivBackward {
  using T = T_;
  using acc_t = acc_of<T>;
  static constexpr int kSlabs = 2, V = kLanes<T>;
  const acc_t* grad;
  int64_t grad_stride;
  const T* x;
  const T* y;
  T* gx;
  T* gy;  // nullptr: not needed
  bool aligned() const {
    return aligned16(grad) && aligned16(x) && aligned16(y) && aligned16(gx) && (gy == nullptr || aligned16(gy));
  }
  UDA_HD T* staged(int j) const { return j == 0 ? gx : gy; }  // StagedRows: the output of slab j

  template <typename S>
  UDA_HD void operator()(const PlanesGeom& g, const TilePos& tp, S* s) const {
    const int C = load_slabs(g, tp, s, x, y);
    TileSoftmax<T, 2> st;
    acc_t kl[V], w[V], ix[V], iy[V], lx[V], ly[V];
    kl_div_tile_sums(C, s, st, kl);
    load_map(grad + tp.map * grad_stride, grad_stride, w, tp);
UDA_UNROLL
    for (int k = 0; k < V; ++k) {
      ix[k] = acc_t(1) / st.sum[0][k], iy[k] = acc_t(1) / st.sum[1][k];
      lx[k] = uda_log(st.sum[0][k]), ly[k] = uda_log(st.sum[1][k]);
    }
    st.exps(C, s, [&](int c, const acc_t(&)[2][V], const acc_t(&d)[2][V], const acc_t(&e)[2][V]) {
      acc_t ox[V], oy[V];
UDA_UNROLL
      for (int k = 0; k < V; ++k) {
        const acc_t q = e[1][k] * iy[k];
        ox[k] = w[k] * (e[0][k] * ix[k] - q);
        oy[k] = w[k] * mul0(q, diff0(d[1][k] - ly[k], d[0][k] - lx[k]) - kl[k]);
      }
      s[0].store(gx + tp.x, g.cs(), c, ox, tp);
      if (gy != nullptr) s[1].store(gy + tp.x, g.cs(), c, oy, tp);
    });
  }
};

#if defined(__CUDACC__)
template <typename T, int CB>
__global__ void UDA_TILE_BOUNDS kl_div_forward_planes_kernel(const KlDivForward<T> op, const PlanesGeom g) {
  planes_kernel_body<CB>(op, g);
}

// "mean"/"sum": the block partial sums of the map's values, no map.
template <typename T, int CB>
__global__ void UDA_TILE_BOUNDS kl_div_forward_partials_planes_kernel(const KlDivForward<T> op, const PlanesGeom g) {
  planes_partials_body<CB>(op, g);
}

template <typename T, int CB>
__global__ void UDA_TILE_BOUNDS kl_div_backward_planes_kernel(const KlDivBackward<T> op, const PlanesGeom g) {
  planes_kernel_body<CB>(op, g);
}


// Per pixel, where the tile kernels' slab exceeds shared memory: a warp per pixel in the rows layout (L =
// WarpLanes), a thread per pixel with the classes in a loop in planes (OneLane); launch_rows picks.
template <typename T, typename L>
__global__ void UDA_ROWS_BOUNDS(T)
    kl_div_forward_rows_kernel(const T* __restrict__ x, const T* __restrict__ y, MapOut<acc_of<T>> out,
                               PixelGeom geo) {
  acc_of<T> sum = 0;
  for_each_pixel<L>(geo.pixels(), [&](int64_t p, const L& lanes) {
    const int64_t o = geo.base(p);
    const acc_of<T> kl = kl_div_pixel<acc_of<T>>(x + o, y + o, geo.inner, geo.C, lanes);
    if (lanes.leader()) sum += out.emit(p, kl);
  });
  block_partial(out, sum);
}

template <typename T, typename L>
__global__ void UDA_ROWS_BOUNDS(T)
    kl_div_backward_rows_kernel(const acc_of<T>* __restrict__ grad, int64_t grad_stride, const T* __restrict__ x,
                           const T* __restrict__ y, T* __restrict__ gx, T* __restrict__ gy, PixelGeom geo) {
  for_each_pixel<L>(geo.pixels(), [&](int64_t p, const L& lanes) {
    const int64_t o = geo.base(p);
    kl_div_backward_pixel<acc_of<T>>(x + o, y + o, geo.inner, geo.C, grad[p * grad_stride], gx + o,
                                     gy != nullptr ? gy + o : nullptr, lanes);
  });
}

// partials == nullptr: out is the per-pixel map (P,). Else a reduced forward: out is the 0-d result (scale
// times the sum of the map) and partials a scratch of reduce_blocks_bound<T>(outer, C, inner) values.
template <typename T>
cudaError_t launch_kl_div_forward(const T* x, const T* y, acc_of<T>* out, acc_of<T>* partials, double scale,
                                  int64_t outer, int64_t C, int64_t inner, cudaStream_t stream) {
  const PixelGeom geo{outer, C, inner};
  const MapOut<acc_of<T>> mo = map_out(out, partials);
  // the tile kernels, both layouts (tile_geom); the per-pixel kernel where the slab does not fit
  return launch_forward(
      KlDivForward<T>{x, y, mo}, out, scale, outer, C, inner, stream,
      [](auto cb) { return kl_div_forward_planes_kernel<T, decltype(cb)::value>; },
      [](auto cb) { return kl_div_forward_partials_planes_kernel<T, decltype(cb)::value>; },
      [&](auto lanes, unsigned int blocks, size_t smem) {
        kl_div_forward_rows_kernel<T, decltype(lanes)><<<blocks, kPixelThreads, smem, stream>>>(x, y, mo, geo);
      });
}

// gy == nullptr: the target gradient is not needed (not computed, not written).
template <typename T>
cudaError_t launch_kl_div_backward(const acc_of<T>* grad, int64_t grad_stride, const T* x, const T* y, T* gx,
                                   T* gy, int64_t outer, int64_t C, int64_t inner, cudaStream_t stream) {
  const PixelGeom geo{outer, C, inner};
  if (geo.pixels() == 0) return cudaSuccess;
  {  // the tile kernels, both layouts (tile_geom); the per-pixel kernel below where the slab does not fit
    bool launched = false;
    const cudaError_t e = launch_planes(KlDivBackward<T>{grad, grad_stride, x, y, gx, gy}, outer, C, inner, &launched, stream,
                                        [](auto cb) { return kl_div_backward_planes_kernel<T, decltype(cb)::value>; });
    if (e != cudaSuccess || launched) return e;
  }
  launch_rows(geo.pixels(), inner, [&](auto lanes, unsigned int blocks) {
    kl_div_backward_rows_kernel<T, decltype(lanes)><<<blocks, kPixelThreads, 0, stream>>>(grad, grad_stride, x, y, gx,
                                                                                          gy, geo);
  });
  return cudaGetLastError();
}
#endif  // __CUDACC__

}  // namespace cuda
}  // namespace uda_ops
