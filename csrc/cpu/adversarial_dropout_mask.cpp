// Adversarial dropout mask search (SPEC section 4; DTA Eqs. 3-5): element-wise on an (N, U) Jacobian,
// and channel-wise fused with the H*W reduction of g * h.
#include "common.h"

namespace uda_ops {
namespace cpu {

// One row: flip the units whose flip raises the divergence most (|J| above the (L+1)-th largest
// candidate value, strictly), then optionally rescale to keep the row's expected sum U.
template <typename acc_t, typename scalar_t>
void search_row(const acc_t* __restrict jac, const acc_t* __restrict m0, int64_t U, int64_t L,
                bool rescale, acc_t* __restrict work, scalar_t* __restrict out) {
  if (L == 0) {  // SPEC step 1, before anything is read from J: m0 unchanged, NaN or not
    for (int64_t u = 0; u < U; ++u) out[u] = static_cast<scalar_t>(m0 ? m0[u] : acc_t(1));
    return;
  }
  bool has_nan = false;
  for (int64_t u = 0; u < U; ++u) has_nan |= std::isnan(jac[u]);
  if (has_nan) {  // never hidden
    for (int64_t u = 0; u < U; ++u) out[u] = static_cast<scalar_t>(std::numeric_limits<acc_t>::quiet_NaN());
    return;
  }
  // a_u = |J_u| for candidates ((2 m0 - 1) sign(J) < 0), 0 otherwise; J == 0 never flips.
  for (int64_t u = 0; u < U; ++u) {
    const bool kept = m0 ? m0[u] != acc_t(0) : true;
    work[U + u] = (kept ? jac[u] < 0 : jac[u] > 0) ? std::abs(jac[u]) : acc_t(0);
    work[u] = work[U + u];
  }
  acc_t t = 0;
  if (L + 1 <= U) {
    std::nth_element(work, work + L, work + U, std::greater<acc_t>());
    t = work[L];
  }
  acc_t sum = 0;
  for (int64_t u = 0; u < U; ++u) {
    const acc_t base = m0 ? m0[u] : acc_t(1);
    const acc_t m = work[U + u] > t ? acc_t(1) - base : base;  // |m0 - flip| for m0, flip in {0, 1}
    work[u] = m;
    sum += m;
  }
  const acc_t scale = rescale && sum > 0 ? acc_t(U) / sum : acc_t(1);
  for (int64_t u = 0; u < U; ++u) out[u] = static_cast<scalar_t>(work[u] * scale);
}

// jac: (N, U) in acc_t, contiguous. Output in `dtype`.
static at::Tensor search_rows(const at::Tensor& jac, const c10::optional<at::Tensor>& base_mask,
                              int64_t max_flips, bool rescale, at::ScalarType dtype) {
  TORCH_CHECK(jac.dim() == 2, "adversarial_dropout_mask: expected an (N, U) Jacobian, got shape ", jac.sizes());
  TORCH_CHECK(max_flips >= 0, "adversarial_dropout_mask: max_flips must be >= 0, got ", max_flips);
  const int64_t N = jac.size(0), U = jac.size(1);
  at::Tensor m0;
  if (base_mask.has_value() && base_mask->defined())
    m0 = base_mask->to(jac.scalar_type()).expand({N, U}).contiguous();
  at::Tensor out = at::empty({N, U}, jac.options().dtype(dtype));
  AT_DISPATCH_FLOATING_TYPES(jac.scalar_type(), "adversarial_dropout_mask_acc", [&] {
    using acc_t = scalar_t;
    const acc_t* pj = jac.const_data_ptr<acc_t>();
    const acc_t* pm = m0.defined() ? m0.const_data_ptr<acc_t>() : nullptr;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "adversarial_dropout_mask_out", [&] {
      scalar_t* po = out.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, N, std::max<int64_t>(1, 4096 / std::max<int64_t>(U, 1)), [&](int64_t b, int64_t e) {
        std::vector<acc_t> work(static_cast<size_t>(2 * U));
        for (int64_t r = b; r < e; ++r)
          search_row(pj + r * U, pm ? pm + r * U : nullptr, U, max_flips, rescale, work.data(), po + r * U);
      });
    });
  });
  return out;
}

at::Tensor adversarial_dropout_mask_cpu(const at::Tensor& jacobian, const c10::optional<at::Tensor>& base_mask,
                                        int64_t max_flips, bool rescale) {
  const at::Tensor jac = jacobian.to(acc_dtype(jacobian)).contiguous();
  return search_rows(jac, base_mask, max_flips, rescale, jacobian.scalar_type());
}

// sum_i a[i] * b[i] over a contiguous run, 16 independent partial sums (vectorises, fixed order).
template <typename scalar_t, typename acc_t>
UDA_MULTIVERSION acc_t dot_run(const scalar_t* __restrict a, const scalar_t* __restrict b, int64_t n) {
  constexpr int64_t W = 16;
  acc_t part[W] = {};
  int64_t i = 0;
  for (; i + W <= n; i += W)
    for (int64_t j = 0; j < W; ++j) part[j] += static_cast<acc_t>(a[i + j]) * static_cast<acc_t>(b[i + j]);
  for (; i < n; ++i) part[0] += static_cast<acc_t>(a[i]) * static_cast<acc_t>(b[i]);
  acc_t s = 0;
  for (int64_t j = 0; j < W; ++j) s += part[j];
  return s;
}

// Impact of sample n: s_c = sum_hw g_nchw h_nchw for every c, into s[0..C) (acc_t).
template <typename scalar_t, typename acc_t>
void impact_row(const scalar_t* __restrict pg, const scalar_t* __restrict ph, int64_t n, int64_t C, int64_t HW,
                bool planes, acc_t* __restrict s) {
  if (planes) {  // each (n, c) is one contiguous run of H*W values
    for (int64_t c = 0; c < C; ++c) s[c] = dot_run<scalar_t, acc_t>(pg + (n * C + c) * HW, ph + (n * C + c) * HW, HW);
    return;
  }
  // rows (channels_last or (N, C)): accumulate whole channel vectors pixel by pixel
  for (int64_t c = 0; c < C; ++c) s[c] = 0;
  for (int64_t p = 0; p < HW; ++p) {
    const scalar_t* gp = pg + (n * HW + p) * C;
    const scalar_t* hp = ph + (n * HW + p) * C;
    for (int64_t c = 0; c < C; ++c) s[c] += static_cast<acc_t>(gp[c]) * static_cast<acc_t>(hp[c]);
  }
}

// Fused: per sample, the H*W reduction of g * h into the (C,) impact row, then the row's search; the
// (N, C) impact never leaves the thread's scratch. Parallel over samples.
at::Tensor channel_adversarial_dropout_mask_cpu(const at::Tensor& grad, const at::Tensor& activation,
                                                const c10::optional<at::Tensor>& base_mask, int64_t max_flips,
                                                bool rescale) {
  check_pair("channel_adversarial_dropout_mask", grad, activation);
  TORCH_CHECK(grad.dim() >= 2, "channel_adversarial_dropout_mask: expected (N, C, *) inputs, got shape ",
              grad.sizes());
  TORCH_CHECK(max_flips >= 0, "channel_adversarial_dropout_mask: max_flips must be >= 0, got ", max_flips);
  const int64_t N = grad.size(0), C = grad.size(1);
  at::Tensor out = at::empty({N, C}, grad.options());
  if (N == 0 || C == 0) return out;
  const ClassLayout L = class_layout(grad, 1);
  const at::Tensor gc = to_layout(grad, 1, L), hc = to_layout(activation, 1, L);
  const bool planes = L.inner > 1 || C == 1;
  const int64_t HW = L.pixels() / N;
  at::Tensor m0;
  if (base_mask.has_value() && base_mask->defined())
    m0 = base_mask->to(acc_dtype(grad)).expand({N, C}).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "channel_adversarial_dropout_mask", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* pg = gc.const_data_ptr<scalar_t>();
    const scalar_t* ph = hc.const_data_ptr<scalar_t>();
    const acc_t* pm = m0.defined() ? m0.const_data_ptr<acc_t>() : nullptr;
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, N, 1, [&](int64_t b, int64_t e) {
      std::vector<acc_t> work(static_cast<size_t>(3 * C));
      for (int64_t n = b; n < e; ++n) {
        impact_row<scalar_t, acc_t>(pg, ph, n, C, HW, planes, work.data() + 2 * C);
        search_row(work.data() + 2 * C, pm ? pm + n * C : nullptr, C, max_flips, rescale, work.data(), po + n * C);
      }
    });
  });
  return out;
}

}  // namespace cpu
}  // namespace uda_ops

TORCH_LIBRARY_IMPL(uda_ops, CPU, m) {
  m.impl("adversarial_dropout_mask", &uda_ops::cpu::adversarial_dropout_mask_cpu);
  m.impl("channel_adversarial_dropout_mask", &uda_ops::cpu::channel_adversarial_dropout_mask_cpu);
}
