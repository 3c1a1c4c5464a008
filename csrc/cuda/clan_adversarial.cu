// CUDA launcher of clan_adversarial (SPEC section 3, CLAN Eq. 5). Same contract as
// csrc/cpu/clan_adversarial.cpp: d has one logit per pixel (the map's shape).
#include "clan_adversarial_kernels.cuh"
#include "launch_utils.h"

namespace uda_ops {
namespace cuda {

at::Tensor clan_adversarial_cuda(const at::Tensor& d, const at::Tensor& z1, const at::Tensor& z2, double target,
                                 double lambda_local, double epsilon, int64_t dim, int64_t reduction) {
  const Reduction r = check_reduction("clan_adversarial", reduction);
  TORCH_CHECK(d.device() == z1.device(), "clan_adversarial: d must be on the device of the logits");
  const PairInputs in("clan_adversarial", z1, z2, dim);
  const ClassLayout& L = in.L;
  TORCH_CHECK(d.numel() == L.pixels(), "clan_adversarial: d has ", d.numel(),
              " elements, expected one per pixel (", L.pixels(), ")");
  const at::Tensor &ac = in.ac, &bc = in.bc;
  const at::Tensor dc = d.to(acc_dtype(z1)).contiguous();
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z1.scalar_type(), "clan_adversarial_cuda", [&] {
    using T = device_t<scalar_t>;
    const ForwardOut f = forward_out<T>(z1, dim, r, L);
    C10_CUDA_CHECK(launch_clan_adversarial_forward<T>(
        dc.const_data_ptr<acc_of<T>>(), in_ptr<scalar_t>(ac), in_ptr<scalar_t>(bc),
        f.out.mutable_data_ptr<acc_of<T>>(), partials_ptr<acc_of<T>>(f), f.scale, L.outer, L.classes, L.inner,
        target, lambda_local, epsilon, current_stream()));
    out = f.out;
  });
  return out;
}

// Returns (d/dd, d/dz1, d/dz2); the last two are empty tensors when need_logit_grads is false.
std::tuple<at::Tensor, at::Tensor, at::Tensor> clan_adversarial_backward_cuda(
    const at::Tensor& grad, const at::Tensor& d, const at::Tensor& z1, const at::Tensor& z2, double target,
    double lambda_local, double epsilon, int64_t dim, bool need_logit_grads) {
  check_grad("clan_adversarial_backward", grad, z1, map_shape(z1, dim));
  TORCH_CHECK(d.device() == z1.device(), "clan_adversarial_backward: d must be on the device of the logits");
  const PairInputs in("clan_adversarial_backward", z1, z2, dim);
  const ClassLayout& L = in.L;
  TORCH_CHECK(d.numel() == L.pixels(), "clan_adversarial_backward: d has ", d.numel(), " elements, expected ",
              L.pixels());
  const at::Tensor &ac = in.ac, &bc = in.bc;
  const at::Tensor dc = d.to(acc_dtype(z1)).contiguous();
  const PixelGrad pg = pixel_grad(grad, acc_dtype(z1), L.pixels());
  at::Tensor gd = at::empty(d.sizes(), d.options().dtype(acc_dtype(z1)));
  at::Tensor g1 = need_logit_grads ? empty_in_layout(z1, dim, L, z1.scalar_type()) : at::empty({0}, z1.options());
  at::Tensor g2 = need_logit_grads ? empty_in_layout(z1, dim, L, z1.scalar_type()) : at::empty({0}, z1.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z1.scalar_type(), "clan_adversarial_backward_cuda", [&] {
    using T = device_t<scalar_t>;
    C10_CUDA_CHECK(launch_clan_adversarial_backward<T>(
        pg.storage.const_data_ptr<acc_of<T>>(), pg.stride, dc.const_data_ptr<acc_of<T>>(), in_ptr<scalar_t>(ac),
        in_ptr<scalar_t>(bc), gd.mutable_data_ptr<acc_of<T>>(), need_logit_grads ? out_ptr<scalar_t>(g1) : nullptr,
        need_logit_grads ? out_ptr<scalar_t>(g2) : nullptr, L.outer, L.classes, L.inner, target, lambda_local,
        epsilon, current_stream()));
  });
  return {gd.to(d.scalar_type()), g1, g2};
}

}  // namespace cuda
}  // namespace uda_ops

TORCH_LIBRARY_IMPL(uda_ops, CUDA, m) {
  m.impl("clan_adversarial", &uda_ops::cuda::clan_adversarial_cuda);
  m.impl("clan_adversarial_backward", &uda_ops::cuda::clan_adversarial_backward_cuda);
}
