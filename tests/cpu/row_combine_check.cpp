// RowLanes::max / RowLanes::sum (csrc/cpu/common.h) against the tree they implement, written as plain loops here:
// bit for bit (any NaN for a NaN) on random rows with NaN, +-inf and signed zeros. Built by tests/test_row_combine.py once per x86-64 level
// (-march=x86-64-v4, v3, baseline), since the multiversioned kernels run the vector form at each of them.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>

#include "../../csrc/cpu/common.h"

using uda_ops::cpu::kRowLanes;
using uda_ops::cpu::RowLanes;

template <bool kMax>
void tree(float* v) {
  for (int w = kRowLanes / 2; w >= 1; w /= 2)
    for (int i = 0; i < w; ++i) v[i] = kMax ? (v[i + w] > v[i] ? v[i + w] : v[i]) : v[i] + v[i + w];
  for (int i = 1; i < kRowLanes; ++i) v[i] = v[0];
}

// The same bits, or both NaN: which NaN (its sign) comes out of an inf - inf or of two NaNs depends on the order in
// which the compiler puts an addition's operands, in the loops as in the vectors.
bool same(float a, float b) { return (std::isnan(a) && std::isnan(b)) || std::memcmp(&a, &b, sizeof(a)) == 0; }

int main() {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 30.0f);
  std::uniform_int_distribution<int> pick(0, 15);
  const float special[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity(), 0.0f, -0.0f};
  int bad = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    float v[kRowLanes], want_max[kRowLanes], want_sum[kRowLanes], got_max[kRowLanes], got_sum[kRowLanes];
    for (int i = 0; i < kRowLanes; ++i) {
      const int k = pick(rng);
      v[i] = (trial % 4 == 0 && k < 5) ? special[k] : normal(rng);
    }
    std::memcpy(want_max, v, sizeof(v));
    std::memcpy(want_sum, v, sizeof(v));
    std::memcpy(got_max, v, sizeof(v));
    std::memcpy(got_sum, v, sizeof(v));
    tree<true>(want_max);
    tree<false>(want_sum);
    RowLanes::max(got_max, kRowLanes);
    RowLanes::sum(got_sum, kRowLanes);
    for (int i = 0; i < kRowLanes; ++i) bad += !same(want_max[i], got_max[i]) + !same(want_sum[i], got_sum[i]);
  }
#ifdef UDA_BLOCK_TRANSPOSE
  const char* form = "vector";
#else
  const char* form = "loop";
#endif
  std::printf("%s form: %d mismatches\n", form, bad);
  return bad != 0;
}
