// Normalised entropy map E = -sum_c p_c log p_c / log C (SPEC section 2) and its backward.
#include "entropy.h"

namespace uda_ops {
namespace cpu {

template <typename acc_t, typename R = PixelLanes>
UDA_MULTIVERSION void entropy_forward_tile(const acc_t* __restrict X, int64_t xs, int64_t C, int64_t n,
                                           acc_t* __restrict out, R lanes = {}) {
  acc_t m[kMaxLanes], s[kMaxLanes], h[kMaxLanes];
  entropy_stats<acc_t, false, R>(X, xs, nullptr, C, 0, n, m, s, h);
  const acc_t inv_log_c = acc_t(1) / std::log(acc_t(lanes.classes(C)));
  for (int64_t i = 0; i < n; ++i) out[i] = h[i] * inv_log_c;
}

at::Tensor entropy_cpu(const at::Tensor& z, int64_t dim, int64_t reduction) {
  const Reduction r = check_reduction("entropy", reduction);
  const ClassLayout L = class_layout(z, dim);
  check_classes("entropy", L);
  const at::Tensor zc = to_layout(z, dim, L);
  at::Tensor out = empty_forward_output(z, dim, r);
  const TileGrid g(L);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "entropy_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* pz = zc.const_data_ptr<scalar_t>();
    ForwardOut<acc_t> fo(out, g, r, L.pixels());
    if (by_rows(g)) {
      const int64_t K = row_chunks(g);
      for_each_tile<acc_t>(g, 1, [&](const Tile& t, acc_t* buf) {
        acc_t lanes[kMaxLanes], v[kRowLanes];
        acc_t* o = fo.dst(t, lanes);
        for (int64_t i = 0; i < t.n; ++i) {
          entropy_forward_tile(row_in(pz, g, t, i, buf, kNegInf<acc_t>), kRowLanes, K, kRowLanes, v, RowLanes{g.C});
          o[i] = v[0];
        }
        fo.done(t, o);
      });
      fo.finish();
      return;
    }
    for_each_tile<acc_t>(g, 1, [&](const Tile& t, acc_t* buf) {
      int64_t xs;
      acc_t lanes[kMaxLanes];
      const acc_t* X = tile_in(pz, g, t, buf, xs);
      acc_t* o = fo.dst(t, lanes);
      entropy_forward_tile(X, xs, g.C, t.n, o);
      fo.done(t, o);
    });
    fo.finish();
  });
  return out;
}

at::Tensor entropy_backward_cpu(const at::Tensor& grad, const at::Tensor& z, int64_t dim) {
  const ClassLayout L = class_layout(z, dim);
  check_classes("entropy_backward", L);
  const at::Tensor zc = to_layout(z, dim, L);
  const PixelGrad pg = pixel_grad(grad, acc_dtype(z), L.pixels());
  at::Tensor gz = empty_in_layout(z, dim, L, z.scalar_type());
  const TileGrid g(L);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "entropy_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* pz = zc.const_data_ptr<scalar_t>();
    const acc_t* pg_ = pg.storage.const_data_ptr<acc_t>();
    scalar_t* pgz = gz.mutable_data_ptr<scalar_t>();
    for_each_map_tile<acc_t>(g, pz, pgz, [&](const acc_t* X, int64_t xs, acc_t* E, int64_t C, int64_t T, int64_t n,
                                             acc_t* O, int64_t os, int64_t p0, int64_t ps, auto lanes) {
      entropy_backward_tile(X, xs, E, C, T, n, pg_ + p0 * pg.stride, ps * pg.stride, O, os, lanes);
    });
  });
  return gz;
}

}  // namespace cpu
}  // namespace uda_ops

TORCH_LIBRARY_IMPL(uda_ops, CPU, m) {
  m.impl("entropy", &uda_ops::cpu::entropy_cpu);
  m.impl("entropy_backward", &uda_ops::cpu::entropy_backward_cpu);
}
