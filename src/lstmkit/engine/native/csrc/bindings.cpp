// Python bindings of the native time loops (the only file that includes torch/extension.h).
#include <torch/extension.h>

#include "common.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace lstmkit;
  m.doc() = "lstmkit native engine: fused CPU time loops for LSTM and GRU (forward and backward)";
  m.def("lstm_forward", &lstm_forward, "LSTM sequence forward", py::arg("x"), py::arg("weight_ih"),
        py::arg("weight_hh"), py::arg("bias_ih"), py::arg("bias_hh"), py::arg("h0"), py::arg("c0"), py::arg("valid"),
        py::arg("recurrent_mask"), py::arg("zoneout_h"), py::arg("zoneout_c"), py::arg("zoneout_rate"),
        py::arg("reverse"), py::arg("carry_output"), py::arg("store_gates"));
  m.def("lstm_backward", &lstm_backward, "LSTM sequence backward", py::arg("grad_output"), py::arg("grad_h_n"),
        py::arg("grad_c_n"), py::arg("x"), py::arg("weight_ih"), py::arg("weight_hh"), py::arg("gates"),
        py::arg("hs"), py::arg("cs"), py::arg("h_rec"), py::arg("valid"), py::arg("recurrent_mask"),
        py::arg("zoneout_h"), py::arg("zoneout_c"), py::arg("zoneout_rate"), py::arg("reverse"),
        py::arg("carry_output"), py::arg("need_dx"), py::arg("need_weights"), py::arg("need_bias"));
  m.def("gru_forward", &gru_forward, "GRU (reset_after) sequence forward", py::arg("x"), py::arg("weight_ih"),
        py::arg("weight_hh"), py::arg("bias_ih"), py::arg("bias_hh"), py::arg("h0"), py::arg("valid"),
        py::arg("recurrent_mask"), py::arg("zoneout_h"), py::arg("zoneout_rate"), py::arg("reverse"),
        py::arg("carry_output"), py::arg("store_gates"));
  m.def("gru_backward", &gru_backward, "GRU (reset_after) sequence backward", py::arg("grad_output"),
        py::arg("grad_h_n"), py::arg("x"), py::arg("weight_ih"), py::arg("weight_hh"), py::arg("gates"),
        py::arg("hn"), py::arg("hs"), py::arg("h_rec"), py::arg("valid"), py::arg("recurrent_mask"),
        py::arg("zoneout_h"), py::arg("zoneout_rate"), py::arg("reverse"), py::arg("carry_output"),
        py::arg("need_dx"), py::arg("need_weights"), py::arg("need_bias"));
#if defined(CPU_CAPABILITY_AVX2)
  m.attr("cpu_capability") = "AVX2";  // at::vec::Vectorized compiled to AVX2 intrinsics
#else
  m.attr("cpu_capability") = "DEFAULT";  // Vectorized falls back to plain loops over arrays
#endif
}
