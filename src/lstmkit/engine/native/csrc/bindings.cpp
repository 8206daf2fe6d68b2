// Python bindings of the native time loops of the built-in cells: the two entry points of
// entry.h, with the kernel named by a string.
#include <torch/extension.h>

#include "bf16_gemm.h"
#include "entry.h"

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
  const std::string base = kernel_base(name);
  for (const Kernel& k : kKernels) {
    if (base == k.name) return k;
  }
  TORCH_CHECK_VALUE(false, "unknown kernel '", name, "'");
}

std::vector<at::Tensor> forward(const std::string& name, const at::Tensor& x, std::vector<OptTensor> params,
                                std::vector<at::Tensor> state0, OptTensor valid, OptTensor rmask,
                                std::vector<at::Tensor> zoneout, double zoneout_rate, bool reverse, bool carry_output,
                                double eps, bool store) {
  return run_forward(kernel(name), name, x, std::move(params), std::move(state0), std::move(valid), std::move(rmask),
                     std::move(zoneout), zoneout_rate, reverse, carry_output, eps, store);
}

std::vector<at::Tensor> backward(const std::string& name, const at::Tensor& grad_output,
                                 std::vector<at::Tensor> grad_state, const at::Tensor& x,
                                 std::vector<OptTensor> params, std::vector<at::Tensor> saved, OptTensor valid,
                                 OptTensor rmask, std::vector<at::Tensor> zoneout, double zoneout_rate, bool reverse,
                                 bool carry_output, double eps, std::vector<bool> needs) {
  return run_backward(kernel(name), name, grad_output, std::move(grad_state), x, std::move(params), std::move(saved),
                      std::move(valid), std::move(rmask), std::move(zoneout), zoneout_rate, reverse, carry_output, eps,
                      std::move(needs));
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
  m.attr("avx512_bf16") = bf16::available();  // bf16 GEMMs below oneDNN's threshold run bf16_gemm.h's kernel
#if defined(CPU_CAPABILITY_AVX2)
  m.attr("cpu_capability") = "AVX2";  // at::vec::Vectorized compiled to AVX2 intrinsics
#else
  m.attr("cpu_capability") = "DEFAULT";  // Vectorized falls back to plain loops over arrays
#endif
}
