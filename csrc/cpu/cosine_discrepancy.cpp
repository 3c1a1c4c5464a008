// Cosine discrepancy M = 1 - cos(softmax(z1), softmax(z2)) per pixel (SPEC section 3).
#include "cosine.h"

namespace uda_ops {
namespace cpu {

template <typename acc_t>
UDA_MULTIVERSION void cosine_discrepancy_forward_tile(const acc_t* __restrict Z1, const acc_t* __restrict Z2,
                                                      acc_t* __restrict P1, acc_t* __restrict P2,
                                                      int64_t C, int64_t T, int64_t n,
                                                      acc_t* __restrict out) {
  acc_t lse[kMaxLanes], cos[kMaxLanes], i12[kMaxLanes], i11[kMaxLanes], i22[kMaxLanes];
  softmax_tile(Z1, P1, lse, C, T, n);
  softmax_tile(Z2, P2, lse, C, T, n);
  cosine_stats(P1, P2, C, T, n, cos, i12, i11, i22);
  for (int64_t i = 0; i < n; ++i) out[i] = acc_t(1) - cos[i];
}

// Overwrites Z1, Z2 with the gradients.
template <typename acc_t>
UDA_MULTIVERSION void cosine_discrepancy_backward_tile(acc_t* __restrict Z1, acc_t* __restrict Z2,
                                                       acc_t* __restrict P1, acc_t* __restrict P2,
                                                       int64_t C, int64_t T, int64_t n,
                                                       const acc_t* __restrict g, int64_t gs) {
  acc_t lse[kMaxLanes], cos[kMaxLanes], i12[kMaxLanes], i11[kMaxLanes], i22[kMaxLanes], gm[kMaxLanes];
  softmax_tile(Z1, P1, lse, C, T, n);
  softmax_tile(Z2, P2, lse, C, T, n);
  cosine_stats(P1, P2, C, T, n, cos, i12, i11, i22);
  for (int64_t i = 0; i < n; ++i) gm[i] = g[i * gs];
  cosine_grad(P1, P2, C, T, n, cos, i12, i11, i22, gm, Z1, Z2);
}

at::Tensor cosine_discrepancy_cpu(const at::Tensor& z1, const at::Tensor& z2, int64_t dim) {
  check_pair("cosine_discrepancy", z1, z2);
  const ClassLayout L = class_layout(z1, dim);
  check_classes("cosine_discrepancy", L);
  const at::Tensor ac = to_layout(z1, dim, L), bc = to_layout(z2, dim, L);
  at::Tensor out = at::empty(map_shape(z1, dim), z1.options().dtype(acc_dtype(z1)));
  const TileGrid g(L);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z1.scalar_type(), "cosine_discrepancy_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* pa = ac.const_data_ptr<scalar_t>();
    const scalar_t* pb = bc.const_data_ptr<scalar_t>();
    acc_t* po = out.mutable_data_ptr<acc_t>();
    for_each_tile<acc_t>(g, 4, [&](const Tile& t, acc_t* buf) {
      acc_t *A = buf, *B = A + g.C * g.T, *P = B + g.C * g.T, *Q = P + g.C * g.T;
      load_tile(pa, g, t, A);
      load_tile(pb, g, t, B);
      cosine_discrepancy_forward_tile(A, B, P, Q, g.C, g.T, t.n, po + t.p0);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> cosine_discrepancy_backward_cpu(const at::Tensor& grad,
                                                                   const at::Tensor& z1,
                                                                   const at::Tensor& z2, int64_t dim) {
  check_pair("cosine_discrepancy_backward", z1, z2);
  const ClassLayout L = class_layout(z1, dim);
  check_classes("cosine_discrepancy_backward", L);
  const at::Tensor ac = to_layout(z1, dim, L), bc = to_layout(z2, dim, L);
  const PixelGrad pg = pixel_grad(grad, acc_dtype(z1), L.pixels());
  at::Tensor g1 = empty_in_layout(z1, dim, L, z1.scalar_type());
  at::Tensor g2 = empty_in_layout(z1, dim, L, z1.scalar_type());
  const TileGrid g(L);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z1.scalar_type(), "cosine_discrepancy_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* pa = ac.const_data_ptr<scalar_t>();
    const scalar_t* pb = bc.const_data_ptr<scalar_t>();
    const acc_t* pg_ = pg.storage.const_data_ptr<acc_t>();
    scalar_t* pg1 = g1.mutable_data_ptr<scalar_t>();
    scalar_t* pg2 = g2.mutable_data_ptr<scalar_t>();
    for_each_tile<acc_t>(g, 4, [&](const Tile& t, acc_t* buf) {
      acc_t *A = buf, *B = A + g.C * g.T, *P = B + g.C * g.T, *Q = P + g.C * g.T;
      load_tile(pa, g, t, A);
      load_tile(pb, g, t, B);
      cosine_discrepancy_backward_tile(A, B, P, Q, g.C, g.T, t.n, pg_ + t.p0 * pg.stride, pg.stride);
      store_tile(A, g, t, pg1);
      store_tile(B, g, t, pg2);
    });
  });
  return {g1, g2};
}

}  // namespace cpu
}  // namespace uda_ops

TORCH_LIBRARY_IMPL(uda_ops, CPU, m) {
  m.impl("cosine_discrepancy", &uda_ops::cpu::cosine_discrepancy_cpu);
  m.impl("cosine_discrepancy_backward", &uda_ops::cpu::cosine_discrepancy_backward_cpu);
}
