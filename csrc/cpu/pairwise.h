// The host side shared by the two-input ops (sym_kl, kl_div, cosine_discrepancy): both inputs walked in
// one canonical layout, tile by tile, as [C][T] buffers A and B with two scratch buffers P and Q; the
// op supplies only its tile function.
#pragma once

#include "common.h"

namespace uda_ops {
namespace cpu {

// tile(A, B, P, Q, C, T, n, out) writes the map of the tile's n pixels; returns the (N, *) map (acc_t).
template <typename TileFn>
at::Tensor pair_map_forward(const char* op, const at::Tensor& a, const at::Tensor& b, int64_t dim,
                            const TileFn& tile) {
  check_pair(op, a, b);
  const ClassLayout L = class_layout(a, dim);
  check_classes(op, L);
  const at::Tensor ac = to_layout(a, dim, L), bc = to_layout(b, dim, L);
  at::Tensor out = at::empty(map_shape(a, dim), a.options().dtype(acc_dtype(a)));
  const TileGrid g(L);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "uda_ops_pair_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* pa = ac.const_data_ptr<scalar_t>();
    const scalar_t* pb = bc.const_data_ptr<scalar_t>();
    acc_t* po = out.mutable_data_ptr<acc_t>();
    for_each_tile<acc_t>(g, 4, [&](const Tile& t, acc_t* buf) {
      acc_t *A = buf, *B = A + g.C * g.T, *P = B + g.C * g.T, *Q = P + g.C * g.T;
      load_tile(pa, g, t, A);
      load_tile(pb, g, t, B);
      tile(A, B, P, Q, g.C, g.T, t.n, po + t.p0);
    });
  });
  return out;
}

// tile(A, B, P, Q, C, T, n, g, gs) overwrites A with d/da and, when need_b, B with d/db, for the map
// gradient g[i * gs] (gs = 0: an expanded scalar). Returns (d/da, d/db | empty) in a's dtype and layout.
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
    for_each_tile<acc_t>(g, 4, [&](const Tile& t, acc_t* buf) {
      acc_t *A = buf, *B = A + g.C * g.T, *P = B + g.C * g.T, *Q = P + g.C * g.T;
      load_tile(pa, g, t, A);
      load_tile(pb, g, t, B);
      tile(A, B, P, Q, g.C, g.T, t.n, pgrad + t.p0 * pg.stride, pg.stride);
      store_tile(A, g, t, pga);
      if (need_b) store_tile(B, g, t, pgb);
    });
  });
  return {ga, gb};
}

}  // namespace cpu
}  // namespace uda_ops
