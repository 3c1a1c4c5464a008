// Symmetric KL between two predictions (SPEC section 1): forward map and backward, one pass each.
#include "pairwise.h"

namespace uda_ops {
namespace cpu {

// With a' = a - max a and b' = b - max b: d_c = a'_c - b'_c (shifted_diff) differs from a_c - b_c by a per-pixel
// constant, which every use below cancels (sum_c (p_c - q_c) = 0, and d_c - sum_c p_c d_c). The shifted logits are
// exact near the maximum, so where p and q agree on their top class d stays small instead of carrying two large
// logits' ulps.

// out[i] = 1/2 sum_c (p_c - q_c) d_c
template <typename acc_t, typename R>
UDA_MULTIVERSION void sym_kl_forward_tile(const acc_t* __restrict A, const acc_t* __restrict B, int64_t xs,
                                          acc_t* __restrict P, acc_t* __restrict Q, int64_t C,
                                          int64_t T, int64_t n, acc_t* __restrict out, R lanes) {
  acc_t ma[kMaxLanes], mb[kMaxLanes], ls[kMaxLanes], acc[kMaxLanes];
  softmax_tile(A, xs, P, ma, ls, C, T, n, lanes);
  softmax_tile(B, xs, Q, mb, ls, C, T, n, lanes);
  for (int64_t i = 0; i < n; ++i) acc[i] = 0;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = c * T + i;
      acc[i] += mul0(P[k] - Q[k], shifted_diff(A[c * xs + i], ma[i], B[c * xs + i], mb[i]));
    }
  R::sum(acc, n);
  for (int64_t i = 0; i < n; ++i) out[i] = acc_t(0.5) * acc[i];
}

// Writes the gradients w.r.t. a and b for the per-pixel upstream gradient g[i * gs] to GA and GB (class
// stride os; they may be A and B themselves: each element is read before it is written).
template <typename acc_t, typename R>
UDA_MULTIVERSION void sym_kl_backward_tile(const acc_t* A, const acc_t* B, int64_t xs,
                                           acc_t* __restrict P, acc_t* __restrict Q, int64_t C,
                                           int64_t T, int64_t n, const acc_t* __restrict g,
                                           int64_t gs, bool detach, acc_t* GA, acc_t* GB, int64_t os, R lanes) {
  acc_t ma[kMaxLanes], mb[kMaxLanes], ls[kMaxLanes], sa[kMaxLanes], sb[kMaxLanes], hg[kMaxLanes];
  softmax_tile(A, xs, P, ma, ls, C, T, n, lanes);
  softmax_tile(B, xs, Q, mb, ls, C, T, n, lanes);
  for (int64_t i = 0; i < n; ++i) hg[i] = acc_t(0.5) * g[i * gs];
  if (detach) {  // ADR code: each direction's target held constant
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < n; ++i) {
        const int64_t k = c * T + i;
        const acc_t d = hg[i] * (P[k] - Q[k]);
        GA[c * os + i] = d;
        GB[c * os + i] = -d;
      }
    return;
  }
  for (int64_t i = 0; i < n; ++i) sa[i] = sb[i] = 0;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = c * T + i;
      const acc_t d = shifted_diff(A[c * xs + i], ma[i], B[c * xs + i], mb[i]);
      sa[i] += mul0(P[k], d);
      sb[i] -= mul0(Q[k], d);
    }
  R::sum(sa, n);
  R::sum(sb, n);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = c * T + i;
      const acc_t d = shifted_diff(A[c * xs + i], ma[i], B[c * xs + i], mb[i]);
      const acc_t ga = hg[i] * (mul0(P[k], d - sa[i]) + P[k] - Q[k]);
      const acc_t gb = hg[i] * (mul0(Q[k], -d - sb[i]) + Q[k] - P[k]);
      GA[c * os + i] = ga;
      GB[c * os + i] = gb;
    }
}

// detach_targets changes only the backward.
at::Tensor sym_kl_cpu(const at::Tensor& a, const at::Tensor& b, int64_t dim, bool /*detach_targets*/,
                      int64_t reduction) {
  return pair_map_forward(
      "sym_kl", a, b, dim,
      [](auto* A, auto* B, int64_t xs, auto* P, auto* Q, int64_t C, int64_t T, int64_t n, auto* out, int64_t,
         auto lanes) {
        sym_kl_forward_tile(A, B, xs, P, Q, C, T, n, out, lanes);
      },
      reduction);
}

std::tuple<at::Tensor, at::Tensor> sym_kl_backward_cpu(const at::Tensor& grad, const at::Tensor& a,
                                                       const at::Tensor& b, int64_t dim,
                                                       bool detach_targets) {
  return pair_grad_backward("sym_kl_backward", grad, a, b, dim, /*need_b=*/true,
                            [&](auto* A, auto* B, int64_t xs, auto* P, auto* Q, int64_t C, int64_t T, int64_t n,
                                const auto* g, int64_t gs, auto* GA, auto* GB, int64_t os, auto lanes) {
                              sym_kl_backward_tile(A, B, xs, P, Q, C, T, n, g, gs, detach_targets, GA, GB, os,
                                                   lanes);
                            });
}

}  // namespace cpu
}  // namespace uda_ops

TORCH_LIBRARY_IMPL(uda_ops, CPU, m) {
  m.impl("sym_kl", &uda_ops::cpu::sym_kl_cpu);
  m.impl("sym_kl_backward", &uda_ops::cpu::sym_kl_backward_cpu);
}
