// Normalised entropy map E = -sum_c p_c log p_c / log C (SPEC section 2): per-pixel math, kernels and
// launchers. Torch-free: compiles with nvcc alone.
#pragma once

#include "common.cuh"

namespace uda_ops {
namespace cuda {

// h = -sum_c p_c log p_c (natural log, not normalised).
template <typename acc_t, typename T, typename L = OneLane>
UDA_HD acc_t entropy_nats(const T* __restrict__ z, int64_t cs, int64_t C, const SoftmaxStats<acc_t>& st,
                          const L& lanes = L()) {
  acc_t h = acc_t(0);
  for (int64_t c = lanes.first(); c < C; c += lanes.step()) {
    const acc_t v = load<acc_t>(z + c * cs);
    h -= mul0(st.p(v), st.logp(v));
  }
  return lanes.sum(h);
}

template <typename acc_t>
UDA_HD acc_t inv_log_classes(int64_t C) {
  return acc_t(1) / uda_log(static_cast<acc_t>(C));
}

template <typename acc_t, typename T, typename L = OneLane>
UDA_HD acc_t entropy_pixel(const T* __restrict__ z, int64_t cs, int64_t C, const L& lanes = L()) {
  const SoftmaxStats<acc_t> st = softmax_stats<acc_t>(z, cs, C, lanes);
  return entropy_nats(z, cs, C, st, lanes) * inv_log_classes<acc_t>(C);
}

// dE/dz_j = -(g p_j / log C)(log p_j + h).
template <typename acc_t, typename T, typename L = OneLane>
UDA_HD void entropy_backward_pixel(const T* __restrict__ z, int64_t cs, int64_t C, acc_t g, T* __restrict__ gz,
                                   const L& lanes = L()) {
  const SoftmaxStats<acc_t> st = softmax_stats<acc_t>(z, cs, C, lanes);
  const acc_t h = entropy_nats(z, cs, C, st, lanes);
  const acc_t w = -g * inv_log_classes<acc_t>(C);
  for (int64_t c = lanes.first(); c < C; c += lanes.step()) {
    const acc_t v = load<acc_t>(z + c * cs);
    store(gz + c * cs, w * mul0(st.p(v), st.logp(v) + h));
  }
}

// ---- planes tiles (common.cuh): H = log S - (sum_c e_c d_c) / S with d = x - m, e = exp(d), S = sum e.
template <typename T, typename S>
UDA_HD void entropy_tile_sums(int C, const S* s, TileSoftmax<T, 1>& st, acc_of<T> (&ed)[kLanes<T>]) {
  using acc_t = acc_of<T>;
  for (int k = 0; k < kLanes<T>; ++k) ed[k] = acc_t(0);
  st.compute(C, s, [&](int, const acc_t(&)[1][kLanes<T>], const acc_t(&d)[1][kLanes<T>],
                       const acc_t(&e)[1][kLanes<T>]) {
UDA_UNROLL
    for (int k = 0; k < kLanes<T>; ++k) ed[k] += mul0(e[0][k], d[0][k]);
  });
}

template <typename T_>
struct EntropyForward {
  using T = T_;
  using acc_t = acc_of<T>;
  static constexpr int kSlabs = 1, V = kLanes<T>;
  const T* z;
  MapOut<acc_t> out;  // the per-pixel map, or the block partials of a reduced forward
  bool aligned() const { return aligned16(z) && aligned16(out.map); }

  template <typename S>
  UDA_HD acc_t operator()(const PlanesGeom& g, const TilePos& tp, S* s) const {
    const int C = load_slabs(g, tp, s, z);
    TileSoftmax<T, 1> st;
    acc_t ed[V], h[V];
    entropy_tile_sums(C, s, st, ed);
    const acc_t w = inv_log_classes<acc_t>(C);
UDA_UNROLL
    for (int k = 0; k < V; ++k) h[k] = (uda_log(st.sum[0][k]) - ed[k] / st.sum[0][k]) * w;
    return out.emit(tp, h);
  }
};

// dE/dz_j = -(g / log C) p_j (log p_j + H) = -(g / log C) p_j (d_j - sum_c e_c d_c / S).
template <typename T_>
struct EntropyBackward {
  using T = T_;
  using acc_t = acc_of<T>;
  static constexpr int kSlabs = 1, V = kLanes<T>;
  const acc_t* grad;  // per pixel, read as grad[p * grad_stride]
  int64_t grad_stride;
  const T* z;
  T* gz;
  bool aligned() const { return aligned16(grad) && aligned16(z) && aligned16(gz); }
  UDA_HD T* staged(int j) const { return j == 0 ? gz : nullptr; }  // StagedRows: the output of slab j

  template <typename S>
  UDA_HD void operator()(const PlanesGeom& g, const TilePos& tp, S* s) const {
    const int C = load_slabs(g, tp, s, z);
    const acc_t il = inv_log_classes<acc_t>(C);
    TileSoftmax<T, 1> st;
    acc_t ed[V], w[V], r[V], inv[V];
    entropy_tile_sums(C, s, st, ed);
    load_map(grad + tp.map * grad_stride, grad_stride, w, tp);
UDA_UNROLL
    for (int k = 0; k < V; ++k) inv[k] = acc_t(1) / st.sum[0][k], r[k] = ed[k] * inv[k], w[k] = -w[k] * il;
    st.exps(C, s, [&](int c, const acc_t(&)[1][V], const acc_t(&d)[1][V], const acc_t(&e)[1][V]) {
      acc_t out[V];
UDA_UNROLL
      for (int k = 0; k < V; ++k) out[k] = w[k] * mul0(e[0][k] * inv[k], d[0][k] - r[k]);
      s[0].store(gz + tp.x, g.cs(), c, out, tp);
    });
  }
};

#if defined(__CUDACC__)
template <typename T, int CB>
__global__ void UDA_TILE_BOUNDS
    entropy_forward_planes_kernel(const EntropyForward<T> op, const PlanesGeom g) {
  planes_kernel_body<CB>(op, g);
}

// "mean"/"sum": the block partial sums of the map's values, no map.
template <typename T, int CB>
__global__ void UDA_TILE_BOUNDS entropy_forward_partials_planes_kernel(const EntropyForward<T> op, const PlanesGeom g) {
  planes_partials_body<CB>(op, g);
}

template <typename T, int CB>
__global__ void UDA_TILE_BOUNDS
    entropy_backward_planes_kernel(const EntropyBackward<T> op, const PlanesGeom g) {
  planes_kernel_body<CB>(op, g);
}

// Per pixel, where the tile kernels' slab exceeds shared memory: a warp per pixel in the rows layout (L =
// WarpLanes), a thread per pixel with the classes in a loop in planes (OneLane); launch_rows picks.
template <typename T, typename L>
__global__ void UDA_ROWS_BOUNDS(T)
    entropy_forward_rows_kernel(const T* __restrict__ z, MapOut<acc_of<T>> out, PixelGeom geo) {
  acc_of<T> sum = 0;
  for_each_pixel<L>(geo.pixels(), [&](int64_t p, const L& lanes) {
    const acc_of<T> h = entropy_pixel<acc_of<T>>(z + geo.base(p), geo.inner, geo.C, lanes);
    if (lanes.leader()) sum += out.emit(p, h);
  });
  block_partial(out, sum);
}

template <typename T, typename L>
__global__ void UDA_ROWS_BOUNDS(T)
    entropy_backward_rows_kernel(const acc_of<T>* __restrict__ grad, int64_t grad_stride, const T* __restrict__ z,
                            T* __restrict__ gz, PixelGeom geo) {
  for_each_pixel<L>(geo.pixels(), [&](int64_t p, const L& lanes) {
    const int64_t o = geo.base(p);
    entropy_backward_pixel<acc_of<T>>(z + o, geo.inner, geo.C, grad[p * grad_stride], gz + o, lanes);
  });
}

// partials == nullptr: out is the per-pixel map (P,). Else a reduced forward: out is the 0-d result (scale
// times the sum of the map) and partials a scratch of reduce_blocks_bound<T>(outer, C, inner) values.
template <typename T>
cudaError_t launch_entropy_forward(const T* z, acc_of<T>* out, acc_of<T>* partials, double scale, int64_t outer,
                                   int64_t C, int64_t inner, cudaStream_t stream) {
  const PixelGeom geo{outer, C, inner};
  const MapOut<acc_of<T>> mo = map_out(out, partials);
  // the tile kernels, both layouts (tile_geom); the per-pixel kernel where the slab does not fit
  return launch_forward(
      EntropyForward<T>{z, mo}, out, scale, outer, C, inner, stream,
      [](auto cb) { return entropy_forward_planes_kernel<T, decltype(cb)::value>; },
      [](auto cb) { return entropy_forward_partials_planes_kernel<T, decltype(cb)::value>; },
      [&](auto lanes, unsigned int blocks, size_t smem) {
        entropy_forward_rows_kernel<T, decltype(lanes)><<<blocks, kPixelThreads, smem, stream>>>(z, mo, geo);
      });
}

template <typename T>
cudaError_t launch_entropy_backward(const acc_of<T>* grad, int64_t grad_stride, const T* z, T* gz, int64_t outer,
                                    int64_t C, int64_t inner, cudaStream_t stream) {
  const PixelGeom geo{outer, C, inner};
  if (geo.pixels() == 0) return cudaSuccess;
  bool launched = false;
  {  // the tile kernels, both layouts (tile_geom); the per-pixel kernel below where the slab does not fit
    const cudaError_t e =
        launch_planes(EntropyBackward<T>{grad, grad_stride, z, gz}, outer, C, inner, &launched, stream,
                      [](auto cb) { return entropy_backward_planes_kernel<T, decltype(cb)::value>; });
    if (e != cudaSuccess || launched) return e;
  }
  launch_rows(geo.pixels(), inner, [&](auto lanes, unsigned int blocks) {
    entropy_backward_rows_kernel<T, decltype(lanes)><<<blocks, kPixelThreads, 0, stream>>>(grad, grad_stride, z, gz, geo);
  });
  return cudaGetLastError();
}
#endif  // __CUDACC__

}  // namespace cuda
}  // namespace uda_ops
