// CLAN's cosine-discrepancy-weighted adversarial BCE (SPEC section 3, CLAN Eq. 5):
// loss = (epsilon + lambda_local * M) * BCEWithLogits(d, target) per pixel.
#include "cosine.h"
#include "pairwise.h"

namespace uda_ops {
namespace cpu {

// log(1 + e) for e in [0, 1], accurate for tiny e (Goldberg: log(u) * e / (u - 1) with u = 1 + e).
// Selects between values only (the division never sees 0), so the caller's loop stays vectorisable.
template <typename acc_t>
UDA_INLINE acc_t log1p_unit(acc_t e) {
  const acc_t u = acc_t(1) + e;
  const acc_t du = u - acc_t(1);
  const acc_t r = log_ge1(u) * (e / (du == acc_t(0) ? acc_t(1) : du));
  return du == acc_t(0) ? e : r;
}

// BCE with logits and d(BCE)/dd = sigmoid(d) - t, both stable for any d; branch-free (vectorises).
template <typename acc_t>
UDA_INLINE void bce_with_logits(acc_t d, acc_t t, acc_t* loss, acc_t* dloss) {
  const acc_t e = exp_nonpos(-std::abs(d));  // e^{-|d|} in (0, 1]
  *loss = (d > 0 ? d : acc_t(0)) - d * t + log1p_unit(e);
  *dloss = (d >= 0 ? acc_t(1) : e) / (acc_t(1) + e) - t;
}

// The lanes that carry a pixel of their own: all n of a tile's, the first of a row's (RowLanes: every lane of a row is
// its one pixel, and the per-pixel values -- d, the upstream gradient, the BCE -- are lane 0's).
template <typename R>
UDA_INLINE int64_t pixel_lanes(int64_t n) {
  return std::is_same<R, RowLanes>::value ? 1 : n;
}

// Z1, Z2: class stride xs; d[i]: the discriminator logit of lane i's pixel (pixel_lanes); out: one value per pixel.
template <typename acc_t, typename R = PixelLanes>
UDA_MULTIVERSION void clan_forward_tile(const acc_t* __restrict Z1, const acc_t* __restrict Z2, int64_t xs,
                                        acc_t* __restrict P1, acc_t* __restrict P2, int64_t C, int64_t T,
                                        int64_t n, const acc_t* __restrict d, acc_t target, acc_t lam, acc_t eps,
                                        acc_t* __restrict out, R lanes = {}) {
  acc_t cos[kMaxLanes], i12[kMaxLanes], i11[kMaxLanes], i22[kMaxLanes];
  softmax_tile(Z1, xs, P1, C, T, n, lanes);
  softmax_tile(Z2, xs, P2, C, T, n, lanes);
  cosine_stats(P1, P2, C, T, n, cos, i12, i11, i22, lanes);
  for (int64_t i = 0; i < pixel_lanes<R>(n); ++i) {
    acc_t l, dl;
    bce_with_logits(d[i], target, &l, &dl);
    out[i] = (eps + lam * (acc_t(1) - cos[i])) * l;
  }
}

// Writes gd[i] per pixel (pixel_lanes); when need_logits, overwrites Z1, Z2 (class stride T) with the gradients
// through the weight map. d[i], g[i * gs]: lane i's pixel's.
template <typename acc_t, typename R = PixelLanes>
UDA_MULTIVERSION void clan_backward_tile(acc_t* __restrict Z1, acc_t* __restrict Z2, acc_t* __restrict P1,
                                         acc_t* __restrict P2, int64_t C, int64_t T, int64_t n,
                                         const acc_t* __restrict d, const acc_t* __restrict g, int64_t gs,
                                         acc_t target, acc_t lam, acc_t eps, bool need_logits, acc_t* __restrict gd,
                                         R lanes = {}) {
  acc_t cos[kMaxLanes], i12[kMaxLanes], i11[kMaxLanes], i22[kMaxLanes], gm[kMaxLanes];
  softmax_tile(Z1, T, P1, C, T, n, lanes);
  softmax_tile(Z2, T, P2, C, T, n, lanes);
  cosine_stats(P1, P2, C, T, n, cos, i12, i11, i22, lanes);
  const int64_t np = pixel_lanes<R>(n);
  for (int64_t i = 0; i < np; ++i) {
    acc_t l, dl;
    bce_with_logits(d[i], target, &l, &dl);
    gd[i] = g[i * gs] * (eps + lam * (acc_t(1) - cos[i])) * dl;
    gm[i] = g[i * gs] * lam * l;
  }
  for (int64_t i = np; i < n; ++i) gm[i] = gm[0];  // a row: every lane is the pixel
  if (need_logits) cosine_grad(P1, P2, C, T, n, cos, i12, i11, i22, gm, Z1, Z2, T, lanes);
}

// d: discriminator logits with the map's shape (N, *). The checks come first, in the order they always had; the
// tiles and rows are pairwise.h's.
at::Tensor clan_adversarial_cpu(const at::Tensor& d, const at::Tensor& z1, const at::Tensor& z2,
                                double target, double lambda_local, double epsilon, int64_t dim,
                                int64_t reduction) {
  check_reduction("clan_adversarial", reduction);
  check_pair("clan_adversarial", z1, z2);
  const ClassLayout L = class_layout(z1, dim);
  check_classes("clan_adversarial", L);
  TORCH_CHECK(d.numel() == L.pixels(), "clan_adversarial: d has ", d.numel(), " elements, expected one per pixel (",
              L.pixels(), ")");
  const at::Tensor dc = d.to(acc_dtype(z1)).contiguous();
  const void* pd = dc.const_data_ptr();  // acc_t, the tiles' type
  return pair_map_forward(
      "clan_adversarial", z1, z2, dim,
      [&](auto* A, auto* B, int64_t xs, auto* P, auto* Q, int64_t C, int64_t T, int64_t n, auto* out, int64_t p0,
          auto lanes) {
        using acc_t = std::remove_pointer_t<decltype(out)>;
        clan_forward_tile(A, B, xs, P, Q, C, T, n, static_cast<const acc_t*>(pd) + p0, acc_t(target),
                          acc_t(lambda_local), acc_t(epsilon), out, lanes);
      },
      reduction);
}

// Returns (d/dd, d/dz1, d/dz2); the last two are empty tensors when need_logit_grads is false.
std::tuple<at::Tensor, at::Tensor, at::Tensor> clan_adversarial_backward_cpu(
    const at::Tensor& grad, const at::Tensor& d, const at::Tensor& z1, const at::Tensor& z2, double target,
    double lambda_local, double epsilon, int64_t dim, bool need_logit_grads) {
  check_pair("clan_adversarial_backward", z1, z2);
  const ClassLayout L = class_layout(z1, dim);
  check_classes("clan_adversarial_backward", L);
  TORCH_CHECK(d.numel() == L.pixels(), "clan_adversarial_backward: d has ", d.numel(),
              " elements, expected ", L.pixels());
  const at::Tensor ac = to_layout(z1, dim, L), bc = to_layout(z2, dim, L);
  const at::Tensor dc = d.to(acc_dtype(z1)).contiguous();
  const PixelGrad pg = pixel_grad(grad, acc_dtype(z1), L.pixels());
  at::Tensor gd = at::empty(d.sizes(), d.options().dtype(acc_dtype(z1)));
  at::Tensor g1 = need_logit_grads ? empty_in_layout(z1, dim, L, z1.scalar_type()) : at::empty({0}, z1.options());
  at::Tensor g2 = need_logit_grads ? empty_in_layout(z1, dim, L, z1.scalar_type()) : at::empty({0}, z1.options());
  const TileGrid g(L);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z1.scalar_type(), "clan_adversarial_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* pa = ac.const_data_ptr<scalar_t>();
    const scalar_t* pb = bc.const_data_ptr<scalar_t>();
    const acc_t* pd = dc.const_data_ptr<acc_t>();
    const acc_t* pg_ = pg.storage.const_data_ptr<acc_t>();
    acc_t* pgd = gd.mutable_data_ptr<acc_t>();
    scalar_t* pg1 = need_logit_grads ? g1.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* pg2 = need_logit_grads ? g2.mutable_data_ptr<scalar_t>() : nullptr;
    const acc_t tg(target), lam(lambda_local), eps(epsilon);
    if (by_rows(g)) {  // always through buffers: the tile function overwrites its logits with their gradients
      const int64_t K = row_chunks(g), Cp = K * kRowLanes;
      for_each_tile<acc_t>(g, 4, [&](const Tile& t, acc_t* buf) {
        acc_t *A = buf, *B = A + Cp, *P = B + Cp, *Q = P + Cp;
        acc_t v[kRowLanes];
        for (int64_t i = 0; i < t.n; ++i) {
          const int64_t p = t.p0 + i, at = t.base + i * g.C;
          load_row(pa + at, g.C, A, kNegInf<acc_t>);
          load_row(pb + at, g.C, B, kNegInf<acc_t>);
          clan_backward_tile(A, B, P, Q, K, kRowLanes, kRowLanes, pd + p, pg_ + p * pg.stride, 0, tg, lam, eps,
                             need_logit_grads, v, RowLanes{g.C});
          pgd[p] = v[0];
          if (need_logit_grads) {
            store_row(A, g.C, pg1 + at);
            store_row(B, g.C, pg2 + at);
          }
        }
      });
      return;
    }
    for_each_tile<acc_t>(g, 4, [&](const Tile& t, acc_t* buf) {
      acc_t *A = buf, *B = A + g.C * g.T, *P = B + g.C * g.T, *Q = P + g.C * g.T;
      load_tile(pa, g, t, A);
      load_tile(pb, g, t, B);
      clan_backward_tile(A, B, P, Q, g.C, g.T, t.n, pd + t.p0, pg_ + t.p0 * pg.stride, pg.stride, tg, lam, eps,
                         need_logit_grads, pgd + t.p0);
      if (need_logit_grads) {
        store_tile(A, g, t, pg1);
        store_tile(B, g, t, pg2);
      }
    });
  });
  return {gd.to(d.scalar_type()), g1, g2};
}

}  // namespace cpu
}  // namespace uda_ops

TORCH_LIBRARY_IMPL(uda_ops, CPU, m) {
  m.impl("clan_adversarial", &uda_ops::cpu::clan_adversarial_cpu);
  m.impl("clan_adversarial_backward", &uda_ops::cpu::clan_adversarial_backward_cpu);
}
