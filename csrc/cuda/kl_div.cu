// CUDA launcher of kl_div (SPEC section 1): KL(softmax(target) || softmax(input)). Same contract as
// csrc/cpu/kl_div.cpp.
#include "kl_div_kernels.cuh"
#include "launch_utils.h"

namespace uda_ops {
namespace cuda {

at::Tensor kl_div_cuda(const at::Tensor& input, const at::Tensor& target, int64_t dim, int64_t reduction) {
  const Reduction r = check_reduction("kl_div", reduction);
  const PairInputs in("kl_div", input, target, dim);
  const ClassLayout& L = in.L;
  const at::Tensor &xc = in.ac, &yc = in.bc;
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "kl_div_cuda", [&] {
    using T = device_t<scalar_t>;
    const ForwardOut f = forward_out<T>(input, dim, r, L);
    C10_CUDA_CHECK(launch_kl_div_forward<T>(in_ptr<scalar_t>(xc), in_ptr<scalar_t>(yc),
                                            f.out.mutable_data_ptr<acc_of<T>>(), partials_ptr<acc_of<T>>(f), f.scale,
                                            L.outer, L.classes, L.inner, current_stream()));
    out = f.out;
  });
  return out;
}

// Returns (d/dinput, d/dtarget); the second is an empty tensor when need_target is false.
std::tuple<at::Tensor, at::Tensor> kl_div_backward_cuda(const at::Tensor& grad, const at::Tensor& input,
                                                        const at::Tensor& target, int64_t dim, bool need_target) {
  check_grad("kl_div_backward", grad, input, map_shape(input, dim));
  const PairInputs in("kl_div_backward", input, target, dim);
  const ClassLayout& L = in.L;
  const at::Tensor &xc = in.ac, &yc = in.bc;
  const PixelGrad pg = pixel_grad(grad, acc_dtype(input), L.pixels());
  at::Tensor gx = empty_in_layout(input, dim, L, input.scalar_type());
  at::Tensor gy = need_target ? empty_in_layout(input, dim, L, input.scalar_type()) : at::empty({0}, input.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "kl_div_backward_cuda", [&] {
    using T = device_t<scalar_t>;
    C10_CUDA_CHECK(launch_kl_div_backward<T>(pg.storage.const_data_ptr<acc_of<T>>(), pg.stride,
                                             in_ptr<scalar_t>(xc), in_ptr<scalar_t>(yc), out_ptr<scalar_t>(gx),
                                             need_target ? out_ptr<scalar_t>(gy) : nullptr, L.outer, L.classes,
                                             L.inner, current_stream()));
  });
  return {gx, gy};
}

}  // namespace cuda
}  // namespace uda_ops

TORCH_LIBRARY_IMPL(uda_ops, CUDA, m) {
  m.impl("kl_div", &uda_ops::cuda::kl_div_cuda);
  m.impl("kl_div_backward", &uda_ops::cuda::kl_div_backward_cuda);
}
