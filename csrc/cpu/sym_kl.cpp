// Symmetric KL between two predictions (SPEC section 1): forward map and backward, one pass each.
#include "common.h"

namespace uda_ops {
namespace cpu {

// out[i] = 1/2 sum_c (p_c - q_c)(a_c - b_c)
template <typename acc_t>
UDA_MULTIVERSION void sym_kl_forward_tile(const acc_t* __restrict A, const acc_t* __restrict B,
                                          acc_t* __restrict P, acc_t* __restrict Q, int64_t C,
                                          int64_t T, int64_t n, acc_t* __restrict out) {
  acc_t lse[kMaxLanes], acc[kMaxLanes];
  softmax_tile(A, P, lse, C, T, n);
  softmax_tile(B, Q, lse, C, T, n);
  for (int64_t i = 0; i < n; ++i) acc[i] = 0;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = c * T + i;
      acc[i] += mul0(P[k] - Q[k], diff0(A[k], B[k]));
    }
  for (int64_t i = 0; i < n; ++i) out[i] = acc_t(0.5) * acc[i];
}

// Overwrites A and B with the gradients w.r.t. a and b for the per-pixel upstream gradient g[i * gs].
template <typename acc_t>
UDA_MULTIVERSION void sym_kl_backward_tile(acc_t* __restrict A, acc_t* __restrict B,
                                           acc_t* __restrict P, acc_t* __restrict Q, int64_t C,
                                           int64_t T, int64_t n, const acc_t* __restrict g,
                                           int64_t gs, bool detach) {
  acc_t lse[kMaxLanes], sa[kMaxLanes], sb[kMaxLanes], hg[kMaxLanes];
  softmax_tile(A, P, lse, C, T, n);
  softmax_tile(B, Q, lse, C, T, n);
  for (int64_t i = 0; i < n; ++i) hg[i] = acc_t(0.5) * g[i * gs];
  if (detach) {  // ADR code: each direction's target held constant
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < n; ++i) {
        const int64_t k = c * T + i;
        const acc_t d = hg[i] * (P[k] - Q[k]);
        A[k] = d;
        B[k] = -d;
      }
    return;
  }
  for (int64_t i = 0; i < n; ++i) sa[i] = sb[i] = 0;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = c * T + i;
      const acc_t d = diff0(A[k], B[k]);
      sa[i] += mul0(P[k], d);
      sb[i] -= mul0(Q[k], d);
    }
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = c * T + i;
      const acc_t d = diff0(A[k], B[k]);
      A[k] = hg[i] * (mul0(P[k], d - sa[i]) + P[k] - Q[k]);
      B[k] = hg[i] * (mul0(Q[k], -d - sb[i]) + Q[k] - P[k]);
    }
}

at::Tensor sym_kl_cpu(const at::Tensor& a, const at::Tensor& b, int64_t dim, bool detach_targets) {
  check_pair("sym_kl", a, b);
  const ClassLayout L = class_layout(a, dim);
  check_classes("sym_kl", L);
  const at::Tensor ac = to_layout(a, dim, L), bc = to_layout(b, dim, L);
  at::Tensor out = at::empty(map_shape(a, dim), a.options().dtype(acc_dtype(a)));
  const TileGrid g(L);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "sym_kl_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* pa = ac.const_data_ptr<scalar_t>();
    const scalar_t* pb = bc.const_data_ptr<scalar_t>();
    acc_t* po = out.mutable_data_ptr<acc_t>();
    for_each_tile<acc_t>(g, 4, [&](const Tile& t, acc_t* buf) {
      acc_t *A = buf, *B = A + g.C * g.T, *P = B + g.C * g.T, *Q = P + g.C * g.T;
      load_tile(pa, g, t, A);
      load_tile(pb, g, t, B);
      sym_kl_forward_tile(A, B, P, Q, g.C, g.T, t.n, po + t.p0);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> sym_kl_backward_cpu(const at::Tensor& grad, const at::Tensor& a,
                                                       const at::Tensor& b, int64_t dim,
                                                       bool detach_targets) {
  check_pair("sym_kl_backward", a, b);
  const ClassLayout L = class_layout(a, dim);
  check_classes("sym_kl_backward", L);
  const at::Tensor ac = to_layout(a, dim, L), bc = to_layout(b, dim, L);
  const PixelGrad pg = pixel_grad(grad, acc_dtype(a), L.pixels());
  at::Tensor ga = empty_in_layout(a, dim, L, a.scalar_type());
  at::Tensor gb = empty_in_layout(a, dim, L, a.scalar_type());
  const TileGrid g(L);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "sym_kl_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* pa = ac.const_data_ptr<scalar_t>();
    const scalar_t* pb = bc.const_data_ptr<scalar_t>();
    const acc_t* pg_ = pg.storage.const_data_ptr<acc_t>();
    scalar_t* pga = ga.mutable_data_ptr<scalar_t>();
    scalar_t* pgb = gb.mutable_data_ptr<scalar_t>();
    for_each_tile<acc_t>(g, 4, [&](const Tile& t, acc_t* buf) {
      acc_t *A = buf, *B = A + g.C * g.T, *P = B + g.C * g.T, *Q = P + g.C * g.T;
      load_tile(pa, g, t, A);
      load_tile(pb, g, t, B);
      sym_kl_backward_tile(A, B, P, Q, g.C, g.T, t.n, pg_ + t.p0 * pg.stride, pg.stride, detach_targets);
      store_tile(A, g, t, pga);
      store_tile(B, g, t, pgb);
    });
  });
  return {ga, gb};
}

}  // namespace cpu
}  // namespace uda_ops

TORCH_LIBRARY_IMPL(uda_ops, CPU, m) {
  m.impl("sym_kl", &uda_ops::cpu::sym_kl_cpu);
  m.impl("sym_kl_backward", &uda_ops::cpu::sym_kl_backward_cpu);
}
