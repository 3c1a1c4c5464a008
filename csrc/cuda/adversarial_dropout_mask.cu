// CUDA launchers of the adversarial dropout mask search (SPEC section 4): element-wise on (N, U) and
// channel-wise from (g, h) with the H*W reduction fused in. Same contract as
// csrc/cpu/adversarial_dropout_mask.cpp.
#include "adversarial_dropout_mask_kernels.cuh"
#include "launch_utils.h"

namespace uda_ops {
namespace cuda {

namespace {
// The base mask as an (N, U) contiguous tensor in `dtype`, or an undefined tensor (all ones).
at::Tensor base_rows(const c10::optional<at::Tensor>& base_mask, int64_t N, int64_t U, at::ScalarType dtype,
                     const at::Device& device) {
  if (!base_mask.has_value() || !base_mask->defined()) return at::Tensor();
  TORCH_CHECK(base_mask->device() == device, "adversarial_dropout_mask: base_mask must be on ", device);
  return base_mask->to(dtype).expand({N, U}).contiguous();
}
}  // namespace

at::Tensor adversarial_dropout_mask_cuda(const at::Tensor& jacobian, const c10::optional<at::Tensor>& base_mask,
                                         int64_t max_flips, bool rescale) {
  check_cuda("adversarial_dropout_mask", jacobian);
  TORCH_CHECK(jacobian.dim() == 2, "adversarial_dropout_mask: expected an (N, U) Jacobian, got shape ",
              jacobian.sizes());
  TORCH_CHECK(max_flips >= 0, "adversarial_dropout_mask: max_flips must be >= 0, got ", max_flips);
  const c10::cuda::CUDAGuard guard(jacobian.device());
  const at::ScalarType acc = acc_dtype(jacobian);
  const at::Tensor jac = jacobian.to(acc).contiguous();
  const int64_t N = jac.size(0), U = jac.size(1);
  const at::Tensor m0 = base_rows(base_mask, N, U, acc, jacobian.device());
  at::Tensor out = at::empty({N, U}, jacobian.options());
  if (N == 0 || U == 0) return out;
  at::Tensor work = at::empty({N, U}, jacobian.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, jacobian.scalar_type(), "adversarial_dropout_mask_cuda", [&] {
    using T = device_t<scalar_t>;
    using acc_t = acc_of<T>;
    C10_CUDA_CHECK(launch_adversarial_dropout_mask<T>(
        jac.const_data_ptr<acc_t>(), m0.defined() ? m0.const_data_ptr<acc_t>() : nullptr,
        work.mutable_data_ptr<acc_t>(), out_ptr<scalar_t>(out), N, U, max_flips, rescale, current_stream()));
  });
  return out;
}

at::Tensor channel_adversarial_dropout_mask_cuda(const at::Tensor& grad, const at::Tensor& activation,
                                                 const c10::optional<at::Tensor>& base_mask, int64_t max_flips,
                                                 bool rescale) {
  check_pair("channel_adversarial_dropout_mask", grad, activation);
  check_cuda("channel_adversarial_dropout_mask", grad);
  TORCH_CHECK(grad.dim() >= 2, "channel_adversarial_dropout_mask: expected (N, C, *) inputs, got shape ",
              grad.sizes());
  TORCH_CHECK(max_flips >= 0, "channel_adversarial_dropout_mask: max_flips must be >= 0, got ", max_flips);
  const c10::cuda::CUDAGuard guard(grad.device());
  const int64_t N = grad.size(0), C = grad.size(1);
  at::Tensor out = at::empty({N, C}, grad.options());
  if (N == 0 || C == 0) return out;
  const ClassLayout L = class_layout(grad, 1);
  const at::Tensor gc = to_layout(grad, 1, L), hc = to_layout(activation, 1, L);
  const bool planes = L.inner > 1 || C == 1;
  const int64_t HW = L.pixels() / N;
  const at::ScalarType acc = acc_dtype(grad);
  const at::Tensor m0 = base_rows(base_mask, N, C, acc, grad.device());
  at::Tensor partial = at::empty({N * C * channel_impact_chunks(HW, planes)}, grad.options().dtype(acc));
  at::Tensor work = at::empty({N, C}, grad.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "channel_adversarial_dropout_mask_cuda", [&] {
    using T = device_t<scalar_t>;
    using acc_t = acc_of<T>;
    C10_CUDA_CHECK(launch_channel_adversarial_dropout_mask<T>(
        in_ptr<scalar_t>(gc), in_ptr<scalar_t>(hc), m0.defined() ? m0.const_data_ptr<acc_t>() : nullptr,
        partial.mutable_data_ptr<acc_t>(), work.mutable_data_ptr<acc_t>(), out_ptr<scalar_t>(out), N, C, HW, planes,
        max_flips, rescale, current_stream()));
  });
  return out;
}

}  // namespace cuda
}  // namespace uda_ops

TORCH_LIBRARY_IMPL(uda_ops, CUDA, m) {
  m.impl("adversarial_dropout_mask", &uda_ops::cuda::adversarial_dropout_mask_cuda);
  m.impl("channel_adversarial_dropout_mask", &uda_ops::cuda::channel_adversarial_dropout_mask_cuda);
}
