// Weighted self-information map I_c = -p_c log p_c / log C (SPEC section 2) and its backward.
#include "common.h"

namespace uda_ops {
namespace cpu {

// Overwrites X with I.
template <typename acc_t>
UDA_MULTIVERSION void self_information_forward_tile(acc_t* __restrict X, acc_t* __restrict P, int64_t C,
                                                    int64_t T, int64_t n) {
  acc_t lse[kMaxLanes];
  softmax_tile(X, P, lse, C, T, n);
  const acc_t w = acc_t(-1) / std::log(acc_t(C));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = c * T + i;
      X[k] = w * mul0(P[k], X[k] - lse[i]);
    }
}

// With u_c = G_c (1 + log p_c): dL/dz_j = -(p_j / log C)(u_j - sum_c p_c u_c). Overwrites X.
template <typename acc_t>
UDA_MULTIVERSION void self_information_backward_tile(acc_t* __restrict X, acc_t* __restrict G,
                                                     acc_t* __restrict P, int64_t C, int64_t T,
                                                     int64_t n) {
  acc_t lse[kMaxLanes], s[kMaxLanes];
  softmax_tile(X, P, lse, C, T, n);
  for (int64_t i = 0; i < n; ++i) s[i] = 0;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = c * T + i;
      G[k] = mul0(P[k], G[k] * (acc_t(1) + X[k] - lse[i]));  // p_c u_c (0 where p_c == 0)
      s[i] += G[k];
    }
  const acc_t w = acc_t(-1) / std::log(acc_t(C));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = c * T + i;
      X[k] = w * (G[k] - P[k] * s[i]);
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
    for_each_tile<acc_t>(g, 2, [&](const Tile& t, acc_t* buf) {
      load_tile(pz, g, t, buf);
      self_information_forward_tile(buf, buf + g.C * g.T, g.C, g.T, t.n);
      store_tile(buf, g, t, po);
    });
  });
  return out;
}

at::Tensor self_information_backward_cpu(const at::Tensor& grad, const at::Tensor& z, int64_t dim) {
  TORCH_CHECK(grad.sizes() == z.sizes(), "self_information_backward: gradient has shape ", grad.sizes(),
              ", expected ", z.sizes());
  const ClassLayout L = class_layout(z, dim);
  check_classes("self_information_backward", L);
  // The upstream gradient of an output in z's dtype arrives in that dtype; anything else is cast once.
  // An expanded scalar (the backward of .sum()) is read as one value, never materialised.
  const bool scalar_grad = is_expanded_scalar(grad);
  const at::Tensor zc = to_layout(z, dim, L);
  const at::Tensor gc = scalar_grad ? grad.as_strided({1}, {1}).to(acc_dtype(z))
                                    : to_layout(grad.to(z.scalar_type()), dim, L);
  at::Tensor gz = empty_in_layout(z, dim, L, z.scalar_type());
  const TileGrid g(L);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "self_information_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* pz = zc.const_data_ptr<scalar_t>();
    const acc_t gscalar = scalar_grad ? gc.const_data_ptr<acc_t>()[0] : acc_t(0);
    const scalar_t* pgi = scalar_grad ? nullptr : gc.const_data_ptr<scalar_t>();
    scalar_t* pgz = gz.mutable_data_ptr<scalar_t>();
    for_each_tile<acc_t>(g, 3, [&](const Tile& t, acc_t* buf) {
      acc_t *X = buf, *G = X + g.C * g.T, *P = G + g.C * g.T;
      load_tile(pz, g, t, X);
      if (scalar_grad)
        std::fill(G, G + g.C * g.T, gscalar);
      else
        load_tile(pgi, g, t, G);
      self_information_backward_tile(X, G, P, g.C, g.T, t.n);
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
