// Compile check of the torch-free CUDA kernels (run by tests/test_cuda_compile.py with nvcc alone):
// includes every csrc/cuda/*_kernels.cuh and explicitly instantiates every launcher for float, double,
// __half and __nv_bfloat16, so that each kernel template is compiled to device code for the target arch.
// Built with the macros the torch extension build defines (no implicit half/bfloat16 conversions).
#include "../../csrc/cuda/adversarial_dropout_mask_kernels.cuh"
#include "../../csrc/cuda/clan_adversarial_kernels.cuh"
#include "../../csrc/cuda/cosine_discrepancy_kernels.cuh"
#include "../../csrc/cuda/entropy_kernels.cuh"
#include "../../csrc/cuda/kl_div_kernels.cuh"
#include "../../csrc/cuda/self_information_kernels.cuh"
#include "../../csrc/cuda/sym_kl_kernels.cuh"

namespace uda_ops {
namespace cuda {

#define UDA_INSTANTIATE(T)                                                                                        \
  template cudaError_t launch_sym_kl_forward<T>(const T*, const T*, acc_of<T>*, acc_of<T>*, double, int64_t,     \
                                                int64_t, int64_t, cudaStream_t);                                  \
  template cudaError_t launch_sym_kl_backward<T>(const acc_of<T>*, int64_t, const T*, const T*, T*, T*, int64_t,  \
                                                 int64_t, int64_t, bool, cudaStream_t);                           \
  template cudaError_t launch_kl_div_forward<T>(const T*, const T*, acc_of<T>*, acc_of<T>*, double, int64_t,     \
                                                int64_t, int64_t, cudaStream_t);                                  \
  template cudaError_t launch_kl_div_backward<T>(const acc_of<T>*, int64_t, const T*, const T*, T*, T*, int64_t,  \
                                                 int64_t, int64_t, cudaStream_t);                                 \
  template cudaError_t launch_entropy_forward<T>(const T*, acc_of<T>*, acc_of<T>*, double, int64_t, int64_t,      \
                                                 int64_t, cudaStream_t);                                          \
  template cudaError_t launch_entropy_backward<T>(const acc_of<T>*, int64_t, const T*, T*, int64_t, int64_t,      \
                                                  int64_t, cudaStream_t);                                         \
  template cudaError_t launch_self_information_forward<T>(const T*, T*, int64_t, int64_t, int64_t, cudaStream_t); \
  template cudaError_t launch_self_information_backward<T, T>(const T*, bool, const T*, T*, int64_t, int64_t,     \
                                                              int64_t, cudaStream_t);                             \
  template cudaError_t launch_cosine_discrepancy_forward<T>(const T*, const T*, acc_of<T>*, int64_t, int64_t,     \
                                                            int64_t, cudaStream_t);                               \
  template cudaError_t launch_cosine_discrepancy_backward<T>(const acc_of<T>*, int64_t, const T*, const T*, T*,   \
                                                             T*, int64_t, int64_t, int64_t, cudaStream_t);        \
  template cudaError_t launch_clan_adversarial_forward<T>(const acc_of<T>*, const T*, const T*, acc_of<T>*,       \
                                                          acc_of<T>*, double, int64_t, int64_t, int64_t, double,  \
                                                          double, double, cudaStream_t);                          \
  template cudaError_t launch_clan_adversarial_backward<T>(const acc_of<T>*, int64_t, const acc_of<T>*, const T*, \
                                                           const T*, acc_of<T>*, T*, T*, int64_t, int64_t,        \
                                                           int64_t, double, double, double, cudaStream_t);        \
  template cudaError_t launch_adversarial_dropout_mask<T>(const acc_of<T>*, const acc_of<T>*, acc_of<T>*, T*,     \
                                                          int64_t, int64_t, int64_t, bool, cudaStream_t);         \
  template cudaError_t launch_channel_adversarial_dropout_mask<T>(const T*, const T*, const acc_of<T>*,           \
                                                                  acc_of<T>*, acc_of<T>*, T*, int64_t, int64_t,   \
                                                                  int64_t, bool, int64_t, bool, cudaStream_t);

// The self_information backward also reads an expanded scalar gradient in acc_t (distinct from T only
// for the half types).
#define UDA_INSTANTIATE_ACC_GRAD(T)                                                                               \
  template cudaError_t launch_self_information_backward<T, acc_of<T>>(const acc_of<T>*, bool, const T*, T*,       \
                                                                      int64_t, int64_t, int64_t, cudaStream_t);

UDA_INSTANTIATE(float)
UDA_INSTANTIATE(double)
UDA_INSTANTIATE(__half)
UDA_INSTANTIATE(__nv_bfloat16)
UDA_INSTANTIATE_ACC_GRAD(__half)
UDA_INSTANTIATE_ACC_GRAD(__nv_bfloat16)

#undef UDA_INSTANTIATE
#undef UDA_INSTANTIATE_ACC_GRAD

}  // namespace cuda
}  // namespace uda_ops
