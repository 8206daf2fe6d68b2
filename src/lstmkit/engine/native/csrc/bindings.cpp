// Python bindings of the native time loops (the only file that includes torch/extension.h).
//
// Two entry points serve every cell, named by its kernel:
//   forward(kernel, x, params, state0, valid, recurrent_mask, zoneout, zoneout_rate, reverse,
//           carry_output, eps, store) -> [output, final states..., saved...]
//   backward(kernel, grad_output, grad_state, x, params, saved, valid, recurrent_mask, zoneout,
//            zoneout_rate, reverse, carry_output, eps, needs) -> [dx, d params..., d initial states...]
#include <torch/extension.h>

#include "common.h"

namespace lstmkit {
namespace {

const Kernel kKernels[] = {
    {"rnn_tanh", 4, 1, rnn_tanh_forward, rnn_tanh_backward},
    {"rnn_relu", 4, 1, rnn_relu_forward, rnn_relu_backward},
    {"lstm", 4, 2, lstm_forward, lstm_backward},
    {"lstm_projection", 5, 2, lstm_projection_forward, lstm_projection_backward},
    {"peephole_lstm", 7, 2, peephole_lstm_forward, peephole_lstm_backward},
    {"layernorm_lstm", 8, 2, layernorm_lstm_forward, layernorm_lstm_backward},
    {"gru", 4, 1, gru_forward, gru_backward},
    {"gru_reset_before", 4, 1, gru_reset_before_forward, gru_reset_before_backward},
};

const Kernel& kernel(const std::string& name) {
  for (const Kernel& k : kKernels) {
    if (name == k.name) return k;
  }
  TORCH_CHECK_VALUE(false, "unknown kernel '", name, "'");
}

SequenceArgs arguments(const Kernel& k, const at::Tensor& x, std::vector<OptTensor> params, OptTensor valid,
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

std::vector<at::Tensor> forward(const std::string& name, const at::Tensor& x, std::vector<OptTensor> params,
                                std::vector<at::Tensor> state0, OptTensor valid, OptTensor rmask,
                                std::vector<at::Tensor> zoneout, double zoneout_rate, bool reverse, bool carry_output,
                                double eps, bool store) {
  const Kernel& k = kernel(name);
  SequenceArgs a = arguments(k, x, std::move(params), std::move(valid), std::move(rmask), std::move(zoneout),
                             zoneout_rate, reverse, carry_output, eps);
  TORCH_CHECK_VALUE(static_cast<int>(state0.size()) == k.states, k.name, " takes ", k.states,
                    " initial states, got ", state0.size());
  a.state0 = std::move(state0);
  a.store = store;
  return k.forward(a);
}

std::vector<at::Tensor> backward(const std::string& name, const at::Tensor& grad_output,
                                 std::vector<at::Tensor> grad_state, const at::Tensor& x,
                                 std::vector<OptTensor> params, std::vector<at::Tensor> saved, OptTensor valid,
                                 OptTensor rmask, std::vector<at::Tensor> zoneout, double zoneout_rate, bool reverse,
                                 bool carry_output, double eps, std::vector<bool> needs) {
  const Kernel& k = kernel(name);
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

}  // namespace
}  // namespace lstmkit

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace lstmkit;
  m.doc() = "lstmkit native engine: fused CPU time loops for the built-in cells (forward and backward)";
  m.def("forward", &forward, "a whole sequence of one layer direction", py::arg("kernel"), py::arg("x"),
        py::arg("params"), py::arg("state0"), py::arg("valid"), py::arg("recurrent_mask"), py::arg("zoneout"),
        py::arg("zoneout_rate"), py::arg("reverse"), py::arg("carry_output"), py::arg("eps"), py::arg("store"));
  m.def("backward", &backward, "the gradients of forward's inputs", py::arg("kernel"), py::arg("grad_output"),
        py::arg("grad_state"), py::arg("x"), py::arg("params"), py::arg("saved"), py::arg("valid"),
        py::arg("recurrent_mask"), py::arg("zoneout"), py::arg("zoneout_rate"), py::arg("reverse"),
        py::arg("carry_output"), py::arg("eps"), py::arg("needs"));
  py::list names;
  for (const Kernel& k : kKernels) names.append(k.name);
  m.attr("kernels") = names;
#if defined(CPU_CAPABILITY_AVX2)
  m.attr("cpu_capability") = "AVX2";  // at::vec::Vectorized compiled to AVX2 intrinsics
#else
  m.attr("cpu_capability") = "DEFAULT";  // Vectorized falls back to plain loops over arrays
#endif
}
