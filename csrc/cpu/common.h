// CPU kernel helpers shared by every op: pixel tiling, dtype conversion, a vectorisable exp, and the
// softmax pass every op starts with.
//
// Every op works on tiles of up to `T` pixels: a tile's logits are loaded once into an fp32 (fp64 for
// fp64 input) buffer laid out [C][T], so that all arithmetic runs over contiguous lanes that the
// compiler vectorises whatever the input layout or dtype. Hot tile functions are compiled for several
// x86-64 levels (AVX-512, AVX2, baseline) and picked at load time (UDA_MULTIVERSION).
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "../layout.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(UDA_OPS_NO_MULTIVERSION)
#define UDA_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define UDA_BLOCK_TRANSPOSE 1  // an AVX-512 CPU runs the x86-64-v4 clones (see transpose below)
#else
#define UDA_MULTIVERSION
#endif

#define UDA_INLINE inline __attribute__((always_inline))

namespace uda_ops {
namespace cpu {

// ------------------------------------------------------------------------------------------------
// exp for arguments <= 0 (every softmax exponent is z - max z). float: range reduction to
// r = x - n ln 2, a degree-5 polynomial fitted for relative error, and 2^n built from the bits of the
// rounding sum; branch-free so that lane loops vectorise (14 vector instructions); max relative error
// 2e-7 over every float in [-87.3, 0] (checked exhaustively). Below -87.3 it returns exactly 0 (masked
// classes), NaN stays NaN. double: std::exp (fp64 is for gradcheck, not speed).
// ------------------------------------------------------------------------------------------------
UDA_INLINE float exp_nonpos(float x) {
  constexpr float lo = -87.3f;  // exp(lo) > FLT_MIN: the scale below stays a normal number
  constexpr float magic = 12583039.0f;  // 1.5 * 2^23 + 127: t's low mantissa bits hold n + 127
  const float xc = x < lo ? lo : x;  // NaN stays NaN (the comparison is false)
  const float t = xc * 1.44269504088896341f + magic;  // n = round(x / ln 2)
  const float n = t - magic;
  float r = xc - n * 0.693359375f;  // r = x - n ln 2 in two steps, |r| <= ln 2 / 2
  r = r - n * -2.12194440e-4f;
  // exp(r) = 1 + r + r^2 q(r), q of degree 3 fitted for relative error (1.1e-7 on [-ln 2 / 2, ln 2 / 2])
  float p = 8.3125215e-3f;
  p = p * r + 4.1890118e-2f;
  p = p * r + 1.6667114e-1f;
  p = p * r + 4.9999231e-1f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t bits;
  std::memcpy(&bits, &t, sizeof(bits));
  bits <<= 23;  // (n + 127) << 23 = 2^n (n in [-126, 0]); the higher mantissa bits of t shift out
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  const float y = p * scale;  // NaN in, NaN out: p is NaN
  return x < lo ? 0.0f : y;   // exactly 0 below lo (masked classes, -inf)
}
UDA_INLINE double exp_nonpos(double x) { return std::exp(x); }

// log for arguments >= 1 (every softmax normaliser sum_c exp(z_c - max z) lies in [1, C]): Cephes-style
// polynomial on the mantissa, branch-free; max relative error ~1e-7. NaN stays NaN.
UDA_INLINE float log_ge1(float x) {
  int32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  float e = static_cast<float>(((bits >> 23) & 0xff) - 126);
  bits = (bits & 0x807fffff) | 0x3f000000;  // mantissa in [0.5, 1)
  float m;
  std::memcpy(&m, &bits, sizeof(m));
  const bool small = m < 0.707106781186547524f;
  e = small ? e - 1.0f : e;
  m = small ? m + m - 1.0f : m - 1.0f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  const float r = m + y + 0.693359375f * e;
  return x != x ? x : r;
}
UDA_INLINE double log_ge1(double x) { return std::log(x); }

// 0 * anything = 0: the p log p -> 0 convention for p == 0 (masked classes), NaN weights stay NaN.
template <typename T>
UDA_INLINE T mul0(T w, T x) { return w == T(0) ? T(0) : w * x; }
// a - b, but 0 where a == b (two -inf logits give 0, not NaN).
template <typename T>
UDA_INLINE T diff0(T a, T b) { return a == b ? T(0) : a - b; }
// (a - ma) - (b - mb) for two logits shifted by their pixels' maxima, 0 where both are -inf: a difference of
// logits that a per-pixel offset of either input leaves unchanged, exact near the maxima (sym_kl, kl_div).
template <typename T>
UDA_INLINE T shifted_diff(T a, T ma, T b, T mb) { return diff0(a - ma, b - mb); }

// ------------------------------------------------------------------------------------------------
// Tiling: tile k covers `n` pixels starting at pixel p0; lane i, class c is at
// base + i * lane_stride + c * class_stride in the canonical tensor (see layout.h).
// ------------------------------------------------------------------------------------------------
constexpr int64_t kMaxLanes = 64;
constexpr int64_t kMinLanes = 16;     // one AVX-512 vector of fp32 lanes; T is a multiple of it
constexpr int64_t kTileElems = 8192;  // per [C][T] buffer: 32 KiB in fp32

struct Tile {
  int64_t p0, n, base, k;  // k: the tile's index (0 .. count)
};

struct TileGrid {
  int64_t C, inner, T, per_outer, count, lane_stride, class_stride;

  explicit TileGrid(const ClassLayout& L) : C(L.classes), inner(L.inner) {
    // As many lanes as keep a [C][T] buffer within kTileElems (the tile's buffers stay near L1), rounded down to
    // a multiple of kMinLanes so that every lane loop runs whole vectors, and at least kMinLanes: C > 512 lets the
    // buffers outgrow L1, which costs far less than lane loops shorter than a vector (with T = 8192 / C, sym_kl's
    // forward on (N, C) logits took 1.7x the time per element at C = 129 and 2.9x at C = 1000 that it took at
    // C = 128; benchmarks/results/cpu-shapes-2026-11-30.md).
    const int64_t fit = std::min<int64_t>(kMaxLanes, kTileElems / std::max<int64_t>(C, 1));
    T = std::max(kMinLanes, fit / kMinLanes * kMinLanes);
    if (inner == 1) {  // rows: tiles run over all pixels, classes contiguous
      per_outer = 0;
      count = (L.outer + T - 1) / T;
      lane_stride = C;
      class_stride = 1;
      total = L.outer;
    } else {  // planes: tiles stay inside one outer index, lanes contiguous
      per_outer = (inner + T - 1) / T;
      count = L.outer * per_outer;
      lane_stride = 1;
      class_stride = inner;
      total = L.outer * inner;
    }
  }

  Tile tile(int64_t k) const {
    if (per_outer == 0) {
      const int64_t p0 = k * T;
      return {p0, std::min(T, total - p0), p0 * C, k};
    }
    const int64_t o = k / per_outer, i0 = (k % per_outer) * T;
    return {o * inner + i0, std::min(T, inner - i0), o * C * inner + i0, k};
  }

  // Tiles per parallel task: enough work (~32K elements) to amortise scheduling.
  int64_t grain() const { return std::max<int64_t>(1, 32768 / std::max<int64_t>(C * T, 1)); }

 private:
  int64_t total;
};

// ------------------------------------------------------------------------------------------------
// The transpose of the rows layout: d[c * ds + i] = s[i * ss + c] for i < rows, c < cols. float to float, in
// the x86-64-v4 clones that a CPU with AVX-512 runs, goes by 16 x 16 blocks in registers: sixteen 64-byte loads,
// four rounds of two-source shuffles (one vpermt2ps each), sixteen 64-byte stores: 1.7x faster than element by
// element in a standalone test, and the rows kernels 10-35% faster. Compiled for AVX2 or less the shuffles are split
// and the blocks were 1.5x slower, so there (and without the clones), and for the rest (rows or cols past a
// multiple of 16, other dtypes), element by element, 16 columns at a time so that the lines it touches stay in L1
// at any size.
// ------------------------------------------------------------------------------------------------
#ifdef UDA_BLOCK_TRANSPOSE
typedef float uda_v16f __attribute__((vector_size(64)));
typedef int32_t uda_v16i __attribute__((vector_size(64)));

// One round: for the row pairs (i, i + K) with bit K of i clear, swap the elements whose column has bit K set in
// row i with those whose column has it clear in row i + K (exchanging bit K of the row and of the column index).
template <int K, int... J>
UDA_INLINE void swap_bit(uda_v16f (&r)[16], std::integer_sequence<int, J...>) {
  const uda_v16i lo = {((J & K) ? 16 + J - K : J)...};
  const uda_v16i hi = {((J & K) ? 16 + J : J + K)...};
  for (int i = 0; i < 16; ++i) {
    if (i & K) continue;
    const uda_v16f a = r[i], b = r[i + K];
    r[i] = __builtin_shuffle(a, b, lo);
    r[i + K] = __builtin_shuffle(a, b, hi);
  }
}

inline bool block_transpose_pays() {  // the CPU runs the x86-64-v4 clones
  static const bool v4 = __builtin_cpu_supports("x86-64-v4");
  return v4;
}

UDA_INLINE void transpose16(const float* s, int64_t ss, float* d, int64_t ds) {
  uda_v16f r[16];
  for (int i = 0; i < 16; ++i) std::memcpy(&r[i], s + i * ss, sizeof(uda_v16f));
  constexpr auto J = std::make_integer_sequence<int, 16>{};
  swap_bit<8>(r, J);
  swap_bit<4>(r, J);
  swap_bit<2>(r, J);
  swap_bit<1>(r, J);
  for (int c = 0; c < 16; ++c) std::memcpy(d + c * ds, &r[c], sizeof(uda_v16f));
}
#endif

template <typename From, typename To>
UDA_INLINE void transpose(const From* __restrict s, int64_t ss, To* __restrict d, int64_t ds, int64_t rows,
                          int64_t cols) {
  int64_t rb = 0, cb = 0;  // rows and cols covered by whole 16 x 16 blocks
#ifdef UDA_BLOCK_TRANSPOSE
  if constexpr (std::is_same<From, float>::value && std::is_same<To, float>::value) {
    if (block_transpose_pays()) {
      rb = rows / 16 * 16;
      cb = cols / 16 * 16;
      for (int64_t c0 = 0; c0 < cb; c0 += 16)
        for (int64_t i0 = 0; i0 < rb; i0 += 16) transpose16(s + i0 * ss + c0, ss, d + c0 * ds + i0, ds);
    }
  }
#endif
  for (int64_t c0 = 0; c0 < cols; c0 += 16) {
    const int64_t c1 = std::min(cols, c0 + 16);
    for (int64_t i = c0 < cb ? rb : 0; i < rows; ++i)  // blocks done: only the rows below them
      for (int64_t c = c0; c < c1; ++c) d[c * ds + i] = static_cast<To>(s[i * ss + c]);
  }
}

// src (input dtype, canonical layout) -> dst [C][T] in acc_t. Multiversioned like the compute: the
// conversion and the transpose of the rows layout vectorise too.
template <typename scalar_t, typename acc_t>
UDA_MULTIVERSION void load_tile(const scalar_t* __restrict src, const TileGrid& g, const Tile& t,
                          acc_t* __restrict dst) {
  const scalar_t* s = src + t.base;
  if (g.lane_stride == 1) {
    for (int64_t c = 0; c < g.C; ++c)
      for (int64_t i = 0; i < t.n; ++i) dst[c * g.T + i] = static_cast<acc_t>(s[c * g.class_stride + i]);
  } else {
    transpose(s, g.lane_stride, dst, g.T, t.n, g.C);
  }
}

// src [C][T] in acc_t -> dst (output dtype, canonical layout).
template <typename scalar_t, typename acc_t>
UDA_MULTIVERSION void store_tile(const acc_t* __restrict src, const TileGrid& g, const Tile& t,
                           scalar_t* __restrict dst) {
  scalar_t* d = dst + t.base;
  if (g.lane_stride == 1) {
    for (int64_t c = 0; c < g.C; ++c)
      for (int64_t i = 0; i < t.n; ++i) d[c * g.class_stride + i] = static_cast<scalar_t>(src[c * g.T + i]);
  } else {
    transpose(src, g.T, d, g.lane_stride, g.C, t.n);
  }
}

// Whether a kernel reads and writes tiles in place (class stride g.class_stride) rather than through a
// [C][T] buffer (class stride g.T): the tensor already holds acc_t with contiguous lanes (planes layout).
template <typename scalar_t, typename acc_t>
UDA_INLINE bool in_place(const TileGrid& g) {
  return std::is_same<scalar_t, acc_t>::value && g.lane_stride == 1;
}

// The tile's values as acc_t and their class stride `xs`: in place where in_place, else loaded into buf.
template <typename scalar_t, typename acc_t>
UDA_INLINE const acc_t* tile_in(const scalar_t* src, const TileGrid& g, const Tile& t, acc_t* buf, int64_t& xs) {
  if (in_place<scalar_t, acc_t>(g)) {
    xs = g.class_stride;
    return reinterpret_cast<const acc_t*>(src) + t.base;
  }
  load_tile(src, g, t, buf);
  xs = g.T;
  return buf;
}

// Where a tile's result goes: in place in dst where in_place, else buf (then stored by tile_out_done).
template <typename scalar_t, typename acc_t>
UDA_INLINE acc_t* tile_out(scalar_t* dst, const TileGrid& g, const Tile& t, acc_t* buf, int64_t& os) {
  if (in_place<scalar_t, acc_t>(g)) {
    os = g.class_stride;
    return reinterpret_cast<acc_t*>(dst) + t.base;
  }
  os = g.T;
  return buf;
}

template <typename scalar_t, typename acc_t>
UDA_INLINE void tile_out_done(const acc_t* buf, const TileGrid& g, const Tile& t, scalar_t* dst) {
  if (!in_place<scalar_t, acc_t>(g)) store_tile(buf, g, t, dst);
}

// Runs body(tile, scratch) over all tiles in parallel; scratch holds `buffers` [C][T] acc_t buffers
// (allocated once per task, not per tile).
// The buffers start on a 64-byte boundary (a cache line, an AVX-512 vector).
template <typename acc_t, typename Body>
void for_each_tile(const TileGrid& g, int64_t buffers, const Body& body) {
  if (g.count == 0) return;
  constexpr int64_t kAlign = 64 / sizeof(acc_t);
  at::parallel_for(0, g.count, g.grain(), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> scratch(static_cast<size_t>(buffers * g.C * g.T + kAlign));
    acc_t* p = scratch.data();
    p += (kAlign - reinterpret_cast<uintptr_t>(p) / sizeof(acc_t) % kAlign) % kAlign;
    for (int64_t k = begin; k < end; ++k) body(g.tile(k), p);
  });
}

// ------------------------------------------------------------------------------------------------
// Rows of many classes. In the rows layout (channels_last maps, (N, C) logits) with C >= kRowClasses, a tile's
// pixels are taken one at a time: a pixel's row of C contiguous classes is itself a tile of kRowLanes lanes and
// K = ceil(C / 64) "classes" (lane j holds classes j, 64 + j, ...), run through the same tile functions with
// RowLanes (below), which combine each per-lane reduction across the lanes before it is used. The row and its
// scratch stay in L1 and nothing is transposed, where [C][T] buffers of C = 1000 take 64 KiB each plus a transpose
// in and out. Forward+backward ops at (256, 1000) fp32, tiles -> rows: entropy 252 -> 176 us, self_information 376 ->
// 237, kl_div 573 -> 461, sym_kl 574 -> 424, cosine_discrepancy 557 -> 424 (clan_adversarial joined later:
// cpu-clan-rows-2026-12-01.md). A row costs a fixed ~85 ns (entropy's forward+backward: the combines, the per-lane
// set-up), so below C = 256 the tiles are faster (at C = 150 every op took 1.2-2x longer by rows). 16 lanes were slower
// than 64 wherever measured; 32 within 10% of 64 at C = 345-600, 5-10% slower at C = 1000 and 1.6-2x slower for the
// two-input ops at C = 256. The tiles themselves stay as they are: the fused reductions add up the same per-tile
// partials.
// Those figures are one run's. In later back-to-back runs of this code at (256, 1000), times were bimodal by
// process, not by code: self_information 195-290 us in most runs and 917-1037 in some, kl_div 375-500 against
// 1205-1347. perf puts a fifth of self_information's forward in the max pass, whose m[] goes through memory on
// every class (a store-to-load chain); 4K aliasing between the buffers is suspected. Keeping the maxima in
// registers and spacing the buffers off 4 KiB multiples did not give a clear win in six runs; not landed.
//
// A row is read and written in place when it holds acc_t and C is a multiple of kRowLanes; otherwise it is copied
// into a buffer of K * 64 values padded with a value the op ignores (-inf for logits: probability exactly 0; 0 for
// an upstream gradient).
// ------------------------------------------------------------------------------------------------
constexpr int64_t kRowClasses = 256;
constexpr int64_t kRowLanes = 64;

template <typename acc_t>
constexpr acc_t kNegInf = -std::numeric_limits<acc_t>::infinity();

inline bool by_rows(const TileGrid& g) { return g.lane_stride != 1 && g.C >= kRowClasses; }

// K: the chunks of kRowLanes classes of a row of C classes; a row buffer holds K * kRowLanes values.
inline int64_t row_chunks(int64_t C) { return (C + kRowLanes - 1) / kRowLanes; }
inline int64_t row_chunks(const TileGrid& g) { return row_chunks(g.C); }

template <typename scalar_t, typename acc_t>
UDA_INLINE bool row_in_place(const TileGrid& g) {
  return std::is_same<scalar_t, acc_t>::value && g.C % kRowLanes == 0;
}

template <typename scalar_t, typename acc_t>
UDA_MULTIVERSION void load_row(const scalar_t* __restrict s, int64_t C, acc_t* __restrict d, acc_t pad) {
  const int64_t Cp = row_chunks(C) * kRowLanes;
  for (int64_t c = 0; c < C; ++c) d[c] = static_cast<acc_t>(s[c]);
  for (int64_t c = C; c < Cp; ++c) d[c] = pad;
}

template <typename scalar_t, typename acc_t>
UDA_MULTIVERSION void store_row(const acc_t* __restrict s, int64_t C, scalar_t* __restrict d) {
  for (int64_t c = 0; c < C; ++c) d[c] = static_cast<scalar_t>(s[c]);
}

// Row i of tile t as acc_t: in place where row_in_place, else loaded into buf with padding `pad`.
template <typename scalar_t, typename acc_t>
UDA_INLINE const acc_t* row_in(const scalar_t* src, const TileGrid& g, const Tile& t, int64_t i, acc_t* buf,
                               acc_t pad) {
  const scalar_t* s = src + t.base + i * g.C;
  if (row_in_place<scalar_t, acc_t>(g)) return reinterpret_cast<const acc_t*>(s);
  load_row(s, g.C, buf, pad);
  return buf;
}

// Where row i's result goes: in place in dst where row_in_place, else buf (then stored by row_out_done).
template <typename scalar_t, typename acc_t>
UDA_INLINE acc_t* row_out(scalar_t* dst, const TileGrid& g, const Tile& t, int64_t i, acc_t* buf) {
  if (row_in_place<scalar_t, acc_t>(g)) return reinterpret_cast<acc_t*>(dst + t.base + i * g.C);
  return buf;
}

template <typename scalar_t, typename acc_t>
UDA_INLINE void row_out_done(const acc_t* buf, const TileGrid& g, const Tile& t, int64_t i, scalar_t* dst) {
  if (!row_in_place<scalar_t, acc_t>(g)) store_row(buf, g.C, dst + t.base + i * g.C);
}

// How a tile function's lanes map to pixels; its per-lane reductions over the classes call R::max / R::sum on their
// n results before using them, and it takes a pixel's number of classes from lanes.classes(C).
//   PixelLanes: lane i is pixel i (the [C][T] tiles): a lane's reduction is its pixel's; nothing to do.
//   RowLanes: the n = kRowLanes lanes are slices of one pixel's classes (a row, see above): the lanes' results are
//   combined by a pairwise tree in a fixed order, and every lane gets the row's value.
struct PixelLanes {
  int64_t classes(int64_t C) const { return C; }
  template <typename acc_t>
  static UDA_INLINE void max(acc_t*, int64_t) {}
  template <typename acc_t>
  static UDA_INLINE void sum(acc_t*, int64_t) {}
};

#ifdef UDA_BLOCK_TRANSPOSE
// RowLanes' tree (below) on 64 floats held as four vectors of 16: lane i with lane i + 32, then i + 16 (whole
// vectors), then i + 8, 4, 2, 1 (a shuffle brings lane i + w down to lane i), and lane 0 broadcast. The operands
// and their order are the loops', so the result is the same bit for bit (but for which NaN an inf - inf gives;
// tests/test_row_combine.py); after a step, the lanes >= w hold values that nothing reads. Forwards at (128, 345)
// 13-26% faster than with the loops, steps 5-22%; at C = 1000 up to 16% and 15% (cpu-row-combine-2026-12-01.md).
template <int W, int... J>
UDA_INLINE void lanes_down(const uda_v16f& a, uda_v16f& out, std::integer_sequence<int, J...>) {
  const uda_v16i idx = {(J < W ? J + W : J)...};
  out = __builtin_shuffle(a, idx);
}

template <bool kMax>
UDA_INLINE void combine(uda_v16f& a, const uda_v16f& b) {  // a: lane i's value, b: lane i + w's
  if constexpr (kMax) {
    a = b > a ? b : a;
  } else {
    a = a + b;
  }
}

template <bool kMax, int W>
UDA_INLINE void combine_down(uda_v16f& a) {
  uda_v16f b;
  lanes_down<W>(a, b, std::make_integer_sequence<int, 16>{});
  combine<kMax>(a, b);
}

template <bool kMax>
UDA_INLINE void combine_row(float* v) {
  static_assert(kRowLanes == 64, "four vectors of 16 lanes");
  uda_v16f r[4];
  std::memcpy(r, v, sizeof(r));
  combine<kMax>(r[0], r[2]);
  combine<kMax>(r[1], r[3]);
  combine<kMax>(r[0], r[1]);
  combine_down<kMax, 8>(r[0]);
  combine_down<kMax, 4>(r[0]);
  combine_down<kMax, 2>(r[0]);
  combine_down<kMax, 1>(r[0]);
  const uda_v16f all = __builtin_shuffle(r[0], uda_v16i{});  // lane 0 everywhere
  for (int k = 0; k < 4; ++k) std::memcpy(v + 16 * k, &all, sizeof(all));
}
#endif

struct RowLanes {
  int64_t row_classes;  // the row's C (a tile function's C is K)
  int64_t classes(int64_t) const { return row_classes; }
  template <typename acc_t>
  static UDA_INLINE void max(acc_t* v, int64_t) {  // a lane's max is never NaN (NaN logits fail the >)
#ifdef UDA_BLOCK_TRANSPOSE
    if constexpr (std::is_same<acc_t, float>::value) return combine_row<true>(v);
#endif
    for (int64_t w = kRowLanes / 2; w >= 1; w /= 2)
      for (int64_t i = 0; i < w; ++i) v[i] = v[i + w] > v[i] ? v[i + w] : v[i];
    for (int64_t i = 1; i < kRowLanes; ++i) v[i] = v[0];
  }
  template <typename acc_t>
  static UDA_INLINE void sum(acc_t* v, int64_t) {
#ifdef UDA_BLOCK_TRANSPOSE
    if constexpr (std::is_same<acc_t, float>::value) return combine_row<false>(v);
#endif
    for (int64_t w = kRowLanes / 2; w >= 1; w /= 2)
      for (int64_t i = 0; i < w; ++i) v[i] += v[i + w];
    for (int64_t i = 1; i < kRowLanes; ++i) v[i] = v[0];
  }
};

// Runs a tile function with one input and one output of z's shape over every tile (or, by_rows, every row):
// fn(X, xs, E, C, T, n, O, os, p0, ps, lanes) reads X (class stride xs), writes O (class stride os; O may be X),
// has E ([C][T] or row scratch), and its lane i belongs to pixel p0 + i * ps (ps = 0 for a row: every lane is
// the same pixel). src and dst are in z's dtype and canonical layout.
template <typename acc_t, typename scalar_t, typename Fn>
void for_each_map_tile(const TileGrid& g, const scalar_t* src, scalar_t* dst, const Fn& fn) {
  if (by_rows(g)) {
    const int64_t K = row_chunks(g), Cp = K * kRowLanes;
    for_each_tile<acc_t>(g, 2, [&](const Tile& t, acc_t* buf) {
      for (int64_t i = 0; i < t.n; ++i) {
        const acc_t* x = row_in(src, g, t, i, buf, kNegInf<acc_t>);
        acc_t* o = row_out(dst, g, t, i, buf);
        fn(x, kRowLanes, buf + Cp, K, kRowLanes, kRowLanes, o, kRowLanes, t.p0 + i, 0, RowLanes{g.C});
        row_out_done(buf, g, t, i, dst);
      }
    });
    return;
  }
  for_each_tile<acc_t>(g, 2, [&](const Tile& t, acc_t* buf) {
    int64_t xs, os;
    const acc_t* X = tile_in(src, g, t, buf, xs);
    acc_t* O = tile_out(dst, g, t, buf, os);
    fn(X, xs, buf + g.C * g.T, g.C, g.T, t.n, O, os, t.p0, 1, PixelLanes{});
    tile_out_done(buf, g, t, dst);
  });
}

// Where a forward op's per-pixel values go (layout.h, Reduction): the (N, *) map, or one partial sum per
// tile (the tiles depend on the shape only, so the result does not depend on the thread count), added up
// in tile order in float64 by finish(). A tile function writes its n values to dst(t, lanes) (`lanes`:
// kMaxLanes values on the caller's stack), then calls done(t, those values).
template <typename acc_t>
class ForwardOut {
 public:
  // out: empty_forward_output(x, dim, r); pixels: the layout's pixel count (for "mean").
  ForwardOut(const at::Tensor& out, const TileGrid& g, Reduction r, int64_t pixels)
      : reduce_(r != kReduceNone),
        out_(out.mutable_data_ptr<acc_t>()),  // the map (nullptr when empty) or the 0-d result
        scale_(reduction_scale(r, pixels)),
        partials_(reduce_ ? static_cast<size_t>(g.count) : 0) {}

  acc_t* dst(const Tile& t, acc_t* lanes) const { return reduce_ ? lanes : out_ + t.p0; }

  void done(const Tile& t, const acc_t* v) {
    if (!reduce_) return;
    acc_t s = 0;
    for (int64_t i = 0; i < t.n; ++i) s += v[i];
    partials_[static_cast<size_t>(t.k)] = s;
  }

  // Writes the reduced value (nothing to do for the map).
  void finish() const {
    if (!reduce_) return;
    double s = 0;
    for (const acc_t p : partials_) s += static_cast<double>(p);
    *out_ = static_cast<acc_t>(s * scale_);
  }

 private:
  bool reduce_;
  acc_t* out_;
  double scale_;
  std::vector<acc_t> partials_;
};

// ------------------------------------------------------------------------------------------------
// Softmax over the class rows of a tile, X[c * xs + i] for class c of lane i, results in [C][T] buffers
// (E[c * T + i]). A lane whose logits are all -inf, or that holds a NaN, gets NaN (never hidden).
// ------------------------------------------------------------------------------------------------
// m = max_c x_c per lane.
template <typename acc_t, typename R>
UDA_INLINE void lane_max(const acc_t* __restrict X, int64_t xs, int64_t C, int64_t n, acc_t* __restrict m) {
  for (int64_t i = 0; i < n; ++i) m[i] = -std::numeric_limits<acc_t>::infinity();
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i) m[i] = X[c * xs + i] > m[i] ? X[c * xs + i] : m[i];
  R::max(m, n);
}

// The softmax before its normalisation: m = max_c x_c, E[c * T + i] = exp(x_c - m), s = sum_c of those.
// Consumers that only multiply by the probabilities take 1 / s instead of a normalising pass.
template <typename acc_t, typename R>
UDA_INLINE void exp_tile(const acc_t* __restrict X, int64_t xs, acc_t* __restrict E, int64_t C, int64_t T,
                         int64_t n, acc_t* __restrict m, acc_t* __restrict s) {
  lane_max<acc_t, R>(X, xs, C, n, m);
  for (int64_t i = 0; i < n; ++i) s[i] = 0;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i) {
      const acc_t e = exp_nonpos(X[c * xs + i] - m[i]);  // NaN for all -inf lanes: (-inf) - (-inf)
      E[c * T + i] = e;
      s[i] += e;
    }
  R::sum(s, n);
}

// P = softmax(X); per lane m = max_c x_c and ls = log sum_c exp(x_c - m), so that log p_c = (x_c - m) - ls. They
// stay apart: a rounded lse = m + ls carries an ulp of m (1e-3 at |x| ~ 1e4) into every log p_c, and the losses
// built on differences of logits use the shifted x_c - m (exact near the maximum) instead of x_c.
template <typename acc_t, typename R = PixelLanes>
UDA_INLINE void softmax_tile(const acc_t* __restrict X, int64_t xs, acc_t* __restrict P, acc_t* __restrict m,
                             acc_t* __restrict ls, int64_t C, int64_t T, int64_t n, R = {}) {
  acc_t s[kMaxLanes];
  exp_tile<acc_t, R>(X, xs, P, C, T, n, m, s);
  for (int64_t i = 0; i < n; ++i) {
    ls[i] = log_ge1(s[i]);
    s[i] = acc_t(1) / s[i];
  }
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < n; ++i) P[c * T + i] *= s[i];
}

// P = softmax(X) only.
template <typename acc_t, typename R = PixelLanes>
UDA_INLINE void softmax_tile(const acc_t* __restrict X, int64_t xs, acc_t* __restrict P, int64_t C, int64_t T,
                             int64_t n, R lanes = {}) {
  acc_t m[kMaxLanes], ls[kMaxLanes];
  softmax_tile(X, xs, P, m, ls, C, T, n, lanes);
}

}  // namespace cpu
}  // namespace uda_ops
