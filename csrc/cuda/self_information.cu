// CUDA launcher of self_information (SPEC section 2): I_c = -p_c log p_c / log C, same shape, dtype and
// layout as the input. Same contract as csrc/cpu/self_information.cpp.
#include "launch_utils.h"
#include "self_information_kernels.cuh"

namespace uda_ops {
namespace cuda {

at::Tensor self_information_cuda(const at::Tensor& z, int64_t dim) {
  check_cuda("self_information", z);
  const c10::cuda::CUDAGuard guard(z.device());
  const ClassLayout L = class_layout(z, dim);
  check_classes("self_information", L);
  const at::Tensor zc = to_layout(z, dim, L);
  at::Tensor out = empty_in_layout(z, dim, L, z.scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "self_information_cuda", [&] {
    using T = device_t<scalar_t>;
    C10_CUDA_CHECK(launch_self_information_forward<T>(in_ptr<scalar_t>(zc), out_ptr<scalar_t>(out), L.outer,
                                                      L.classes, L.inner, current_stream()));
  });
  return out;
}

at::Tensor self_information_backward_cuda(const at::Tensor& grad, const at::Tensor& z, int64_t dim) {
  check_cuda("self_information_backward", z);
  check_grad("self_information_backward", grad, z, z.sizes());
  const c10::cuda::CUDAGuard guard(z.device());
  const ClassLayout L = class_layout(z, dim);
  check_classes("self_information_backward", L);
  // An expanded scalar (the backward of .sum()) is read as one value on the device, never materialised;
  // any other gradient is brought to z's dtype and layout once.
  const bool scalar_grad = is_expanded_scalar(grad);
  const at::Tensor zc = to_layout(z, dim, L);
  const at::Tensor gc = scalar_grad ? grad.as_strided({1}, {1}).to(acc_dtype(z))
                                    : to_layout(grad.to(z.scalar_type()), dim, L);
  at::Tensor gz = empty_in_layout(z, dim, L, z.scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "self_information_backward_cuda", [&] {
    using T = device_t<scalar_t>;
    // (the launch is not written inside C10_CUDA_CHECK: the template's comma would split the macro argument)
    const cudaError_t err =
        scalar_grad ? launch_self_information_backward<T, acc_of<T>>(gc.const_data_ptr<acc_of<T>>(), true,
                                                                     in_ptr<scalar_t>(zc), out_ptr<scalar_t>(gz),
                                                                     L.outer, L.classes, L.inner, current_stream())
                    : launch_self_information_backward<T, T>(in_ptr<scalar_t>(gc), false, in_ptr<scalar_t>(zc),
                                                             out_ptr<scalar_t>(gz), L.outer, L.classes, L.inner,
                                                             current_stream());
    C10_CUDA_CHECK(err);
  });
  return gz;
}

}  // namespace cuda
}  // namespace uda_ops

TORCH_LIBRARY_IMPL(uda_ops, CUDA, m) {
  m.impl("self_information", &uda_ops::cuda::self_information_cuda);
  m.impl("self_information_backward", &uda_ops::cuda::self_information_backward_cuda);
}
