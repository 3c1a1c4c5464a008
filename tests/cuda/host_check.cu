// Host-side check of the CUDA kernels' per-pixel math (the __host__ __device__ functions of
// csrc/cuda/*_kernels.cuh), compiled by nvcc and run on the CPU: no GPU needed. Run by
// tests/test_cuda_compile.py. Checks values against independent float64 formulas, gradients against
// central differences, the -inf / NaN semantics of SPEC section 6, the rows/planes class strides, the
// half/bfloat16 loads and stores, and the mask search (the kernel's radix select emulated serially with
// the same helpers) against SPEC section 4's test vectors and std::nth_element.
#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <mutex>
#include <random>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "../../csrc/cuda/adversarial_dropout_mask_kernels.cuh"
#include "../../csrc/cuda/clan_adversarial_kernels.cuh"
#include "../../csrc/cuda/cosine_discrepancy_kernels.cuh"
#include "../../csrc/cuda/entropy_kernels.cuh"
#include "../../csrc/cuda/kl_div_kernels.cuh"
#include "../../csrc/cuda/self_information_kernels.cuh"
#include "../../csrc/cuda/sym_kl_kernels.cuh"

using namespace uda_ops::cuda;

static int failures = 0, checks = 0;

static void expect(bool ok, const char* what, double got, double want) {
  ++checks;
  if (!ok) {
    ++failures;
    std::printf("FAIL %s: got %.17g, want %.17g\n", what, got, want);
  }
}
static void close(const char* what, double got, double want, double rtol, double atol) {
  const bool ok = (std::isnan(got) && std::isnan(want)) ||
                  (std::isfinite(want) ? std::fabs(got - want) <= atol + rtol * std::fabs(want) : got == want);
  expect(ok, what, got, want);
}

// ---- independent float64 formulas ------------------------------------------------------------------
static std::vector<double> log_softmax(const std::vector<double>& z) {
  double m = -INFINITY;
  for (double v : z) m = std::max(m, v);
  double s = 0;
  for (double v : z) s += std::exp(v - m);
  std::vector<double> r(z.size());
  for (size_t c = 0; c < z.size(); ++c) r[c] = z[c] - m - std::log(s);
  return r;
}
static double ref_kl(const std::vector<double>& x, const std::vector<double>& y) {  // KL(q(y) || p(x))
  auto lp = log_softmax(x), lq = log_softmax(y);
  double s = 0;
  for (size_t c = 0; c < x.size(); ++c)
    if (std::exp(lq[c]) > 0) s += std::exp(lq[c]) * (lq[c] - lp[c]);
  return s;
}
static double ref_entropy(const std::vector<double>& z) {
  auto lp = log_softmax(z);
  double h = 0;
  for (double l : lp)
    if (std::exp(l) > 0) h -= std::exp(l) * l;
  return h / std::log(double(z.size()));
}
static double ref_cos(const std::vector<double>& a, const std::vector<double>& b) {
  auto la = log_softmax(a), lb = log_softmax(b);
  double d = 0, na = 0, nb = 0;
  for (size_t c = 0; c < a.size(); ++c) {
    const double p = std::exp(la[c]), q = std::exp(lb[c]);
    d += p * q, na += p * p, nb += q * q;
  }
  return d / std::sqrt(na * nb);
}

// Strided copy: class c of the pixel at c * cs (cs = 3 exercises the planes stride, 1 the rows layout).
template <typename T>
static std::vector<T> strided(const std::vector<double>& z, int64_t cs) {
  std::vector<T> out(z.size() * cs, Num<T>::store(static_cast<acc_of<T>>(12345.0)));
  for (size_t c = 0; c < z.size(); ++c) out[c * cs] = Num<T>::store(static_cast<acc_of<T>>(z[c]));
  return out;
}

static std::vector<double> random_logits(std::mt19937& rng, int C, double scale) {
  std::normal_distribution<double> nd(0.0, scale);
  std::vector<double> z(C);
  for (double& v : z) v = nd(rng);
  return z;
}

// ---- values ------------------------------------------------------------------------------------------
template <typename T>
static void check_values(double rtol, double atol, double store_tol, const char* tname) {
  std::mt19937 rng(1);
  char what[128];
  for (int trial = 0; trial < 20; ++trial) {
    const int C = 2 + trial % 19;
    const int64_t cs = trial % 2 ? 3 : 1;
    auto a = random_logits(rng, C, 3.0), b = random_logits(rng, C, 3.0);
    // round to T first so that the reference sees the same inputs
    for (double& v : a) v = Num<T>::load(Num<T>::store(static_cast<acc_of<T>>(v)));
    for (double& v : b) v = Num<T>::load(Num<T>::store(static_cast<acc_of<T>>(v)));
    auto A = strided<T>(a, cs), B = strided<T>(b, cs);
    using acc_t = acc_of<T>;
    std::snprintf(what, sizeof what, "%s sym_kl C=%d cs=%d", tname, C, int(cs));
    close(what, sym_kl_pixel<acc_t>(A.data(), B.data(), cs, C), 0.5 * (ref_kl(a, b) + ref_kl(b, a)), rtol, atol);
    std::snprintf(what, sizeof what, "%s kl_div C=%d", tname, C);
    close(what, kl_div_pixel<acc_t>(A.data(), B.data(), cs, C), ref_kl(a, b), rtol, atol);
    std::snprintf(what, sizeof what, "%s entropy C=%d", tname, C);
    close(what, entropy_pixel<acc_t>(A.data(), cs, C), ref_entropy(a), rtol, atol);
    std::snprintf(what, sizeof what, "%s cosine C=%d", tname, C);
    close(what, cosine_discrepancy_pixel<acc_t>(A.data(), B.data(), cs, C), 1 - ref_cos(a, b), rtol, atol);
    // self-information sums to the entropy map
    std::vector<T> I(A.size());
    self_information_pixel<acc_t>(A.data(), cs, C, I.data());
    double s = 0;
    for (int c = 0; c < C; ++c) s += Num<T>::load(I[c * cs]);
    std::snprintf(what, sizeof what, "%s self_information sum C=%d", tname, C);
    close(what, s, ref_entropy(a), rtol * 4 + store_tol, atol * 4 + store_tol);  // stored in T
    // CLAN: (eps + lam M) * BCE(d, t)
    const double d = (trial - 10) * 0.7, t = trial % 3 == 0 ? 0.0 : 1.0;
    const double bce = std::max(d, 0.0) - d * t + std::log1p(std::exp(-std::fabs(d)));
    std::snprintf(what, sizeof what, "%s clan C=%d", tname, C);
    close(what, clan_adversarial_pixel<acc_t>(acc_t(d), A.data(), B.data(), cs, C, acc_t(t), acc_t(40), acc_t(0.4)),
          (0.4 + 40 * (1 - ref_cos(a, b))) * bce, rtol * 40, atol * 40);
  }
}

// ---- gradients (double) against central differences -------------------------------------------------
static double numdiff(const std::function<double(const std::vector<double>&)>& f, std::vector<double> x, size_t i) {
  const double h = 1e-6;
  x[i] += h;
  const double up = f(x);
  x[i] -= 2 * h;
  return (up - f(x)) / (2 * h);
}

static void check_gradients() {
  std::mt19937 rng(2);
  char what[128];
  for (int trial = 0; trial < 8; ++trial) {
    const int C = 3 + trial;
    const int64_t cs = trial % 2 ? 2 : 1;
    auto a = random_logits(rng, C, 2.0), b = random_logits(rng, C, 2.0);
    const double g = 1.7;
    auto A = strided<double>(a, cs), B = strided<double>(b, cs);
    std::vector<double> ga(A.size()), gb(A.size());
    auto run2 = [&](auto fwd, auto check_name, bool grad_b, auto bwd) {
      bwd();
      for (int c = 0; c < C; ++c) {
        std::snprintf(what, sizeof what, "%s d/da[%d] C=%d", check_name, c, C);
        close(what, ga[c * cs], g * numdiff([&](const std::vector<double>& x) { return fwd(x, b); }, a, c), 1e-5, 1e-7);
        if (grad_b) {
          std::snprintf(what, sizeof what, "%s d/db[%d] C=%d", check_name, c, C);
          close(what, gb[c * cs], g * numdiff([&](const std::vector<double>& y) { return fwd(a, y); }, b, c), 1e-5,
                1e-7);
        }
      }
    };
    auto P = [&](const std::vector<double>& v) { return strided<double>(v, 1); };
    run2([&](const std::vector<double>& x, const std::vector<double>& y) {
           return sym_kl_pixel<double>(P(x).data(), P(y).data(), 1, C);
         },
         "sym_kl", true,
         [&] { sym_kl_backward_pixel<double>(A.data(), B.data(), cs, C, g, false, ga.data(), gb.data()); });
    run2([&](const std::vector<double>& x, const std::vector<double>& y) {
           return kl_div_pixel<double>(P(x).data(), P(y).data(), 1, C);
         },
         "kl_div", true, [&] { kl_div_backward_pixel<double>(A.data(), B.data(), cs, C, g, ga.data(), gb.data()); });
    run2([&](const std::vector<double>& x, const std::vector<double>&) { return entropy_pixel<double>(P(x).data(), 1, C); },
         "entropy", false, [&] { entropy_backward_pixel<double>(A.data(), cs, C, g, ga.data()); });
    run2([&](const std::vector<double>& x, const std::vector<double>& y) {
           return cosine_discrepancy_pixel<double>(P(x).data(), P(y).data(), 1, C);
         },
         "cosine", true, [&] {
           const auto st = cosine_stats<double>(A.data(), B.data(), cs, C);
           cosine_grad_pixel(A.data(), B.data(), cs, C, st, g, ga.data(), gb.data());
         });
    const double d = 0.3 * trial - 1.0;
    run2([&](const std::vector<double>& x, const std::vector<double>& y) {
           return clan_adversarial_pixel<double>(d, P(x).data(), P(y).data(), 1, C, 1.0, 40.0, 0.4);
         },
         "clan", true, [&] {
           const double gd = clan_adversarial_backward_pixel<double>(d, A.data(), B.data(), cs, C, g, 1.0, 40.0, 0.4,
                                                                     ga.data(), gb.data());
           const double h = 1e-6;
           const double num = (clan_adversarial_pixel<double>(d + h, A.data(), B.data(), cs, C, 1.0, 40.0, 0.4) -
                               clan_adversarial_pixel<double>(d - h, A.data(), B.data(), cs, C, 1.0, 40.0, 0.4)) /
                              (2 * h);
           close("clan d/dd", gd, g * num, 1e-5, 1e-7);
         });
    // self-information: L = sum_c G_c I_c, per-class upstream gradient
    std::vector<double> G(C);
    for (int c = 0; c < C; ++c) G[c] = 0.5 + 0.1 * c;
    auto Gs = strided<double>(G, cs);
    self_information_backward_pixel<double>(A.data(), cs, C, Gs.data(), cs, ga.data());
    for (int c = 0; c < C; ++c) {
      auto f = [&](const std::vector<double>& x) {
        std::vector<double> I(C);
        self_information_pixel<double>(P(x).data(), 1, C, I.data());
        double s = 0;
        for (int k = 0; k < C; ++k) s += G[k] * I[k];
        return s;
      };
      std::snprintf(what, sizeof what, "self_information d/dz[%d] C=%d", c, C);
      close(what, ga[c * cs], numdiff(f, a, c), 1e-5, 1e-7);
    }
    // expanded scalar upstream gradient (class stride 0) equals the full gradient of ones * g
    std::vector<double> gs1(A.size()), gs2(A.size()), ones(C, g);
    const double gscalar = g;
    self_information_backward_pixel<double>(A.data(), cs, C, &gscalar, 0, gs1.data());
    auto On = strided<double>(ones, cs);
    self_information_backward_pixel<double>(A.data(), cs, C, On.data(), cs, gs2.data());
    for (int c = 0; c < C; ++c) close("self_information scalar grad", gs1[c * cs], gs2[c * cs], 0, 0);
  }
}

// ---- SPEC section 6 -------------------------------------------------------------------------------------
static void check_extremes() {
  const double inf = INFINITY, nan = NAN;
  // masked classes: p = 0, p log p = 0, no NaN
  std::vector<double> z = {-inf, 1.0, 2.0, -inf}, y = {-inf, 0.5, -1.0, -inf};
  auto Z = strided<float>(z, 1), Y = strided<float>(y, 1);
  std::vector<double> zf = {1.0, 2.0}, yf = {0.5, -1.0};
  close("entropy masked", entropy_pixel<float>(Z.data(), 1, 4), ref_entropy(zf) * std::log(2.0) / std::log(4.0), 1e-6,
        1e-7);
  close("kl masked", kl_div_pixel<float>(Z.data(), Y.data(), 1, 4), ref_kl(zf, yf), 1e-5, 1e-6);
  close("sym_kl masked", sym_kl_pixel<float>(Z.data(), Y.data(), 1, 4), 0.5 * (ref_kl(zf, yf) + ref_kl(yf, zf)), 1e-5,
        1e-6);
  std::vector<float> gz(4), gy(4);
  kl_div_backward_pixel<float>(Z.data(), Y.data(), 1, 4, 1.0f, gz.data(), gy.data());
  sym_kl_backward_pixel<float>(Z.data(), Y.data(), 1, 4, 1.0f, false, gz.data(), gy.data());
  for (int c = 0; c < 4; ++c) expect(std::isfinite(gz[c]) && std::isfinite(gy[c]), "masked grads finite", gz[c], 0);
  expect(gz[0] == 0.0f && gz[3] == 0.0f, "masked class grad is 0", gz[0], 0);
  // a per-pixel offset K of the logits changes nothing (here exactly representable): sym_kl and kl_div of
  // (z, z + K) are 0 with zero gradients, as for (z, z). With a_c - b_c (the kernels before) sym_kl failed 14 of
  // these checks, with gradients up to 5e-4.
  const std::vector<std::vector<double>> rows = {{1.0, -2.5, 0.25, 3.0, -7.0},
                                                 {1.0, -2.5, 0.25, 3.0, -7.0, 2.5, 0.5},
                                                 {0.0625, 0.125, 0.1875},
                                                 {3.0, 2.9375, 2.875, -1.0}};
  for (double K : {10000.0, -9999.0}) {
    for (const auto& zo : rows) {
      const int C = int(zo.size());
      std::vector<double> zk(zo);
      for (auto& v : zk) v += K;
      auto Zo = strided<float>(zo, 1), Zk = strided<float>(zk, 1);
      expect(sym_kl_pixel<float>(Zo.data(), Zk.data(), 1, C) == 0.0f, "sym_kl offset value",
             sym_kl_pixel<float>(Zo.data(), Zk.data(), 1, C), 0);
      expect(kl_div_pixel<float>(Zo.data(), Zk.data(), 1, C) == 0.0f, "kl offset value",
             kl_div_pixel<float>(Zo.data(), Zk.data(), 1, C), 0);
      std::vector<float> g1(C), g2(C), g3(C), g4(C);
      sym_kl_backward_pixel<float>(Zo.data(), Zk.data(), 1, C, 1.0f, false, g1.data(), g2.data());
      kl_div_backward_pixel<float>(Zo.data(), Zk.data(), 1, C, 1.0f, g3.data(), g4.data());
      for (int c = 0; c < C; ++c) {
        expect(g1[c] == 0.0f && g2[c] == 0.0f, "sym_kl offset grad", std::fabs(g1[c]) + std::fabs(g2[c]), 0);
        expect(g3[c] == 0.0f && g4[c] == 0.0f, "kl offset grad", std::fabs(g3[c]) + std::fabs(g4[c]), 0);
      }
    }
  }
  // -inf first (the online max must not subtract -inf from -inf)
  std::vector<double> z2 = {-inf, -inf, 3.0, 1.0};
  auto Z2 = strided<double>(z2, 1);
  close("leading -inf", entropy_pixel<double>(Z2.data(), 1, 4), ref_entropy({3.0, 1.0}) * std::log(2.0) / std::log(4.0),
        1e-12, 1e-14);
  // all -inf pixel and NaN pixel: NaN, never hidden
  std::vector<double> all = {-inf, -inf, -inf}, withnan = {0.0, nan, 1.0};
  auto Al = strided<float>(all, 1), Wn = strided<float>(withnan, 1), Ok = strided<float>({0.0, 1.0, 2.0}, 1);
  expect(std::isnan(entropy_pixel<float>(Al.data(), 1, 3)), "all -inf entropy NaN", 0, nan);
  expect(std::isnan(entropy_pixel<float>(Wn.data(), 1, 3)), "NaN entropy NaN", 0, nan);
  expect(std::isnan(kl_div_pixel<float>(Ok.data(), Wn.data(), 1, 3)), "NaN kl NaN", 0, nan);
  expect(std::isnan(cosine_discrepancy_pixel<float>(Al.data(), Ok.data(), 1, 3)), "all -inf cosine NaN", 0, nan);
  std::vector<float> gi(3);
  entropy_backward_pixel<float>(Wn.data(), 1, 3, 1.0f, gi.data());
  expect(std::isnan(gi[0]) && std::isnan(gi[2]), "NaN entropy grad NaN", gi[0], nan);
  // magnitude 1e4 in fp32: exact log-softmax differences, no overflow
  std::vector<double> big = {1e4, 1e4 - 1.0, -1e4}, big2 = {-1e4, 1e4, 1e4 - 2.0};
  auto Bg = strided<float>(big, 1), Bg2 = strided<float>(big2, 1);
  close("entropy 1e4", entropy_pixel<float>(Bg.data(), 1, 3), ref_entropy(big), 1e-5, 1e-6);
  close("kl 1e4", kl_div_pixel<float>(Bg.data(), Bg2.data(), 1, 3), ref_kl(big, big2), 1e-5, 1e-3);
  // fp16 extremes (the largest finite half, 65504)
  auto H = strided<__half>({65504.0, -65504.0, 0.0}, 1);
  close("entropy half max", entropy_pixel<float>(H.data(), 1, 3), 0.0, 0, 1e-6);
  // BCE with logits stable at both ends
  float l, dl;
  bce_with_logits(100.0f, 1.0f, &l, &dl);
  close("bce(100, 1)", l, std::log1p(std::exp(-100.0)), 1e-5, 1e-30);
  bce_with_logits(-100.0f, 1.0f, &l, &dl);
  close("bce(-100, 1)", l, 100.0, 1e-6, 0);
  close("dbce(-100, 1)", dl, -1.0, 0, 1e-6);
}

static void check_conversions() {
  const float vals[] = {0.0f, -1.5f, 3.140625f, 65504.0f, 1e-3f};
  for (float v : vals) {
    close("half roundtrip", Num<__half>::load(Num<__half>::store(v)), v, 1e-3, 0);
    close("bf16 roundtrip", Num<__nv_bfloat16>::load(Num<__nv_bfloat16>::store(v)), v, 8e-3, 0);
  }
  expect(std::isinf(Num<__half>::load(Num<__half>::store(-INFINITY))), "half -inf", 0, 0);
}

// ---- mask search: the select kernel emulated serially with the same helpers ------------------------
template <typename acc_t>
static std::vector<acc_t> select_row_host(const std::vector<acc_t>& jac, const std::vector<acc_t>* m0, int64_t L,
                                          bool rescale) {
  const int64_t U = jac.size();
  std::vector<acc_t> a(U), out(U);
  bool has_nan = false;
  for (int64_t u = 0; u < U; ++u) {
    has_nan |= is_nan(jac[u]);
    a[u] = candidate_value(jac[u], m0 ? (*m0)[u] : acc_t(1));
  }
  const RowOutcome outcome = row_outcome(has_nan, L);
  if (outcome == RowOutcome::kNaN) return std::vector<acc_t>(U, quiet_nan<acc_t>());
  if (outcome == RowOutcome::kBase) return m0 ? *m0 : std::vector<acc_t>(U, acc_t(1));
  acc_t t = 0;
  if (L + 1 <= U) {
    using Key = typename KeyOf<acc_t>::type;
    Key prefix = 0, mask = 0;
    int64_t k = L;
    for (int shift = int(sizeof(Key)) * 8 - 8; shift >= 0; shift -= 8) {
      unsigned int hist[256] = {};
      for (int64_t u = 0; u < U; ++u) {
        const Key key = key_bits(a[u]);
        if ((key & mask) == prefix) ++hist[(key >> shift) & Key(255)];
      }
      prefix |= Key(radix_pick_digit(hist, &k)) << shift;
      mask |= Key(255) << shift;
    }
    t = from_key_bits<acc_t>(prefix);
    std::vector<acc_t> s = a;  // the select must agree with a sort
    std::nth_element(s.begin(), s.begin() + L, s.end(), std::greater<acc_t>());
    expect(s[L] == t, "radix select == nth_element", double(t), double(s[L]));
  }
  acc_t sum = 0;
  for (int64_t u = 0; u < U; ++u) sum += flipped_value(a[u], t, m0 ? (*m0)[u] : acc_t(1));
  const acc_t scale = rescale && sum > 0 ? acc_t(U) / sum : acc_t(1);
  for (int64_t u = 0; u < U; ++u) out[u] = flipped_value(a[u], t, m0 ? (*m0)[u] : acc_t(1)) * scale;
  return out;
}

static void check_mask() {
  struct Vec {
    std::vector<double> j;
    double delta;
    std::vector<double> want;
  };
  const Vec vecs[] = {
      {{-.5, .2, -.1, -.3, 0}, .4, {0, 5. / 3, 5. / 3, 0, 5. / 3}},
      {{-.3, -.3, -.3, .1}, .25, {1, 1, 1, 1}},
      {{.3, .2, -.1, .1}, .5, {4. / 3, 4. / 3, 0, 4. / 3}},
  };
  for (const Vec& v : vecs) {
    const int64_t L = static_cast<int64_t>(v.j.size() * v.delta);
    auto got = select_row_host<double>(v.j, nullptr, L, true);
    for (size_t u = 0; u < v.j.size(); ++u) close("SPEC mask vector", got[u], v.want[u], 1e-12, 1e-12);
    std::vector<float> jf(v.j.begin(), v.j.end());
    auto gotf = select_row_host<float>(jf, nullptr, L, true);
    for (size_t u = 0; u < v.j.size(); ++u) close("SPEC mask vector (float)", gotf[u], v.want[u], 1e-6, 1e-6);
  }
  // base mask: a dropped unit with J > 0 is a candidate
  std::vector<double> m0 = {1, 0, 1, 0}, j = {-1.0, 2.0, 0.5, -3.0};
  auto got = select_row_host<double>(j, &m0, 1, false);
  const double want[] = {1, 1, 1, 0};
  for (int u = 0; u < 4; ++u) close("base mask flip", got[u], want[u], 0, 0);
  // NaN row: all NaN; L == 0: the base mask
  auto nanrow = select_row_host<float>({-1.0f, NAN, 1.0f}, nullptr, 1, true);
  expect(std::isnan(nanrow[0]) && std::isnan(nanrow[2]), "NaN row", nanrow[0], NAN);
  // SPEC section 4 step 1: a zero budget returns the base mask unchanged, even for a row with a NaN
  const std::vector<float> nanbase = {1.0f, 0.0f, 1.0f};
  for (const std::vector<float>* b : {&nanbase, static_cast<const std::vector<float>*>(nullptr)}) {
    auto zero = select_row_host<float>({-1.0f, NAN, 1.0f}, b, 0, true);
    for (int u = 0; u < 3; ++u)
      expect(zero[u] == (b ? (*b)[u] : 1.0f), "NaN row with L == 0 gives the base mask", zero[u], b ? (*b)[u] : 1.0);
  }
  // random rows with many ties and several sizes: the select agrees with nth_element (checked inside)
  std::mt19937 rng(3);
  for (int trial = 0; trial < 30; ++trial) {
    const int U = 1 + trial * 67;
    std::vector<float> r(U);
    std::uniform_int_distribution<int> q(-40, 40);
    for (float& x : r) x = trial % 2 ? q(rng) * 0.25f : std::ldexp(float(q(rng)), q(rng));
    const int64_t L = (trial * 7) % (U + 2);
    auto m = select_row_host<float>(r, nullptr, L, false);
    int flips = 0;
    for (float x : m) flips += x == 0.0f;
    expect(flips <= L, "at most L flips", flips, double(L));
  }
}

// PixelGeom::base + c * inner addresses element (o, c, i) of the canonical (outer, C, inner) view, and
// pixel p = o * inner + i is the map's (contiguous) index, in both the planes and the rows layout.
static void check_geometry() {
  const int64_t shapes[][3] = {{2, 5, 7}, {3, 4, 1}, {1, 19, 64}, {6, 1, 5}};
  for (const auto& s : shapes) {
    const PixelGeom geo{s[0], s[1], s[2]};
    for (int64_t o = 0; o < s[0]; ++o)
      for (int64_t i = 0; i < s[2]; ++i)
        for (int64_t c = 0; c < s[1]; ++c) {
          const int64_t p = o * s[2] + i;
          const int64_t want = o * s[1] * s[2] + c * s[2] + i;
          if (geo.base(p) + c * geo.inner != want) expect(false, "PixelGeom::base", double(geo.base(p)), double(want));
        }
    expect(geo.pixels() == s[0] * s[2], "PixelGeom::pixels", double(geo.pixels()), double(s[0] * s[2]));
  }
  // launch geometry of the mask search: chunks cover H*W, grid.y stays within its limit
  const int64_t hws[] = {1, 64, 4096, 90000, int64_t(1) << 31};
  for (int64_t hw : hws)
    for (bool planes : {true, false}) {
      const int64_t len = impact_chunk_len(hw, planes), chunks = channel_impact_chunks(hw, planes);
      expect(chunks * len >= hw && (chunks - 1) * len < hw && chunks <= kMaxGridY, "impact chunks", double(chunks),
             double(hw));
    }
  expect(impact_planes_threads(64) == 64 && impact_planes_threads(1) == 32 && impact_planes_threads(1 << 20) == 256,
         "impact threads", impact_planes_threads(64), 64);
}

// ---- planes tiles: the kernels' per-thread code over the whole simulated grid ---------------------------
// Buffers are 16-byte aligned plus `off` elements (off = 1: a view misaligned by one element) and carry a
// sentinel margin after the tensor that no thread may touch.
template <typename U>
struct Buf {
  std::vector<Pack> raw;
  U* p;
  size_t n;
  Buf(size_t n_, int off, double fill) : raw((n_ + off + 64) * sizeof(U) / sizeof(Pack) + 2), n(n_) {
    p = reinterpret_cast<U*>(raw.data()) + off;
    for (size_t i = 0; i < n + 32; ++i) p[i] = Num<U>::store(static_cast<acc_of<U>>(fill));
  }
  bool margin_untouched(double fill) const {
    for (size_t i = n; i < n + 32; ++i)
      if (double(Num<U>::load(p[i])) != fill) return false;
    return true;
  }
};

static constexpr double kSentinel = 640.0;  // exact in every dtype

// Runs op's planes kernel for bucket CB (0: the shared-memory slab) over every block and thread of the
// grid the launcher would use. A forward op's threads return what they did not store (MapOut::emit): as
// planes_partials_body, each thread adds up its tiles, each block its threads in order (block_partial's
// partial sums, appended to *block_sums when given, in linear block order); returns their sum.
template <int CB, typename Op>
static double run_planes_host(const Op& op, int64_t outer, int64_t C, int64_t inner,
                              std::vector<double>* block_sums = nullptr) {
  using T = typename Op::T;
  using R = decltype(planes_thread<CB>(op, std::declval<PlanesGeom>(), 0, 0, nullptr, 0, 0));
  using S = typename std::conditional<std::is_void<R>::value, double, R>::type;
  const PlanesGeom g = tile_geom<T>(outer, C, inner, op.aligned());  // inner == 1: the rows layout
  expect(g.rows == (inner == 1) && g.cs() == (inner == 1 ? 1 : inner), "tile_geom", double(g.cs()), double(inner));
  PlanesPlan pl = plan_planes<Op>(g, 227 * 1024);
  expect(pl.ok, "planes plan ok", 0, 1);
  expect((pl.cb == kStagedRows) == g.rows && (CB == kStagedRows) == g.rows, "rows are staged", CB, pl.cb);
  const int64_t threads = pl.threads, tiles = g.tiles<T>();
  std::vector<Pack> smem(staged_packs(g, threads) * Op::kSlabs);  // >= the planes slab (C packs a thread)
  double total = 0;
  for (int64_t by = 0; by < pl.grid_y; ++by)
    for (int64_t bx = 0; bx < pl.grid_x; ++bx) {
      S block = S(0);
      for (int64_t tid = 0; tid < threads; ++tid) {
        const int64_t t = bx * threads + tid;
        if (t >= tiles && CB != kStagedRows) continue;  // staged: every thread of the block runs
        S sum = S(0);
        for (int64_t o = by; o < g.outer; o += pl.grid_y) {
          if constexpr (std::is_void<R>::value)
            planes_thread<CB>(op, g, o, t, smem.data(), tid, threads);
          else
            sum += planes_thread<CB>(op, g, o, t, smem.data(), tid, threads);
        }
        block += sum;
      }
      if constexpr (CB == kStagedRows) rows_flush(op, smem.data(), g, bx, 0, threads);
      if (block_sums) block_sums->push_back(double(block));
      total += double(block);
    }
  return total;
}

// Calls f(Bucket<CB>) for every bucket an op of kSlabs inputs can use for C classes.
template <int kSlabs, typename F>
static void each_bucket(int64_t C, bool rows, F&& f) {
  if (rows) {  // the rows geometry is always staged (plan_planes)
    f(Bucket<kStagedRows>{});
    return;
  }
  if (C <= 8) f(Bucket<8>{});
  if (kSlabs == 1 && C <= 16) f(Bucket<16>{});
  f(Bucket<0>{});
}

struct PlanesShape {
  int64_t outer, C, inner;
};
// inner == 1: the rows layout (channels_last, (N, C)) through the staged tile kernels, pixels C apart;
// (531, 19, 1), (1100, 3, 1), (700, 16, 1) and (300, 10, 1) span several staged blocks in every dtype, the last
// one partial; even C runs at a padded pitch in shared memory (rows_pitch)
static const PlanesShape kPlanesShapes[] = {{2, 5, 7},   {3, 19, 16}, {1, 3, 9},  {2, 16, 33}, {2, 40, 12},
                                            {1, 8, 8},   {2, 2, 5},   {3, 7, 24}, {1, 13, 3},  {2, 150, 4},
                                            {37, 19, 1}, {9, 5, 1},   {1, 2, 1},  {6, 150, 1}, {16, 8, 1},
                                            {531, 19, 1}, {1100, 3, 1}, {700, 16, 1}, {300, 10, 1}};

template <typename T>
static void planes_tolerances(double* rtol, double* atol) {
  const double eps = sizeof(T) == 2 ? (std::is_same<T, __half>::value ? 1e-3 : 8e-3) : (sizeof(T) == 4 ? 1e-6 : 1e-13);
  *rtol = 20 * eps + (sizeof(T) == 8 ? 0 : 2e-5);
  *atol = *rtol;
}

// Inputs: random logits (a few -inf classes), rounded to T; the double copy holds the same values.
template <typename T>
static void planes_inputs(std::mt19937& rng, const PlanesShape& s, Buf<T>& b, std::vector<double>& d,
                          double scale = 3.0) {
  std::normal_distribution<double> nd(0.0, scale);
  std::uniform_int_distribution<int> pick(0, 40);
  d.resize(b.n);
  for (size_t i = 0; i < b.n; ++i) {
    // masked (-inf) classes at the usual scale; large logits alone (their products with -inf classes
    // underflow differently in fp32 and in the double reference)
    const double v = scale < 10 && pick(rng) == 0 ? -INFINITY : nd(rng);
    b.p[i] = Num<T>::store(static_cast<acc_of<T>>(v));
    d[i] = double(Num<T>::load(b.p[i]));
  }
  (void)s;
}

template <typename T>
static void check_planes_entropy(const char* tname) {
  using acc_t = acc_of<T>;
  double rtol, atol;
  planes_tolerances<T>(&rtol, &atol);
  std::mt19937 rng(11);
  char what[160];
  for (const PlanesShape& s : kPlanesShapes)
    for (int off = 0; off < 2; ++off) {
      const size_t n = s.outer * s.C * s.inner, P = s.outer * s.inner;
      Buf<T> z(n, off, 0);
      std::vector<double> zd;
      planes_inputs(rng, s, z, zd);
      Buf<acc_t> grad(P, off, 0);
      for (size_t p = 0; p < P; ++p) grad.p[p] = acc_t(0.5 + 0.01 * double(p % 17));
      each_bucket<1>(s.C, s.inner == 1, [&](auto cb) {
        constexpr int CB = decltype(cb)::value;
        Buf<acc_t> out(P, off, kSentinel);
        Buf<T> gz(n, off, kSentinel);
        expect(run_planes_host<CB>(EntropyForward<T>{z.p, MapOut<acc_t>{out.p, nullptr}}, s.outer, s.C, s.inner) == 0,
               "entropy planes map: threads return 0", 0, 0);
        run_planes_host<CB>(EntropyBackward<T>{grad.p, 1, z.p, gz.p}, s.outer, s.C, s.inner);
        std::vector<double> gref(n);
        for (int64_t o = 0; o < s.outer; ++o)
          for (int64_t i = 0; i < s.inner; ++i) {
            const int64_t base = o * s.C * s.inner + i, p = o * s.inner + i;
            std::snprintf(what, sizeof what, "%s entropy planes CB=%d shape=(%d,%d,%d) off=%d p=%d", tname, CB,
                          int(s.outer), int(s.C), int(s.inner), off, int(p));
            close(what, out.p[p], entropy_pixel<double>(zd.data() + base, s.inner, s.C), rtol, atol);
            entropy_backward_pixel<double>(zd.data() + base, s.inner, s.C, double(grad.p[p]), gref.data() + base);
          }
        for (size_t i = 0; i < n; ++i) {
          std::snprintf(what, sizeof what, "%s entropy_backward planes CB=%d shape=(%d,%d,%d) off=%d i=%d", tname, CB,
                        int(s.outer), int(s.C), int(s.inner), off, int(i));
          close(what, double(Num<T>::load(gz.p[i])), gref[i], rtol, atol);
        }
        expect(out.margin_untouched(kSentinel) && gz.margin_untouched(kSentinel), "entropy planes margin", 0, 0);
      });
    }
}

// Every other planes op against the per-pixel functions in double on the same (rounded) values:
// run(Bucket, a, b, aux, map_out, full1, full2) runs the op over the simulated grid; ref(base, p, a, b, aux,
// &map, full1, full2) writes the expected values of one pixel (classes inner apart from base).
template <typename T, int kSlabs, typename Run, typename Ref>
static void check_planes_op(const char* name, const char* tname, bool has_map, int fulls, Run run, Ref ref) {
  using acc_t = acc_of<T>;
  double rtol, atol;
  planes_tolerances<T>(&rtol, &atol);
  std::mt19937 rng(12);
  char what[200];
  for (const double scale : {3.0, 1000.0})  // 1000: large logits, the cancellation of the one-pass sums
  for (const PlanesShape& s : kPlanesShapes)
    for (int off = 0; off < 2; ++off) {
      const size_t n = s.outer * s.C * s.inner, P = s.outer * s.inner;
      Buf<T> a(n, off, 0), b(n, off, 0);
      std::vector<double> ad, bd;
      planes_inputs(rng, s, a, ad, scale);
      planes_inputs(rng, s, b, bd, scale);
      const double atol_s = atol * scale / 3.0;
      Buf<acc_t> aux(P, off, 0);
      for (size_t p = 0; p < P; ++p) aux.p[p] = acc_t(0.3 * double(p % 13) - 1.7);
      each_bucket<kSlabs>(s.C, s.inner == 1, [&](auto cb) {
        constexpr int CB = decltype(cb)::value;
        Buf<acc_t> m(P, off, kSentinel);
        Buf<T> f1(n, off, kSentinel), f2(n, off, kSentinel);
        run(cb, a.p, b.p, aux.p, m.p, f1.p, f2.p, s);
        std::vector<double> rm(P), r1(n), r2(n);
        for (int64_t o = 0; o < s.outer; ++o)
          for (int64_t i = 0; i < s.inner; ++i) {
            const int64_t base = o * s.C * s.inner + i, p = o * s.inner + i;
            ref(base, p, ad.data(), bd.data(), double(aux.p[p]), &rm[p], r1.data(), r2.data(), s);
          }
        const auto tag = [&](const char* out, size_t i) {
          std::snprintf(what, sizeof what, "%s %s %s planes CB=%d shape=(%d,%d,%d) off=%d scale=%g i=%d", tname, name,
                        out, CB, int(s.outer), int(s.C), int(s.inner), off, scale, int(i));
          return what;
        };
        if (has_map)
          for (size_t p = 0; p < P; ++p) close(tag("map", p), m.p[p], rm[p], rtol, atol_s);
        for (size_t i = 0; i < n && fulls >= 1; ++i)
          close(tag("full1", i), double(Num<T>::load(f1.p[i])), r1[i], rtol, atol_s);
        for (size_t i = 0; i < n && fulls >= 2; ++i)
          close(tag("full2", i), double(Num<T>::load(f2.p[i])), r2[i], rtol, atol_s);
        expect(m.margin_untouched(kSentinel) && f1.margin_untouched(kSentinel) && f2.margin_untouched(kSentinel),
               tag("margins", 0), 0, 0);
        if (!has_map) expect(m.p[0] == acc_t(kSentinel), tag("no map written", 0), 0, 0);
        if (fulls < 2) expect(double(Num<T>::load(f2.p[0])) == kSentinel, tag("no full2 written", 0), 0, 0);
      });
    }
}

template <typename T>
static void check_planes(const char* tname) {
  using acc_t = acc_of<T>;
  using A = const T*;
  using M = const acc_t*;
  check_planes_entropy<T>(tname);
  const acc_t g0 = acc_t(1.3);  // an expanded scalar upstream gradient (stride 0)
#define UDA_RUN(...)                                                                                      \
  [&](auto cb, A a, A b, M aux, acc_t* m, T* f1, T* f2, const PlanesShape& s) {                           \
    (void)a, (void)b, (void)aux, (void)m, (void)f1, (void)f2;                                             \
    run_planes_host<decltype(cb)::value>(__VA_ARGS__, s.outer, s.C, s.inner);                             \
  }
#define UDA_REF(...)                                                                                      \
  [&](int64_t base, int64_t p, const double* a, const double* b, double aux, double* m, double* f1, double* f2, \
      const PlanesShape& s) {                                                                             \
    (void)base, (void)p, (void)a, (void)b, (void)aux, (void)m, (void)f1, (void)f2;                        \
    const int64_t cs = s.inner, C = s.C;                                                                  \
    __VA_ARGS__;                                                                                          \
  }
  check_planes_op<T, 2>("sym_kl", tname, true, 0, UDA_RUN(SymKlForward<T>{a, b, MapOut<acc_t>{m, nullptr}}),
                        UDA_REF(*m = sym_kl_pixel<double>(a + base, b + base, cs, C)));
  for (bool det : {false, true})
    check_planes_op<T, 2>(det ? "sym_kl_backward detach" : "sym_kl_backward", tname, false, 2,
                          UDA_RUN(SymKlBackward<T>{aux, 1, a, b, f1, f2, det}),
                          UDA_REF(sym_kl_backward_pixel<double>(a + base, b + base, cs, C, aux, det, f1 + base,
                                                                f2 + base)));
  check_planes_op<T, 2>("kl_div", tname, true, 0, UDA_RUN(KlDivForward<T>{a, b, MapOut<acc_t>{m, nullptr}}),
                        UDA_REF(*m = kl_div_pixel<double>(a + base, b + base, cs, C)));
  check_planes_op<T, 2>("kl_div_backward", tname, false, 2, UDA_RUN(KlDivBackward<T>{aux, 1, a, b, f1, f2}),
                        UDA_REF(kl_div_backward_pixel<double>(a + base, b + base, cs, C, aux, f1 + base, f2 + base)));
  check_planes_op<T, 2>("kl_div_backward no target", tname, false, 1,
                        UDA_RUN(KlDivBackward<T>{&g0, 0, a, b, f1, nullptr}),
                        UDA_REF(kl_div_backward_pixel<double>(a + base, b + base, cs, C, double(g0), f1 + base,
                                                              static_cast<double*>(nullptr))));
  check_planes_op<T, 2>("cosine", tname, true, 0, UDA_RUN(CosineForward<T>{a, b, m}),
                        UDA_REF(*m = cosine_discrepancy_pixel<double>(a + base, b + base, cs, C)));
  check_planes_op<T, 2>("cosine_backward", tname, false, 2, UDA_RUN(CosineBackward<T>{aux, 1, a, b, f1, f2}),
                        UDA_REF(cosine_grad_pixel(a + base, b + base, cs, C,
                                                  cosine_stats<double>(a + base, b + base, cs, C), aux, f1 + base,
                                                  f2 + base)));
  const acc_t t = acc_t(1), lam = acc_t(40), eps = acc_t(0.4);
  check_planes_op<T, 2>("clan", tname, true, 0, UDA_RUN(ClanForward<T>{aux, a, b, MapOut<acc_t>{m, nullptr}, t, lam, eps}),
                        UDA_REF(*m = clan_adversarial_pixel<double>(aux, a + base, b + base, cs, C, 1.0, 40.0, 0.4)));
  // the map output of the backward is d/dd (acc_t), checked through a T-typed full output would lose
  // precision: run it twice, with and without the logit gradients
  check_planes_op<T, 2>("clan_backward", tname, true, 2,
                        UDA_RUN(ClanBackward<T>{&g0, 0, aux, a, b, m, f1, f2, t, lam, eps}),
                        UDA_REF(*m = clan_adversarial_backward_pixel<double>(aux, a + base, b + base, cs, C,
                                                                             double(g0), 1.0, 40.0, 0.4, f1 + base,
                                                                             f2 + base)));
  check_planes_op<T, 2>("clan_backward no logits", tname, true, 0,
                        UDA_RUN(ClanBackward<T>{&g0, 0, aux, a, b, m, nullptr, nullptr, t, lam, eps}),
                        UDA_REF(*m = clan_adversarial_backward_pixel<double>(
                                    aux, a + base, b + base, cs, C, double(g0), 1.0, 40.0, 0.4,
                                    static_cast<double*>(nullptr), static_cast<double*>(nullptr))));
  check_planes_op<T, 1>("self_information", tname, false, 1, UDA_RUN(SelfInformationForward<T>{a, f1}),
                        UDA_REF(self_information_pixel<double>(a + base, cs, C, f1 + base)));
  check_planes_op<T, 2>("self_information_backward full", tname, false, 1,
                        UDA_RUN(SelfInformationBackward<T, true>{b, a, f1}),
                        UDA_REF(self_information_backward_pixel<double>(a + base, cs, C, b + base, cs, f1 + base)));
  check_planes_op<T, 1>("self_information_backward scalar", tname, false, 1,
                        UDA_RUN(SelfInformationBackward<T, false>{&g0, a, f1}),
                        UDA_REF(const double gs = double(g0);
                                self_information_backward_pixel<double>(a + base, cs, C, &gs, 0, f1 + base)));
#undef UDA_RUN
#undef UDA_REF
}

// Reduced forwards ("mean"/"sum": map == nullptr): the planes kernels' threads over the simulated grid and
// the per-pixel kernels' grid-stride loops return the values they did not store; their block sums, then
// the finish in double, give the sum of the map (the double reference's, within the map tolerance per
// pixel), times 1 / P for "mean". The block count stays within reduce_blocks_bound (the partials buffer).
template <typename T>
static void check_reduced(const char* tname) {
  using acc_t = acc_of<T>;
  using A = const T*;
  using M = const acc_t*;
  double rtol, atol;
  planes_tolerances<T>(&rtol, &atol);
  std::mt19937 rng(14);
  char what[200];
  // planes (one with a tail tile, one on the shared-memory slab, one misaligned), rows (inner == 1)
  const PlanesShape shapes[] = {{2, 5, 7}, {3, 19, 16}, {1, 13, 3}, {2, 150, 4}, {2, 16, 33},
                                {37, 19, 1}, {9, 5, 1}, {6, 150, 1}, {1, 2, 1}};
  const acc_t t = acc_t(1), lam = acc_t(40), eps = acc_t(0.4);
  // op(out): the forward functor; pix(base, p): the per-pixel kernel's value in acc_t; ref: in double
  const auto check = [&](const char* name, const PlanesShape& s, int off, auto make_op, auto pix, auto ref) {
    const int64_t P = s.outer * s.inner;
    double want = 0, mag = 0;
    for (int64_t o = 0; o < s.outer; ++o)
      for (int64_t i = 0; i < s.inner; ++i) {
        const double v = ref(o * s.C * s.inner + i, o * s.inner + i);
        want += v, mag += std::fabs(v);
      }
    const double tol = rtol * mag + atol * double(P);
    const int64_t bound = reduce_blocks_bound<T>(s.outer, s.C, s.inner);
    const auto finish = [](const std::vector<double>& partials, double scale) {  // reduce_finish_kernel
      double sum = 0;
      for (double v : partials) sum += v;
      return sum * scale;
    };
    each_bucket<decltype(make_op(MapOut<acc_t>{nullptr, nullptr}))::kSlabs>(s.C, s.inner == 1, [&](auto cb) {
      constexpr int CB = decltype(cb)::value;
      std::snprintf(what, sizeof what, "%s %s reduced planes CB=%d shape=(%d,%d,%d) off=%d", tname, name, CB,
                    int(s.outer), int(s.C), int(s.inner), off);
      std::vector<double> partials;
      acc_t dummy = acc_t(0);  // the kernels' partials pointer: non-null, never written by a thread
      const double total =
          run_planes_host<CB>(make_op(MapOut<acc_t>{nullptr, &dummy}), s.outer, s.C, s.inner, &partials);
      close(what, finish(partials, 1.0), want, 0, tol);
      close(what, finish(partials, 1.0 / double(P)), want / double(P), 0, tol / double(P));
      close(what, total, finish(partials, 1.0), 0, 0);
      expect(int64_t(partials.size()) <= bound && dummy == acc_t(0), what, double(partials.size()), double(bound));
    });
    // the per-pixel kernel: blocks of kPixelThreads threads, a grid-stride loop, partial sums per block
    const MapOut<acc_t> mo{nullptr, nullptr};
    const int64_t blocks = pixel_blocks(P), stride = blocks * kPixelThreads;
    std::vector<double> partials;
    for (int64_t b = 0; b < blocks; ++b) {
      acc_t block = acc_t(0);
      for (int64_t tid = 0; tid < kPixelThreads; ++tid) {
        acc_t sum = acc_t(0);
        for (int64_t p = b * kPixelThreads + tid; p < P; p += stride) {
          const int64_t o = p / s.inner, base = o * s.C * s.inner + (p - o * s.inner);
          sum += mo.emit(p, pix(base, p));
        }
        block += sum;
      }
      partials.push_back(double(block));
    }
    std::snprintf(what, sizeof what, "%s %s reduced per-pixel shape=(%d,%d,%d) off=%d", tname, name, int(s.outer),
                  int(s.C), int(s.inner), off);
    close(what, finish(partials, 1.0), want, 0, tol);
    expect(blocks <= bound, what, double(blocks), double(bound));
  };
  for (const PlanesShape& s : shapes)
    for (int off = 0; off < 2; ++off) {
      const size_t n = s.outer * s.C * s.inner, P = s.outer * s.inner;
      Buf<T> a(n, off, 0), b(n, off, 0);
      std::vector<double> ad, bd;
      planes_inputs(rng, s, a, ad);
      planes_inputs(rng, s, b, bd);
      Buf<acc_t> aux(P, off, 0);
      for (size_t p = 0; p < P; ++p) aux.p[p] = acc_t(0.3 * double(p % 13) - 1.7);
      const int64_t cs = s.inner, C = s.C;
      A ap = a.p, bp = b.p;
      M dp = aux.p;
      check("sym_kl", s, off, [&](MapOut<acc_t> mo) { return SymKlForward<T>{ap, bp, mo}; },
            [&](int64_t base, int64_t) { return sym_kl_pixel<acc_t>(ap + base, bp + base, cs, C); },
            [&](int64_t base, int64_t) { return sym_kl_pixel<double>(ad.data() + base, bd.data() + base, cs, C); });
      check("kl_div", s, off, [&](MapOut<acc_t> mo) { return KlDivForward<T>{ap, bp, mo}; },
            [&](int64_t base, int64_t) { return kl_div_pixel<acc_t>(ap + base, bp + base, cs, C); },
            [&](int64_t base, int64_t) { return kl_div_pixel<double>(ad.data() + base, bd.data() + base, cs, C); });
      check("entropy", s, off, [&](MapOut<acc_t> mo) { return EntropyForward<T>{ap, mo}; },
            [&](int64_t base, int64_t) { return entropy_pixel<acc_t>(ap + base, cs, C); },
            [&](int64_t base, int64_t) { return entropy_pixel<double>(ad.data() + base, cs, C); });
      check("clan", s, off, [&](MapOut<acc_t> mo) { return ClanForward<T>{dp, ap, bp, mo, t, lam, eps}; },
            [&](int64_t base, int64_t p) {
              return clan_adversarial_pixel<acc_t>(dp[p], ap + base, bp + base, cs, C, t, lam, eps);
            },
            [&](int64_t base, int64_t p) {
              return clan_adversarial_pixel<double>(double(dp[p]), ad.data() + base, bd.data() + base, cs, C, 1.0,
                                                    40.0, 0.4);
            });
    }
  // MapOut::emit: a map is stored (and 0 returned), no map: the valid lanes summed, nothing stored
  acc_t m[2 * kLanes<T>], v[kLanes<T>];
  for (int k = 0; k < 2 * kLanes<T>; ++k) m[k] = acc_t(kSentinel);
  for (int k = 0; k < kLanes<T>; ++k) v[k] = acc_t(k + 1);
  const TilePos tp{0, 0, 1, kLanes<T> - 1, false};
  expect(MapOut<acc_t>{nullptr, m}.emit(tp, v) == acc_t((kLanes<T> - 1) * kLanes<T> / 2), "emit sums valid lanes",
         0, 0);
  expect(m[0] == acc_t(kSentinel), "emit without a map writes nothing", double(m[0]), kSentinel);
  expect(MapOut<acc_t>{m, nullptr}.emit(tp, v) == acc_t(0) && m[0] == acc_t(1) && m[kLanes<T> - 1] == acc_t(kSentinel),
         "emit stores the valid lanes", double(m[0]), 1);
}

// The rows layout (channels_last, (N, C)): the per-pixel kernels' work (classes 1 apart, pixel p at
// PixelGeom::base(p)) over every pixel, in T, against the same functions in double; odd C and pixel
// counts, buffers misaligned by one element, sentinel margins.
template <typename T>
static void check_rows(const char* tname) {
  using acc_t = acc_of<T>;
  double rtol, atol;
  planes_tolerances<T>(&rtol, &atol);
  std::mt19937 rng(13);
  char what[160];
  const int64_t shapes[][2] = {{7, 5}, {3, 19}, {5, 150}, {1, 2}, {33, 3}};  // (pixels, C)
  for (const auto& sh : shapes)
    for (int off = 0; off < 2; ++off) {
      const int64_t P = sh[0], C = sh[1];
      const size_t n = P * C;
      const PixelGeom geo{P, C, 1};
      Buf<T> a(n, off, 0), b(n, off, 0);
      std::vector<double> ad, bd;
      planes_inputs(rng, PlanesShape{P, C, 1}, a, ad);
      planes_inputs(rng, PlanesShape{P, C, 1}, b, bd);
      Buf<acc_t> ent(P, off, kSentinel), skl(P, off, kSentinel);
      Buf<T> ga(n, off, kSentinel), gb(n, off, kSentinel), si(n, off, kSentinel);
      std::vector<double> rga(n), rgb(n), rsi(n);
      for (int64_t p = 0; p < P; ++p) {
        const int64_t o = geo.base(p);
        const acc_t g = acc_t(0.5 + 0.1 * double(p % 7));
        ent.p[p] = entropy_pixel<acc_t>(a.p + o, geo.inner, geo.C);
        skl.p[p] = sym_kl_pixel<acc_t>(a.p + o, b.p + o, geo.inner, geo.C);
        sym_kl_backward_pixel<acc_t>(a.p + o, b.p + o, geo.inner, geo.C, g, false, ga.p + o, gb.p + o);
        self_information_pixel<acc_t>(a.p + o, geo.inner, geo.C, si.p + o);
        std::snprintf(what, sizeof what, "%s rows P=%d C=%d off=%d p=%d", tname, int(P), int(C), off, int(p));
        close(what, ent.p[p], entropy_pixel<double>(ad.data() + o, 1, C), rtol, atol);
        close(what, skl.p[p], sym_kl_pixel<double>(ad.data() + o, bd.data() + o, 1, C), rtol, atol);
        sym_kl_backward_pixel<double>(ad.data() + o, bd.data() + o, 1, C, double(g), false, rga.data() + o,
                                      rgb.data() + o);
        self_information_pixel<double>(ad.data() + o, 1, C, rsi.data() + o);
      }
      for (size_t i = 0; i < n; ++i) {
        std::snprintf(what, sizeof what, "%s rows grads/self-information P=%d C=%d off=%d i=%d", tname, int(P), int(C),
                      off, int(i));
        close(what, double(Num<T>::load(ga.p[i])), rga[i], rtol, atol);
        close(what, double(Num<T>::load(gb.p[i])), rgb[i], rtol, atol);
        close(what, double(Num<T>::load(si.p[i])), rsi[i], rtol, atol);
      }
      expect(ent.margin_untouched(kSentinel) && skl.margin_untouched(kSentinel) && ga.margin_untouched(kSentinel) &&
                 gb.margin_untouched(kSentinel) && si.margin_untouched(kSentinel),
             "rows margins", 0, 0);
    }
}

// ---- warp per pixel: the per-pixel functions with their classes split over lanes -----------------------
// A simulated warp: n host threads run the same per-pixel function, lane l with classes l, l + n, ...; each
// sum/max of the lanes meets at a barrier and combines the n values in lane order (the device's WarpLanes
// shuffles, n = 32). Every lane gets the same result.
struct LaneExchange {
  int n;
  std::vector<double> vals;
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  long generation = 0;
  explicit LaneExchange(int n_) : n(n_), vals(n_) {}
  void barrier() {
    std::unique_lock<std::mutex> lk(mu);
    const long g = generation;
    if (++arrived == n) {
      arrived = 0;
      ++generation;
      cv.notify_all();
    } else {
      cv.wait(lk, [&] { return generation != g; });
    }
  }
  template <typename A, typename F>
  A combine(int lane, A v, F f) {
    vals[lane] = double(v);  // exact for float and double
    barrier();
    A r = A(vals[0]);
    for (int l = 1; l < n; ++l) r = f(r, A(vals[l]));
    barrier();  // nobody writes vals again before all have read them
    return r;
  }
};
// (__host__ __device__ only because the per-pixel functions are: it runs on the host alone)
struct SimLanes {
  static constexpr bool kWarp = true;
  int lane;
  LaneExchange* x;
  UDA_HD int64_t first() const { return lane; }
  UDA_HD int64_t step() const { return kHost ? x->n : 0; }
  UDA_HD bool leader() const { return lane == 0; }
#if defined(__CUDA_ARCH__)
  static constexpr bool kHost = false;
  template <typename A>
  UDA_HD A sum(A v) const {
    return v;
  }
  template <typename A>
  UDA_HD A max(A v) const {
    return v;
  }
#else
  static constexpr bool kHost = true;
  template <typename A>
  UDA_HD A sum(A v) const {
    return x->combine(lane, v, [](A a, A b) { return a + b; });
  }
  template <typename A>
  UDA_HD A max(A v) const {
    return x->combine(lane, v, [](A a, A b) { return uda_max(a, b); });
  }
#endif
};

// f(lanes) -> the pixel's scalar (every lane's must agree); arrays it writes are shared by the lanes.
template <typename F>
static std::vector<double> run_warp(int n, F&& f) {
  LaneExchange x(n);
  std::vector<double> got(n);
  std::vector<std::thread> threads;
  for (int l = 0; l < n; ++l) threads.emplace_back([&, l] { got[l] = f(SimLanes{l, &x}); });
  for (auto& t : threads) t.join();
  return got;
}

// Every per-pixel function run by a simulated warp of n lanes against the same function on one thread
// (OneLane, itself checked against the float64 formulas above): C below, at and past the warp, lanes with
// only -inf classes, a NaN on one lane, an all -inf pixel.
template <typename T>
static void check_warp_lanes(const char* tname, double rtol, double atol, int kinds_checked = 4) {
  using acc_t = acc_of<T>;
  std::mt19937 rng(7);
  char what[160];
  const int classes[] = {1, 7, 31, 32, 33, 345, 1000};
  const char* kinds[] = {"random", "neg_inf lanes", "nan", "all -inf"};
  for (int C : classes)
    for (int kind = 0; kind < kinds_checked; ++kind)
      for (int n : {32, 5}) {
        auto a = random_logits(rng, C, 3.0), b = random_logits(rng, C, 3.0), gfull = random_logits(rng, C, 1.0);
        for (int c = 0; c < C; ++c) {
          if (kind == 1 && c % n < 3 && c != C - 1) a[c] = -INFINITY, b[c] = -INFINITY;  // lanes 0-2: all -inf
          if (kind == 3) a[c] = -INFINITY;
        }
        if (kind == 2) a[C / 2] = NAN;
        const std::vector<T> A = strided<T>(a, 1), B = strided<T>(b, 1), G = strided<T>(gfull, 1);
        const acc_t g = acc_t(0.75), d = acc_t(0.3);
        const acc_t gs = acc_t(1.25);
        // one case: the scalar it returns, the arrays it writes (two, C each)
        auto each_case = [&](auto&& run) {
          run("entropy", [&](const auto& l, T*, T*) { return double(entropy_pixel<acc_t>(A.data(), 1, C, l)); });
          run("entropy_backward", [&](const auto& l, T* o1, T*) {
            entropy_backward_pixel<acc_t>(A.data(), 1, C, g, o1, l);
            return 0.0;
          });
          run("kl_div", [&](const auto& l, T*, T*) { return double(kl_div_pixel<acc_t>(A.data(), B.data(), 1, C, l)); });
          run("kl_div_backward", [&](const auto& l, T* o1, T* o2) {
            kl_div_backward_pixel<acc_t>(A.data(), B.data(), 1, C, g, o1, o2, l);
            return 0.0;
          });
          run("kl_div_backward no target", [&](const auto& l, T* o1, T*) {
            kl_div_backward_pixel<acc_t>(A.data(), B.data(), 1, C, g, o1, static_cast<T*>(nullptr), l);
            return 0.0;
          });
          run("sym_kl", [&](const auto& l, T*, T*) { return double(sym_kl_pixel<acc_t>(A.data(), B.data(), 1, C, l)); });
          for (bool detach : {false, true})
            run(detach ? "sym_kl_backward detach" : "sym_kl_backward", [&](const auto& l, T* o1, T* o2) {
              sym_kl_backward_pixel<acc_t>(A.data(), B.data(), 1, C, g, detach, o1, o2, l);
              return 0.0;
            });
          run("self_information", [&](const auto& l, T* o1, T*) {
            self_information_pixel<acc_t>(A.data(), 1, C, o1, l);
            return 0.0;
          });
          run("self_information_backward full", [&](const auto& l, T* o1, T*) {
            self_information_backward_pixel<acc_t>(A.data(), 1, C, G.data(), 1, o1, l);
            return 0.0;
          });
          run("self_information_backward scalar", [&](const auto& l, T* o1, T*) {
            self_information_backward_pixel<acc_t>(A.data(), 1, C, &gs, 0, o1, l);
            return 0.0;
          });
          run("cosine", [&](const auto& l, T*, T*) {
            return double(cosine_discrepancy_pixel<acc_t>(A.data(), B.data(), 1, C, l));
          });
          run("cosine_backward", [&](const auto& l, T* o1, T* o2) {
            const CosineStats<acc_t> st = cosine_stats<acc_t>(A.data(), B.data(), 1, C, l);
            cosine_grad_pixel(A.data(), B.data(), 1, C, st, g, o1, o2, l);
            return 0.0;
          });
          run("clan", [&](const auto& l, T*, T*) {
            return double(clan_adversarial_pixel<acc_t>(d, A.data(), B.data(), 1, C, acc_t(1), acc_t(40), acc_t(0.4), l));
          });
          run("clan_backward", [&](const auto& l, T* o1, T* o2) {
            return double(clan_adversarial_backward_pixel<acc_t>(d, A.data(), B.data(), 1, C, g, acc_t(1), acc_t(40),
                                                                 acc_t(0.4), o1, o2, l));
          });
          run("clan_backward no logits", [&](const auto& l, T*, T*) {
            return double(clan_adversarial_backward_pixel<acc_t>(d, A.data(), B.data(), 1, C, g, acc_t(1), acc_t(40),
                                                                 acc_t(0.4), static_cast<T*>(nullptr),
                                                                 static_cast<T*>(nullptr), l));
          });
        };
        each_case([&](const char* name, auto&& f) {
          const T fill = Num<T>::store(static_cast<acc_t>(kSentinel));
          std::vector<T> r1(C, fill), r2(C, fill), w1(C, fill), w2(C, fill);
          const double want = f(OneLane{}, r1.data(), r2.data());
          const std::vector<double> got = run_warp(n, [&](const SimLanes& l) { return f(l, w1.data(), w2.data()); });
          for (int l = 0; l < n; ++l) {
            std::snprintf(what, sizeof what, "%s warp %s %s C=%d lanes=%d lane=%d", tname, name, kinds[kind], C, n, l);
            close(what, got[l], want, rtol, atol);
          }
          for (int c = 0; c < C; ++c) {
            std::snprintf(what, sizeof what, "%s warp %s %s C=%d lanes=%d class=%d", tname, name, kinds[kind], C, n, c);
            close(what, double(Num<T>::load(w1[c])), double(Num<T>::load(r1[c])), rtol, atol);
            close(what, double(Num<T>::load(w2[c])), double(Num<T>::load(r2[c])), rtol, atol);
          }
        });
      }
}

// The launch plan: register buckets for small C, the shared-memory slab beyond, fallback when too big.
static void check_plans() {
  const PlanesGeom g19{2, 19, 64, true}, g8{2, 8, 64, true}, g150{2, 150, 64, true}, g5000{2, 5000, 64, true};
  expect(plan_planes<EntropyForward<float>>(g8, 0).cb == 8, "plan C=8 bucket 8", 0, 8);
  expect(plan_planes<EntropyForward<float>>(g19, 0).cb == 0, "plan C=19 slab", 0, 0);
  const PlanesPlan p150 = plan_planes<EntropyForward<__nv_bfloat16>>(g150, 227 * 1024);
  expect(p150.ok && p150.smem == 32 * 150 * 16 && p150.threads == 32, "plan C=150: 32 threads, opt-in smem",
         double(p150.smem), 0);
  expect(!plan_planes<EntropyForward<__nv_bfloat16>>(g150, 0).ok, "plan C=150 without opt-in falls back", 0, 0);
  expect(!plan_planes<EntropyForward<float>>(g5000, 227 * 1024).ok, "plan C=5000 falls back", 0, 0);
  expect(plan_planes<EntropyForward<double>>(g8, 0).cb == 0, "double: slab only", 0, 0);
}

int main() {
  check_geometry();
  check_values<float>(2e-5, 2e-6, 0, "float");
  check_values<double>(1e-12, 1e-13, 0, "double");
  // inputs rounded first: the math is still fp32; only self_information's output is stored in T
  check_values<__half>(2e-5, 2e-6, 4e-3, "half");
  check_values<__nv_bfloat16>(2e-5, 2e-6, 2e-2, "bf16");
  check_gradients();
  check_extremes();
  check_conversions();
  check_mask();
  check_plans();
  check_warp_lanes<double>("double", 1e-12, 1e-14);
  // float: the order of the sums differs; clan's cosine gradient cancels (a few 1e-6 at C = 345)
  check_warp_lanes<float>("float", 2e-5, 5e-6);
  check_warp_lanes<__nv_bfloat16>("bf16", 1e-2, 1e-5, 1);  // one bf16 rounding of the stored outputs
  check_planes<float>("float");
  check_planes<double>("double");
  check_planes<__half>("half");
  check_planes<__nv_bfloat16>("bf16");
  check_rows<float>("float");
  check_rows<double>("double");
  check_rows<__half>("half");
  check_rows<__nv_bfloat16>("bf16");
  check_reduced<float>("float");
  check_reduced<double>("double");
  check_reduced<__half>("half");
  check_reduced<__nv_bfloat16>("bf16");
  std::printf("%d checks, %d failures\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
