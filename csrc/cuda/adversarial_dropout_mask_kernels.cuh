// Adversarial dropout mask search (SPEC section 4; DTA Eqs. 3-5): element-wise on an (N, U) Jacobian and
// channel-wise from (g, h) with the H*W reduction fused in. Torch-free: compiles with nvcc alone.
//
//   channel impact s[n, c] = sum_hw g h:  impact kernel, one block per ((n, c), chunk of H*W) writing a
//                                         per-chunk partial; the chunks are summed in chunk order by the
//                                         select kernel (deterministic, no float atomics).
//   select (one block per row):           candidate values a_u = |J_u| (or 0) into a scratch row; the
//                                         (L+1)-th largest by an MSD radix select on the float bits (8-bit
//                                         digits, shared-memory histograms with integer atomics: exact
//                                         counts, so the result does not depend on thread timing); then
//                                         flip a_u > t, and rescale by U / sum(m) (fixed-order block sum).
#pragma once

#include <cstring>

#include "common.cuh"

namespace uda_ops {
namespace cuda {

// Order-preserving integer keys of non-negative floats (a_u >= +0 here, never NaN).
template <typename acc_t>
struct KeyOf;
template <>
struct KeyOf<float> {
  using type = uint32_t;
};
template <>
struct KeyOf<double> {
  using type = uint64_t;
};

template <typename acc_t>
UDA_HD typename KeyOf<acc_t>::type key_bits(acc_t x) {
  typename KeyOf<acc_t>::type k;
  memcpy(&k, &x, sizeof(k));
  return k;
}
template <typename acc_t>
UDA_HD acc_t from_key_bits(typename KeyOf<acc_t>::type k) {
  acc_t x;
  memcpy(&x, &k, sizeof(x));
  return x;
}

// Candidate value of one unit: |J| where flipping it raises the divergence to first order
// ((2 m0 - 1) sign(J) < 0: a kept unit with J < 0 or a dropped unit with J > 0), else 0.
template <typename acc_t>
UDA_HD acc_t candidate_value(acc_t j, acc_t base) {
  const bool kept = base != acc_t(0);
  return (kept ? j < acc_t(0) : j > acc_t(0)) ? uda_abs(j) : acc_t(0);
}

// The new mask value of one unit: |m0 - flip| for m0, flip in {0, 1}.
template <typename acc_t>
UDA_HD acc_t flipped_value(acc_t a, acc_t t, acc_t base) {
  return a > t ? acc_t(1) - base : base;
}

// What a row's search gives before any selection: the search itself, NaN everywhere (a NaN in the row's
// Jacobian is never hidden), or the base mask unchanged (SPEC section 4 step 1: L == 0). Shared by the
// select kernel and the host check.
enum class RowOutcome { kSearch, kNaN, kBase };
UDA_HD RowOutcome row_outcome(bool has_nan, int64_t L) {
  if (L == 0) return RowOutcome::kBase;  // before the NaN check: the budget decides first
  if (has_nan) return RowOutcome::kNaN;
  return RowOutcome::kSearch;
}

// One step of the radix select, shared by the device kernel and the host check: given the histogram
// of the current 8-bit digit (among keys matching the prefix so far) and the rank k (0-based, counted
// from the largest) within them, returns the digit holding that rank and updates k to the rank inside
// that digit's bin.
template <typename Count>
UDA_HD int radix_pick_digit(const Count* hist, int64_t* k) {
  int64_t kk = *k;
  int b = 255;
  for (; b > 0; --b) {
    if (kk < static_cast<int64_t>(hist[b])) break;
    kk -= static_cast<int64_t>(hist[b]);
  }
  *k = kk;
  return b;
}

constexpr int kSelectThreads = 256;
constexpr int kImpactMaxThreads = 256;
constexpr int kImpactPerThread = 16;   // planes: H*W elements per thread and chunk
constexpr int kImpactRowsChunk = 512;  // rows: H*W positions per chunk

// Threads per block of the planes impact kernel: the power of two >= H*W, between 32 and 256.
inline int impact_planes_threads(int64_t HW) {
  int t = 32;
  while (t < kImpactMaxThreads && t < HW) t <<= 1;
  return t;
}

inline int64_t impact_chunk_len(int64_t HW, bool planes) {
  int64_t len = planes ? int64_t(impact_planes_threads(HW)) * kImpactPerThread : kImpactRowsChunk;
  while ((HW + len - 1) / len > kMaxGridY) len <<= 1;  // grid.y limit
  return len;
}

// Number of per-chunk partials per (n, c) the channel search needs (the launcher allocates N*C*chunks).
inline int64_t channel_impact_chunks(int64_t HW, bool planes) {
  if (HW <= 0) return 1;
  const int64_t len = impact_chunk_len(HW, planes);
  return (HW + len - 1) / len;
}

#if defined(__CUDACC__)
// planes: (N, C, HW) contiguous. grid (N*C, chunks), block impact_planes_threads(HW).
template <typename T>
__global__ void channel_impact_planes_kernel(const T* __restrict__ g, const T* __restrict__ h,
                                             acc_of<T>* __restrict__ partial, int64_t HW, int64_t chunk_len) {
  using acc_t = acc_of<T>;
  __shared__ acc_t red[33];
  const int64_t row = blockIdx.x, k = blockIdx.y, chunks = gridDim.y;
  const int64_t begin = k * chunk_len, end = begin + chunk_len < HW ? begin + chunk_len : HW;
  const T* gr = g + row * HW;
  const T* hr = h + row * HW;
  acc_t s = acc_t(0);
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) s += load<acc_t>(gr + i) * load<acc_t>(hr + i);
  s = block_sum(s, red);
  if (threadIdx.x == 0) partial[row * chunks + k] = s;
}

// rows: (N, HW, C) contiguous (channels_last or (N, C)). grid (N * ceil(C/32), chunks), block (32, 8):
// x over channels (coalesced), y over positions; the 8 y-partials are summed in y order.
template <typename T>
__global__ void channel_impact_rows_kernel(const T* __restrict__ g, const T* __restrict__ h,
                                           acc_of<T>* __restrict__ partial, int64_t C, int64_t HW,
                                           int64_t chunk_len) {
  using acc_t = acc_of<T>;
  __shared__ acc_t red[8][33];
  const int64_t cblocks = (C + 31) / 32;
  const int64_t n = blockIdx.x / cblocks, c = (blockIdx.x % cblocks) * 32 + threadIdx.x;
  const int64_t k = blockIdx.y, chunks = gridDim.y;
  const int64_t begin = k * chunk_len, end = begin + chunk_len < HW ? begin + chunk_len : HW;
  acc_t s = acc_t(0);
  if (c < C) {
    for (int64_t i = begin + threadIdx.y; i < end; i += blockDim.y) {
      const int64_t off = (n * HW + i) * C + c;
      s += load<acc_t>(g + off) * load<acc_t>(h + off);
    }
  }
  red[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    acc_t t = red[0][threadIdx.x];
    for (int j = 1; j < static_cast<int>(blockDim.y); ++j) t += red[j][threadIdx.x];
    partial[(n * C + c) * chunks + k] = t;
  }
}

// (L+1)-th largest (rank k = L from the top, 0-based) of a[0..U), U > k, all a >= +0 and not NaN.
template <typename acc_t>
__device__ acc_t radix_select_desc(const acc_t* a, int64_t U, int64_t k, unsigned int* hist) {
  using Key = typename KeyOf<acc_t>::type;
  __shared__ Key sh_prefix;
  __shared__ int64_t sh_k;
  if (threadIdx.x == 0) sh_k = k;
  Key prefix = 0, mask = 0;
  for (int shift = int(sizeof(Key)) * 8 - 8; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0u;
    __syncthreads();
    for (int64_t u = threadIdx.x; u < U; u += blockDim.x) {
      const Key key = key_bits(a[u]);
      if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & Key(255)], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int64_t kk = sh_k;
      const int b = radix_pick_digit(hist, &kk);
      sh_k = kk;
      sh_prefix = prefix | (Key(b) << shift);
    }
    __syncthreads();
    prefix = sh_prefix;
    mask |= Key(255) << shift;
  }
  return from_key_bits<acc_t>(prefix);
}

// One block per row. vals: (N, U, chunks) partial impacts summed in chunk order (chunks = 1: the
// Jacobian itself). m0: (N, U) base mask or nullptr (all ones). work: (N, U) scratch. out: (N, U).
template <typename T>
__global__ void __launch_bounds__(kSelectThreads)
    mask_select_kernel(const acc_of<T>* __restrict__ vals, int64_t chunks, const acc_of<T>* __restrict__ m0,
                       acc_of<T>* work, T* __restrict__ out, int64_t U, int64_t L, bool rescale) {
  using acc_t = acc_of<T>;
  __shared__ unsigned int hist[256];
  __shared__ acc_t red[33];
  const int64_t row = blockIdx.x;
  acc_t* a = work + row * U;
  const acc_t* base = m0 != nullptr ? m0 + row * U : nullptr;
  T* o = out + row * U;
  int has_nan = 0;
  for (int64_t u = threadIdx.x; u < U; u += blockDim.x) {
    const acc_t* v = vals + (row * U + u) * chunks;
    acc_t j = v[0];
    for (int64_t k = 1; k < chunks; ++k) j += v[k];
    has_nan |= is_nan(j) ? 1 : 0;
    a[u] = candidate_value(j, base != nullptr ? base[u] : acc_t(1));
  }
  // (__syncthreads_or is also the barrier that publishes a[])
  const RowOutcome outcome = row_outcome(__syncthreads_or(has_nan) != 0, L);
  if (outcome == RowOutcome::kNaN) {
    for (int64_t u = threadIdx.x; u < U; u += blockDim.x) store(o + u, quiet_nan<acc_t>());
    return;
  }
  if (outcome == RowOutcome::kBase) {
    for (int64_t u = threadIdx.x; u < U; u += blockDim.x) store(o + u, base != nullptr ? base[u] : acc_t(1));
    return;
  }
  const acc_t t = L + 1 <= U ? radix_select_desc(a, U, L, hist) : acc_t(0);
  acc_t sum = acc_t(0);
  for (int64_t u = threadIdx.x; u < U; u += blockDim.x)
    sum += flipped_value(a[u], t, base != nullptr ? base[u] : acc_t(1));
  sum = block_sum(sum, red);
  const acc_t scale = rescale && sum > acc_t(0) ? static_cast<acc_t>(U) / sum : acc_t(1);
  for (int64_t u = threadIdx.x; u < U; u += blockDim.x)
    store(o + u, flipped_value(a[u], t, base != nullptr ? base[u] : acc_t(1)) * scale);
}

// Element-wise search. jac: (N, U) in acc_t; m0: (N, U) in acc_t or nullptr; work: (N, U) acc_t
// scratch; out: (N, U) in T. L = max_flips >= 0.
template <typename T>
cudaError_t launch_adversarial_dropout_mask(const acc_of<T>* jac, const acc_of<T>* m0, acc_of<T>* work, T* out,
                                            int64_t N, int64_t U, int64_t L, bool rescale, cudaStream_t stream) {
  if (N == 0 || U == 0) return cudaSuccess;
  mask_select_kernel<T><<<static_cast<unsigned int>(N), kSelectThreads, 0, stream>>>(jac, 1, m0, work, out, U, L,
                                                                                     rescale);
  return cudaGetLastError();
}

// Channel-wise search from g, h of N samples with C channels and HW positions: planes = (N, C, HW)
// contiguous, else (N, HW, C) contiguous. partial: N * C * channel_impact_chunks(HW, planes) acc_t;
// work: (N, C) acc_t; out: (N, C) in T.
template <typename T>
cudaError_t launch_channel_adversarial_dropout_mask(const T* g, const T* h, const acc_of<T>* m0,
                                                    acc_of<T>* partial, acc_of<T>* work, T* out, int64_t N,
                                                    int64_t C, int64_t HW, bool planes, int64_t L, bool rescale,
                                                    cudaStream_t stream) {
  if (N == 0 || C == 0) return cudaSuccess;
  const int64_t chunks = channel_impact_chunks(HW, planes);
  if (HW <= 0) {  // empty spatial extent: every impact is 0
    cudaError_t e = cudaMemsetAsync(partial, 0, sizeof(acc_of<T>) * N * C, stream);
    if (e != cudaSuccess) return e;
  } else if (planes) {
    const int threads = impact_planes_threads(HW);
    const dim3 grid(static_cast<unsigned int>(N * C), static_cast<unsigned int>(chunks));
    channel_impact_planes_kernel<T><<<grid, threads, 0, stream>>>(g, h, partial, HW, impact_chunk_len(HW, true));
  } else {
    const dim3 grid(static_cast<unsigned int>(N * ((C + 31) / 32)), static_cast<unsigned int>(chunks));
    channel_impact_rows_kernel<T><<<grid, dim3(32, 8), 0, stream>>>(g, h, partial, C, HW,
                                                                    impact_chunk_len(HW, false));
  }
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  mask_select_kernel<T><<<static_cast<unsigned int>(N), kSelectThreads, 0, stream>>>(partial, chunks, m0, work,
                                                                                     out, C, L, rescale);
  return cudaGetLastError();
}
#endif  // __CUDACC__

}  // namespace cuda
}  // namespace uda_ops
