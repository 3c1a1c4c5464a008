// The host side shared by the two-input ops (sym_kl, kl_div, cosine_discrepancy, and clan_adversarial's forward):
// both inputs walked in one canonical layout, tile by tile, read in place (fp32/fp64 NCHW) or through [C][T] buffers
// A and B (class stride xs), with two [C][T] scratch buffers P and Q; the op supplies only its tile function.
#pragma once

#include "common.h"

namespace uda_ops {
namespace cpu {

// tile(A, B, xs, P, Q, C, T, n, out, p0, lanes) writes the map of the tile's n pixels, the first of which is pixel p0
// (`lanes`: PixelLanes or RowLanes, common.h); returns the (N, *) map (acc_t), or its fused reduction (layout.h).
template <typename TileFn>
at::Tensor pair_map_forward(const char* op, const at::Tensor& a, const at::Tensor& b, int64_t dim,
                            const TileFn& tile, int64_t reduction = kReduceNone) {
  const Reduction r = check_reduction(op, reduction);
  check_pair(op, a, b);
  const ClassLayout L = class_layout(a, dim);
  check_classes(op, L);
  const at::Tensor ac = to_layout(a, dim, L), bc = to_layout(b, dim, L);
  at::Tensor out = empty_forward_output(a, dim, r);
  const TileGrid g(L);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "uda_ops_pair_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* pa = ac.const_data_ptr<scalar_t>();
    const scalar_t* pb = bc.const_data_ptr<scalar_t>();
    ForwardOut<acc_t> fo(out, g, r, L.pixels());
    if (by_rows(g)) {
      const int64_t K = row_chunks(g), Cp = K * kRowLanes;
      for_each_tile<acc_t>(g, 4, [&](const Tile& t, acc_t* buf) {
        acc_t *A = buf, *B = A + Cp, *P = B + Cp, *Q = P + Cp;
        acc_t lanes[kMaxLanes], v[kRowLanes];
        acc_t* o = fo.dst(t, lanes);
        for (int64_t i = 0; i < t.n; ++i) {
          const acc_t* a_ = row_in(pa, g, t, i, A, kNegInf<acc_t>);
          const acc_t* b_ = row_in(pb, g, t, i, B, kNegInf<acc_t>);
          tile(a_, b_, kRowLanes, P, Q, K, kRowLanes, kRowLanes, v, t.p0 + i, RowLanes{g.C});
          o[i] = v[0];
        }
        fo.done(t, o);
      });
      fo.finish();
      return;
    }
    for_each_tile<acc_t>(g, 4, [&](const Tile& t, acc_t* buf) {
      acc_t *A = buf, *B = A + g.C * g.T, *P = B + g.C * g.T, *Q = P + g.C * g.T;
      acc_t lanes[kMaxLanes];
      int64_t xs;
      const acc_t* a_ = tile_in(pa, g, t, A, xs);
      const acc_t* b_ = tile_in(pb, g, t, B, xs);
      acc_t* o = fo.dst(t, lanes);
      tile(a_, b_, xs, P, Q, g.C, g.T, t.n, o, t.p0, PixelLanes{});
      fo.done(t, o);
    });
    fo.finish();
  });
  return out;
}

// tile(A, B, xs, P, Q, C, T, n, g, gs, GA, GB, os, lanes) writes d/da to GA and, when need_b, d/db to GB (class
// stride os) for the map gradient g[i * gs] (gs = 0: an expanded scalar); GA, GB may be A, B themselves
// (the buffers), so a tile function reads A[k], B[k] before it writes GA[k], GB[k]. Returns
// (d/da, d/db | empty) in a's dtype and layout.
template <typename TileFn>
std::tuple<at::Tensor, at::Tensor> pair_grad_backward(const char* op, const at::Tensor& grad, const at::Tensor& a,
                                                      const at::Tensor& b, int64_t dim, bool need_b,
                                                      const TileFn& tile) {
  check_pair(op, a, b);
  const ClassLayout L = class_layout(a, dim);
  check_classes(op, L);
  const at::Tensor ac = to_layout(a, dim, L), bc = to_layout(b, dim, L);
  const PixelGrad pg = pixel_grad(grad, acc_dtype(a), L.pixels());
  at::Tensor ga = empty_in_layout(a, dim, L, a.scalar_type());
  at::Tensor gb = need_b ? empty_in_layout(a, dim, L, a.scalar_type()) : at::empty({0}, a.options());
  const TileGrid g(L);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "uda_ops_pair_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* pa = ac.const_data_ptr<scalar_t>();
    const scalar_t* pb = bc.const_data_ptr<scalar_t>();
    const acc_t* pgrad = pg.storage.const_data_ptr<acc_t>();
    scalar_t* pga = ga.mutable_data_ptr<scalar_t>();
    scalar_t* pgb = need_b ? gb.mutable_data_ptr<scalar_t>() : nullptr;
    if (by_rows(g)) {
      const int64_t K = row_chunks(g), Cp = K * kRowLanes;
      for_each_tile<acc_t>(g, 4, [&](const Tile& t, acc_t* buf) {
        acc_t *A = buf, *B = A + Cp, *P = B + Cp, *Q = P + Cp;
        for (int64_t i = 0; i < t.n; ++i) {
          const acc_t* a_ = row_in(pa, g, t, i, A, kNegInf<acc_t>);
          const acc_t* b_ = row_in(pb, g, t, i, B, kNegInf<acc_t>);
          acc_t* ga_ = row_out(pga, g, t, i, A);
          acc_t* gb_ = need_b ? row_out(pgb, g, t, i, B) : nullptr;
          tile(a_, b_, kRowLanes, P, Q, K, kRowLanes, kRowLanes, pgrad + (t.p0 + i) * pg.stride, 0, ga_, gb_,
               kRowLanes, RowLanes{g.C});
          row_out_done(A, g, t, i, pga);
          if (need_b) row_out_done(B, g, t, i, pgb);
        }
      });
      return;
    }
    for_each_tile<acc_t>(g, 4, [&](const Tile& t, acc_t* buf) {
      acc_t *A = buf, *B = A + g.C * g.T, *P = B + g.C * g.T, *Q = P + g.C * g.T;
      int64_t xs, os;
      const acc_t* a_ = tile_in(pa, g, t, A, xs);
      const acc_t* b_ = tile_in(pb, g, t, B, xs);
      acc_t* ga_ = tile_out(pga, g, t, A, os);
      acc_t* gb_ = need_b ? tile_out(pgb, g, t, B, os) : nullptr;
      tile(a_, b_, xs, P, Q, g.C, g.T, t.n, pgrad + t.p0 * pg.stride, pg.stride, ga_, gb_, os, PixelLanes{});
      tile_out_done(A, g, t, pga);
      if (need_b) tile_out_done(B, g, t, pgb);
    });
  });
  return {ga, gb};
}

}  // namespace cpu
}  // namespace uda_ops
