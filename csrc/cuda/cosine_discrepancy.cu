// CUDA launcher of cosine_discrepancy (SPEC section 3): M = 1 - cos(softmax(z1), softmax(z2)) per pixel.
// Same contract as csrc/cpu/cosine_discrepancy.cpp.
#include "cosine_discrepancy_kernels.cuh"
#include "launch_utils.h"

namespace uda_ops {
namespace cuda {

at::Tensor cosine_discrepancy_cuda(const at::Tensor& z1, const at::Tensor& z2, int64_t dim) {
  const PairInputs in("cosine_discrepancy", z1, z2, dim);
  const ClassLayout& L = in.L;
  const at::Tensor &ac = in.ac, &bc = in.bc;
  at::Tensor out = at::empty(map_shape(z1, dim), z1.options().dtype(acc_dtype(z1)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z1.scalar_type(), "cosine_discrepancy_cuda", [&] {
    using T = device_t<scalar_t>;
    C10_CUDA_CHECK(launch_cosine_discrepancy_forward<T>(in_ptr<scalar_t>(ac), in_ptr<scalar_t>(bc),
                                                        out.mutable_data_ptr<acc_of<T>>(), L.outer, L.classes,
                                                        L.inner, current_stream()));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> cosine_discrepancy_backward_cuda(const at::Tensor& grad, const at::Tensor& z1,
                                                                    const at::Tensor& z2, int64_t dim) {
  check_grad("cosine_discrepancy_backward", grad, z1, map_shape(z1, dim));
  const PairInputs in("cosine_discrepancy_backward", z1, z2, dim);
  const ClassLayout& L = in.L;
  const at::Tensor &ac = in.ac, &bc = in.bc;
  const PixelGrad pg = pixel_grad(grad, acc_dtype(z1), L.pixels());
  at::Tensor g1 = empty_in_layout(z1, dim, L, z1.scalar_type());
  at::Tensor g2 = empty_in_layout(z1, dim, L, z1.scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z1.scalar_type(), "cosine_discrepancy_backward_cuda", [&] {
    using T = device_t<scalar_t>;
    C10_CUDA_CHECK(launch_cosine_discrepancy_backward<T>(
        pg.storage.const_data_ptr<acc_of<T>>(), pg.stride, in_ptr<scalar_t>(ac), in_ptr<scalar_t>(bc),
        out_ptr<scalar_t>(g1), out_ptr<scalar_t>(g2), L.outer, L.classes, L.inner, current_stream()));
  });
  return {g1, g2};
}

}  // namespace cuda
}  // namespace uda_ops

TORCH_LIBRARY_IMPL(uda_ops, CUDA, m) {
  m.impl("cosine_discrepancy", &uda_ops::cuda::cosine_discrepancy_cuda);
  m.impl("cosine_discrepancy_backward", &uda_ops::cuda::cosine_discrepancy_backward_cuda);
}
