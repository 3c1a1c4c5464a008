// Device helpers shared by every CUDA kernel of uda_ops. Torch-free: compiles with nvcc alone.
//
// Conventions (mirroring csrc/cpu/common.h and csrc/layout.h):
//  * A kernel sees P = outer * inner pixels with C classes each; element (o, c, i) of the canonical
//    view lives at o * C * inner + c * inner + i. Pixel p = o * inner + i, so its classes start at
//    PixelGeom::base(p) and are `inner` apart. The "rows" layout (channels_last, (N, C)) is inner == 1.
//  * One thread per pixel, class loop inside: in the planes layout consecutive threads read
//    consecutive addresses for every class (coalesced); in the rows layout a thread reads its own C
//    contiguous values (the warp's lines are reused from L1 across the class loop).
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

#define UDA_HD __host__ __device__ __forceinline__

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

template <typename acc_t, typename T>
UDA_HD SoftmaxStats<acc_t> softmax_stats(const T* __restrict__ x, int64_t cs, int64_t C) {
  const acc_t ninf = neg_inf<acc_t>();
  acc_t m = ninf, s = acc_t(0);
  for (int64_t c = 0; c < C; ++c) {
    const acc_t v = load<acc_t>(x + c * cs);
    if (v > m) {  // new max: rescale the running sum (exp(-inf - v) = 0 for the first finite value)
      s = s * uda_exp(m - v) + acc_t(1);
      m = v;
    } else if (v != ninf) {  // NaN lands here too and poisons s, as it must
      s += uda_exp(v - m);
    }
  }
  if (m == ninf) s = quiet_nan<acc_t>();  // all classes -inf: NaN, never hidden
  SoftmaxStats<acc_t> st;
  st.m = m;
  st.log_s = uda_log(s);
  st.inv_s = acc_t(1) / s;
  return st;
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
#endif  // __CUDACC__

}  // namespace cuda
}  // namespace uda_ops
