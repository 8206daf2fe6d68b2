// Python bindings of the native time loops of the built-in cells: the two entry points of
// entry.h, with the kernel named by a string.
#include <torch/python.h>  // pybind11 and its tensor casters, without the C++ frontend (a quarter of the compile time)

#include "amx_gemm.h"
#include "entry.h"
#include "loop.h"

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

// The operands of a test product c + a W: float32 a (rows, k) with contiguous rows, c (rows, n) contiguous.
void check_product(const at::Tensor& a, const at::Tensor& w, const at::Tensor& c) {
  TORCH_CHECK_TYPE(a.scalar_type() == at::kFloat && a.dim() == 2 && a.stride(1) == 1,
                   "expected float32 a (rows, k) with contiguous rows");
  TORCH_CHECK_VALUE(c.is_contiguous() && c.size(0) == a.size(0) && c.size(1) == w.size(1),
                    "expected a contiguous c (rows, n)");
}

// c + a W (or a W) on a weight packed once, `repeats` times as for the steps of a call.
template <typename Packed>
at::Tensor repeated_product(const Packed& packed, const at::Tensor& a, const at::Tensor& c, bool accumulate,
                            bool threads, int64_t repeats) {
  at::Tensor out = c.clone();
  for (int64_t r = 0; r < repeats; ++r) {
    if (r) out.copy_(c);
    packed.run(out.data_ptr<float>(), a.data_ptr<float>(), a.stride(0), 0, a.size(0), accumulate, !threads);
  }
  return out;
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
  py::class_<Int8Packed, std::shared_ptr<Int8Packed>>(
      m, "Int8Packed", "an int8 weight (n, k) with a scale per row, packed for the int8 kernels (gemm.h)")
      .def(py::init<const at::Tensor&, const at::Tensor&>(), py::arg("weight"), py::arg("scale"))
      .def_property_readonly("shape", [](const Int8Packed& w) { return py::make_tuple(w.n(), w.k()); })
      .def_property_readonly("nbytes", &Int8Packed::nbytes);
  m.def("lstm_int8", &lstm_int8_forward, "int8 inference of one plain LSTM layer direction (int8_gemm.h)",
        py::arg("x"), py::arg("weight_ih"), py::arg("weight_hh"), py::arg("bias"), py::arg("h0"), py::arg("c0"),
        py::arg("reverse"), py::arg("valid") = py::none(), py::arg("carry_output") = false);
  m.def("gru_int8", &gru_int8_forward, "int8 inference of one GRU layer direction, reset_after (int8_gemm.h)",
        py::arg("x"), py::arg("weight_ih"), py::arg("weight_hh"), py::arg("bias_ih"), py::arg("bias_hh"),
        py::arg("h0"), py::arg("reverse"), py::arg("valid") = py::none(), py::arg("carry_output") = false);
  m.def(
      "int8_linear",
      [](const at::Tensor& a, const at::Tensor& w, const at::Tensor& scale, const OptTensor& bias) {
        TORCH_CHECK_TYPE(a.scalar_type() == at::kFloat && a.dim() == 2 && a.stride(1) == 1,
                         "expected float32 (rows, k) with contiguous rows");
        const at::Tensor b = bias ? bias->to(at::kFloat).contiguous() : at::Tensor();
        at::Tensor c = at::empty({a.size(0), w.size(0)}, a.options());
        const Int8Packed packed(w, scale);
        QuantizedWeight(packed, a.size(0))
            .run(c.data_ptr<float>(), a.data_ptr<float>(), a.stride(0), a.size(0), false,
                 bias ? b.data_ptr<float>() : nullptr);
        return c;
      },
      "dequant(q(a) W^T) [+ bias] on int8_gemm.h's kernel, a quantized per row (tests)", py::arg("a"),
      py::arg("weight"), py::arg("scale"), py::arg("bias"));
  m.def(
      "bf16_product",
      [](const at::Tensor& a, const at::Tensor& w, const at::Tensor& c, bool accumulate, bool threads,
         int64_t repeats) {
        TORCH_CHECK_VALUE(bf16::available(), "the bf16 kernels need a CPU with AVX512-BF16");
        check_product(a, w, c);
        return repeated_product(PairedWeight(w, a.size(0)), a, c, accumulate, threads, repeats);
      },
      "c + a W (or a W) through bf16 GEMMs' own kernel, AMX tiles where they run; `repeats` times on "
      "one packing, for timing (tests)",
      py::arg("a"), py::arg("weight"), py::arg("c"), py::arg("accumulate"), py::arg("threads") = true,
      py::arg("repeats") = 1);
  m.def(
      "fp32_product",
      [](const at::Tensor& a, const at::Tensor& w, const at::Tensor& c, bool accumulate, bool threads,
         int64_t repeats) {
        TORCH_CHECK_VALUE(fp32::available(), "the float32 kernel runs on AMD CPUs with AVX-512");
        check_product(a, w, c);
        return repeated_product(SlabWeight(w), a, c, accumulate, threads, repeats);
      },
      "c + a W (or a W) through fp32_gemm.h's kernel; `repeats` times on one packing, for timing (tests)",
      py::arg("a"), py::arg("weight"), py::arg("c"), py::arg("accumulate"), py::arg("threads") = true,
      py::arg("repeats") = 1);
  m.attr("fp32_kernel") = fp32::available();  // float32 per-step products on fp32_gemm.h's kernel
  m.def(
      "int8_sums",
      [](const at::Tensor& a8, const at::Tensor& w) {
        const Int8Packed packed(w, at::ones({w.size(0)}, at::kFloat));
        return QuantizedWeight(packed, 0).sums(a8);
      },
      "the kernel's raw int32 sums a8 W^T, a8 uint8 (rows, k), W int8 (n, k) (tests)", py::arg("a8"),
      py::arg("weight"));
  m.def(
      "int8_quantize_rows",
      [](const at::Tensor& a) {
        TORCH_CHECK_VALUE(int8::available(), "the int8 kernel needs a CPU with AVX512-VNNI or AVX2");
        TORCH_CHECK_TYPE(a.scalar_type() == at::kFloat && a.dim() == 2 && a.is_contiguous(),
                         "expected contiguous float32 (rows, k)");
        const int64_t k = a.size(1);
        const bool vnni = int8::kernel() == int8::Kernel::kVnni;  // shifted bytes, or int16 for AVX2
        at::Tensor q = at::empty(a.sizes(), a.options().dtype(vnni ? at::kByte : at::kShort));
        at::Tensor scales = at::empty({a.size(0)}, a.options());
        for (int64_t r = 0; r < a.size(0); ++r) {
          const float* row = a.data_ptr<float>() + r * k;
          scales.data_ptr<float>()[r] = vnni ? int8::quantize_row(row, k, q.data_ptr<uint8_t>() + r * k)
                                             : int8::avx2::quantize_row(row, k, q.data_ptr<int16_t>() + r * k);
        }
        return std::make_tuple(vnni ? q : (q + 128).to(at::kByte), scales);
      },
      "each row's shifted bytes round(a * 127 / max|a|) + 128 and scale max|a| / 127 (tests)", py::arg("a"));
  m.attr("int8_kernel") = int8::kernel_name();  // the ISA of int8 layers' integer products, or ""
  py::list names;
  for (const Kernel& k : kKernels) names.append(k.name);
  m.attr("kernels") = names;
  m.attr("avx512_bf16") = bf16::available();  // bf16 GEMMs below oneDNN's threshold run bf16_gemm.h's kernel
  m.attr("amx_bf16") = amx::available();  // and on AMX tiles (amx_gemm.h)
#if defined(CPU_CAPABILITY_AVX2)
  m.attr("cpu_capability") = "AVX2";  // at::vec::Vectorized compiled to AVX2 intrinsics
#else
  m.attr("cpu_capability") = "DEFAULT";  // Vectorized falls back to plain loops over arrays
#endif
}
