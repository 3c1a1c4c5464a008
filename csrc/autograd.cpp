// Autograd kernels of the loss ops, in C++ (torchvision's csrc/ops/autograd pattern), for every device: a forward
// op runs below autograd and saves its inputs only; its backward expands a reduced op's 0-d gradient (stride 0,
// never materialised) and calls the backward op, which recomputes everything from the inputs.
//
// First order only. The backward ops have kernels of their own here: they run below autograd, and where autograd
// records them (create_graph=True) their node raises when differentiated. Second derivatives never come back
// silently zero or None.
//
// Why C++: a Python autograd.Function (torch.library.register_autograd, or a classic Function) cost 12-25 us more
// per small forward+backward on the CPU, about a third of the step at (64, 10)
// (benchmarks/results/cpu-autograd-2026-11-30.md).
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/accumulate.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

namespace uda_ops {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::Function;
using torch::autograd::variable_list;

template <class Sig>
c10::TypedOperatorHandle<Sig> handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

// The gradient of the (N, *) map from the gradient of a forward op's output (_ops.reduced_grad does the same for
// the Triton ops): as it is for "none" (0), else the 0-d gradient expanded over the map, divided by the pixel
// count for "mean" (1).
Tensor reduced_grad(const Tensor& grad, const Tensor& x, int64_t dim, int64_t reduction) {
  if (reduction == 0) return grad;
  std::vector<int64_t> shape = x.sizes().vec();
  shape.erase(shape.begin() + c10::maybe_wrap_dim(dim, x.dim()));
  const int64_t pixels = c10::multiply_integers(shape);
  if (reduction != 1) return grad.expand(shape);
  // grad / pixels by a 0-d CPU tensor of grad's dtype, the reduced output's (float32 or float64, so pixels is held
  // as exactly as a Scalar would be): a Scalar operand is wrapped as a 64-bit tensor and cast first (~1 us on the
  // CPU); a 0-d CPU operand of a CUDA op is a kernel argument.
  const at::Tensor n = at::scalar_tensor(static_cast<double>(std::max<int64_t>(1, pixels)),
                                         at::TensorOptions().dtype(grad.scalar_type()));
  return grad.div(n).expand(shape);
}

// ------------------------------------------------------------------------------------------------------------
// Backward ops: below autograd, first order only.
// ------------------------------------------------------------------------------------------------------------
template <class Tuple, std::size_t... I>
Tuple as_tuple(const variable_list& v, std::index_sequence<I...>) {
  return Tuple(v[I]...);
}

// `Op` names the backward op (Op::name) and gives its signature (Op::Sig, returning Tensor or a tuple of them).
template <class Op, class Sig = typename Op::Sig>
struct FirstOrder;

template <class Op, class R, class... Args>
struct FirstOrder<Op, R(Args...)> : Function<FirstOrder<Op, R(Args...)>> {
  static constexpr bool kTuple = !std::is_same_v<R, Tensor>;

  static auto forward(AutogradContext*, Args... args) {
    static const auto op = handle<R(Args...)>(Op::name);
    at::AutoDispatchBelowADInplaceOrView below;
    if constexpr (kTuple) {
      variable_list out;
      std::apply([&](auto&&... t) { (out.push_back(t), ...); }, op.call(args...));
      return out;
    } else {
      return op.call(args...);
    }
  }

  static variable_list backward(AutogradContext*, variable_list) {
    TORCH_CHECK(false, "uda_ops.", Op::forward_name, ": no second-order gradient (its backward is a fused kernel ",
                "without a derivative of its own); for double backward use uda_ops.set_backend('reference')");
  }

  static R kernel(Args... args) {
    if constexpr (kTuple) {
      return as_tuple<R>(FirstOrder::apply(args...), std::make_index_sequence<std::tuple_size_v<R>>());
    } else {
      return FirstOrder::apply(args...);
    }
  }
};

using T = const Tensor&;
using Pair = std::tuple<Tensor, Tensor>;

struct SymKLBackward {
  static constexpr const char* name = "uda_ops::sym_kl_backward";
  static constexpr const char* forward_name = "sym_kl";
  using Sig = Pair(T, T, T, int64_t, bool);
};
struct KLDivBackward {
  static constexpr const char* name = "uda_ops::kl_div_backward";
  static constexpr const char* forward_name = "kl_div";
  using Sig = Pair(T, T, T, int64_t, bool);
};
struct EntropyBackward {
  static constexpr const char* name = "uda_ops::entropy_backward";
  static constexpr const char* forward_name = "entropy";
  using Sig = Tensor(T, T, int64_t);
};
struct SelfInformationBackward {
  static constexpr const char* name = "uda_ops::self_information_backward";
  static constexpr const char* forward_name = "self_information";
  using Sig = Tensor(T, T, int64_t);
};
struct CosineBackward {
  static constexpr const char* name = "uda_ops::cosine_discrepancy_backward";
  static constexpr const char* forward_name = "cosine_discrepancy";
  using Sig = Pair(T, T, T, int64_t);
};
struct ClanBackward {
  static constexpr const char* name = "uda_ops::clan_adversarial_backward";
  static constexpr const char* forward_name = "clan_adversarial";
  using Sig = std::tuple<Tensor, Tensor, Tensor>(T, T, T, T, double, double, double, int64_t, bool);
};

// A backward op through the dispatcher. Under create_graph=True (grad mode on) through its FirstOrder kernel above,
// whose node raises if differentiated; otherwise (the usual backward) straight to the device's kernel.
template <class Op, class... Args>
auto dispatch(Args&&... args) {
  static const auto op = handle<typename Op::Sig>(Op::name);
  if (at::GradMode::is_enabled()) return op.call(std::forward<Args>(args)...);
  at::AutoDispatchBelowADInplaceOrView below;
  return op.call(std::forward<Args>(args)...);
}

// ------------------------------------------------------------------------------------------------------------
// Forward ops.
// ------------------------------------------------------------------------------------------------------------
struct SymKL : Function<SymKL> {
  static Tensor forward(AutogradContext* ctx, T a, T b, int64_t dim, bool detach_targets, int64_t reduction) {
    static const auto op = handle<Tensor(T, T, int64_t, bool, int64_t)>("uda_ops::sym_kl");
    ctx->save_for_backward({a, b});
    ctx->saved_data["dim"] = dim;
    ctx->saved_data["detach"] = detach_targets;
    ctx->saved_data["reduction"] = reduction;
    at::AutoDispatchBelowADInplaceOrView below;
    return op.call(a, b, dim, detach_targets, reduction);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const int64_t dim = ctx->saved_data["dim"].toInt();
    const Tensor g = reduced_grad(grads[0], saved[0], dim, ctx->saved_data["reduction"].toInt());
    auto [ga, gb] = dispatch<SymKLBackward>(g, saved[0], saved[1], dim, ctx->saved_data["detach"].toBool());
    return {ga, gb, Tensor(), Tensor(), Tensor()};
  }
};

struct KLDiv : Function<KLDiv> {
  static Tensor forward(AutogradContext* ctx, T input, T target, int64_t dim, int64_t reduction) {
    static const auto op = handle<Tensor(T, T, int64_t, int64_t)>("uda_ops::kl_div");
    ctx->save_for_backward({input, target});
    ctx->saved_data["dim"] = dim;
    ctx->saved_data["reduction"] = reduction;
    at::AutoDispatchBelowADInplaceOrView below;
    return op.call(input, target, dim, reduction);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const int64_t dim = ctx->saved_data["dim"].toInt();
    const bool need_target = ctx->needs_input_grad(1);
    const Tensor g = reduced_grad(grads[0], saved[0], dim, ctx->saved_data["reduction"].toInt());
    auto [gx, gy] = dispatch<KLDivBackward>(g, saved[0], saved[1], dim, need_target);
    return {gx, need_target ? gy : Tensor(), Tensor(), Tensor()};
  }
};

struct Entropy : Function<Entropy> {
  static Tensor forward(AutogradContext* ctx, T z, int64_t dim, int64_t reduction) {
    static const auto op = handle<Tensor(T, int64_t, int64_t)>("uda_ops::entropy");
    ctx->save_for_backward({z});
    ctx->saved_data["dim"] = dim;
    ctx->saved_data["reduction"] = reduction;
    at::AutoDispatchBelowADInplaceOrView below;
    return op.call(z, dim, reduction);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const int64_t dim = ctx->saved_data["dim"].toInt();
    const Tensor g = reduced_grad(grads[0], saved[0], dim, ctx->saved_data["reduction"].toInt());
    return {dispatch<EntropyBackward>(g, saved[0], dim), Tensor(), Tensor()};
  }
};

struct SelfInformation : Function<SelfInformation> {
  static Tensor forward(AutogradContext* ctx, T z, int64_t dim) {
    static const auto op = handle<Tensor(T, int64_t)>("uda_ops::self_information");
    ctx->save_for_backward({z});
    ctx->saved_data["dim"] = dim;
    at::AutoDispatchBelowADInplaceOrView below;
    return op.call(z, dim);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    return {dispatch<SelfInformationBackward>(grads[0], saved[0], ctx->saved_data["dim"].toInt()), Tensor()};
  }
};

struct Cosine : Function<Cosine> {
  static Tensor forward(AutogradContext* ctx, T z1, T z2, int64_t dim) {
    static const auto op = handle<Tensor(T, T, int64_t)>("uda_ops::cosine_discrepancy");
    ctx->save_for_backward({z1, z2});
    ctx->saved_data["dim"] = dim;
    at::AutoDispatchBelowADInplaceOrView below;
    return op.call(z1, z2, dim);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto [g1, g2] = dispatch<CosineBackward>(grads[0], saved[0], saved[1], ctx->saved_data["dim"].toInt());
    return {g1, g2, Tensor()};
  }
};

struct Clan : Function<Clan> {
  static Tensor forward(AutogradContext* ctx, T d, T z1, T z2, double target, double lambda_local, double epsilon,
                        int64_t dim, int64_t reduction) {
    static const auto op =
        handle<Tensor(T, T, T, double, double, double, int64_t, int64_t)>("uda_ops::clan_adversarial");
    ctx->save_for_backward({d, z1, z2});
    ctx->saved_data["target"] = target;
    ctx->saved_data["lambda_local"] = lambda_local;
    ctx->saved_data["epsilon"] = epsilon;
    ctx->saved_data["dim"] = dim;
    ctx->saved_data["reduction"] = reduction;
    at::AutoDispatchBelowADInplaceOrView below;
    return op.call(d, z1, z2, target, lambda_local, epsilon, dim, reduction);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto& s = ctx->saved_data;
    const int64_t dim = s["dim"].toInt();
    const bool need = ctx->needs_input_grad(1) || ctx->needs_input_grad(2);
    const Tensor g = reduced_grad(grads[0], saved[1], dim, s["reduction"].toInt());
    auto [gd, g1, g2] = dispatch<ClanBackward>(g, saved[0], saved[1], saved[2], s["target"].toDouble(),
                                               s["lambda_local"].toDouble(), s["epsilon"].toDouble(), dim, need);
    if (!need) g1 = g2 = Tensor();
    return {gd, g1, g2, Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

Tensor sym_kl(T a, T b, int64_t dim, bool detach_targets, int64_t reduction) {
  return SymKL::apply(a, b, dim, detach_targets, reduction);
}
Tensor kl_div(T input, T target, int64_t dim, int64_t reduction) {
  return KLDiv::apply(input, target, dim, reduction);
}
Tensor entropy(T z, int64_t dim, int64_t reduction) { return Entropy::apply(z, dim, reduction); }
Tensor self_information(T z, int64_t dim) { return SelfInformation::apply(z, dim); }
Tensor cosine_discrepancy(T z1, T z2, int64_t dim) { return Cosine::apply(z1, z2, dim); }
Tensor clan_adversarial(T d, T z1, T z2, double target, double lambda_local, double epsilon, int64_t dim,
                        int64_t reduction) {
  return Clan::apply(d, z1, z2, target, lambda_local, epsilon, dim, reduction);
}

}  // namespace
}  // namespace uda_ops

TORCH_LIBRARY_IMPL(uda_ops, Autograd, m) {
  using namespace uda_ops;
  m.impl("sym_kl", &sym_kl);
  m.impl("kl_div", &kl_div);
  m.impl("entropy", &entropy);
  m.impl("self_information", &self_information);
  m.impl("cosine_discrepancy", &cosine_discrepancy);
  m.impl("clan_adversarial", &clan_adversarial);
  m.impl("sym_kl_backward", &FirstOrder<SymKLBackward>::kernel);
  m.impl("kl_div_backward", &FirstOrder<KLDivBackward>::kernel);
  m.impl("entropy_backward", &FirstOrder<EntropyBackward>::kernel);
  m.impl("self_information_backward", &FirstOrder<SelfInformationBackward>::kernel);
  m.impl("cosine_discrepancy_backward", &FirstOrder<CosineBackward>::kernel);
  m.impl("clan_adversarial_backward", &FirstOrder<ClanBackward>::kernel);
}
