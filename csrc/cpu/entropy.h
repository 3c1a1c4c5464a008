// The entropy of a tile's pixels and its gradient (SPEC section 2), shared by entropy and
// self_information (whose backward for a scalar upstream gradient is the entropy's).
#pragma once

#include "common.h"

namespace uda_ops {
namespace cpu {

// Per lane i, over the classes X[c * xs + i]: m = max_c x_c, s = sum_c e_c with e_c = exp(x_c - m) (kept in
// E[c * T + i] when kStoreE) and h = -sum_c p_c log p_c = log s + sum_c e_c (m - x_c) / s, a sum of two
// non-negative terms (no cancellation). Two passes, no normalised softmax. A lane holding a NaN, or whose
// logits are all -inf, gets NaN.
template <typename acc_t, bool kStoreE, typename R>
UDA_INLINE void entropy_stats(const acc_t* __restrict X, int64_t xs, acc_t* __restrict E, int64_t C, int64_t T,
                              int64_t n, acc_t* __restrict m, acc_t* __restrict s, acc_t* __restrict h) {
  acc_t t[kMaxLanes];
  lane_max<acc_t, R>(X, xs, C, n, m);
  for (int64_t i = 0; i < n; ++i) s[i] = t[i] = 0;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i) {
      const acc_t d = X[c * xs + i] - m[i];  // NaN for all -inf lanes: (-inf) - (-inf)
      const acc_t e = exp_nonpos(d);
      if (kStoreE) E[c * T + i] = e;
      s[i] += e;
      t[i] -= mul0(e, d);
    }
  R::sum(s, n);
  R::sum(t, n);
  for (int64_t i = 0; i < n; ++i) h[i] = log_ge1(s[i]) + t[i] / s[i];
}

// g[i * gs] * dE/dz for E = h / log C: O[c * os + i] = -(g_i / log C) p_c (log p_c + h), log p_c = (x_c - m) - log s.
// Three passes over the tile (max, exp, gradient). X and O may be the same buffer (xs == os).
template <typename acc_t, typename R = PixelLanes>
UDA_MULTIVERSION void entropy_backward_tile(const acc_t* X, int64_t xs, acc_t* __restrict E, int64_t C, int64_t T,
                                            int64_t n, const acc_t* __restrict g, int64_t gs, acc_t* O, int64_t os,
                                            R lanes = {}) {
  acc_t m[kMaxLanes], s[kMaxLanes], h[kMaxLanes], w[kMaxLanes], off[kMaxLanes];
  entropy_stats<acc_t, true, R>(X, xs, E, C, T, n, m, s, h);
  const acc_t inv_log_c = acc_t(1) / std::log(acc_t(lanes.classes(C)));
  for (int64_t i = 0; i < n; ++i) {
    w[i] = -g[i * gs] * inv_log_c / s[i];
    off[i] = h[i] - log_ge1(s[i]);
  }
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i)
      O[c * os + i] = w[i] * mul0(E[c * T + i], (X[c * xs + i] - m[i]) + off[i]);
}

}  // namespace cpu
}  // namespace uda_ops
