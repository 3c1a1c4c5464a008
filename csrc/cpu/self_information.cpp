// Weighted self-information map I_c = -p_c log p_c / log C (SPEC section 2) and its backward.
#include "entropy.h"

namespace uda_ops {
namespace cpu {

// O = I = -(e_c / s)((x_c - m) - log s) / log C. X and O may be the same buffer (xs == os).
template <typename acc_t, typename R = PixelLanes>
UDA_MULTIVERSION void self_information_forward_tile(const acc_t* X, int64_t xs, acc_t* __restrict E, int64_t C,
                                                    int64_t T, int64_t n, acc_t* O, int64_t os, R lanes = {}) {
  acc_t m[kMaxLanes], s[kMaxLanes], w[kMaxLanes], ls[kMaxLanes];
  exp_tile<acc_t, R>(X, xs, E, C, T, n, m, s);
  const acc_t inv_log_c = acc_t(1) / std::log(acc_t(lanes.classes(C)));
  for (int64_t i = 0; i < n; ++i) {
    w[i] = -inv_log_c / s[i];
    ls[i] = log_ge1(s[i]);
  }
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i)
      O[c * os + i] = w[i] * mul0(E[c * T + i], (X[c * xs + i] - m[i]) - ls[i]);
}

// With u_c = G_c (1 + log p_c): dL/dz_j = -(p_j / log C)(u_j - sum_c p_c u_c). Overwrites X (the [C][T]
// buffer) with the gradient; G holds the upstream gradient, E is scratch.
template <typename acc_t, typename R = PixelLanes>
UDA_MULTIVERSION void self_information_backward_tile(acc_t* __restrict X, acc_t* __restrict G,
                                                     acc_t* __restrict E, int64_t C, int64_t T, int64_t n,
                                                     R lanes = {}) {
  acc_t m[kMaxLanes], s[kMaxLanes], inv[kMaxLanes], off[kMaxLanes], su[kMaxLanes];
  exp_tile<acc_t, R>(X, T, E, C, T, n, m, s);
  for (int64_t i = 0; i < n; ++i) {
    inv[i] = acc_t(1) / s[i];
    off[i] = acc_t(1) - log_ge1(s[i]);  // 1 + log p_c = (x_c - m) + off
    su[i] = 0;
  }
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = c * T + i;
      E[k] *= inv[i];                                      // p_c
      G[k] = mul0(E[k], G[k] * ((X[k] - m[i]) + off[i]));  // p_c u_c (0 where p_c == 0)
      su[i] += G[k];
    }
  R::sum(su, n);
  const acc_t w = acc_t(-1) / std::log(acc_t(lanes.classes(C)));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = c * T + i;
      X[k] = w * (G[k] - E[k] * su[i]);
    }
}

at::Tensor self_information_cpu(const at::Tensor& z, int64_t dim) {
  const ClassLayout L = class_layout(z, dim);
  check_classes("self_information", L);
  const at::Tensor zc = to_layout(z, dim, L);
  at::Tensor out = empty_in_layout(z, dim, L, z.scalar_type());
  const TileGrid g(L);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "self_information_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* pz = zc.const_data_ptr<scalar_t>();
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    for_each_map_tile<acc_t>(g, pz, po, [](const acc_t* X, int64_t xs, acc_t* E, int64_t C, int64_t T, int64_t n,
                                           acc_t* O, int64_t os, int64_t, int64_t, auto lanes) {
      self_information_forward_tile(X, xs, E, C, T, n, O, os, lanes);
    });
  });
  return out;
}

at::Tensor self_information_backward_cpu(const at::Tensor& grad, const at::Tensor& z, int64_t dim) {
  check_grad_dtype(grad);
  TORCH_CHECK(grad.sizes() == z.sizes(), "self_information_backward: gradient has shape ", grad.sizes(),
              ", expected ", z.sizes());
  const ClassLayout L = class_layout(z, dim);
  check_classes("self_information_backward", L);
  // The upstream gradient of an output in z's dtype arrives in that dtype; anything else is cast once.
  // An expanded scalar g (the backward of .sum()) is read as one value, never materialised: the gradient
  // of g sum_c I_c is g dE/dz, the entropy's backward.
  const bool scalar_grad = is_expanded_scalar(grad);
  const at::Tensor zc = to_layout(z, dim, L);
  const at::Tensor gc = scalar_grad ? grad.as_strided({1}, {1}).to(acc_dtype(z))
                                    : to_layout(grad.to(z.scalar_type()), dim, L);
  at::Tensor gz = empty_in_layout(z, dim, L, z.scalar_type());
  const TileGrid g(L);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "self_information_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* pz = zc.const_data_ptr<scalar_t>();
    scalar_t* pgz = gz.mutable_data_ptr<scalar_t>();
    if (scalar_grad) {
      const acc_t* pg_ = gc.const_data_ptr<acc_t>();
      for_each_map_tile<acc_t>(g, pz, pgz, [&](const acc_t* X, int64_t xs, acc_t* E, int64_t C, int64_t T,
                                               int64_t n, acc_t* O, int64_t os, int64_t, int64_t, auto lanes) {
        entropy_backward_tile(X, xs, E, C, T, n, pg_, 0, O, os, lanes);
      });
      return;
    }
    const scalar_t* pgi = gc.const_data_ptr<scalar_t>();
    if (by_rows(g)) {  // always through buffers: the tile function overwrites X and G
      const int64_t K = row_chunks(g), Cp = K * kRowLanes;
      for_each_tile<acc_t>(g, 3, [&](const Tile& t, acc_t* buf) {
        acc_t *X = buf, *G = X + Cp, *E = G + Cp;
        for (int64_t i = 0; i < t.n; ++i) {
          load_row(pz + t.base + i * g.C, g.C, X, kNegInf<acc_t>);
          load_row(pgi + t.base + i * g.C, g.C, G, acc_t(0));
          self_information_backward_tile(X, G, E, K, kRowLanes, kRowLanes, RowLanes{g.C});
          store_row(X, g.C, pgz + t.base + i * g.C);
        }
      });
      return;
    }
    for_each_tile<acc_t>(g, 3, [&](const Tile& t, acc_t* buf) {
      acc_t *X = buf, *G = X + g.C * g.T, *E = G + g.C * g.T;
      load_tile(pz, g, t, X);
      load_tile(pgi, g, t, G);
      self_information_backward_tile(X, G, E, g.C, g.T, t.n);
      store_tile(X, g, t, pgz);
    });
  });
  return gz;
}
}  // namespace cpu
}  // namespace uda_ops

TORCH_LIBRARY_IMPL(uda_ops, CPU, m) {
  m.impl("self_information", &uda_ops::cpu::self_information_cpu);
  m.impl("self_information_backward", &uda_ops::cpu::self_information_backward_cpu);
}
