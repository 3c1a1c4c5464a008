// CLAN's cosine-discrepancy-weighted adversarial BCE (SPEC section 3, CLAN Eq. 5):
// loss = (epsilon + lambda_local * M) * BCEWithLogits(d, target) per pixel. Per-pixel math, kernels
// and launchers. Torch-free: compiles with nvcc alone.
#pragma once

#include "common.cuh"
#include "cosine_discrepancy_kernels.cuh"

namespace uda_ops {
namespace cuda {

// BCE with logits and d(BCE)/dd = sigmoid(d) - t, both stable for any d (NaN d gives NaN).
template <typename acc_t>
UDA_HD void bce_with_logits(acc_t d, acc_t t, acc_t* loss, acc_t* dloss) {
  const acc_t e = uda_exp(-uda_abs(d));  // e^{-|d|} in (0, 1]
  *loss = (d > acc_t(0) ? d : acc_t(0)) - d * t + uda_log1p(e);
  *dloss = (d >= acc_t(0) ? acc_t(1) : e) / (acc_t(1) + e) - t;
}

struct ClanParams {
  double target, lambda_local, epsilon;
};

template <typename acc_t, typename T, typename L = OneLane>
UDA_HD acc_t clan_adversarial_pixel(acc_t d, const T* __restrict__ z1, const T* __restrict__ z2, int64_t cs,
                                    int64_t C, acc_t target, acc_t lam, acc_t eps, const L& lanes = L()) {
  const CosineStats<acc_t> st = cosine_stats<acc_t>(z1, z2, cs, C, lanes);
  acc_t l, dl;
  bce_with_logits(d, target, &l, &dl);
  return (eps + lam * (acc_t(1) - st.cos)) * l;
}

// Returns d/dd; when g1 != nullptr also writes the gradients through the weight map into g1, g2.
template <typename acc_t, typename T, typename L = OneLane>
UDA_HD acc_t clan_adversarial_backward_pixel(acc_t d, const T* __restrict__ z1, const T* __restrict__ z2,
                                             int64_t cs, int64_t C, acc_t g, acc_t target, acc_t lam, acc_t eps,
                                             T* __restrict__ g1, T* __restrict__ g2,
                                             const L& lanes = L()) {
  const CosineStats<acc_t> st = cosine_stats<acc_t>(z1, z2, cs, C, lanes);
  acc_t l, dl;
  bce_with_logits(d, target, &l, &dl);
  if (g1 != nullptr) cosine_grad_pixel(z1, z2, cs, C, st, g * lam * l, g1, g2, lanes);
  return g * (eps + lam * (acc_t(1) - st.cos)) * dl;
}

// ---- planes tiles (common.cuh): the cosine of CosineTile, the BCE per lane.
// Loads the tile, computes its cosine and, per lane, BCE(d, target) and its derivative; returns C.
template <typename T, typename S>
UDA_HD int clan_tile(const PlanesGeom& g, const TilePos& tp, S* s, const T* z1, const T* z2, const acc_of<T>* d,
                     acc_of<T> target, CosineTile<T>& ct, acc_of<T> (&l)[kLanes<T>], acc_of<T> (&dl)[kLanes<T>]) {
  const int C = load_slabs(g, tp, s, z1, z2);
  ct.compute(C, s);
  acc_of<T> v[kLanes<T>];
  load_map(d + tp.map, 1, v, tp);
UDA_UNROLL
  for (int k = 0; k < kLanes<T>; ++k) bce_with_logits(v[k], target, &l[k], &dl[k]);
  return C;
}

template <typename T_>
struct ClanForward {
  using T = T_;
  using acc_t = acc_of<T>;
  static constexpr int kSlabs = 2, V = kLanes<T>;
  const acc_t* d;
  const T* z1;
  const T* z2;
  MapOut<acc_t> out;  // the per-pixel map, or the block partials of a reduced forward
  acc_t target, lam, eps;
  bool aligned() const { return aligned16(d) && aligned16(z1) && aligned16(z2) && aligned16(out.map); }

  template <typename S>
  UDA_HD acc_t operator()(const PlanesGeom& g, const TilePos& tp, S* s) const {
    CosineTile<T> ct;
    acc_t l[V], dl[V], v[V];
    clan_tile(g, tp, s, z1, z2, d, target, ct, l, dl);
UDA_UNROLL
    for (int k = 0; k < V; ++k) v[k] = (eps + lam * (acc_t(1) - ct.cos[k])) * l[k];
    return out.emit(tp, v);
  }
};

template <typename T_>
struct ClanBackward {
  using T = T_;
  using acc_t = acc_of<T>;
  static constexpr int kSlabs = 2, V = kLanes<T>;
  const acc_t* grad;
  int64_t grad_stride;
  const acc_t* d;
  const T* z1;
  const T* z2;
  acc_t* gd;
  T* g1;  // g1 == g2 == nullptr: the logit gradients are not needed
  T* g2;
  acc_t target, lam, eps;
  bool aligned() const {
    return aligned16(grad) && aligned16(d) && aligned16(z1) && aligned16(z2) && aligned16(gd) &&
           (g1 == nullptr || (aligned16(g1) && aligned16(g2)));
  }
  UDA_HD T* staged(int j) const { return j == 0 ? g1 : g2; }  // StagedRows: the output of slab j

  template <typename S>
  UDA_HD void operator()(const PlanesGeom& g, const TilePos& tp, S* s) const {
    CosineTile<T> ct;
    acc_t l[V], dl[V], gv[V], gm[V];
    const int C = clan_tile(g, tp, s, z1, z2, d, target, ct, l, dl);
    load_map(grad + tp.map * grad_stride, grad_stride, gv, tp);
UDA_UNROLL
    for (int k = 0; k < V; ++k) {
      gm[k] = gv[k] * lam * l[k];
      dl[k] *= gv[k] * (eps + lam * (acc_t(1) - ct.cos[k]));
    }
    store_map(gd + tp.map, dl, tp);
    if (g1 != nullptr) ct.grads(C, s, gm, g, tp, g1, g2);
  }
};

#if defined(__CUDACC__)
template <typename T, int CB>
__global__ void UDA_TILE_BOUNDS clan_adversarial_forward_planes_kernel(const ClanForward<T> op, const PlanesGeom g) {
  planes_kernel_body<CB>(op, g);
}

// "mean"/"sum": the block partial sums of the map's values, no map.
template <typename T, int CB>
__global__ void UDA_TILE_BOUNDS clan_adversarial_forward_partials_planes_kernel(const ClanForward<T> op, const PlanesGeom g) {
  planes_partials_body<CB>(op, g);
}

template <typename T, int CB>
__global__ void UDA_TILE_BOUNDS clan_adversarial_backward_planes_kernel(const ClanBackward<T> op, const PlanesGeom g) {
  planes_kernel_body<CB>(op, g);
}

// Per pixel, where the tile kernels' slab exceeds shared memory: a warp per pixel in the rows layout (L =
// WarpLanes), a thread per pixel with the classes in a loop in planes (OneLane); launch_rows picks.
template <typename T, typename L>
__global__ void UDA_ROWS_BOUNDS(T)
    clan_adversarial_forward_rows_kernel(const acc_of<T>* __restrict__ d, const T* __restrict__ z1,
                                    const T* __restrict__ z2, MapOut<acc_of<T>> out, PixelGeom geo,
                                    ClanParams prm) {
  using acc_t = acc_of<T>;
  const acc_t t = static_cast<acc_t>(prm.target), lam = static_cast<acc_t>(prm.lambda_local),
              eps = static_cast<acc_t>(prm.epsilon);
  acc_t sum = 0;
  for_each_pixel<L>(geo.pixels(), [&](int64_t p, const L& lanes) {
    const int64_t o = geo.base(p);
    const acc_t v = clan_adversarial_pixel<acc_t>(d[p], z1 + o, z2 + o, geo.inner, geo.C, t, lam, eps, lanes);
    if (lanes.leader()) sum += out.emit(p, v);
  });
  block_partial(out, sum);
}

template <typename T, typename L>
__global__ void UDA_ROWS_BOUNDS(T)
    clan_adversarial_backward_rows_kernel(const acc_of<T>* __restrict__ grad, int64_t grad_stride,
                                     const acc_of<T>* __restrict__ d, const T* __restrict__ z1,
                                     const T* __restrict__ z2, acc_of<T>* __restrict__ gd, T* __restrict__ g1,
                                     T* __restrict__ g2, PixelGeom geo, ClanParams prm) {
  using acc_t = acc_of<T>;
  const acc_t t = static_cast<acc_t>(prm.target), lam = static_cast<acc_t>(prm.lambda_local),
              eps = static_cast<acc_t>(prm.epsilon);
  for_each_pixel<L>(geo.pixels(), [&](int64_t p, const L& lanes) {
    const int64_t o = geo.base(p);
    const acc_t v = clan_adversarial_backward_pixel<acc_t>(d[p], z1 + o, z2 + o, geo.inner, geo.C,
                                                           grad[p * grad_stride], t, lam, eps,
                                                           g1 != nullptr ? g1 + o : nullptr,
                                                           g2 != nullptr ? g2 + o : nullptr, lanes);
    if (lanes.leader()) gd[p] = v;
  });
}

// d: discriminator logits, one acc_t per pixel (P,); gd: (P,) in acc_t.
// partials == nullptr: out is the per-pixel map (P,). Else a reduced forward: out is the 0-d result (scale
// times the sum of the map) and partials a scratch of reduce_blocks_bound<T>(outer, C, inner) values.
template <typename T>
cudaError_t launch_clan_adversarial_forward(const acc_of<T>* d, const T* z1, const T* z2, acc_of<T>* out,
                                            acc_of<T>* partials, double scale, int64_t outer, int64_t C,
                                            int64_t inner, double target, double lambda_local, double epsilon,
                                            cudaStream_t stream) {
  using acc_t = acc_of<T>;
  const PixelGeom geo{outer, C, inner};
  const MapOut<acc_t> mo = map_out(out, partials);
  // the tile kernels, both layouts (tile_geom); the per-pixel kernel where the slab does not fit
  return launch_forward(
      ClanForward<T>{d, z1, z2, mo, acc_t(target), acc_t(lambda_local), acc_t(epsilon)}, out, scale, outer, C,
      inner, stream, [](auto cb) { return clan_adversarial_forward_planes_kernel<T, decltype(cb)::value>; },
      [](auto cb) { return clan_adversarial_forward_partials_planes_kernel<T, decltype(cb)::value>; },
      [&](auto lanes, unsigned int blocks, size_t smem) {
        clan_adversarial_forward_rows_kernel<T, decltype(lanes)><<<blocks, kPixelThreads, smem, stream>>>(
            d, z1, z2, mo, geo, ClanParams{target, lambda_local, epsilon});
      });
}

// g1 == g2 == nullptr: the logit gradients are not needed (not computed, not written).
template <typename T>
cudaError_t launch_clan_adversarial_backward(const acc_of<T>* grad, int64_t grad_stride, const acc_of<T>* d,
                                             const T* z1, const T* z2, acc_of<T>* gd, T* g1, T* g2, int64_t outer,
                                             int64_t C, int64_t inner, double target, double lambda_local,
                                             double epsilon, cudaStream_t stream) {
  const PixelGeom geo{outer, C, inner};
  if (geo.pixels() == 0) return cudaSuccess;
  {  // the tile kernels, both layouts (tile_geom); the per-pixel kernel below where the slab does not fit
    bool launched = false;
    const cudaError_t e = launch_planes(ClanBackward<T>{grad, grad_stride, d, z1, z2, gd, g1, g2, acc_of<T>(target), acc_of<T>(lambda_local), acc_of<T>(epsilon)}, outer, C, inner, &launched, stream,
                                        [](auto cb) { return clan_adversarial_backward_planes_kernel<T, decltype(cb)::value>; });
    if (e != cudaSuccess || launched) return e;
  }
  launch_rows(geo.pixels(), inner, [&](auto lanes, unsigned int blocks) {
    clan_adversarial_backward_rows_kernel<T, decltype(lanes)><<<blocks, kPixelThreads, 0, stream>>>(
        grad, grad_stride, d, z1, z2, gd, g1, g2, geo, ClanParams{target, lambda_local, epsilon});
  });
  return cudaGetLastError();
}
#endif  // __CUDACC__

}  // namespace cuda
}  // namespace uda_ops
