// CUDA launcher of entropy (SPEC section 2): the normalised entropy map. Same contract as
// csrc/cpu/entropy.cpp.
#include "entropy_kernels.cuh"
#include "launch_utils.h"

namespace uda_ops {
namespace cuda {

at::Tensor entropy_cuda(const at::Tensor& z, int64_t dim, int64_t reduction) {
  const Reduction r = check_reduction("entropy", reduction);
  check_cuda("entropy", z);
  const c10::cuda::CUDAGuard guard(z.device());
  const ClassLayout L = class_layout(z, dim);
  check_classes("entropy", L);
  const at::Tensor zc = to_layout(z, dim, L);
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "entropy_cuda", [&] {
    using T = device_t<scalar_t>;
    const ForwardOut f = forward_out<T>(z, dim, r, L);
    C10_CUDA_CHECK(launch_entropy_forward<T>(in_ptr<scalar_t>(zc), f.out.mutable_data_ptr<acc_of<T>>(),
                                             partials_ptr<acc_of<T>>(f), f.scale, L.outer, L.classes, L.inner,
                                             current_stream()));
    out = f.out;
  });
  return out;
}

at::Tensor entropy_backward_cuda(const at::Tensor& grad, const at::Tensor& z, int64_t dim) {
  check_cuda("entropy_backward", z);
  check_grad("entropy_backward", grad, z, map_shape(z, dim));
  const c10::cuda::CUDAGuard guard(z.device());
  const ClassLayout L = class_layout(z, dim);
  check_classes("entropy_backward", L);
  const at::Tensor zc = to_layout(z, dim, L);
  const PixelGrad pg = pixel_grad(grad, acc_dtype(z), L.pixels());
  at::Tensor gz = empty_in_layout(z, dim, L, z.scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "entropy_backward_cuda", [&] {
    using T = device_t<scalar_t>;
    C10_CUDA_CHECK(launch_entropy_backward<T>(pg.storage.const_data_ptr<acc_of<T>>(), pg.stride,
                                              in_ptr<scalar_t>(zc), out_ptr<scalar_t>(gz), L.outer, L.classes,
                                              L.inner, current_stream()));
  });
  return gz;
}

}  // namespace cuda
}  // namespace uda_ops

TORCH_LIBRARY_IMPL(uda_ops, CUDA, m) {
  m.impl("entropy", &uda_ops::cuda::entropy_cuda);
  m.impl("entropy_backward", &uda_ops::cuda::entropy_backward_cuda);
}
