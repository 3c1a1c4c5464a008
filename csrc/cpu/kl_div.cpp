// Directed KL(softmax(target) || softmax(input)) on logits (SPEC section 1).
#include "pairwise.h"

namespace uda_ops {
namespace cpu {

// out[i] = sum_c q_c (log q_c - log p_c); leaves P = softmax(X), Q = softmax(Y) and the two lse.
template <typename acc_t, typename R>
UDA_MULTIVERSION void kl_div_forward_tile(const acc_t* __restrict X, const acc_t* __restrict Y, int64_t xs,
                                          acc_t* __restrict P, acc_t* __restrict Q,
                                          acc_t* __restrict lx, acc_t* __restrict ly, int64_t C,
                                          int64_t T, int64_t n, acc_t* __restrict out, R lanes) {
  softmax_tile(X, xs, P, lx, C, T, n, lanes);
  softmax_tile(Y, xs, Q, ly, C, T, n, lanes);
  for (int64_t i = 0; i < n; ++i) out[i] = 0;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = c * T + i;
      out[i] += mul0(Q[k], diff0(Y[c * xs + i] - ly[i], X[c * xs + i] - lx[i]));
    }
  R::sum(out, n);
}

// Writes d/dinput to GX and, when need_target, d/dtarget to GY (class stride os; they may be X and Y
// themselves: each element is read before it is written, X and Y are not read after the first loop).
template <typename acc_t, typename R>
UDA_MULTIVERSION void kl_div_backward_tile(const acc_t* X, const acc_t* Y, int64_t xs,
                                           acc_t* __restrict P, acc_t* __restrict Q, int64_t C,
                                           int64_t T, int64_t n, const acc_t* __restrict g,
                                           int64_t gs, bool need_target, acc_t* GX, acc_t* GY, int64_t os,
                                           R lanes) {
  acc_t lx[kMaxLanes], ly[kMaxLanes], kl[kMaxLanes];
  if (need_target) {  // d/dtarget_j = q_j ((log q_j - log p_j) - KL): needs the KL value first
    kl_div_forward_tile(X, Y, xs, P, Q, lx, ly, C, T, n, kl, lanes);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < n; ++i) {
        const int64_t k = c * T + i;
        GY[c * os + i] = g[i * gs] * mul0(Q[k], diff0(Y[c * xs + i] - ly[i], X[c * xs + i] - lx[i]) - kl[i]);
      }
  } else {
    softmax_tile(X, xs, P, lx, C, T, n, lanes);
    softmax_tile(Y, xs, Q, ly, C, T, n, lanes);
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
      [](auto* X, auto* Y, int64_t xs, auto* P, auto* Q, int64_t C, int64_t T, int64_t n, auto* out, auto lanes) {
        std::remove_pointer_t<decltype(out)> lx[kMaxLanes], ly[kMaxLanes];
        kl_div_forward_tile(X, Y, xs, P, Q, lx, ly, C, T, n, out, lanes);
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
