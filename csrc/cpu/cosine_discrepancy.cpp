// Cosine discrepancy M = 1 - cos(softmax(z1), softmax(z2)) per pixel (SPEC section 3).
#include "cosine.h"
#include "pairwise.h"

namespace uda_ops {
namespace cpu {

template <typename acc_t, typename R>
UDA_MULTIVERSION void cosine_discrepancy_forward_tile(const acc_t* __restrict Z1, const acc_t* __restrict Z2,
                                                      int64_t xs, acc_t* __restrict P1, acc_t* __restrict P2,
                                                      int64_t C, int64_t T, int64_t n,
                                                      acc_t* __restrict out, R lanes) {
  acc_t cos[kMaxLanes], i12[kMaxLanes], i11[kMaxLanes], i22[kMaxLanes];
  softmax_tile(Z1, xs, P1, C, T, n, lanes);
  softmax_tile(Z2, xs, P2, C, T, n, lanes);
  cosine_stats(P1, P2, C, T, n, cos, i12, i11, i22, lanes);
  for (int64_t i = 0; i < n; ++i) out[i] = acc_t(1) - cos[i];
}

// Writes the gradients to G1, G2 (which may be Z1, Z2: the logits are read only by the softmaxes).
template <typename acc_t, typename R>
UDA_MULTIVERSION void cosine_discrepancy_backward_tile(const acc_t* Z1, const acc_t* Z2, int64_t xs,
                                                       acc_t* __restrict P1, acc_t* __restrict P2,
                                                       int64_t C, int64_t T, int64_t n,
                                                       const acc_t* __restrict g, int64_t gs, acc_t* G1,
                                                       acc_t* G2, int64_t os, R lanes) {
  acc_t cos[kMaxLanes], i12[kMaxLanes], i11[kMaxLanes], i22[kMaxLanes], gm[kMaxLanes];
  softmax_tile(Z1, xs, P1, C, T, n, lanes);
  softmax_tile(Z2, xs, P2, C, T, n, lanes);
  cosine_stats(P1, P2, C, T, n, cos, i12, i11, i22, lanes);
  for (int64_t i = 0; i < n; ++i) gm[i] = g[i * gs];
  cosine_grad(P1, P2, C, T, n, cos, i12, i11, i22, gm, G1, G2, os, lanes);
}

at::Tensor cosine_discrepancy_cpu(const at::Tensor& z1, const at::Tensor& z2, int64_t dim) {
  return pair_map_forward("cosine_discrepancy", z1, z2, dim, [](auto* A, auto* B, int64_t xs, auto* P, auto* Q,
                                                                int64_t C, int64_t T, int64_t n, auto* out,
                                                                int64_t, auto lanes) {
    cosine_discrepancy_forward_tile(A, B, xs, P, Q, C, T, n, out, lanes);
  });
}

std::tuple<at::Tensor, at::Tensor> cosine_discrepancy_backward_cpu(const at::Tensor& grad,
                                                                   const at::Tensor& z1,
                                                                   const at::Tensor& z2, int64_t dim) {
  return pair_grad_backward("cosine_discrepancy_backward", grad, z1, z2, dim, /*need_b=*/true,
                            [](auto* A, auto* B, int64_t xs, auto* P, auto* Q, int64_t C, int64_t T, int64_t n,
                               const auto* g, int64_t gs, auto* GA, auto* GB, int64_t os, auto lanes) {
                              cosine_discrepancy_backward_tile(A, B, xs, P, Q, C, T, n, g, gs, GA, GB, os, lanes);
                            });
}

}  // namespace cpu
}  // namespace uda_ops

TORCH_LIBRARY_IMPL(uda_ops, CPU, m) {
  m.impl("cosine_discrepancy", &uda_ops::cpu::cosine_discrepancy_cpu);
  m.impl("cosine_discrepancy_backward", &uda_ops::cpu::cosine_discrepancy_backward_cpu);
}
