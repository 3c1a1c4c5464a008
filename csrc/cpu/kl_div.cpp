// Directed KL(softmax(target) || softmax(input)) on logits (SPEC section 1).
#include "pairwise.h"

namespace uda_ops {
namespace cpu {

// Per lane, with x' = x - max x and y' = y - max y: P = softmax(X), Q = softmax(Y), t = sum_c q_c (y'_c - x'_c)
// and KL = sum_c q_c (log q_c - log p_c) = t + log sum e^x' - log sum e^y' (the q-weighted log-sums cancel to
// those two). No rounded logsumexp enters a log-ratio: its ulp (1e-3 at |z| ~ 1e4) made value and gradients move
// with a per-pixel logit offset. What error remains at |z| ~ 1e4 is fp32's own: where p and q disagree, y' - x' and
// t are both ~1e4 and the target gradient q ((y' - x') - t) takes their difference, as torch's fp32 autograd does.
template <typename acc_t, typename R>
UDA_INLINE void kl_div_stats(const acc_t* __restrict X, const acc_t* __restrict Y, int64_t xs, acc_t* __restrict P,
                             acc_t* __restrict Q, int64_t C, int64_t T, int64_t n, acc_t* __restrict mx,
                             acc_t* __restrict my, acc_t* __restrict t, acc_t* __restrict kl, R lanes) {
  acc_t lsx[kMaxLanes], lsy[kMaxLanes];
  softmax_tile(X, xs, P, mx, lsx, C, T, n, lanes);
  softmax_tile(Y, xs, Q, my, lsy, C, T, n, lanes);
  for (int64_t i = 0; i < n; ++i) t[i] = 0;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i)
      t[i] += mul0(Q[c * T + i], shifted_diff(Y[c * xs + i], my[i], X[c * xs + i], mx[i]));
  R::sum(t, n);
  for (int64_t i = 0; i < n; ++i) kl[i] = t[i] + (lsx[i] - lsy[i]);
}

template <typename acc_t, typename R>
UDA_MULTIVERSION void kl_div_forward_tile(const acc_t* __restrict X, const acc_t* __restrict Y, int64_t xs,
                                          acc_t* __restrict P, acc_t* __restrict Q, int64_t C, int64_t T, int64_t n,
                                          acc_t* __restrict out, R lanes) {
  acc_t mx[kMaxLanes], my[kMaxLanes], t[kMaxLanes];
  kl_div_stats(X, Y, xs, P, Q, C, T, n, mx, my, t, out, lanes);
}

// Writes d/dinput = g (p - q) to GX and, when need_target, d/dtarget_j = g q_j ((y'_j - x'_j) - t) to GY (class
// stride os; they may be X and Y themselves: each element is read before it is written).
template <typename acc_t, typename R>
UDA_MULTIVERSION void kl_div_backward_tile(const acc_t* X, const acc_t* Y, int64_t xs,
                                           acc_t* __restrict P, acc_t* __restrict Q, int64_t C,
                                           int64_t T, int64_t n, const acc_t* __restrict g,
                                           int64_t gs, bool need_target, acc_t* GX, acc_t* GY, int64_t os,
                                           R lanes) {
  if (need_target) {
    acc_t mx[kMaxLanes], my[kMaxLanes], t[kMaxLanes], kl[kMaxLanes];
    kl_div_stats(X, Y, xs, P, Q, C, T, n, mx, my, t, kl, lanes);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < n; ++i)
        GY[c * os + i] =
            g[i * gs] * mul0(Q[c * T + i], shifted_diff(Y[c * xs + i], my[i], X[c * xs + i], mx[i]) - t[i]);
  } else {
    softmax_tile(X, xs, P, C, T, n, lanes);
    softmax_tile(Y, xs, Q, C, T, n, lanes);
  }
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = c * T + i;
      GX[c * os + i] = g[i * gs] * (P[k] - Q[k]);
    }
}

at::Tensor kl_div_cpu(const at::Tensor& input, const at::Tensor& target, int64_t dim, int64_t reduction) {
  return pair_map_forward(
      "kl_div", input, target, dim,
      [](auto* X, auto* Y, int64_t xs, auto* P, auto* Q, int64_t C, int64_t T, int64_t n, auto* out, int64_t,
         auto lanes) {
        kl_div_forward_tile(X, Y, xs, P, Q, C, T, n, out, lanes);
      },
      reduction);
}

// Returns (d/dinput, d/dtarget); the second is an empty tensor when need_target is false.
std::tuple<at::Tensor, at::Tensor> kl_div_backward_cpu(const at::Tensor& grad, const at::Tensor& input,
                                                       const at::Tensor& target, int64_t dim,
                                                       bool need_target) {
  return pair_grad_backward("kl_div_backward", grad, input, target, dim, need_target,
                            [&](auto* X, auto* Y, int64_t xs, auto* P, auto* Q, int64_t C, int64_t T, int64_t n,
                                const auto* g, int64_t gs, auto* GX, auto* GY, int64_t os, auto lanes) {
                              kl_div_backward_tile(X, Y, xs, P, Q, C, T, n, g, gs, need_target, GX, GY, os, lanes);
                            });
}

}  // namespace cpu
}  // namespace uda_ops

TORCH_LIBRARY_IMPL(uda_ops, CPU, m) {
  m.impl("kl_div", &uda_ops::cpu::kl_div_cpu);
  m.impl("kl_div_backward", &uda_ops::cpu::kl_div_backward_cpu);
}
