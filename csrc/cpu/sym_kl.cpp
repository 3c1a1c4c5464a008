// Symmetric KL between two predictions (SPEC section 1): forward map and backward, one pass each.
#include "pairwise.h"

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
  return pair_map_forward("sym_kl", a, b, dim, [](auto* A, auto* B, auto* P, auto* Q, int64_t C, int64_t T,
                                                  int64_t n, auto* out) {
    sym_kl_forward_tile(A, B, P, Q, C, T, n, out);
  });
}

std::tuple<at::Tensor, at::Tensor> sym_kl_backward_cpu(const at::Tensor& grad, const at::Tensor& a,
                                                       const at::Tensor& b, int64_t dim,
                                                       bool detach_targets) {
  return pair_grad_backward("sym_kl_backward", grad, a, b, dim, /*need_b=*/true,
                            [&](auto* A, auto* B, auto* P, auto* Q, int64_t C, int64_t T, int64_t n,
                                const auto* g, int64_t gs) {
                              sym_kl_backward_tile(A, B, P, Q, C, T, n, g, gs, detach_targets);
                            });
}

}  // namespace cpu
}  // namespace uda_ops

TORCH_LIBRARY_IMPL(uda_ops, CPU, m) {
  m.impl("sym_kl", &uda_ops::cpu::sym_kl_cpu);
  m.impl("sym_kl_backward", &uda_ops::cpu::sym_kl_backward_cpu);
}
