// Torch-facing helpers of the CUDA launchers (csrc/cuda/<op>.cu): ATen scalar types -> CUDA device
// types, typed raw pointers, the current stream, device checks. The kernels themselves
// (*_kernels.cuh) never see a torch type.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "../layout.h"
#include "common.cuh"

namespace uda_ops {
namespace cuda {

// at::Half / at::BFloat16 have the bit layout of __half / __nv_bfloat16.
template <typename scalar_t>
struct DeviceType {
  using type = scalar_t;
};
template <>
struct DeviceType<at::Half> {
  using type = __half;
};
template <>
struct DeviceType<at::BFloat16> {
  using type = __nv_bfloat16;
};
template <typename scalar_t>
using device_t = typename DeviceType<scalar_t>::type;

template <typename scalar_t>
const device_t<scalar_t>* in_ptr(const at::Tensor& t) {
  return reinterpret_cast<const device_t<scalar_t>*>(t.const_data_ptr<scalar_t>());
}
template <typename scalar_t>
device_t<scalar_t>* out_ptr(const at::Tensor& t) {
  return reinterpret_cast<device_t<scalar_t>*>(t.mutable_data_ptr<scalar_t>());
}

// The stream torch is using on the current device (at::cuda::getCurrentCUDAStream is the same function;
// c10's header avoids pulling cuBLAS/cuSPARSE headers into every launcher).
inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

inline void check_cuda(const char* op, const at::Tensor& t) {
  TORCH_CHECK(t.is_cuda(), op, ": expected a CUDA tensor, got one on ", t.device());
}

// The upstream gradient of a backward op: on the inputs' device (a kernel would otherwise read another
// device's memory), floating point, and shaped like the forward's output.
inline void check_grad(const char* op, const at::Tensor& grad, const at::Tensor& input, at::IntArrayRef shape) {
  TORCH_CHECK(grad.device() == input.device(), op, ": gradient is on ", grad.device(), ", the inputs on ",
              input.device());
  check_grad_dtype(grad, op);
  TORCH_CHECK(grad.sizes() == shape, op, ": gradient has shape ", grad.sizes(), ", expected ", shape);
}

// What every two-logit launcher does first: both inputs alike and on CUDA, their device current until the launcher
// returns, the class layout, and both inputs in that layout (a copy only where they are not already).
struct PairInputs {
  PairInputs(const char* op, const at::Tensor& a, const at::Tensor& b, int64_t dim) {
    check_pair(op, a, b);
    check_cuda(op, a);
    guard.set_device(a.device());
    L = class_layout(a, dim);
    check_classes(op, L);
    ac = to_layout(a, dim, L);
    bc = to_layout(b, dim, L);
  }
  c10::cuda::OptionalCUDAGuard guard;
  ClassLayout L;
  at::Tensor ac, bc;
};

// A forward's output (empty_forward_output: the map, or the 0-d reduced value) and, when reduced, the scratch
// of per-block partial sums its kernels write (undefined for the map: partials_ptr gives nullptr).
struct ForwardOut {
  at::Tensor out, partials;
  double scale = 1.0;  // reduction_scale
};

template <typename T>
ForwardOut forward_out(const at::Tensor& x, int64_t dim, Reduction r, const ClassLayout& L) {
  ForwardOut f;
  f.out = empty_forward_output(x, dim, r);
  if (r != kReduceNone) {
    f.partials = at::empty({reduce_blocks_bound<T>(L.outer, L.classes, L.inner)}, f.out.options());
    f.scale = reduction_scale(r, L.pixels());
  }
  return f;
}

template <typename acc_t>
acc_t* partials_ptr(const ForwardOut& f) {
  return f.partials.defined() ? f.partials.mutable_data_ptr<acc_t>() : nullptr;
}

}  // namespace cuda
}  // namespace uda_ops
