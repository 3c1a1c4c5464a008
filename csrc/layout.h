// Class-axis layout shared by every backend launcher (CPU and CUDA): the one place that decides how an
// (N, C, *) tensor with its class axis at `dim` is walked by a kernel.
//
// A kernel sees `outer * inner` pixels with `C` classes each; element (o, c, i) lives at
//   o * C * inner + c * inner + i.
// Two physical layouts are served without a copy:
//   planes: the tensor is contiguous (NCHW):            class stride = inner, lanes contiguous;
//   rows:   the class axis is the fastest (NHWC, (N,C)): inner = 1, class stride 1, lane stride C.
// Any other striding is copied once into the planes layout.
#pragma once

#include <ATen/ATen.h>

#include <limits>
#include <vector>

namespace uda_ops {

struct ClassLayout {
  int64_t outer = 1;    // product of the sizes before the class axis (rows: all pixels)
  int64_t classes = 1;  // C
  int64_t inner = 1;    // product of the sizes after the class axis (rows: 1)
  bool moved = false;   // true when the class axis was moved last without a copy (channels_last)

  int64_t pixels() const { return outer * inner; }
};

inline int64_t canonical_dim(const at::Tensor& x, int64_t dim) {
  TORCH_CHECK(x.dim() >= 1, "uda_ops: expected a tensor with a class axis, got a 0-d tensor");
  return at::maybe_wrap_dim(dim, x.dim());
}

// Chooses the layout for `x` (the first input of an op decides; the others follow it).
inline ClassLayout class_layout(const at::Tensor& x, int64_t dim) {
  dim = canonical_dim(x, dim);
  ClassLayout L;
  L.classes = x.size(dim);
  const bool moved = !x.is_contiguous() && x.movedim(dim, -1).is_contiguous();
  if (moved || dim == x.dim() - 1) {
    L.moved = moved;
    for (int64_t d = 0; d < x.dim(); ++d) if (d != dim) L.outer *= x.size(d);
    return L;
  }
  for (int64_t d = 0; d < dim; ++d) L.outer *= x.size(d);
  for (int64_t d = dim + 1; d < x.dim(); ++d) L.inner *= x.size(d);
  return L;
}

// `x` as a dense tensor whose memory follows `L` (a no-op for inputs already in that layout).
inline at::Tensor to_layout(const at::Tensor& x, int64_t dim, const ClassLayout& L) {
  dim = canonical_dim(x, dim);
  return L.moved ? x.movedim(dim, -1).contiguous() : x.contiguous();
}

// A new (N, C, *) tensor shaped like `like` whose memory follows `L` (channels_last stays channels_last).
inline at::Tensor empty_in_layout(const at::Tensor& like, int64_t dim, const ClassLayout& L,
                                  at::ScalarType dtype) {
  dim = canonical_dim(like, dim);
  auto opts = like.options().dtype(dtype);
  if (!L.moved) return at::empty(like.sizes(), opts);
  return at::empty(like.movedim(dim, -1).sizes(), opts).movedim(-1, dim);
}

// Shape of the per-pixel map: the input's shape without the class axis.
inline std::vector<int64_t> map_shape(const at::Tensor& x, int64_t dim) {
  dim = canonical_dim(x, dim);
  std::vector<int64_t> s;
  for (int64_t d = 0; d < x.dim(); ++d) if (d != dim) s.push_back(x.size(d));
  return s;
}

// Accumulation dtype: float64 for float64 input, float32 for everything else.
inline at::ScalarType acc_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// A per-pixel gradient (N, *) read as `ptr[p * stride]`: an expanded scalar (all strides 0, as the
// backward of "mean"/"sum" gives) is read in place with stride 0; anything else is made contiguous.
// True for an expanded scalar: every stride 0 (what the backward of .sum() / .mean() hands over).
inline bool is_expanded_scalar(const at::Tensor& t) {
  if (t.dim() == 0 || t.numel() == 0) return false;
  for (int64_t d = 0; d < t.dim(); ++d)
    if (t.stride(d) != 0 && t.size(d) != 1) return false;
  return true;
}

struct PixelGrad {
  at::Tensor storage;
  int64_t stride = 1;
};

// An upstream gradient is floating point: an integer one is a caller's bug, not something to cast.
inline void check_grad_dtype(const at::Tensor& grad, const char* op = "uda_ops") {
  TORCH_CHECK(at::isFloatingType(grad.scalar_type()), op, ": gradient must be floating point, got ",
              grad.scalar_type());
}

inline PixelGrad pixel_grad(const at::Tensor& grad, at::ScalarType dtype, int64_t pixels) {
  check_grad_dtype(grad);
  TORCH_CHECK(grad.numel() == pixels, "uda_ops: gradient has ", grad.numel(), " elements, expected ",
              pixels);
  PixelGrad g;
  if (is_expanded_scalar(grad)) {
    g.storage = grad.as_strided({1}, {1}).to(dtype);
    g.stride = 0;
  } else {
    g.storage = grad.to(dtype).contiguous();
  }
  return g;
}

// The fused reduction of a forward op (schema argument `int reduction`): 0 = the per-pixel map, 1 = "mean",
// 2 = "sum". A reduced forward returns a 0-d tensor in the accumulation dtype: per-block partial sums in a
// fixed order (tiles on the CPU, blocks/programs on the GPU), then their sum in float64, times 1 / pixels for
// "mean" (NaN for zero pixels, like torch.mean of an empty tensor). Deterministic for a given shape.
enum Reduction : int64_t { kReduceNone = 0, kReduceMean = 1, kReduceSum = 2 };

inline Reduction check_reduction(const char* op, int64_t reduction) {
  TORCH_CHECK(reduction >= kReduceNone && reduction <= kReduceSum, op,
              ": reduction must be 0 (none), 1 (mean) or 2 (sum), got ", reduction);
  return static_cast<Reduction>(reduction);
}

// The factor applied to the sum of the per-pixel values.
inline double reduction_scale(Reduction r, int64_t pixels) {
  if (r != kReduceMean) return 1.0;
  return pixels > 0 ? 1.0 / static_cast<double>(pixels) : std::numeric_limits<double>::quiet_NaN();
}

// The output of a forward op: the (N, *) map, or the 0-d reduced value (both in the accumulation dtype).
inline at::Tensor empty_forward_output(const at::Tensor& x, int64_t dim, Reduction r) {
  const auto opts = x.options().dtype(acc_dtype(x));
  return r == kReduceNone ? at::empty(map_shape(x, dim), opts) : at::empty({}, opts);
}

inline void check_classes(const char* op, const ClassLayout& L) {
  TORCH_CHECK(L.classes >= 2, op, ": needs at least 2 classes along dim, got ", L.classes);
}

// Checks shared by every two-input op (the Python layer gives friendlier errors first).
inline void check_pair(const char* op, const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(a.sizes() == b.sizes(), op, ": inputs must have the same shape, got ", a.sizes(),
              " and ", b.sizes());
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), op, ": inputs must have the same dtype, got ",
              a.scalar_type(), " and ", b.scalar_type());
  TORCH_CHECK(a.device() == b.device(), op, ": inputs must be on the same device");
}

}  // namespace uda_ops
