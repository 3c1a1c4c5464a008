// Directed KL(softmax(target) || softmax(input)) on logits (SPEC section 1).
#include "common.h"

namespace uda_ops {
namespace cpu {

// out[i] = sum_c q_c (log q_c - log p_c); leaves P = softmax(X), Q = softmax(Y) and the two lse.
template <typename acc_t>
UDA_MULTIVERSION void kl_div_forward_tile(const acc_t* __restrict X, const acc_t* __restrict Y,
                                          acc_t* __restrict P, acc_t* __restrict Q,
                                          acc_t* __restrict lx, acc_t* __restrict ly, int64_t C,
                                          int64_t T, int64_t n, acc_t* __restrict out) {
  softmax_tile(X, P, lx, C, T, n);
  softmax_tile(Y, Q, ly, C, T, n);
  for (int64_t i = 0; i < n; ++i) out[i] = 0;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = c * T + i;
      out[i] += mul0(Q[k], diff0(Y[k] - ly[i], X[k] - lx[i]));
    }
}

// Overwrites X with d/dinput and, when need_target, Y with d/dtarget.
template <typename acc_t>
UDA_MULTIVERSION void kl_div_backward_tile(acc_t* __restrict X, acc_t* __restrict Y,
                                           acc_t* __restrict P, acc_t* __restrict Q, int64_t C,
                                           int64_t T, int64_t n, const acc_t* __restrict g,
                                           int64_t gs, bool need_target) {
  acc_t lx[kMaxLanes], ly[kMaxLanes], kl[kMaxLanes];
  if (need_target) {  // d/dtarget_j = q_j ((log q_j - log p_j) - KL): needs the KL value first
    kl_div_forward_tile(X, Y, P, Q, lx, ly, C, T, n, kl);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < n; ++i) {
        const int64_t k = c * T + i;
        Y[k] = g[i * gs] * mul0(Q[k], diff0(Y[k] - ly[i], X[k] - lx[i]) - kl[i]);
      }
  } else {
    softmax_tile(X, P, lx, C, T, n);
    softmax_tile(Y, Q, ly, C, T, n);
  }
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = c * T + i;
      X[k] = g[i * gs] * (P[k] - Q[k]);
    }
}

at::Tensor kl_div_cpu(const at::Tensor& input, const at::Tensor& target, int64_t dim) {
  check_pair("kl_div", input, target);
  const ClassLayout L = class_layout(input, dim);
  check_classes("kl_div", L);
  const at::Tensor xc = to_layout(input, dim, L), yc = to_layout(target, dim, L);
  at::Tensor out = at::empty(map_shape(input, dim), input.options().dtype(acc_dtype(input)));
  const TileGrid g(L);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "kl_div_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* px = xc.const_data_ptr<scalar_t>();
    const scalar_t* py = yc.const_data_ptr<scalar_t>();
    acc_t* po = out.mutable_data_ptr<acc_t>();
    for_each_tile<acc_t>(g, 4, [&](const Tile& t, acc_t* buf) {
      acc_t *X = buf, *Y = X + g.C * g.T, *P = Y + g.C * g.T, *Q = P + g.C * g.T;
      acc_t lx[kMaxLanes], ly[kMaxLanes];
      load_tile(px, g, t, X);
      load_tile(py, g, t, Y);
      kl_div_forward_tile(X, Y, P, Q, lx, ly, g.C, g.T, t.n, po + t.p0);
    });
  });
  return out;
}

// Returns (d/dinput, d/dtarget); the second is an empty tensor when need_target is false.
std::tuple<at::Tensor, at::Tensor> kl_div_backward_cpu(const at::Tensor& grad, const at::Tensor& input,
                                                       const at::Tensor& target, int64_t dim,
                                                       bool need_target) {
  check_pair("kl_div_backward", input, target);
  const ClassLayout L = class_layout(input, dim);
  check_classes("kl_div_backward", L);
  const at::Tensor xc = to_layout(input, dim, L), yc = to_layout(target, dim, L);
  const PixelGrad pg = pixel_grad(grad, acc_dtype(input), L.pixels());
  at::Tensor gx = empty_in_layout(input, dim, L, input.scalar_type());
  at::Tensor gy = need_target ? empty_in_layout(input, dim, L, input.scalar_type())
                              : at::empty({0}, input.options());
  const TileGrid g(L);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "kl_div_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* px = xc.const_data_ptr<scalar_t>();
    const scalar_t* py = yc.const_data_ptr<scalar_t>();
    const acc_t* pg_ = pg.storage.const_data_ptr<acc_t>();
    scalar_t* pgx = gx.mutable_data_ptr<scalar_t>();
    scalar_t* pgy = need_target ? gy.mutable_data_ptr<scalar_t>() : nullptr;
    for_each_tile<acc_t>(g, 4, [&](const Tile& t, acc_t* buf) {
      acc_t *X = buf, *Y = X + g.C * g.T, *P = Y + g.C * g.T, *Q = P + g.C * g.T;
      load_tile(px, g, t, X);
      load_tile(py, g, t, Y);
      kl_div_backward_tile(X, Y, P, Q, g.C, g.T, t.n, pg_ + t.p0 * pg.stride, pg.stride, need_target);
      store_tile(X, g, t, pgx);
      if (need_target) store_tile(Y, g, t, pgy);
    });
  });
  return {gx, gy};
}

}  // namespace cpu
}  // namespace uda_ops

TORCH_LIBRARY_IMPL(uda_ops, CPU, m) {
  m.impl("kl_div", &uda_ops::cpu::kl_div_cpu);
  m.impl("kl_div_backward", &uda_ops::cpu::kl_div_backward_cpu);
}
