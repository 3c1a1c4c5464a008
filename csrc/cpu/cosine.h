// Cosine discrepancy M = 1 - cos(p1, p2) of two softmaxes over a tile, and its gradient: shared by the
// cosine_discrepancy and clan_adversarial kernels.
#pragma once

#include "common.h"

namespace uda_ops {
namespace cpu {


// From softmaxes P1, P2 [C][T]: cos[i] and the three inverse norms the gradient needs.
template <typename acc_t, typename R = PixelLanes>
UDA_INLINE void cosine_stats(const acc_t* __restrict P1, const acc_t* __restrict P2, int64_t C,
                             int64_t T, int64_t n, acc_t* __restrict cos, acc_t* __restrict inv12,
                             acc_t* __restrict inv11, acc_t* __restrict inv22, R = {}) {
  for (int64_t i = 0; i < n; ++i) cos[i] = inv11[i] = inv22[i] = 0;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = c * T + i;
      cos[i] += P1[k] * P2[k];
      inv11[i] += P1[k] * P1[k];
      inv22[i] += P2[k] * P2[k];
    }
  R::sum(cos, n);
  R::sum(inv11, n);
  R::sum(inv22, n);
  for (int64_t i = 0; i < n; ++i) {  // |p|^2 >= 1/C: no eps needed
    inv12[i] = acc_t(1) / std::sqrt(inv11[i] * inv22[i]);
    cos[i] *= inv12[i];
    inv11[i] = acc_t(1) / inv11[i];
    inv22[i] = acc_t(1) / inv22[i];
  }
}

// dL/dz1_j = -gm p1_j (b1_j - sum_c p1_c b1_c) with b1 = dcos/dp1 = p2 / (|p1||p2|) - cos p1 / |p1|^2,
// symmetrically for z2; gm = dL/dM. The softmax-Jacobian term sum_c p1_c b1_c is 0 in exact arithmetic, but
// computed from the same rounded b1 it takes out most of their rounding: b1_j cancels where the two
// softmaxes nearly agree, and without it the fp32 gradient is several times less accurate (CLAN at
// (5000, 19): 0.95 of the fp32 tolerance against 0.1-0.2 with it, as eager autograd does).
template <typename acc_t>
UDA_INLINE acc_t cosine_b(acc_t p, acc_t q, acc_t i12, acc_t ci) {
  return q * i12 - ci * p;  // b of input p for one class: ci = cos / |p|^2
}

template <typename acc_t, typename R = PixelLanes>
UDA_INLINE void cosine_grad(const acc_t* __restrict P1, const acc_t* __restrict P2, int64_t C, int64_t T,
                            int64_t n, const acc_t* __restrict cos, const acc_t* __restrict inv12,
                            const acc_t* __restrict inv11, const acc_t* __restrict inv22,
                            const acc_t* __restrict gm, acc_t* __restrict G1, acc_t* __restrict G2, int64_t os,
                            R = {}) {
  acc_t r1[kMaxLanes], r2[kMaxLanes], c1[kMaxLanes], c2[kMaxLanes];
  for (int64_t i = 0; i < n; ++i) r1[i] = r2[i] = 0, c1[i] = cos[i] * inv11[i], c2[i] = cos[i] * inv22[i];
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = c * T + i;
      r1[i] += P1[k] * cosine_b(P1[k], P2[k], inv12[i], c1[i]);
      r2[i] += P2[k] * cosine_b(P2[k], P1[k], inv12[i], c2[i]);
    }
  R::sum(r1, n);
  R::sum(r2, n);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = c * T + i;
      G1[c * os + i] = -gm[i] * P1[k] * (cosine_b(P1[k], P2[k], inv12[i], c1[i]) - r1[i]);
      G2[c * os + i] = -gm[i] * P2[k] * (cosine_b(P2[k], P1[k], inv12[i], c2[i]) - r2[i]);
    }
}

}  // namespace cpu
}  // namespace uda_ops
