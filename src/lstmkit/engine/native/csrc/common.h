// Shared pieces of the native time loops: the arguments of a call, the kernels' entry points,
// vectorised activations, argument checks, step indexing. loop.h builds the time-loop scaffolding
// every cell uses on top of it.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

namespace lstmkit {

using at::vec::Vectorized;
using OptTensor = std::optional<at::Tensor>;

// ---------------------------------------------------------------------------------------------
// One call of a kernel: the same arguments for every cell, forward and backward.
// ---------------------------------------------------------------------------------------------
struct SequenceArgs {
  at::Tensor x;                     // (T, B, I)
  std::vector<OptTensor> params;    // weight_ih, weight_hh, bias_ih, bias_hh, then the cell's own
  std::vector<at::Tensor> state0;   // h0 (B, R) [, c0 (B, H)]; forward only
  OptTensor valid;                  // (T, B) bool: false = padded step (state carried)
  OptTensor rmask;                  // (B, R) recurrent mask multiplying h before the recurrent GEMM
  std::vector<at::Tensor> zoneout;  // one (T, B, size) 0/1 "keep the old value" mask per state, or none
  double zoneout_rate = 0.0;        // without masks: the constant mixing rate (evaluation)
  bool reverse = false;             // walk t = T-1 .. 0
  bool carry_output = false;        // a padded step repeats the previous output instead of zeros
  double eps = 0.0;                 // layer-norm epsilon (LayerNormLSTM)
  bool store = true;                // forward: keep what the backward pass needs
  bool bf16 = false;                // GEMMs on bfloat16 operands, float32 results (gemm.h, "GEMM precision")
  // backward only
  at::Tensor grad_output;               // (T, B, R)
  std::vector<at::Tensor> grad_state;   // dL/d final states
  std::vector<at::Tensor> saved;        // what forward returned after the final states
  std::vector<bool> needs;              // gradient wanted for x, then for each parameter
};

using KernelFn = std::vector<at::Tensor> (*)(const SequenceArgs&);

// A cell's pair of entry points. forward returns {output, final states..., saved...};
// backward returns {dx, one gradient per parameter, one per initial state} (undefined = None).
struct Kernel {
  const char* name;
  int params;  // number of parameter slots (optional ones may be None)
  int states;  // 1 (h) or 2 (h, c)
  KernelFn forward;
  KernelFn backward;
};

std::vector<at::Tensor> rnn_tanh_forward(const SequenceArgs& a);
std::vector<at::Tensor> rnn_tanh_backward(const SequenceArgs& a);
std::vector<at::Tensor> rnn_relu_forward(const SequenceArgs& a);
std::vector<at::Tensor> rnn_relu_backward(const SequenceArgs& a);
std::vector<at::Tensor> lstm_forward(const SequenceArgs& a);
std::vector<at::Tensor> lstm_backward(const SequenceArgs& a);
std::vector<at::Tensor> lstm_projection_forward(const SequenceArgs& a);
std::vector<at::Tensor> lstm_projection_backward(const SequenceArgs& a);
std::vector<at::Tensor> peephole_lstm_forward(const SequenceArgs& a);
std::vector<at::Tensor> peephole_lstm_backward(const SequenceArgs& a);
std::vector<at::Tensor> layernorm_lstm_forward(const SequenceArgs& a);
std::vector<at::Tensor> layernorm_lstm_backward(const SequenceArgs& a);
std::vector<at::Tensor> gru_forward(const SequenceArgs& a);
std::vector<at::Tensor> gru_backward(const SequenceArgs& a);
std::vector<at::Tensor> gru_reset_before_forward(const SequenceArgs& a);
std::vector<at::Tensor> gru_reset_before_backward(const SequenceArgs& a);
// int8 inference of a plain LSTM on int8_gemm.h's or int8_avx2.h's kernel (lstm.cpp), weights packed
// (Int8Packed, gemm.h): {output, h_n, c_n}. valid (T, B) bool or none, carry_output: as forward's (loop.h).
class Int8Packed;
std::vector<at::Tensor> lstm_int8_forward(const at::Tensor& x, const Int8Packed& w_ih, const Int8Packed& w_hh,
                                          const OptTensor& bias, const at::Tensor& h0, const at::Tensor& c0,
                                          bool reverse, const OptTensor& valid, bool carry_output);
// int8 inference of a GRU with reset_after, likewise (gru.cpp): {output, h_n}.
std::vector<at::Tensor> gru_int8_forward(const at::Tensor& x, const Int8Packed& w_ih, const Int8Packed& w_hh,
                                         const OptTensor& bias_ih, const OptTensor& bias_hh, const at::Tensor& h0,
                                         bool reverse, const OptTensor& valid, bool carry_output);

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

// Derivatives written through the activation's value y: σ' = y (1 - y), tanh' = 1 - y².
template <typename T>
inline Vectorized<T> dsigmoid(const Vectorized<T>& y) {
  return y * (Vectorized<T>(T(1)) - y);
}
template <typename T>
inline Vectorized<T> dtanh(const Vectorized<T>& y) {
  return Vectorized<T>(T(1)) - y * y;
}

// Sum of the first n lanes (the lanes past a row's end hold whatever the maths made of zeros).
template <typename T>
inline T sum_lanes(const Vectorized<T>& v, int64_t n) {
  T lanes[Vectorized<T>::size()];
  v.store(lanes);
  T total = T(0);
  for (int64_t k = 0; k < n; ++k) total += lanes[k];
  return total;
}

// Rows per parallel chunk: only split the batch when each chunk has enough gate values (4096) to pay
// for waking a second thread (docs/engine.md). at::parallel_for is OpenMP inline code:
// without -fopenmp it silently runs on one thread.
inline int64_t grain_rows(int64_t gate_width) { return std::max<int64_t>(1, LSTMKIT_GRAIN / gate_width); }

// sum[0, n) += v
template <typename T>
inline void accumulate(T* sum, int64_t n, const Vectorized<T>& v) {
  (Vectorized<T>::loadu(sum, n) + v).store(sum, n);
}

// Sums over the batch rows of every step, kept as one running row per thread (threads, width) and
// added up after the loop: no (T, B, width) product and no pass over one afterwards.
class ThreadSums {
 public:
  ThreadSums(int64_t width, const at::TensorOptions& options)
      : threads_(at::get_num_threads()), width_(width), sums_(at::zeros({threads_, width}, options)) {}

  // The calling thread's running row (inside at::parallel_for).
  template <typename T>
  T* mine() const {
    const int64_t thread = at::get_thread_num();
    TORCH_INTERNAL_ASSERT(thread < threads_, "thread ", thread, " of ", threads_);
    return static_cast<T*>(sums_.data_ptr()) + thread * width_;
  }
  at::Tensor total() const { return sums_.sum(0); }

 private:
  int64_t threads_, width_;
  at::Tensor sums_;
};

// Calls f(j, n) for the SIMD chunks [j, j + n) of a row of `width` values (the last one partial).
template <typename T, typename F>
inline void for_chunks(int64_t width, const F& f) {
  constexpr int64_t lanes = Vectorized<T>::size();
  for (int64_t j = 0; j < width; j += lanes) f(j, std::min<int64_t>(lanes, width - j));
}

// ---------------------------------------------------------------------------------------------
// Argument checks: every problem is a Python exception (TypeError / ValueError), never a crash.
// ---------------------------------------------------------------------------------------------
inline void check_same(const at::Tensor& t, const char* name, const at::Tensor& like, at::IntArrayRef shape,
                       bool contiguous = true) {
  TORCH_CHECK_VALUE(t.defined(), name, " is undefined");
  TORCH_CHECK_VALUE(t.device().is_cpu(), name, " must be a CPU tensor, got device ", t.device());
  TORCH_CHECK_TYPE(t.scalar_type() == like.scalar_type(), name, " must have dtype ", like.scalar_type(),
                   " (the input's), got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.sizes() == shape, name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK_VALUE(!contiguous || t.is_contiguous(), name, " must be contiguous (call .contiguous())");
}

inline void check_valid(const OptTensor& valid, int64_t T, int64_t B) {
  if (!valid) return;
  TORCH_CHECK_VALUE(valid->device().is_cpu(), "valid must be a CPU tensor");
  TORCH_CHECK_TYPE(valid->scalar_type() == at::kBool, "valid must be a bool tensor, got ", valid->scalar_type());
  TORCH_CHECK_VALUE(valid->sizes() == at::IntArrayRef({T, B}), "valid must have shape (T, B) = (", T, ", ", B,
                    "), got ", valid->sizes());
  TORCH_CHECK_VALUE(valid->is_contiguous(), "valid must be contiguous");
}

// T steps, batch B, input I, hidden H (cell state and gate blocks), recurrent R (h: H, or the
// projection size), G gate blocks.
struct Shapes {
  int64_t T, B, I, H, R, G;
};

// Checks everything every cell has: input, weight_ih (G*H, I), weight_hh (G*H, R), both biases
// (G*H) or neither, valid, recurrent mask, initial states and zoneout masks (h: R wide, c: H wide).
// R is the width of weight_hh unless the cell projects h (then the caller's projection size).
inline Shapes check_common(const SequenceArgs& a, int64_t gates, int64_t states, int64_t projection = 0) {
  const at::Tensor& x = a.x;
  TORCH_CHECK_VALUE(x.defined() && x.dim() == 3, "input must be a 3-D (T, B, I) tensor, got ",
                    x.defined() ? x.dim() : 0, " dimensions");
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
                   "input must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK_VALUE(a.params.size() >= 4 && a.params[0] && a.params[1], "weight_ih and weight_hh are required");
  const at::Tensor& w_hh = *a.params[1];
  const char* form = gates == 1 ? "(H, H)" : gates == 3 ? "(3H, H)" : "(4H, H)";
  TORCH_CHECK_VALUE(w_hh.dim() == 2 && (projection ? w_hh.size(0) % gates == 0 : w_hh.size(0) == gates * w_hh.size(1)),
                    "weight_hh must have shape ", projection ? "(4H, P)" : form, ", got ", w_hh.sizes());
  const int64_t H = projection ? w_hh.size(0) / gates : w_hh.size(1);
  const Shapes s{x.size(0), x.size(1), x.size(2), H, projection ? projection : H, gates};
  check_same(x, "input", x, {s.T, s.B, s.I});
  check_same(*a.params[0], "weight_ih", x, {gates * s.H, s.I});
  check_same(w_hh, "weight_hh", x, {gates * s.H, s.R});
  TORCH_CHECK_VALUE(a.params[2].has_value() == a.params[3].has_value(), "give both bias_ih and bias_hh or neither");
  if (a.params[2]) check_same(*a.params[2], "bias_ih", x, {gates * s.H});
  if (a.params[3]) check_same(*a.params[3], "bias_hh", x, {gates * s.H});
  check_valid(a.valid, s.T, s.B);
  if (a.rmask) check_same(*a.rmask, "recurrent_mask", x, {s.B, s.R});
  static const char* state_names[] = {"h0", "c0"};
  static const char* zoneout_names[] = {"zoneout_h", "zoneout_c"};
  TORCH_CHECK_VALUE(a.state0.empty() || static_cast<int64_t>(a.state0.size()) == states, "expected ", states,
                    " initial states, got ", a.state0.size());
  TORCH_CHECK_VALUE(a.zoneout.empty() || static_cast<int64_t>(a.zoneout.size()) == states,
                    states == 1 ? "give one zoneout mask or none" : "give both zoneout masks or neither");
  for (int64_t k = 0; k < states; ++k) {
    const int64_t width = k == 0 ? s.R : s.H;
    if (!a.state0.empty()) check_same(a.state0[k], state_names[k], x, {s.B, width});
    if (!a.zoneout.empty()) check_same(a.zoneout[k], zoneout_names[k], x, {s.T, s.B, width});
  }
  TORCH_CHECK_VALUE(a.zoneout_rate >= 0.0 && a.zoneout_rate < 1.0, "zoneout_rate must lie in [0, 1), got ",
                    a.zoneout_rate);
  return s;
}

inline const at::Tensor& param(const SequenceArgs& a, size_t k) { return *a.params[k]; }

// The parameter slot k, checked to be present with the given shape.
inline const at::Tensor& checked_param(const SequenceArgs& a, size_t k, const char* name, at::IntArrayRef shape) {
  TORCH_CHECK_VALUE(k < a.params.size() && a.params[k].has_value(), name, " is required");
  check_same(*a.params[k], name, a.x, shape);
  return *a.params[k];
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

// Step t of a time-major (T, B, n) tensor, or the whole of a (B, n) tensor (t < 0), named without
// making a view: the kernels and the packed GEMM take its pointer, and view() makes the ATen view
// only where ATen computes (T views per tensor per sequence cost a small step a few per cent:
// docs/engine.md).
struct Step {
  const at::Tensor& tensor;
  int64_t t = -1;

  template <typename T>
  T* data() const { return tensor.data_ptr<T>() + (t < 0 ? 0 : t * tensor.stride(0)); }
  at::Tensor view() const { return t < 0 ? tensor : tensor.select(0, t); }
  int64_t rows() const { return tensor.size(t < 0 ? 0 : 1); }
  bool contiguous() const { return tensor.is_contiguous(); }  // every step of a contiguous tensor is
  // rows of contiguous values (a GEMM operand with leading dimension row_stride())
  bool rows_contiguous() const { return tensor.stride(-1) == 1; }
  int64_t row_stride() const { return tensor.stride(-2); }
};

}  // namespace lstmkit
