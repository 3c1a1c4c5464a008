// Cosine discrepancy M = 1 - cos(p1, p2) of two softmaxes over a tile, and its gradient: shared by the
// cosine_discrepancy and clan_adversarial kernels.
#pragma once

#include "common.h"

namespace uda_ops {
namespace cpu {


// From softmaxes P1, P2 [C][T]: cos[i] and the three inverse norms the gradient needs.
template <typename acc_t>
UDA_INLINE void cosine_stats(const acc_t* __restrict P1, const acc_t* __restrict P2, int64_t C,
                             int64_t T, int64_t n, acc_t* __restrict cos, acc_t* __restrict inv12,
                             acc_t* __restrict inv11, acc_t* __restrict inv22) {
  for (int64_t i = 0; i < n; ++i) cos[i] = inv11[i] = inv22[i] = 0;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = c * T + i;
      cos[i] += P1[k] * P2[k];
      inv11[i] += P1[k] * P1[k];
      inv22[i] += P2[k] * P2[k];
    }
  for (int64_t i = 0; i < n; ++i) {  // |p|^2 >= 1/C: no eps needed
    inv12[i] = acc_t(1) / std::sqrt(inv11[i] * inv22[i]);
    cos[i] *= inv12[i];
    inv11[i] = acc_t(1) / inv11[i];
    inv22[i] = acc_t(1) / inv22[i];
  }
}

// dL/dz1_j = -gm p1_j (p2_j / (|p1||p2|) - cos p1_j / |p1|^2), symmetrically for z2; gm = dL/dM.
// (The softmax-Jacobian correction term sum_c p1_c dcos/dp1_c is exactly 0 for the cosine.)
template <typename acc_t>
UDA_INLINE void cosine_grad(const acc_t* __restrict P1, const acc_t* __restrict P2, int64_t C, int64_t T,
                            int64_t n, const acc_t* __restrict cos, const acc_t* __restrict inv12,
                            const acc_t* __restrict inv11, const acc_t* __restrict inv22,
                            const acc_t* __restrict gm, acc_t* __restrict G1, acc_t* __restrict G2, int64_t os) {
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = c * T + i;
      G1[c * os + i] = -gm[i] * P1[k] * (P2[k] * inv12[i] - cos[i] * P1[k] * inv11[i]);
      G2[c * os + i] = -gm[i] * P2[k] * (P1[k] * inv12[i] - cos[i] * P2[k] * inv22[i]);
    }
}

}  // namespace cpu
}  // namespace uda_ops
