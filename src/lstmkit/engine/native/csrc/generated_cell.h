// The time loops of a user-defined cell whose pointwise step lstmkit translated to C++
// (lstmkit/engine/native/generated.py writes a struct Cell with the step's maths and includes this
// file). The loops are those of the built-in kernels (loop.h): the input projection as one GEMM,
// the recurrent GEMM per step with the packed weight, one vectorised pass per step over the rows,
// the backward's weight gradients as single GEMMs over all steps; the biases are added in the
// pass and their gradients, like those of the step's own parameters, summed into one running row
// per thread.
//
// The generated Cell provides
//   kStates (1 or 2), kGates (blocks of H in xg and hg), kSummed (xg and hg enter the step only
//   as xg + hg), kParams and kParamBlocks (the step's own parameters, each a multiple of H wide),
//   forward(in, j, n, new_state): the new states at columns [j, j + n) of one row;
//   backward(in, d_new, j, n, d_xg, d_hg, d_old, sums): the step's vector-Jacobian product there,
//     accumulating the parameters' gradients into sums (the thread's row, kParamBlocks * H wide).
// With kSummed, "xg" is the row of x W_ih^T + h W_hh^T and "bias" b_ih + b_hh; otherwise "xg",
// "hg" are the two projections and "bias", "bias_hh" their biases. Absent biases are zeros.
#pragma once

#include <torch/python.h>  // pybind11 and its tensor casters, without the C++ frontend (a quarter of the compile time)

#include <array>

#include "entry.h"
#include "loop.h"

namespace lstmkit {

// One row's inputs of the generated step.
template <typename T>
struct StepIn {
  int64_t H;
  const T* xg;
  const T* hg;
  const T* bias;
  const T* bias_hh;
  const T* state[2];
  const T* const* params;

  Vectorized<T> load(const T* base, int64_t block, int64_t j, int64_t n) const {
    return Vectorized<T>::loadu(base + block * H + j, n);
  }
};

template <typename Cell>
struct GeneratedKernel {
  static constexpr int kStates = Cell::kStates;
  static constexpr int kGates = Cell::kGates;
  static constexpr bool kSummed = Cell::kSummed;

  static int64_t param_width(int64_t H) {
    int64_t blocks = 0;
    for (int k = 0; k < Cell::kParams; ++k) blocks += Cell::kParamBlocks[k];
    return blocks * H;
  }

  static Shapes check(const SequenceArgs& a) {
    const Shapes s = check_common(a, kGates, kStates);  // (entry.h checked the number of parameters)
    for (int k = 0; k < Cell::kParams; ++k) checked_param(a, 4 + k, "a parameter of the cell", {Cell::kParamBlocks[k] * s.H});
    return s;
  }

  // b_ih [+ b_hh] as one vector, or zeros.
  static at::Tensor bias(const SequenceArgs& a, const Shapes& s, bool both) {
    if (!a.params[2]) return at::zeros({kGates * s.H}, a.x.options());
    return both ? *a.params[2] + *a.params[3] : *a.params[2];
  }

  template <typename T>
  static std::vector<const T*> param_pointers(const SequenceArgs& a) {
    std::vector<const T*> out;
    for (int k = 0; k < Cell::kParams; ++k) out.push_back(param(a, 4 + k).template data_ptr<T>());
    return out;
  }

  // Returns {output, final states, histories, h_rec, xg (summed: xg + hg without biases) [, hg]}.
  static std::vector<at::Tensor> forward(const SequenceArgs& a) {
    const Shapes s = check(a);
    c10::NoGradGuard no_grad;
    ForwardLoop loop(a, s, /*beside_input=*/a.store);  // only the backward reads x beside h
    const int64_t B = s.B, G = kGates * s.H;
    at::Tensor xg = project_input(a, s, std::nullopt);  // x W_ih^T, all steps
    const at::Tensor hg = kSummed ? at::Tensor() : at::empty({s.T, B, G}, a.x.options());
    const at::Tensor b_ih = bias(a, s, kSummed);
    const at::Tensor b_hh = kSummed || !a.params[3] ? b_ih.new_zeros({G}) : *a.params[3];
    const RowBlocks blocks(B, param(a, 1), /*split=*/true);
    const StepGemm recurrent(param(a, 1), blocks, /*transpose=*/true, a.bf16, a.x.size(0));
    AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "generated_forward", [&] {
      using T = scalar_t;
      const std::vector<const T*> params = param_pointers<T>(a);
      blocks.run([&] {
        for (int64_t k = 0; k < s.T; ++k) {
          const int64_t t = loop.time(k);
          if (kSummed) {
            recurrent.run(Step{xg, t}, loop.gemm_in(t), /*accumulate=*/true);  // xg[t] += h_{t-1} W_hh^T
          } else {
            recurrent.run(Step{hg, t}, loop.gemm_in(t), /*accumulate=*/false);  // hg[t] = h_{t-1} W_hh^T
          }
          const auto p = loop.rows<T>(k);
          const T* xg_t = Step{xg, t}.data<T>();
          const T* hg_t = kSummed ? nullptr : Step{hg, t}.data<T>();
          p.for_rows(G, [&](int64_t b) {
            const StepIn<T> in{s.H,          xg_t + b * G, hg_t ? hg_t + b * G : nullptr, b_ih.data_ptr<T>(),
                               b_hh.data_ptr<T>(), {p.h_old + b * p.hs, kStates > 1 ? p.c_old + b * s.H : nullptr},
                               params.data()};
            for_chunks<T>(s.H, [&](int64_t j, int64_t n) {
              std::array<Vectorized<T>, kStates> next;
              Cell::forward(in, j, n, next.data());
              if constexpr (kStates > 1) p.emit_c(b, j, n, next[1]);
              p.emit_h(b, j, n, next[0]);
            });
          });
        }
      });
    });
    return kSummed ? loop.results({xg}) : loop.results({xg, hg});
  }

  // Returns {dx, dW_ih, dW_hh, db_ih, db_hh, d params..., d initial states...}.
  static std::vector<at::Tensor> backward(const SequenceArgs& a) {
    const Shapes s = check(a);
    const int64_t B = s.B, H = s.H, G = kGates * H;
    c10::NoGradGuard no_grad;
    BackwardLoop loop(a, s, kStates);
    const at::Tensor& xg = loop.saved(0);
    check_same(xg, "xg", a.x, {s.T, B, G});
    const at::Tensor hg = kSummed ? at::Tensor() : loop.saved(1);
    if (!kSummed) check_same(hg, "hg", a.x, {s.T, B, G});
    const auto options = a.x.options();
    at::Tensor dxg = at::empty({s.T, B, G}, options);
    const at::Tensor dhg = kSummed ? dxg : at::empty({s.T, B, G}, options);
    const at::Tensor b_ih = bias(a, s, kSummed);
    const at::Tensor b_hh = kSummed || !a.params[3] ? b_ih.new_zeros({G}) : *a.params[3];
    const int64_t bias_width = kSummed ? G : 2 * G;  // the running sums: d biases, then d params
    const ThreadSums sums(bias_width + param_width(H), options);
    const RowBlocks blocks(B, param(a, 1), /*split=*/true);
    const StepGemm recurrent(param(a, 1), blocks, /*transpose=*/false, a.bf16, a.x.size(0));  // dh_{t-1} += dhg[t] W_hh
    AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "generated_backward", [&] {
      using T = scalar_t;
      using Vec = Vectorized<T>;
      const std::vector<const T*> params = param_pointers<T>(a);
      blocks.run([&] {
        for (int64_t k = s.T - 1; k >= 0; --k) {
          const int64_t t = loop.time(k);
          const auto p = loop.rows<T>(k);
          const T* xg_t = Step{xg, t}.data<T>();
          const T* hg_t = kSummed ? nullptr : Step{hg, t}.data<T>();
          T* dxg_t = Step{dxg, t}.data<T>();
          T* dhg_t = Step{dhg, t}.data<T>();
          auto zero = [&](int64_t b) {
            std::fill(dxg_t + b * G, dxg_t + (b + 1) * G, T(0));
            if (!kSummed) std::fill(dhg_t + b * G, dhg_t + (b + 1) * G, T(0));
          };
          p.for_rows(G, zero, [&](int64_t b) {
            const StepIn<T> in{H,          xg_t + b * G, hg_t ? hg_t + b * G : nullptr, b_ih.data_ptr<T>(),
                               b_hh.data_ptr<T>(), {p.h_old + b * p.hs, kStates > 1 ? p.c_old + b * H : nullptr},
                               params.data()};
            T* row_sums = sums.template mine<T>();
            for_chunks<T>(H, [&](int64_t j, int64_t n) {
              const auto dh = p.dh_new(b, j, n);
              std::array<Vec, kStates> d_new, d_old;
              d_new[0] = dh.now;
              typename BackwardRows<T>::Split dc{Vec(T(0)), Vec(T(0))};
              if constexpr (kStates > 1) {
                dc = p.dc_new(b, j, n);
                d_new[1] = dc.now;
              }
              std::array<Vec, kGates> d_xg, d_hg;
              Cell::backward(in, d_new.data(), j, n, d_xg.data(), d_hg.data(), d_old.data(), row_sums + bias_width);
              for (int g = 0; g < kGates; ++g) {
                const int64_t col = g * H + j;
                d_xg[g].store(dxg_t + b * G + col, n);
                accumulate(row_sums + col, n, d_xg[g]);  // db_ih (+ db_hh) += d xg
                if (!kSummed) {
                  d_hg[g].store(dhg_t + b * G + col, n);
                  accumulate(row_sums + G + col, n, d_hg[g]);  // db_hh += d hg
                }
              }
              p.store_dh(b, j, n, d_old[0] + dh.old);  // the recurrent GEMM's share is added after the pass
              if constexpr (kStates > 1) p.store_dc(b, j, n, d_old[1] + dc.old);
            });
          });
          loop.add_recurrent(Step{dhg, t}, recurrent);  // dh_{t-1} += dhg[t] W_hh
        }
      });
    });
    auto dstates = loop.initial_state_grads();
    at::Tensor dx, dw_ih, dw_hh, db_ih, db_hh;
    loop.weight_grads(dxg, dhg, dx, dw_ih, dw_hh);  // dW_ih = dxg^T x, dW_hh = sum_t dhg_t^T h_{t-1}
    const at::Tensor total = sums.total();
    if (kSummed) {
      std::tie(db_ih, db_hh) = shared_bias_grads(a, [&] { return total.narrow(0, 0, G); });
    } else {
      if (needs_param(a, 2)) db_ih = total.narrow(0, 0, G);
      if (needs_param(a, 3)) db_hh = total.narrow(0, G, G);
    }
    std::vector<at::Tensor> dparams{dw_ih, dw_hh, db_ih, db_hh};
    int64_t offset = bias_width;
    for (int k = 0; k < Cell::kParams; ++k) {
      const int64_t width = Cell::kParamBlocks[k] * H;
      dparams.push_back(needs_param(a, 4 + k) ? total.narrow(0, offset, width) : at::Tensor());
      offset += width;
    }
    return gradients(dx, dparams, dstates);
  }
};

}  // namespace lstmkit

// The module of one generated cell: entry.h's forward and backward with this cell's kernel, so
// the lstmkit::sequence_forward/_backward operators drive it like a built-in one (of the kernel
// name only its precision suffix counts).
#define LSTMKIT_GENERATED_MODULE(CELL)                                                                     \
  PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {                                                               \
    using lstmkit::GeneratedKernel;                                                                        \
    static const lstmkit::Kernel kernel{"generated", 4 + CELL::kParams, CELL::kStates,                    \
                                        GeneratedKernel<CELL>::forward, GeneratedKernel<CELL>::backward};  \
    m.def("forward", [](const std::string& name, const at::Tensor& x, std::vector<lstmkit::OptTensor> params,   \
                        std::vector<at::Tensor> state0, lstmkit::OptTensor valid, lstmkit::OptTensor rmask, \
                        std::vector<at::Tensor> zoneout, double rate, bool reverse, bool carry, double eps, \
                        bool store) {                                                                      \
      return lstmkit::run_forward(kernel, name, x, std::move(params), std::move(state0), std::move(valid),       \
                                  std::move(rmask), std::move(zoneout), rate, reverse, carry, eps, store); \
    });                                                                                                    \
    m.def("backward", [](const std::string& name, const at::Tensor& grad_output,                          \
                         std::vector<at::Tensor> grad_state, const at::Tensor& x, std::vector<lstmkit::OptTensor> params,                      \
                         std::vector<at::Tensor> saved, lstmkit::OptTensor valid, lstmkit::OptTensor rmask, \
                         std::vector<at::Tensor> zoneout, double rate, bool reverse, bool carry, double eps, \
                         std::vector<bool> needs) {                                                        \
      return lstmkit::run_backward(kernel, name, grad_output, std::move(grad_state), x, std::move(params),       \
                                   std::move(saved), std::move(valid), std::move(rmask), std::move(zoneout), \
                                   rate, reverse, carry, eps, std::move(needs));                           \
    });                                                                                                    \
  }
