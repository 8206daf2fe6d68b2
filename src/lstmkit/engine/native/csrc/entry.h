// The two entry points every kernel module exposes to Python, given the kernel (bindings.cpp
// names the built-in ones; a generated cell's module has its own):
//   forward(kernel, x, params, state0, valid, recurrent_mask, zoneout, zoneout_rate, reverse,
//           carry_output, eps, store) -> [output, final states..., saved...]
//   backward(kernel, grad_output, grad_state, x, params, saved, valid, recurrent_mask, zoneout,
//            zoneout_rate, reverse, carry_output, eps, needs) -> [dx, d params..., d initial states...]
#pragma once

#include "common.h"

namespace lstmkit {

inline SequenceArgs arguments(const Kernel& k, const at::Tensor& x, std::vector<OptTensor> params, OptTensor valid,
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
  return a;
}

inline std::vector<at::Tensor> run_forward(const Kernel& k, const at::Tensor& x, std::vector<OptTensor> params,
                                std::vector<at::Tensor> state0, OptTensor valid, OptTensor rmask,
                                std::vector<at::Tensor> zoneout, double zoneout_rate, bool reverse, bool carry_output,
                                double eps, bool store) {
  SequenceArgs a = arguments(k, x, std::move(params), std::move(valid), std::move(rmask), std::move(zoneout),
                             zoneout_rate, reverse, carry_output, eps);
  TORCH_CHECK_VALUE(static_cast<int>(state0.size()) == k.states, k.name, " takes ", k.states,
                    " initial states, got ", state0.size());
  a.state0 = std::move(state0);
  a.store = store;
  return k.forward(a);
}

inline std::vector<at::Tensor> run_backward(const Kernel& k, const at::Tensor& grad_output,
                                 std::vector<at::Tensor> grad_state, const at::Tensor& x,
                                 std::vector<OptTensor> params, std::vector<at::Tensor> saved, OptTensor valid,
                                 OptTensor rmask, std::vector<at::Tensor> zoneout, double zoneout_rate, bool reverse,
                                 bool carry_output, double eps, std::vector<bool> needs) {
  SequenceArgs a = arguments(k, x, std::move(params), std::move(valid), std::move(rmask), std::move(zoneout),
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
