// Device helpers shared by every CUDA kernel of uda_ops. Torch-free: compiles with nvcc alone.
//
// Conventions (mirroring csrc/cpu/common.h and csrc/layout.h):
//  * A kernel sees P = outer * inner pixels with C classes each; element (o, c, i) of the canonical
//    view lives at o * C * inner + c * inner + i. Pixel p = o * inner + i, so its classes start at
//    PixelGeom::base(p) and are `inner` apart. The "rows" layout (channels_last, (N, C)) is inner == 1.
//  * Planes layout (inner > 1): the tile kernels below ("Planes (NCHW) tiles"), a thread per 16 bytes
//    of contiguous pixels with 128-bit loads and stores. Rows layout (inner == 1: channels_last, (N, C)):
//    the same tile kernels instantiated for StagedRows: a block copies its contiguous run of rows into
//    shared memory with 128-bit loads, a thread works on kLanes pixels from there, and the block copies
//    the per-class outputs back with 128-bit stores. Where the slab does not fit in shared memory (large
//    C): the ops' per-pixel *_rows_kernel, a warp per pixel in the rows layout (lane l reads classes l,
//    l + 32, ...: coalesced), a thread per pixel with the class loop inside in planes.
//  * Arithmetic in acc_t = float (double for double input); loads/stores convert explicitly (the
//    torch build defines __CUDA_NO_HALF_CONVERSIONS__, so no implicit __half <-> float).
//  * SPEC section 6: -inf logits are legal (p = 0, p log p = 0), an all -inf pixel or any NaN gives
//    NaN for that pixel; max-subtracted softmax; threads past the last pixel are predicated off (never
//    fed a -inf); every reduction has a fixed order (no float atomics).
//
// Per-pixel math is __host__ __device__ so that it can be checked on a CPU-only machine
// (tests/cuda/host_check.cu).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <utility>

#define UDA_HD __host__ __device__ __forceinline__
// Unrolling hints in __host__ __device__ code (the host compiler does not know the pragma).
#if defined(__CUDA_ARCH__)
#define UDA_UNROLL _Pragma("unroll")
#define UDA_UNROLL2 _Pragma("unroll 2")
#else
#define UDA_UNROLL
#define UDA_UNROLL2
#endif

namespace uda_ops {
namespace cuda {

// ------------------------------------------------------------------------------------------------
// Storage types: acc type, explicit load (-> acc) and store (acc ->).
// ------------------------------------------------------------------------------------------------
template <typename T>
struct Num;

template <>
struct Num<float> {
  using acc = float;
  static UDA_HD float load(float x) { return x; }
  static UDA_HD float store(float x) { return x; }
};

template <>
struct Num<double> {
  using acc = double;
  static UDA_HD double load(double x) { return x; }
  static UDA_HD double store(double x) { return x; }
};

template <>
struct Num<__half> {
  using acc = float;
  static UDA_HD float load(__half x) { return __half2float(x); }
  static UDA_HD __half store(float x) { return __float2half_rn(x); }
};

template <>
struct Num<__nv_bfloat16> {
  using acc = float;
  static UDA_HD float load(__nv_bfloat16 x) { return __bfloat162float(x); }
  static UDA_HD __nv_bfloat16 store(float x) { return __float2bfloat16_rn(x); }
};

template <typename T>
using acc_of = typename Num<T>::acc;

template <typename acc_t, typename T>
UDA_HD acc_t load(const T* p) {
  return static_cast<acc_t>(Num<T>::load(*p));
}

template <typename T, typename acc_t>
UDA_HD void store(T* p, acc_t v) {
  *p = Num<T>::store(static_cast<acc_of<T>>(v));
}

// ------------------------------------------------------------------------------------------------
// Math in acc_t (accurate libm versions: the kernels are memory-bound, so the fast intrinsics would
// buy nothing and cost accuracy; see setup.py for why --use_fast_math is not used).
// ------------------------------------------------------------------------------------------------
UDA_HD float uda_exp(float x) { return expf(x); }
UDA_HD double uda_exp(double x) { return exp(x); }
UDA_HD float uda_log(float x) { return logf(x); }
UDA_HD double uda_log(double x) { return log(x); }
UDA_HD float uda_log1p(float x) { return log1pf(x); }
UDA_HD double uda_log1p(double x) { return log1p(x); }
UDA_HD float uda_sqrt(float x) { return sqrtf(x); }
UDA_HD double uda_sqrt(double x) { return sqrt(x); }
UDA_HD float uda_abs(float x) { return fabsf(x); }
UDA_HD double uda_abs(double x) { return fabs(x); }

template <typename acc_t>
UDA_HD acc_t neg_inf() {
  return -static_cast<acc_t>(INFINITY);
}
template <typename acc_t>
UDA_HD acc_t quiet_nan() {
  return static_cast<acc_t>(NAN);
}
template <typename acc_t>
UDA_HD bool is_nan(acc_t x) {
  return x != x;
}

// 0 * anything = 0: the p log p -> 0 convention where p == 0 (masked classes); NaN weights stay NaN.
template <typename acc_t>
UDA_HD acc_t mul0(acc_t w, acc_t x) {
  return w == acc_t(0) ? acc_t(0) : w * x;
}
// a - b, but 0 where a == b (two -inf logits give 0, not NaN).
template <typename acc_t>
UDA_HD acc_t diff0(acc_t a, acc_t b) {
  return a == b ? acc_t(0) : a - b;
}
// (a - ma) - (b - mb) for two logits shifted by their pixels' maxima, 0 where both are -inf: a difference of logits
// that a per-pixel offset of either input leaves unchanged, exact near the maxima (as csrc/cpu/common.h).
template <typename acc_t>
UDA_HD acc_t shifted_diff(acc_t a, acc_t ma, acc_t b, acc_t mb) {
  return diff0(a - ma, b - mb);
}

// ------------------------------------------------------------------------------------------------
// Softmax statistics of one pixel, one pass over its classes (online max with rescaling):
// p_c = exp(x_c - m) / s and log p_c = (x_c - m) - log s. Both use x_c - m, which is exact for
// nearby values, so logits of magnitude 1e4 lose nothing to the rounding of a log-sum-exp.
// -inf classes contribute exactly 0 (they are skipped, never subtracted from a -inf max); an all
// -inf pixel or a NaN anywhere gives NaN statistics, hence NaN for everything derived from them.
// ------------------------------------------------------------------------------------------------
template <typename acc_t>
struct SoftmaxStats {
  acc_t m;      // max logit
  acc_t log_s;  // log sum_c exp(x_c - m), in [0, log C]
  acc_t inv_s;  // 1 / sum_c exp(x_c - m)

  UDA_HD acc_t p(acc_t x) const { return uda_exp(x - m) * inv_s; }
  UDA_HD acc_t logp(acc_t x) const { return (x - m) - log_s; }
};

// The threads that share one pixel of a per-pixel kernel, as each sees its classes: c = first(),
// first() + step(), ... < C; sum/max combine one value per thread (every thread gets the result).
// OneLane: a thread per pixel (all classes, nothing to combine). WarpLanes (below): a warp per pixel.
struct OneLane {
  static constexpr bool kWarp = false;
  static UDA_HD int64_t first() { return 0; }
  static UDA_HD int64_t step() { return 1; }
  static UDA_HD bool leader() { return true; }
  template <typename A>
  static UDA_HD A sum(A v) {
    return v;
  }
  template <typename A>
  static UDA_HD A max(A v) {
    return v;
  }
};

// The statistics of a pixel from each lane's (m, s) over its own classes: the lanes' max M, and the sum
// of s * exp(m - M): 0 for a lane that saw only -inf classes, a lane's NaN kept (M = -inf: every class
// -inf, NaN below anyway).
template <typename acc_t, typename L>
UDA_HD void combine_stats(const L& lanes, acc_t& m, acc_t& s) {
  if constexpr (!std::is_same<L, OneLane>::value) {
    const acc_t M = lanes.max(m);
    s = lanes.sum(s * uda_exp(m - M));
    m = M;
  }
}

template <typename acc_t, typename T, typename L = OneLane>
UDA_HD SoftmaxStats<acc_t> softmax_stats(const T* __restrict__ x, int64_t cs, int64_t C, const L& lanes = L()) {
  const acc_t ninf = neg_inf<acc_t>();
  acc_t m = ninf, s = acc_t(0);
  for (int64_t c = lanes.first(); c < C; c += lanes.step()) {
    const acc_t v = load<acc_t>(x + c * cs);
    if (v > m) {  // new max: rescale the running sum (exp(-inf - v) = 0 for the first finite value)
      s = s * uda_exp(m - v) + acc_t(1);
      m = v;
    } else if (v != ninf) {  // NaN lands here too and poisons s, as it must
      s += uda_exp(v - m);
    }
  }
  combine_stats(lanes, m, s);
  if (m == ninf) s = quiet_nan<acc_t>();  // all classes -inf: NaN, never hidden
  SoftmaxStats<acc_t> st;
  st.m = m;
  st.log_s = uda_log(s);
  st.inv_s = acc_t(1) / s;
  return st;
}

// ------------------------------------------------------------------------------------------------
// Planes (NCHW) tiles: the vectorised path of every loss kernel.
//
// A thread owns kLanes<T> = 16 / sizeof(T) contiguous pixels (4 fp32, 8 bf16/fp16, 2 fp64) of one
// sample o: for each class c it loads the 16 bytes at x + (o * C + c) * inner + i0 as one 128-bit
// load when the geometry allows (every pointer 16-byte aligned and inner % kLanes == 0), else lane by
// lane with bounds (tails, views misaligned by an element). The grid is 2-D (tiles of a sample x
// samples): no 64-bit division per pixel.
// The C class packs of the tile are kept either in registers (RegSlab<CB>: C <= CB, a compile-time
// bucket, every access by a compile-time index, all C loads issued before any use) or, for larger C,
// in a shared-memory [C x threads] slab of 16-byte packs (SmemSlab: the thread reads back only its own
// column, so no barrier; loads issued in unrolled batches of kSlabBatch). Then: a branch-free max per
// lane, e = exp(x - m) (fast exp: one FMUL + MUFU.EX2; max-subtracted, so e in [0, 1]), and per-pixel
// sums; a gradient pass recomputes e from the slab (one more fast exp) and writes whole packs.
// Everything below is __host__ __device__: tests/cuda/host_check.cu runs the same per-thread code over
// the whole simulated grid on the CPU.
// ------------------------------------------------------------------------------------------------
using Pack = uint4;  // 16 bytes

template <typename T>
constexpr int kLanes = int(16 / sizeof(T));

UDA_HD float uda_max(float a, float b) { return fmaxf(a, b); }
UDA_HD double uda_max(double a, double b) { return fmax(a, b); }

// exp of a max-subtracted value (<= 0, -inf or NaN): the MUFU.EX2 approximation on the device (a few
// ulp: far below the fp32 tolerance, exact 0 for -inf, NaN stays NaN); libm on the host.
UDA_HD float fast_exp(float x) {
#if defined(__CUDA_ARCH__)
  return __expf(x);
#else
  return expf(x);
#endif
}
UDA_HD double fast_exp(double x) { return exp(x); }

template <typename T>
UDA_HD void unpack(const Pack& u, acc_of<T> (&x)[kLanes<T>]) {
  T t[kLanes<T>];
  memcpy(static_cast<void*>(t), &u, sizeof(Pack));
UDA_UNROLL
  for (int k = 0; k < kLanes<T>; ++k) x[k] = Num<T>::load(t[k]);
}

template <typename T>
UDA_HD Pack pack(const acc_of<T> (&x)[kLanes<T>]) {
  T t[kLanes<T>];
UDA_UNROLL
  for (int k = 0; k < kLanes<T>; ++k) t[k] = Num<T>::store(x[k]);
  Pack u;
  memcpy(&u, static_cast<const void*>(t), sizeof(Pack));
  return u;
}

// Where a thread's tile lies: x = offset of (o, c = 0, i0) in the (outer, C, inner) tensor, map =
// offset of pixel (o, i0) in the per-pixel map, n valid lanes, ps = elements between lanes (1: planes,
// C: rows), full = a whole aligned 128-bit tile, ms = map entries between lanes (1, except in staged rows
// tiles: the block's width, see StagedRows).
struct TilePos {
  int64_t x, map, ps;
  int n;
  bool full;
  int64_t ms = 1;
};

// A tile kernel's geometry: `outer` groups of `inner` pixels. Planes: group o = sample, its pixels
// contiguous, classes `inner` apart. Rows (the rows layout seen as one group of all P pixels, see
// tile_geom): pixels C apart, classes contiguous; the kernels stage each block's rows through shared
// memory (StagedRows).
struct PlanesGeom {
  int64_t outer, C, inner;
  bool vec;  // planes: all pointers 16-byte aligned and inner % kLanes == 0: every whole tile is one 128-bit
             // pack. rows: all pointers 16-byte aligned (the staging copies move 128-bit packs)
  bool rows = false;

  UDA_HD int64_t cs() const { return rows ? 1 : inner; }  // class stride
  template <typename T>
  UDA_HD int64_t tiles() const {
    return (inner + kLanes<T> - 1) / kLanes<T>;
  }
  template <typename T>
  UDA_HD TilePos tile(int64_t o, int64_t t) const {
    const int64_t i0 = t * kLanes<T>;
    const int64_t left = inner - i0;
    TilePos p;
    p.x = rows ? i0 * C : o * C * inner + i0;
    p.map = o * inner + i0;
    p.ps = rows ? C : 1;
    p.n = left < kLanes<T> ? int(left) : kLanes<T>;
    p.full = vec && !rows && p.n == kLanes<T>;
    return p;
  }
};

// The tile geometry of a canonical (outer, C, inner) view: planes for inner > 1 (vectorised when `aligned`
// and inner is a multiple of the lanes), else rows: one group of `outer` pixels.
template <typename T>
UDA_HD PlanesGeom tile_geom(int64_t outer, int64_t C, int64_t inner, bool aligned) {
  if (inner == 1) return PlanesGeom{1, C, outer, aligned, true};
  return PlanesGeom{outer, C, inner, aligned && inner % kLanes<T> == 0, false};
}

UDA_HD bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Every 128-bit access goes through as_pack. On the host (tests/cuda/host_check.cu, where a misaligned
// 16-byte access would silently work) a misaligned one aborts: the vector path must never see one.
template <typename U>
UDA_HD const Pack* as_pack(const U* p) {
#if !defined(__CUDA_ARCH__)
  if (!aligned16(p)) {
    std::fprintf(stderr, "uda_ops: misaligned 128-bit access at %p\n", static_cast<const void*>(p));
    std::abort();
  }
#endif
  return reinterpret_cast<const Pack*>(p);
}
template <typename U>
UDA_HD Pack* as_pack(U* p) {
  return const_cast<Pack*>(as_pack(static_cast<const U*>(p)));
}

template <typename T>
UDA_HD Pack load_pack(const T* __restrict__ p, const TilePos& tp) {
  if (tp.full) return *as_pack(p);
  T t[kLanes<T>];
UDA_UNROLL
  for (int k = 0; k < kLanes<T>; ++k) t[k] = k < tp.n ? p[k * tp.ps] : Num<T>::store(acc_of<T>(0));
  Pack u;
  memcpy(&u, static_cast<const void*>(t), sizeof(Pack));
  return u;
}

template <typename T>
UDA_HD void store_pack(T* __restrict__ p, const acc_of<T> (&x)[kLanes<T>], const TilePos& tp) {
  if (tp.full) {
    *as_pack(p) = pack<T>(x);
    return;
  }
UDA_UNROLL
  for (int k = 0; k < kLanes<T>; ++k)
    if (k < tp.n) p[k * tp.ps] = Num<T>::store(x[k]);
}

// Per-pixel map values (acc_t) of a tile: kLanes values, 16 or 32 bytes, stored with 128-bit stores.
template <typename A, int V>
UDA_HD void store_map(A* __restrict__ p, const A (&x)[V], const TilePos& tp) {
  if (tp.full) {
UDA_UNROLL
    for (int j = 0; j < int(V * sizeof(A) / 16); ++j) {
      Pack u;
      memcpy(&u, &x[j * int(16 / sizeof(A))], sizeof(Pack));
      as_pack(p)[j] = u;
    }
    return;
  }
UDA_UNROLL
  for (int k = 0; k < V; ++k)
    if (k < tp.n) p[k * tp.ms] = x[k];
}

// The output of a forward functor or per-pixel kernel: the per-pixel map (reduction "none"), or, for a
// reduced forward ("mean"/"sum", map == nullptr), one partial sum per block (then no map is written).
// emit stores the values and returns 0, or returns their sum (valid lanes in lane order): each thread
// adds up what emit returns in a fixed order, block_partial sums the block's threads (block_sum) into
// partials[block], and launch_finish adds the partials up (reduce_finish_kernel).
template <typename acc_t>
struct MapOut {
  acc_t* map;
  acc_t* partials;

  template <int V>
  UDA_HD acc_t emit(const TilePos& tp, const acc_t (&v)[V]) const {
    if (map != nullptr) {
      store_map(map + tp.map, v, tp);
      return acc_t(0);
    }
    acc_t s = acc_t(0);
UDA_UNROLL
    for (int k = 0; k < V; ++k)
      if (k < tp.n) s += v[k];
    return s;
  }
  UDA_HD acc_t emit(int64_t p, acc_t v) const {
    if (map == nullptr) return v;
    map[p] = v;
    return acc_t(0);
  }
};

// Reads a per-pixel map of the tile: stride 1 (a map like the output) or 0 (an expanded scalar).
template <typename A, int V>
UDA_HD void load_map(const A* __restrict__ p, int64_t stride, A (&x)[V], const TilePos& tp) {
  if (stride == 0) {
    const A v = p[0];
UDA_UNROLL
    for (int k = 0; k < V; ++k) x[k] = v;
  } else if (tp.full) {
UDA_UNROLL
    for (int j = 0; j < int(V * sizeof(A) / 16); ++j) {
      const Pack u = as_pack(p)[j];
      memcpy(&x[j * int(16 / sizeof(A))], &u, sizeof(Pack));
    }
  } else {
UDA_UNROLL
    for (int k = 0; k < V; ++k) x[k] = k < tp.n ? p[k * stride * tp.ms] : A(0);
  }
}

// The class packs of one tile in registers: C <= CB, every index a compile-time constant once the
// class loops are unrolled.
template <int CB>
struct RegSlab {
  static constexpr int kCap = CB;
  Pack r[CB];
  template <typename T>
  UDA_HD void load(const T* __restrict__ p, int64_t cs, int C, const TilePos& tp) {
    if (tp.full) {
UDA_UNROLL
      for (int c = 0; c < CB; ++c)
        if (c < C) r[c] = *as_pack(p + c * cs);
    } else {
UDA_UNROLL
      for (int c = 0; c < CB; ++c)
        if (c < C) r[c] = load_pack(p + c * cs, tp);
    }
  }
  UDA_HD const Pack& at(int c) const { return r[c]; }
  // Output class c of the tile (p: class 0 of the tile in an output laid out like the input).
  template <typename T>
  UDA_HD void store(T* __restrict__ p, int64_t cs, int c, const acc_of<T> (&x)[kLanes<T>], const TilePos& tp) const {
    store_pack(p + c * cs, x, tp);
  }
};

// The class packs of one tile in a shared-memory slab: class c at s[c * stride] (stride = threads of
// the block, so a warp's 16-byte accesses are contiguous: conflict-free).
constexpr int kSlabBatch = 8;
struct SmemSlab {
  static constexpr int kCap = 0;
  Pack* s;
  int64_t stride;
  template <typename T>
  UDA_HD void load(const T* __restrict__ p, int64_t cs, int C, const TilePos& tp) {
    for (int c0 = 0; c0 < C; c0 += kSlabBatch) {
      Pack b[kSlabBatch];
      if (tp.full) {
UDA_UNROLL
        for (int j = 0; j < kSlabBatch; ++j)
          if (c0 + j < C) b[j] = *as_pack(p + (c0 + j) * cs);
      } else {
UDA_UNROLL
        for (int j = 0; j < kSlabBatch; ++j)
          if (c0 + j < C) b[j] = load_pack(p + (c0 + j) * cs, tp);
      }
UDA_UNROLL
      for (int j = 0; j < kSlabBatch; ++j)
        if (c0 + j < C) s[(c0 + j) * stride] = b[j];
    }
  }
  UDA_HD const Pack& at(int c) const { return s[c * stride]; }
  template <typename T>
  UDA_HD void store(T* __restrict__ p, int64_t cs, int c, const acc_of<T> (&x)[kLanes<T>], const TilePos& tp) const {
    store_pack(p + c * cs, x, tp);
  }
};

// ---- Staged rows (channels_last, (N, C)): a block of `threads` threads owns threads * kLanes consecutive
// pixels, i.e. one contiguous run of threads * kLanes * C elements of each input. The block copies that run
// into shared memory with 128-bit loads (stage_rows: coalesced, each element read once), every thread then
// works on its kLanes pixels from there (lane k = pixel tid + k * threads of the block: a warp reads 32
// consecutive pixels' class c, an odd pitch apart, free of bank conflicts), stores each output class into the
// place of the input class it just read, and the block copies the staged outputs out with 128-bit stores
// (rows_flush: slab j's run goes to op.staged(j), the op's output laid out like input j, where the op defines
// it). Shared memory: C packs a thread as SmemSlab, C + 1 for even C (rows padded to an odd pitch, rows_pitch).
//
// Barriers: StagedRows::load ends with one, and the kernel body puts one before rows_flush, so every thread
// of the block runs the op (threads past the last pixel with n = 0 lanes). On the host (tests/cuda/
// host_check.cu runs the threads one after the other) thread 0 does each copy alone.
UDA_HD void block_barrier() {
#if defined(__CUDA_ARCH__)
  __syncthreads();
#endif
}

// dst[i] = src[i] for i < n, thread tid of `threads`; 128-bit packs when both are 16-byte aligned (batches of
// 4 loads before their stores), else element by element.
template <typename T>
UDA_HD void stage_copy(T* __restrict__ dst, const T* __restrict__ src, int64_t n, int64_t tid, int64_t threads) {
#if !defined(__CUDA_ARCH__)
  if (tid != 0) return;
  threads = 1;
#endif
  int64_t done = 0;
  if (aligned16(dst) && aligned16(src)) {
    const int64_t np = n / kLanes<T>;
    const Pack* __restrict__ s = as_pack(src);
    Pack* __restrict__ d = as_pack(dst);
    int64_t i = tid;
    for (; i + 3 * threads < np; i += 4 * threads) {
      Pack b[4];
UDA_UNROLL
      for (int j = 0; j < 4; ++j) b[j] = s[i + j * threads];
UDA_UNROLL
      for (int j = 0; j < 4; ++j) d[i + j * threads] = b[j];
    }
    for (; i < np; i += threads) d[i] = s[i];
    done = np * kLanes<T>;
  }
  for (int64_t i = done + tid; i < n; i += threads) dst[i] = src[i];
}

// The staged run of one block: pixels [p0, p0 + pixels) of the rows geometry, elements [p0 * C, ...).
struct RowsRun {
  int64_t p0, pixels;
};
template <typename T>
UDA_HD RowsRun rows_run(const PlanesGeom& g, int64_t block, int64_t threads) {
  const int64_t p0 = block * threads * kLanes<T>, left = g.inner - p0, cap = threads * kLanes<T>;
  return RowsRun{p0, left < cap ? (left > 0 ? left : 0) : cap};
}

// Row pitch of a staged run in shared memory: C when C is odd, else C + 1, so that a warp reading 32 rows' class c
// hits 32 different banks in fp32 (an even pitch p would put them in 32 / gcd(p, 32) banks: 16-way conflicts at
// C = 16) and at most 2 lanes a bank in 16-bit types.
UDA_HD int64_t rows_pitch(int64_t C) { return C | 1; }

// Packs of shared memory that one slab of a staged block holds (a thread's kLanes rows at the padded pitch).
UDA_HD int64_t staged_packs(const PlanesGeom& g, int64_t threads) { return rows_pitch(g.C) * threads; }

// The run of `pixels` rows of C classes at gl (global memory) <-> sm (shared memory, pitch ld = rows_pitch(C)).
// Odd C: one contiguous copy (stage_copy). Even C: 128-bit packs from or to global memory, their elements
// scattered to or gathered from the padded rows one by one (32-bit index arithmetic: a run holds < 2^31
// elements). out: shared -> global. Thread tid of `threads`; on the host thread 0 does it all.
template <typename T>
UDA_HD void stage_rows(T* __restrict__ sm, T* __restrict__ gl, int64_t pixels, int64_t C, bool out, int64_t tid,
                       int64_t threads) {
  const int64_t ld = rows_pitch(C);
  if (ld == C) {
    if (out)
      stage_copy(gl, sm, pixels * C, tid, threads);
    else
      stage_copy(sm, gl, pixels * C, tid, threads);
    return;
  }
#if !defined(__CUDA_ARCH__)
  if (tid != 0) return;
  threads = 1;
#endif
  constexpr int V = kLanes<T>;
  const uint32_t n = static_cast<uint32_t>(pixels * C), c32 = static_cast<uint32_t>(C);
  uint32_t done = 0;
  if (aligned16(gl)) {
    const uint32_t np = n / V;
    for (uint32_t i = static_cast<uint32_t>(tid); i < np; i += static_cast<uint32_t>(threads)) {
      uint32_t q = i * V / c32, c = i * V - q * c32;
      T t[V];
      Pack u;
      if (!out) {
        u = as_pack(gl)[i];
        memcpy(static_cast<void*>(t), &u, sizeof(Pack));
      }
UDA_UNROLL
      for (int j = 0; j < V; ++j) {
        if (out)
          t[j] = sm[q * ld + c];
        else
          sm[q * ld + c] = t[j];
        if (++c == c32) c = 0, ++q;
      }
      if (out) {
        memcpy(&u, static_cast<const void*>(t), sizeof(Pack));
        as_pack(gl)[i] = u;
      }
    }
    done = np * V;
  }
  for (uint32_t e = done + static_cast<uint32_t>(tid); e < n; e += static_cast<uint32_t>(threads)) {
    const uint32_t q = e / c32, c = e - q * c32;
    if (out)
      gl[e] = sm[q * ld + c];
    else
      sm[q * ld + c] = gl[e];
  }
}

template <typename T>
struct StagedRows {
  static constexpr int kCap = 0, V = kLanes<T>;
  T* s;  // the block's run of this input: element (pixel q of the block, class c) at s[q * ld + c]
  int64_t tid, threads, pixels;  // pixels: valid rows of the run
  int C, ld, n;                  // classes, row pitch (rows_pitch), valid lanes of this thread

  // p: the run's first element in global memory (all threads pass the same); cs and tp are not needed.
  UDA_HD void load(const T* __restrict__ p, int64_t, int, const TilePos&) const {
    stage_rows(s, const_cast<T*>(p), pixels, C, false, tid, threads);
    block_barrier();
  }
  UDA_HD Pack at(int c) const {
    T t[V];
UDA_UNROLL
    for (int k = 0; k < V; ++k) t[k] = k < n ? s[(tid + k * threads) * ld + c] : Num<T>::store(acc_of<T>(0));
    Pack u;
    memcpy(&u, static_cast<const void*>(t), sizeof(Pack));
    return u;
  }
  // Output class c of this thread's pixels into the input's place (the op has read class c already and
  // never reads it again); rows_flush copies the run out to op.staged(j), so p is not needed.
  UDA_HD void store(T* __restrict__, int64_t, int c, const acc_of<T> (&x)[V], const TilePos&) const {
UDA_UNROLL
    for (int k = 0; k < V; ++k)
      if (k < n) s[(tid + k * threads) * ld + c] = Num<T>::store(x[k]);
  }
};

// Ops that write (N, C, *) outputs define staged(j): the output computed in slab j's place (nullptr: none).
template <typename Op, typename = void>
struct HasStaged : std::false_type {};
template <typename Op>
struct HasStaged<Op, std::void_t<decltype(std::declval<const Op&>().staged(0))>> : std::true_type {};

// After every thread's op and a barrier: copies each staged output run of the block to global memory.
template <typename Op>
UDA_HD void rows_flush(const Op& op, Pack* smem, const PlanesGeom& g, int64_t block, int64_t tid, int64_t threads) {
  using T = typename Op::T;
  if constexpr (HasStaged<Op>::value) {
    const RowsRun r = rows_run<T>(g, block, threads);
UDA_UNROLL
    for (int j = 0; j < Op::kSlabs; ++j) {
      T* out = op.staged(j);
      if (out != nullptr)
        stage_rows(reinterpret_cast<T*>(smem + j * staged_packs(g, threads)), out + r.p0 * g.C, r.pixels, g.C, true,
                   tid, threads);
    }
  } else {
    (void)op, (void)smem, (void)g, (void)block, (void)tid, (void)threads;
  }
}

// Loads the tile of each input (classes inner apart) into its slab; returns C.
template <typename S, typename T>
UDA_HD int load_slabs(const PlanesGeom& g, const TilePos& tp, S* s, const T* a) {
  const int C = static_cast<int>(g.C);
  s[0].load(a + tp.x, g.cs(), C, tp);
  return C;
}
template <typename S, typename T>
UDA_HD int load_slabs(const PlanesGeom& g, const TilePos& tp, S* s, const T* a, const T* b) {
  const int C = load_slabs(g, tp, s, a);
  s[1].load(b + tp.x, g.cs(), C, tp);
  return C;
}

// Calls f(c, x) for every class c < C, x[j][k] = class c of lane k of slab j (acc_t).
template <typename T, int N, typename S, typename F>
UDA_HD void each_class(int C, const S* s, F&& f) {
  using acc_t = acc_of<T>;
  if constexpr (S::kCap > 0) {
UDA_UNROLL
    for (int c = 0; c < S::kCap; ++c) {
      if (c < C) {
        acc_t x[N][kLanes<T>];
UDA_UNROLL
        for (int j = 0; j < N; ++j) unpack<T>(s[j].at(c), x[j]);
        f(c, x);
      }
    }
  } else {
UDA_UNROLL2
    for (int c = 0; c < C; ++c) {
      acc_t x[N][kLanes<T>];
UDA_UNROLL
      for (int j = 0; j < N; ++j) unpack<T>(s[j].at(c), x[j]);
      f(c, x);
    }
  }
}

// Softmax statistics of the N slabs' tiles, per lane: m = max (branch-free), sum = sum_c exp(x - m).
// -inf classes give e = 0; an all -inf pixel (m = -inf: x - m is NaN) or any NaN gives a NaN sum.
template <typename T, int N>
struct TileSoftmax {
  using acc_t = acc_of<T>;
  static constexpr int V = kLanes<T>;
  acc_t m[N][V], sum[N][V];

  // Pass 1: the max. Pass 2: exp(x - m) once per element, summed; hook(c, x, d, e) sees x, d = x - m
  // and e for extra per-pixel sums.
  template <typename S, typename Hook>
  UDA_HD void compute(int C, const S* s, Hook&& hook) {
UDA_UNROLL
    for (int j = 0; j < N; ++j)
UDA_UNROLL
      for (int k = 0; k < V; ++k) m[j][k] = neg_inf<acc_t>(), sum[j][k] = acc_t(0);
    each_class<T, N>(C, s, [&](int, const acc_t(&x)[N][V]) {
UDA_UNROLL
      for (int j = 0; j < N; ++j)
UDA_UNROLL
        for (int k = 0; k < V; ++k) m[j][k] = uda_max(m[j][k], x[j][k]);
    });
    exps(C, s, [&](int c, const acc_t(&x)[N][V], const acc_t(&d)[N][V], const acc_t(&e)[N][V]) {
UDA_UNROLL
      for (int j = 0; j < N; ++j)
UDA_UNROLL
        for (int k = 0; k < V; ++k) sum[j][k] += e[j][k];
      hook(c, x, d, e);
    });
  }
  template <typename S>
  UDA_HD void compute(int C, const S* s) {
    compute(C, s, [](int, const acc_t(&)[N][V], const acc_t(&)[N][V], const acc_t(&)[N][V]) {});
  }

  // f(c, x, d, e) with d = x - m and e = exp(d) for every element of the first N slabs (a later pass).
  template <typename S, typename F>
  UDA_HD void exps(int C, const S* s, F&& f) const {
    each_class<T, N>(C, s, [&](int c, const acc_t(&x)[N][V]) {
      acc_t d[N][V], e[N][V];
UDA_UNROLL
      for (int j = 0; j < N; ++j)
UDA_UNROLL
        for (int k = 0; k < V; ++k) d[j][k] = x[j][k] - m[j][k], e[j][k] = fast_exp(d[j][k]);
      f(c, x, d, e);
    });
  }
};

// Per-thread work of a planes kernel: the tile (o, t) of op. smem: the block's slab (SmemSlab only),
// tid / threads: the thread's column and the block's width in it.
// Returns what the op returns: a forward op the sum of the values it did not store (MapOut::emit).
// CB = kStagedRows: the rows geometry through StagedRows (every thread of the block must call it).
constexpr int kStagedRows = -1;
template <int CB, typename Op>
UDA_HD auto planes_thread(const Op& op, const PlanesGeom& g, int64_t o, int64_t t, Pack* smem, int64_t tid,
                          int64_t threads) {
  using T = typename Op::T;
  if constexpr (CB == kStagedRows) {
    (void)o;
    const int64_t block = (t - tid) / threads;
    const RowsRun r = rows_run<T>(g, block, threads);
    TilePos tp;
    tp.x = r.p0 * g.C;  // the run's first element
    tp.map = r.p0 + tid;
    tp.ps = g.C;
    tp.ms = threads;
    const int64_t lanes = r.pixels > tid ? (r.pixels - tid + threads - 1) / threads : 0;
    tp.n = lanes < kLanes<T> ? int(lanes) : kLanes<T>;
    tp.full = false;
    StagedRows<T> s[Op::kSlabs];
UDA_UNROLL
    for (int j = 0; j < Op::kSlabs; ++j)
      s[j] = StagedRows<T>{reinterpret_cast<T*>(smem + j * staged_packs(g, threads)), tid, threads, r.pixels,
                           int(g.C), int(rows_pitch(g.C)), tp.n};
    return op(g, tp, s);
  } else if constexpr (CB > 0) {
    (void)smem, (void)tid, (void)threads;
    RegSlab<CB> s[Op::kSlabs];
    return op(g, g.tile<T>(o, t), s);
  } else {
    SmemSlab s[Op::kSlabs];
UDA_UNROLL
    for (int j = 0; j < Op::kSlabs; ++j) s[j] = SmemSlab{smem + j * g.C * threads + tid, threads};
    return op(g, g.tile<T>(o, t), s);
  }
}

// Launch plan of a planes kernel: the register bucket (0: the shared-memory slab), threads per block,
// dynamic shared memory, grid. ok = false: the slab does not fit (the caller uses the per-pixel kernel).
constexpr int kTileThreads = 128, kMinTileThreads = 32;
// Register limit of the planes kernels: with __launch_bounds__ ptxas caps them at an occupancy step
// (80, 96, 128 or 168 registers) and spills; 224 keeps every bucket spill-free (two 128-thread blocks
// per SM at the top).
#define UDA_TILE_BOUNDS __maxnreg__(224)
// The per-pixel kernels of element type T (kPixelThreads threads a block): __launch_bounds__(256) let
// ptxas stop at 32 registers and spill the warp-per-pixel kernels' sums; 64 (96 for double) keeps every
// one spill-free.
#define UDA_ROWS_BOUNDS(T) __maxnreg__(sizeof(T) == 8 ? 96 : 64)
constexpr int64_t kMaxGridY = 65535;
constexpr int64_t kDefaultSmem = 48 * 1024;
struct PlanesPlan {
  int cb = 0, threads = kTileThreads;
  int64_t smem = 0, grid_x = 1, grid_y = 1;
  bool ok = false;
};

template <typename Op>
UDA_HD PlanesPlan plan_planes(const PlanesGeom& g, int64_t smem_optin) {
  using T = typename Op::T;
  PlanesPlan pl;
  // register slabs of at most 16 packs a thread (about 160 registers with the unpacked values and their
  // exps; 32 packs spill); the rows geometry is always staged (cb = kStagedRows)
  const int cap = 16 / Op::kSlabs;
  if (g.rows) {
    pl.cb = kStagedRows;
  } else if (sizeof(T) < 8) {
    for (int cb = 8; cb <= cap; cb *= 2)
      if (g.C <= cb) {
        pl.cb = cb;
        break;
      }
  }
  if (pl.cb <= 0) {
    const int64_t per_thread = (g.rows ? rows_pitch(g.C) : g.C) * Op::kSlabs * int64_t(sizeof(Pack));
    while (pl.threads > kMinTileThreads && pl.threads * per_thread > kDefaultSmem) pl.threads /= 2;
    pl.smem = pl.threads * per_thread;
    if (pl.smem > (smem_optin > kDefaultSmem ? smem_optin : kDefaultSmem)) return pl;
  }
  const int64_t tiles = g.tiles<T>();
  pl.grid_x = (tiles + pl.threads - 1) / pl.threads;
  pl.grid_y = g.outer < kMaxGridY ? g.outer : kMaxGridY;
  pl.ok = tiles > 0 && g.outer > 0;
  return pl;
}

// ------------------------------------------------------------------------------------------------
// Indexing and launch geometry.
// ------------------------------------------------------------------------------------------------
struct PixelGeom {
  int64_t outer, C, inner;
  UDA_HD int64_t pixels() const { return outer * inner; }
  // offset of class 0 of pixel p in the canonical view; class c is at + c * inner
  UDA_HD int64_t base(int64_t p) const {
    if (inner == 1) return p * C;
    const int64_t o = p / inner;
    return o * C * inner + (p - o * inner);
  }
};

constexpr int kPixelThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // grid-stride loops beyond this

inline unsigned int pixel_blocks(int64_t pixels) {
  int64_t b = (pixels + kPixelThreads - 1) / kPixelThreads;
  if (b > kMaxBlocks) b = kMaxBlocks;
  return static_cast<unsigned int>(b < 1 ? 1 : b);
}

// The per-pixel kernels run a warp per pixel in the rows layout (WarpLanes), a thread per pixel in planes.
UDA_HD bool warp_per_pixel(int64_t inner) { return inner == 1; }
inline unsigned int rows_blocks(int64_t pixels, int64_t inner) {
  return pixel_blocks(warp_per_pixel(inner) ? pixels * 32 : pixels);
}

// A bound on the blocks of a forward launch over (outer, C, inner) in T: the planes grid at its narrowest
// blocks (kMinTileThreads), or the per-pixel kernel's. The size of a reduced forward's partials buffer.
template <typename T>
inline int64_t reduce_blocks_bound(int64_t outer, int64_t C, int64_t inner) {
  const PlanesGeom g = tile_geom<T>(outer, C, inner, false);
  const int64_t planes =
      (g.tiles<T>() + kMinTileThreads - 1) / kMinTileThreads * (g.outer < kMaxGridY ? g.outer : kMaxGridY);
  const int64_t rows = rows_blocks(outer * inner, inner);
  return planes > rows ? planes : rows;
}

// Dynamic shared memory a reducing kernel needs at least (block_sum's scratch, in the slab's place).
constexpr int64_t kReduceSmem = 33 * int64_t(sizeof(double));
constexpr int kFinishThreads = 256;

#if defined(__CUDACC__)
#define UDA_GRID_STRIDE_LOOP(p, n)                                                                   \
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < (n);              \
       p += static_cast<int64_t>(blockDim.x) * gridDim.x)

// Sum over a warp in a fixed butterfly order (every lane gets the same, bitwise reproducible, value).
template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename acc_t>
__device__ __forceinline__ acc_t warp_max(acc_t v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = uda_max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// A warp per pixel (the per-pixel kernels in the rows layout): lane l sees classes l, l + 32, ..., so a
// warp's load reads 32 consecutive classes of its row (coalesced); sums and maxima by shuffles in a
// fixed order. Every lane of the warp must reach each sum/max (the pixel loop is the same for the warp).
struct WarpLanes {
  static constexpr bool kWarp = true;
  static constexpr int kSize = 32;
  int lane;
  __device__ __forceinline__ int64_t first() const { return lane; }
  static __device__ __forceinline__ int64_t step() { return kSize; }
  __device__ __forceinline__ bool leader() const { return lane == 0; }
  template <typename A>
  static __device__ __forceinline__ A sum(A v) {
    return warp_sum(v);
  }
  template <typename A>
  static __device__ __forceinline__ A max(A v) {
    return warp_max(v);
  }
};

// The pixel loop of a per-pixel kernel: f(p, lanes) for each of the kernel's pixels, grid-strided,
// a thread (L = OneLane) or a warp (L = WarpLanes) per pixel.
template <typename L, typename F>
__device__ __forceinline__ void for_each_pixel(int64_t pixels, F&& f) {
  if constexpr (L::kWarp) {
    const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x / L::kSize;
    const L lanes{static_cast<int>(threadIdx.x % L::kSize)};
    for (int64_t p = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / L::kSize; p < pixels;
         p += stride)
      f(p, lanes);
  } else {
    UDA_GRID_STRIDE_LOOP(p, pixels) f(p, OneLane{});
  }
}

// Launches a per-pixel kernel: f(lanes, blocks) with lanes = WarpLanes{} in the rows layout (inner == 1:
// the classes of a pixel contiguous, read by a warp) and OneLane{} in planes (consecutive threads read
// consecutive pixels), blocks = rows_blocks(pixels, inner) of kPixelThreads threads.
template <typename F>
void launch_rows(int64_t pixels, int64_t inner, F&& f) {
  const unsigned int blocks = rows_blocks(pixels, inner);
  if (warp_per_pixel(inner))
    f(WarpLanes{0}, blocks);
  else
    f(OneLane{}, blocks);
}

// Sum over a block (blockDim.x a multiple of 32, at most 1024) in a fixed order: warps first, then
// warp 0 sums the per-warp results in warp order. Every thread must call it; all get the result.
// `smem` holds at least 33 acc_t.
template <typename acc_t>
__device__ __forceinline__ acc_t block_sum(acc_t v, acc_t* smem) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();  // smem may still be read by a previous call
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  if (warp == 0) {
    acc_t w = lane < warps ? smem[lane] : acc_t(0);
    w = warp_sum(w);
    if (lane == 0) smem[32] = w;
  }
  __syncthreads();
  return smem[32];
}
// A reducing kernel's last step (every thread calls it, after its last use of the dynamic shared memory):
// the block's sum of `sum` (fixed order) to partials[linear block id]. Nothing where out writes a map.
template <typename acc_t>
__device__ __forceinline__ void block_partial(const MapOut<acc_t>& out, acc_t sum) {
  extern __shared__ Pack uda_slab[];
  if (out.partials == nullptr) return;
  sum = block_sum(sum, reinterpret_cast<acc_t*>(uda_slab));
  if (threadIdx.x == 0) out.partials[static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x] = sum;
}

// The reduced value: result = (sum of the n partials, in double, fixed order) * scale. One block.
template <typename acc_t>
__global__ void __launch_bounds__(kFinishThreads)
    reduce_finish_kernel(const acc_t* __restrict__ partials, int64_t n, double scale, acc_t* __restrict__ result) {
  __shared__ double smem[33];
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += static_cast<double>(partials[i]);
  s = block_sum(s, smem);
  if (threadIdx.x == 0) *result = static_cast<acc_t>(s * scale);
}

template <typename acc_t>
cudaError_t launch_finish(const acc_t* partials, int64_t n, double scale, acc_t* result, cudaStream_t stream) {
  reduce_finish_kernel<acc_t><<<1, kFinishThreads, 0, stream>>>(partials, n, scale, result);
  return cudaGetLastError();
}

// Body of an op's planes kernel (each op defines its own __global__ <op>_<direction>_planes_kernel<T, CB>
// around it, so that kernels keep their op's name): blockIdx.x * blockDim.x + threadIdx.x = tile,
// blockIdx.y = sample (strided past 65535 samples).
// CB = kStagedRows: one block of the rows geometry (grid (blocks, 1)); every thread runs the op, then the
// block writes the staged outputs.
template <int CB, typename Op>
__device__ __forceinline__ void planes_kernel_body(const Op& op, const PlanesGeom& g) {
  extern __shared__ Pack uda_slab[];
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if constexpr (CB == kStagedRows) {
    planes_thread<CB>(op, g, 0, t, uda_slab, threadIdx.x, blockDim.x);
    __syncthreads();
    rows_flush(op, uda_slab, g, blockIdx.x, threadIdx.x, blockDim.x);
  } else {
    if (t >= g.tiles<typename Op::T>()) return;
    for (int64_t o = blockIdx.y; o < g.outer; o += gridDim.y)
      planes_thread<CB>(op, g, o, t, uda_slab, threadIdx.x, blockDim.x);
  }
}

// Body of a reduced forward's planes kernel (<op>_forward_partials_planes_kernel: a separate kernel, so
// that the map kernel's code stays as it was): each thread adds up what its tiles return (MapOut::emit,
// op.out.map == nullptr), then the block's sum goes to op.out.partials; no thread leaves before that.
template <int CB, typename Op>
__device__ __forceinline__ void planes_partials_body(const Op& op, const PlanesGeom& g) {
  extern __shared__ Pack uda_slab[];
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  typename Op::acc_t sum = 0;
  if constexpr (CB == kStagedRows) {
    static_assert(!HasStaged<Op>::value, "a reduced forward writes no per-class output");
    sum = planes_thread<CB>(op, g, 0, t, uda_slab, threadIdx.x, blockDim.x);
  } else if (t < g.tiles<typename Op::T>()) {
    for (int64_t o = blockIdx.y; o < g.outer; o += gridDim.y)
      sum += planes_thread<CB>(op, g, o, t, uda_slab, threadIdx.x, blockDim.x);
  }
  block_partial(op.out, sum);
}

template <typename Op, typename Kernel>
cudaError_t launch_planes_kernel(Kernel kernel, const Op& op, const PlanesGeom& g, PlanesPlan pl, bool reduce,
                                 cudaStream_t stream) {
  if (reduce && pl.smem < kReduceSmem) pl.smem = kReduceSmem;  // block_sum's scratch
  if (pl.smem > kDefaultSmem) {
    const cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(pl.smem));
    if (e != cudaSuccess) return e;
  }
  const dim3 grid(static_cast<unsigned int>(pl.grid_x), static_cast<unsigned int>(pl.grid_y));
  kernel<<<grid, pl.threads, static_cast<size_t>(pl.smem), stream>>>(op, g);
  return cudaGetLastError();
}

template <int CB>
struct Bucket {
  static constexpr int value = CB;
};

// Launches op's planes kernel over (outer, C, inner): kernel_of(Bucket<CB>{}) is the op's kernel for
// bucket CB (0: the shared-memory slab). *launched = false when the slab would not fit in shared memory
// (then nothing ran and the caller uses its per-pixel kernel). reduce_blocks != nullptr: a reducing
// forward (op.out.partials set), *reduce_blocks = the blocks launched (partial sums written).
template <typename Op, typename KernelOf>
cudaError_t launch_planes(const Op& op, int64_t outer, int64_t C, int64_t inner, bool* launched,
                          cudaStream_t stream, KernelOf kernel_of, int64_t* reduce_blocks = nullptr) {
  using T = typename Op::T;
  *launched = false;
  const PlanesGeom g = tile_geom<T>(outer, C, inner, op.aligned());
  int dev = 0, optin = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (e != cudaSuccess) return e;
  const PlanesPlan pl = plan_planes<Op>(g, optin);
  if (!pl.ok) return cudaSuccess;
  *launched = true;
  const bool reduce = reduce_blocks != nullptr;
  if (reduce) *reduce_blocks = pl.grid_x * pl.grid_y;
  if (pl.cb == kStagedRows) return launch_planes_kernel(kernel_of(Bucket<kStagedRows>{}), op, g, pl, reduce, stream);
  if constexpr (sizeof(T) < 8) {
    if (pl.cb == 8) return launch_planes_kernel(kernel_of(Bucket<8>{}), op, g, pl, reduce, stream);
    if constexpr (Op::kSlabs == 1) {
      if (pl.cb == 16) return launch_planes_kernel(kernel_of(Bucket<16>{}), op, g, pl, reduce, stream);
    }
  }
  return launch_planes_kernel(kernel_of(Bucket<0>{}), op, g, pl, reduce, stream);
}

// The map, or (partials != nullptr) the partial sums of a reduced forward.
template <typename acc_t>
MapOut<acc_t> map_out(acc_t* out, acc_t* partials) {
  return MapOut<acc_t>{partials != nullptr ? nullptr : out, partials};
}

// A forward launcher: op's planes kernel (launch_planes: map_kernel_of, or partials_kernel_of when op.out
// reduces), else its per-pixel kernel, rows(lanes, blocks, smem) as launch_rows gives them (the launch
// itself; errors read here); then, when reducing, launch_finish into result (also for zero pixels: the
// sum 0, times scale).
template <typename Op, typename MapKernelOf, typename PartialsKernelOf, typename Rows>
cudaError_t launch_forward(const Op& op, typename Op::acc_t* result, double scale, int64_t outer, int64_t C,
                           int64_t inner, cudaStream_t stream, MapKernelOf map_kernel_of,
                           PartialsKernelOf partials_kernel_of, Rows rows) {
  const bool reduce = op.out.partials != nullptr;
  int64_t blocks = 0;
  if (outer * inner > 0) {
    bool launched = false;
    cudaError_t e = reduce ? launch_planes(op, outer, C, inner, &launched, stream, partials_kernel_of, &blocks)
                           : launch_planes(op, outer, C, inner, &launched, stream, map_kernel_of);
    if (e == cudaSuccess && !launched) {
      launch_rows(outer * inner, inner, [&](auto lanes, unsigned int b) {
        blocks = b;
        rows(lanes, b, static_cast<size_t>(reduce ? kReduceSmem : 0));
      });
      e = cudaGetLastError();
    }
    if (e != cudaSuccess) return e;
  }
  return reduce ? launch_finish<typename Op::acc_t>(op.out.partials, blocks, scale, result, stream) : cudaSuccess;
}
#endif  // __CUDACC__

}  // namespace cuda
}  // namespace uda_ops
