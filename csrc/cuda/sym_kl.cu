// CUDA launcher of sym_kl (SPEC section 1): torch tensors -> canonical layout -> raw pointers ->
// sym_kl_kernels.cuh on the current stream. Same contract as csrc/cpu/sym_kl.cpp.
#include "launch_utils.h"
#include "sym_kl_kernels.cuh"

namespace uda_ops {
namespace cuda {

at::Tensor sym_kl_cuda(const at::Tensor& a, const at::Tensor& b, int64_t dim, bool detach_targets,
                       int64_t reduction) {
  (void)detach_targets;  // the value does not depend on it
  const Reduction r = check_reduction("sym_kl", reduction);
  const PairInputs in("sym_kl", a, b, dim);
  const ClassLayout& L = in.L;
  const at::Tensor &ac = in.ac, &bc = in.bc;
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "sym_kl_cuda", [&] {
    using T = device_t<scalar_t>;
    const ForwardOut f = forward_out<T>(a, dim, r, L);
    C10_CUDA_CHECK(launch_sym_kl_forward<T>(in_ptr<scalar_t>(ac), in_ptr<scalar_t>(bc),
                                            f.out.mutable_data_ptr<acc_of<T>>(), partials_ptr<acc_of<T>>(f), f.scale,
                                            L.outer, L.classes, L.inner, current_stream()));
    out = f.out;
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> sym_kl_backward_cuda(const at::Tensor& grad, const at::Tensor& a,
                                                        const at::Tensor& b, int64_t dim, bool detach_targets) {
  check_grad("sym_kl_backward", grad, a, map_shape(a, dim));
  const PairInputs in("sym_kl_backward", a, b, dim);
  const ClassLayout& L = in.L;
  const at::Tensor &ac = in.ac, &bc = in.bc;
  const PixelGrad pg = pixel_grad(grad, acc_dtype(a), L.pixels());
  at::Tensor ga = empty_in_layout(a, dim, L, a.scalar_type());
  at::Tensor gb = empty_in_layout(a, dim, L, a.scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "sym_kl_backward_cuda", [&] {
    using T = device_t<scalar_t>;
    C10_CUDA_CHECK(launch_sym_kl_backward<T>(pg.storage.const_data_ptr<acc_of<T>>(), pg.stride,
                                             in_ptr<scalar_t>(ac), in_ptr<scalar_t>(bc), out_ptr<scalar_t>(ga),
                                             out_ptr<scalar_t>(gb), L.outer, L.classes, L.inner, detach_targets,
                                             current_stream()));
  });
  return {ga, gb};
}

}  // namespace cuda
}  // namespace uda_ops

TORCH_LIBRARY_IMPL(uda_ops, CUDA, m) {
  m.impl("sym_kl", &uda_ops::cuda::sym_kl_cuda);
  m.impl("sym_kl_backward", &uda_ops::cuda::sym_kl_backward_cuda);
}
