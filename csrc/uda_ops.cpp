// Op schemas of uda_ops (one TORCH_LIBRARY for every backend) and the pybind11 module uda_ops._C.
//
// Forward ops return the per-pixel map (N, *) in the accumulation dtype (float32; float64 for float64
// input), or with `reduction` 1 ("mean") / 2 ("sum") the reduced 0-d value, fused into the same pass
// (layout.h, Reduction); the Python layer casts to the input dtype. Backward ops take the gradient of
// the map (the autograd glue expands a reduced op's 0-d gradient, stride 0, read in place) and recompute
// everything else from the inputs: nothing of shape (N, C, *) is saved between forward and backward.
#include <torch/extension.h>
#include <torch/library.h>

TORCH_LIBRARY(uda_ops, m) {
  m.set_python_module("uda_ops._ops");
  m.def("sym_kl(Tensor a, Tensor b, int dim, bool detach_targets, int reduction=0) -> Tensor");
  m.def("sym_kl_backward(Tensor grad, Tensor a, Tensor b, int dim, bool detach_targets) -> (Tensor, Tensor)");
  m.def("kl_div(Tensor input, Tensor target, int dim, int reduction=0) -> Tensor");
  m.def("kl_div_backward(Tensor grad, Tensor input, Tensor target, int dim, bool need_target) -> (Tensor, Tensor)");
  m.def("entropy(Tensor z, int dim, int reduction=0) -> Tensor");
  m.def("entropy_backward(Tensor grad, Tensor z, int dim) -> Tensor");
  m.def("self_information(Tensor z, int dim) -> Tensor");
  m.def("self_information_backward(Tensor grad, Tensor z, int dim) -> Tensor");
  m.def("cosine_discrepancy(Tensor z1, Tensor z2, int dim) -> Tensor");
  m.def("cosine_discrepancy_backward(Tensor grad, Tensor z1, Tensor z2, int dim) -> (Tensor, Tensor)");
  m.def("clan_adversarial(Tensor d, Tensor z1, Tensor z2, float target, float lambda_local, float epsilon, "
        "int dim, int reduction=0) -> Tensor");
  m.def("clan_adversarial_backward(Tensor grad, Tensor d, Tensor z1, Tensor z2, float target, "
        "float lambda_local, float epsilon, int dim, bool need_logit_grads) -> (Tensor, Tensor, Tensor)");
  m.def("adversarial_dropout_mask(Tensor jacobian, Tensor? base_mask, int max_flips, bool rescale) -> Tensor");
  m.def("channel_adversarial_dropout_mask(Tensor grad, Tensor activation, Tensor? base_mask, int max_flips, "
        "bool rescale) -> Tensor");
}

namespace {
pybind11::dict build_info() {
  pybind11::dict info;
#ifdef UDA_OPS_WITH_CUDA
  info["cuda"] = true;
#else
  info["cuda"] = false;
#endif
  info["torch_version"] = TORCH_VERSION;
  info["parallel"] = at::get_parallel_info();
  return info;
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "uda_ops compiled kernels (ops are registered under torch.ops.uda_ops)";
  m.def("build_info", &build_info, "How this extension was built");
}
