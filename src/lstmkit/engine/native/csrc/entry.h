// The two entry points every kernel module exposes to Python, given the kernel (bindings.cpp
// names the built-in ones; a generated cell's module has its own):
//   forward(kernel, x, params, state0, valid, recurrent_mask, zoneout, zoneout_rate, reverse,
//           carry_output, eps, store) -> [output, final states..., saved...]
//   backward(kernel, grad_output, grad_state, x, params, saved, valid, recurrent_mask, zoneout,
//            zoneout_rate, reverse, carry_output, eps, needs) -> [dx, d params..., d initial states...]
// A kernel name ending in "+bf16" runs the GEMMs of a float32 call on bfloat16 operands (gemm.h).
// Both run below autograd (at::AutoDispatchBelowADInplaceOrView): the loops compute their own
// gradients, and their dozens of ATen calls (views, copies, products) skip autograd's bookkeeping,
// most of a small call's cost when Python calls them directly (ops.py's eager path) rather than
// through the operators, whose dispatch is below autograd already.
#pragma once

#include <ATen/core/LegacyTypeDispatch.h>

#include "common.h"

namespace lstmkit {

constexpr const char* kBf16Suffix = "+bf16";

// The kernel a name asks for, without its precision suffix.
inline std::string kernel_base(const std::string& name) {
  const size_t at = name.rfind(kBf16Suffix);
  return at != std::string::npos && at + std::string(kBf16Suffix).size() == name.size() ? name.substr(0, at) : name;
}

inline SequenceArgs arguments(const Kernel& k, const std::string& name, const at::Tensor& x, std::vector<OptTensor> params, OptTensor valid,
                       OptTensor rmask, std::vector<at::Tensor> zoneout, double zoneout_rate, bool reverse,
                       bool carry_output, double eps) {
  TORCH_CHECK_VALUE(static_cast<int>(params.size()) == k.params, k.name, " takes ", k.params, " parameters, got ",
                    params.size());
  SequenceArgs a;
  a.x = x;
  a.params = std::move(params);
  a.valid = std::move(valid);
  a.rmask = std::move(rmask);
  a.zoneout = std::move(zoneout);
  a.zoneout_rate = zoneout_rate;
  a.reverse = reverse;
  a.carry_output = carry_output;
  a.eps = eps;
  a.bf16 = kernel_base(name) != name;
  TORCH_CHECK_TYPE(!a.bf16 || x.scalar_type() == at::kFloat, name, " takes float32 tensors, got ", x.scalar_type());
  return a;
}

inline std::vector<at::Tensor> run_forward(const Kernel& k, const std::string& name, const at::Tensor& x, std::vector<OptTensor> params,
                                std::vector<at::Tensor> state0, OptTensor valid, OptTensor rmask,
                                std::vector<at::Tensor> zoneout, double zoneout_rate, bool reverse, bool carry_output,
                                double eps, bool store) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  SequenceArgs a = arguments(k, name, x, std::move(params), std::move(valid), std::move(rmask), std::move(zoneout),
                             zoneout_rate, reverse, carry_output, eps);
  TORCH_CHECK_VALUE(static_cast<int>(state0.size()) == k.states, k.name, " takes ", k.states,
                    " initial states, got ", state0.size());
  a.state0 = std::move(state0);
  a.store = store;
  return k.forward(a);
}

inline std::vector<at::Tensor> run_backward(const Kernel& k, const std::string& name, const at::Tensor& grad_output,
                                 std::vector<at::Tensor> grad_state, const at::Tensor& x,
                                 std::vector<OptTensor> params, std::vector<at::Tensor> saved, OptTensor valid,
                                 OptTensor rmask, std::vector<at::Tensor> zoneout, double zoneout_rate, bool reverse,
                                 bool carry_output, double eps, std::vector<bool> needs) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  SequenceArgs a = arguments(k, name, x, std::move(params), std::move(valid), std::move(rmask), std::move(zoneout),
                             zoneout_rate, reverse, carry_output, eps);
  TORCH_CHECK_VALUE(needs.size() == a.params.size() + 1, "needs: one flag for the input and one per parameter");
  TORCH_CHECK_VALUE(grad_output.defined(), "grad_output is undefined");
  a.grad_output = grad_output;
  a.grad_state = std::move(grad_state);
  a.saved = std::move(saved);
  a.needs = std::move(needs);
  for (size_t p = 0; p < a.params.size(); ++p) a.needs[p + 1] = a.needs[p + 1] && a.params[p].has_value();
  return k.backward(a);
}

}  // namespace lstmkit
