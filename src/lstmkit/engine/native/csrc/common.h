// Shared pieces of the native time loops: vectorised activations, argument checks, step indexing,
// and the declarations of the entry points bound in bindings.cpp.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <optional>
#include <vector>

namespace lstmkit {

using at::vec::Vectorized;
using OptTensor = std::optional<at::Tensor>;

// ---------------------------------------------------------------------------------------------
// Entry points (see lstm.cpp and gru.cpp for the equations and return values).
// ---------------------------------------------------------------------------------------------
std::vector<at::Tensor> lstm_forward(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                                     const OptTensor& b_ih, const OptTensor& b_hh, const at::Tensor& h0,
                                     const at::Tensor& c0, const OptTensor& valid, const OptTensor& rmask,
                                     const OptTensor& zoneout_h, const OptTensor& zoneout_c, double zoneout_rate,
                                     bool reverse, bool carry_output, bool store_gates);
std::vector<at::Tensor> lstm_backward(const at::Tensor& grad_output, const at::Tensor& grad_hn,
                                      const at::Tensor& grad_cn, const at::Tensor& x, const at::Tensor& w_ih,
                                      const at::Tensor& w_hh, const at::Tensor& gates, const at::Tensor& hs,
                                      const at::Tensor& cs, const OptTensor& h_rec, const OptTensor& valid,
                                      const OptTensor& rmask, const OptTensor& zoneout_h, const OptTensor& zoneout_c,
                                      double zoneout_rate, bool reverse, bool carry_output, bool need_dx,
                                      bool need_weights, bool need_bias);
std::vector<at::Tensor> gru_forward(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                                    const OptTensor& b_ih, const OptTensor& b_hh, const at::Tensor& h0,
                                    const OptTensor& valid, const OptTensor& rmask, const OptTensor& zoneout_h,
                                    double zoneout_rate, bool reverse, bool carry_output, bool store_gates);
std::vector<at::Tensor> gru_backward(const at::Tensor& grad_output, const at::Tensor& grad_hn, const at::Tensor& x,
                                     const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& gates,
                                     const at::Tensor& hn, const at::Tensor& hs, const OptTensor& h_rec,
                                     const OptTensor& valid, const OptTensor& rmask, const OptTensor& zoneout_h,
                                     double zoneout_rate, bool reverse, bool carry_output, bool need_dx,
                                     bool need_weights, bool need_bias);

// ---------------------------------------------------------------------------------------------
// Vectorised activations.
// ---------------------------------------------------------------------------------------------
#ifndef LSTMKIT_GRAIN
#define LSTMKIT_GRAIN 4096
#endif

// e^x. float: at::vec's inlined polynomial exp_u20 (a few ulp) instead of an out-of-line Sleef
// call, about twice as fast for the whole step; double: Sleef's exp (1 ulp).
inline Vectorized<float> fast_exp(const Vectorized<float>& x) {
#ifdef LSTMKIT_SLEEF
  return x.exp();
#else
  return x.exp_u20();
#endif
}
inline Vectorized<double> fast_exp(const Vectorized<double>& x) { return x.exp(); }

template <typename T>
inline Vectorized<T> sigmoid(const Vectorized<T>& x) {
  const Vectorized<T> one(T(1));
  return one / (one + fast_exp(x.neg()));  // σ(x) = 1 / (1 + e^{-x})
}

template <typename T>
inline Vectorized<T> tanh(const Vectorized<T>& x) {
#ifdef LSTMKIT_SLEEF
  return x.tanh();
#else
  const Vectorized<T> two(T(2));
  return two * sigmoid(two * x) - Vectorized<T>(T(1));  // tanh(x) = 2 σ(2x) - 1
#endif
}

// Rows per parallel chunk: only split the batch when each chunk has enough gate values (4096,
// measured on 2 cores) to pay for waking a second thread. at::parallel_for is OpenMP inline code:
// without -fopenmp it silently runs on one thread.
inline int64_t grain_rows(int64_t gate_width) { return std::max<int64_t>(1, LSTMKIT_GRAIN / gate_width); }

// Zoneout coefficient for one step: a per-element 0/1 "keep the old value" mask (training), a
// constant rate (evaluation: the expectation), or nothing.
template <typename T>
struct Zoneout {
  const T* h = nullptr;  // (B, H) mask block of this step, or nullptr
  const T* c = nullptr;  // (LSTM only)
  T rate = T(0);         // used when the masks are absent
  bool active() const { return h != nullptr || rate != T(0); }
};

// ---------------------------------------------------------------------------------------------
// Argument checks: every problem is a Python exception (TypeError / ValueError), never a crash.
// ---------------------------------------------------------------------------------------------
inline void check_same(const at::Tensor& t, const char* name, const at::Tensor& like, at::IntArrayRef shape) {
  TORCH_CHECK_VALUE(t.defined(), name, " is undefined");
  TORCH_CHECK_VALUE(t.device().is_cpu(), name, " must be a CPU tensor, got device ", t.device());
  TORCH_CHECK_TYPE(t.scalar_type() == like.scalar_type(), name, " must have dtype ", like.scalar_type(),
                   " (the input's), got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.sizes() == shape, name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK_VALUE(t.is_contiguous(), name, " must be contiguous (call .contiguous())");
}

inline void check_valid(const OptTensor& valid, int64_t T, int64_t B) {
  if (!valid) return;
  TORCH_CHECK_VALUE(valid->device().is_cpu(), "valid must be a CPU tensor");
  TORCH_CHECK_TYPE(valid->scalar_type() == at::kBool, "valid must be a bool tensor, got ", valid->scalar_type());
  TORCH_CHECK_VALUE(valid->sizes() == at::IntArrayRef({T, B}), "valid must have shape (T, B) = (", T, ", ", B,
                    "), got ", valid->sizes());
  TORCH_CHECK_VALUE(valid->is_contiguous(), "valid must be contiguous");
}

struct Shapes {
  int64_t T, B, I, H;
};

// Checks input, weights (gates stacked G blocks of H rows), biases and the optional masks.
inline Shapes check_args(int64_t gates, const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                         const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& valid, const OptTensor& rmask) {
  TORCH_CHECK_VALUE(x.defined() && x.dim() == 3, "input must be a 3-D (T, B, I) tensor, got ",
                    x.defined() ? x.dim() : 0, " dimensions");
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
                   "input must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK_VALUE(w_hh.defined() && w_hh.dim() == 2 && w_hh.size(0) == gates * w_hh.size(1),
                    "weight_hh must have shape (", gates, "H, H), got ", w_hh.sizes());
  const Shapes s{x.size(0), x.size(1), x.size(2), w_hh.size(1)};
  check_same(x, "input", x, {s.T, s.B, s.I});
  check_same(w_ih, "weight_ih", x, {gates * s.H, s.I});
  check_same(w_hh, "weight_hh", x, {gates * s.H, s.H});
  TORCH_CHECK_VALUE(b_ih.has_value() == b_hh.has_value(), "give both bias_ih and bias_hh or neither");
  if (b_ih) check_same(*b_ih, "bias_ih", x, {gates * s.H});
  if (b_hh) check_same(*b_hh, "bias_hh", x, {gates * s.H});
  check_valid(valid, s.T, s.B);
  if (rmask) check_same(*rmask, "recurrent_mask", x, {s.B, s.H});
  return s;
}

template <typename T>
const T* data_or_null(const OptTensor& t) {
  return t ? t->data_ptr<T>() : nullptr;
}

// Time index of the k-th processed step, and the history slots it reads and writes: a (T+1)-slot
// history makes "the state entering step t" the contiguous time-ordered slice
// [0, T) forward and [1, T] in reverse.
inline int64_t time_of(int64_t k, int64_t T, bool reverse) { return reverse ? T - 1 - k : k; }
inline int64_t slot_in(int64_t t, bool reverse) { return reverse ? t + 1 : t; }
inline int64_t slot_out(int64_t t, bool reverse) { return reverse ? t : t + 1; }

}  // namespace lstmkit
