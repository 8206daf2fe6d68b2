// Time-loop scaffolding shared by every cell, with the semantics of
// lstmkit.engine.reference.run_sequence:
//   valid (T, B) bool    at an invalid (padded) step the state is carried and the output is zero,
//                        or with carry_output the previous step's output repeated;
//   recurrent_mask (B,R) multiplies h before the recurrent GEMM (variational recurrent dropout);
//   zoneout              s' = z * s_old + (1 - z) * s_new for every state, z a 0/1 mask per step in
//                        training or the constant rate in evaluation;
//   reverse              walks t = T-1 .. 0; outputs stay aligned with the input's time axis.
//
// A cell writes only its maths. Forward, per step: its recurrent GEMM(s) and a row function that
// hands the new state to emit_h / emit_c (zoneout, state history, output, masked GEMM input).
// Backward, per step: a row function that takes dL/d(new state) from dh_new / dc_new (all paths,
// split by zoneout) and returns dL/d(old state) through store_dh / store_dc, then its recurrent
// GEMM(s) through add_recurrent. Padded rows are handled here.
//
// The pointers of one step (ForwardRows, BackwardRows) are in step_rows.h, the GEMMs (their
// precision, weights packed once) in gemm.h, the row blocks in row_blocks.h.
//
// No memory is allocated inside the time loops: per-step views are made before. State histories
// are (T+1)-slot buffers so that "the state entering step t" is a contiguous time-ordered slice:
// forward reads slot t and writes t+1; reverse reads t+1 and writes t.
#pragma once

#include "common.h"
#include "gemm.h"
#include "row_blocks.h"
#include "step_rows.h"

namespace lstmkit {

// ---------------------------------------------------------------------------------------------
// Forward loop state: output, histories, masked GEMM inputs.
// ---------------------------------------------------------------------------------------------
class ForwardLoop {
 public:
  // beside_input: keep each step's input x_t beside the h entering it, one (B, I + R) row block per
  // slot, so that the backward pass gets dW_ih and dW_hh from one GEMM over [x | h] (see
  // BackwardLoop::weight_grads); only without a recurrent mask (whose GEMM input is h * m).
  ForwardLoop(const SequenceArgs& a, const Shapes& s, bool beside_input = false)
      : a_(a), s_(s), states_(a.state0.size()) {
    const auto options = a.x.options();
    const int64_t T = s.T;
    output_ = at::empty({T, s.B, s.R}, options);
    for (int k = 0; k < states_; ++k) {
      hist_[k] = k == 0 && beside_input && !a.rmask && T > 0 ? h_beside_input()
                                                              : at::empty({T + 1, s.B, k == 0 ? s.R : s.H}, options);
      hist_[k].select(0, a.reverse ? T : 0).copy_(a.state0[k]);
    }
    if (a.rmask && T > 0) {
      h_rec_ = at::empty({T, s.B, s.R}, options);
      at::Tensor first = h_rec_.select(0, time(0));
      at::mul_out(first, a.state0[0], *a.rmask);
    }
  }

  int64_t time(int64_t k) const { return time_of(k, s_.T, a_.reverse); }
  // h entering step t as the recurrent GEMM sees it (times the recurrent mask).
  Step gemm_in(int64_t t) const { return a_.rmask ? Step{h_rec_, t} : Step{hist_[0], slot_in(t, a_.reverse)}; }

  template <typename T>
  ForwardRows<T> rows(int64_t k) const {
    const int64_t t = time(k), B = s_.B, R = s_.R, H = s_.H;
    const bool rev = a_.reverse;
    ForwardRows<T> p{};
    p.B = B;
    p.R = R;
    p.H = H;
    const int64_t slot = hist_[0].stride(0);
    p.hs = hist_[0].stride(1);
    p.h_old = hist_[0].data_ptr<T>() + slot_in(t, rev) * slot;
    p.h_new = hist_[0].data_ptr<T>() + slot_out(t, rev) * slot;
    if (states_ > 1) {
      p.c_old = hist_[1].data_ptr<T>() + slot_in(t, rev) * B * H;
      p.c_new = hist_[1].data_ptr<T>() + slot_out(t, rev) * B * H;
    }
    p.h_gemm = gemm_in(t).data<T>();
    p.out = output_.data_ptr<T>() + t * B * R;
    p.prev_out = k > 0 ? output_.data_ptr<T>() + time(k - 1) * B * R : nullptr;
    p.h_rec_next = (a_.rmask && k + 1 < s_.T) ? h_rec_.data_ptr<T>() + time(k + 1) * B * R : nullptr;
    p.rmask = data_or_null<T>(a_.rmask);
    p.valid = a_.valid ? a_.valid->data_ptr<bool>() + t * B : nullptr;
    if (!a_.zoneout.empty()) {
      p.zh = a_.zoneout[0].data_ptr<T>() + t * B * R;
      if (states_ > 1) p.zc = a_.zoneout[1].data_ptr<T>() + t * B * H;
    } else {
      p.rate = static_cast<T>(a_.zoneout_rate);
    }
    p.carry_output = a_.carry_output;
    return p;
  }

  // {output, final states..., histories..., h_rec or empty, the cell's saved tensors...}
  std::vector<at::Tensor> results(std::initializer_list<at::Tensor> saved) const {
    std::vector<at::Tensor> out{output_};
    const int64_t last = a_.reverse ? 0 : s_.T;
    for (int k = 0; k < states_; ++k) out.push_back(hist_[k].select(0, last).clone());
    for (int k = 0; k < states_; ++k) out.push_back(hist_[k]);
    out.push_back(h_rec_.defined() ? h_rec_ : at::empty({0}, a_.x.options()));
    out.insert(out.end(), saved.begin(), saved.end());
    return out;
  }

 private:
  // The h history as the h part of (T + 1, B, I + R) slots whose x part holds x_t in slot_in(t).
  at::Tensor h_beside_input() const {
    const int64_t T = s_.T;
    const at::Tensor slots = at::empty({T + 1, s_.B, s_.I + s_.R}, a_.x.options());
    slots.narrow(0, a_.reverse ? 1 : 0, T).narrow(2, 0, s_.I).copy_(a_.x);  // x_t in slot_in(t)
    slots.select(0, a_.reverse ? 0 : T).narrow(1, 0, s_.I).zero_();       // the slot no step enters
    return slots.narrow(2, s_.I, s_.R);
  }

  const SequenceArgs& a_;
  Shapes s_;
  int states_;
  at::Tensor output_, hist_[2], h_rec_;
};

// Whether h (T + 1, B, R) is the h part of ForwardLoop's slots with the input beside it: rows of
// I + R values, x_t then the h entering step t.
inline bool is_beside_input(const at::Tensor& h, const Shapes& s) {
  const int64_t row = s.I + s.R;
  return h.defined() && s.T > 0 && h.dim() == 3 && h.sizes() == at::IntArrayRef({s.T + 1, s.B, s.R}) &&
         h.stride(2) == 1 && h.stride(1) == row && h.stride(0) == s.B * row && h.storage_offset() >= s.I;
}

// ---------------------------------------------------------------------------------------------
// dL/d output (T, B, R) as the backward pass reads it: rows of contiguous values, or one value per
// row (column stride 0), at any time and row strides, so that the gradient of a sum over the output
// (an expanded tensor) or of a transposed output is read where it is instead of being copied out to
// (T, B, R) (a fresh buffer every step: 6.5 MB at (100, 64, 256, 256)); anything else is made
// contiguous.
struct GradOutput {
  at::Tensor values;

  GradOutput() = default;
  GradOutput(const at::Tensor& g, const at::Tensor& like, at::IntArrayRef shape) {
    TORCH_CHECK_VALUE(g.defined(), "grad_output is undefined");
    if (g.dim() == 3 && g.sizes() == shape && (g.stride(2) == 1 || g.stride(2) == 0)) {
      TORCH_CHECK_VALUE(g.device().is_cpu(), "grad_output must be a CPU tensor, got device ", g.device());
      TORCH_CHECK_TYPE(g.scalar_type() == like.scalar_type(), "grad_output must have dtype ", like.scalar_type(),
                       " (the input's), got ", g.scalar_type());
      values = g;
    } else {
      values = g.contiguous();
      check_same(values, "grad_output", like, shape);
    }
  }
};

// ---------------------------------------------------------------------------------------------
// Backward loop state: running state gradients, the recurrent-product accumulator.
// ---------------------------------------------------------------------------------------------
class BackwardLoop {
 public:
  BackwardLoop(const SequenceArgs& a, const Shapes& s, int states) : a_(a), s_(s), states_(states) {
    const auto& x = a.x;
    const int64_t T = s.T, B = s.B;
    TORCH_CHECK_VALUE(static_cast<int>(a.saved.size()) >= states + 1, "expected the tensors forward saved");
    TORCH_CHECK_VALUE(static_cast<int>(a.grad_state.size()) == states, "expected ", states, " state gradients");
    static const char* hist_names[] = {"hs", "cs"};
    static const char* grad_names[] = {"grad_h_n", "grad_c_n"};
    for (int k = 0; k < states; ++k) {
      const int64_t width = k == 0 ? s.R : s.H;
      const bool beside_input = k == 0 && is_beside_input(a.saved[0], s);  // slots of [x | h] rows
      check_same(a.saved[k], hist_names[k], x, {T + 1, B, width}, /*contiguous=*/!beside_input);
      dstate_[k] = a.grad_state[k].contiguous().clone();  // running dL/d(state), direct part
      check_same(dstate_[k], grad_names[k], x, {B, width});
    }
    if (a.rmask && T > 0) check_same(a.saved[states], "h_rec", x, {T, B, s.R});
    grad_out_ = GradOutput(a.grad_output, x, {T, B, s.R});
    if (a.rmask) dh_rec_ = at::zeros({B, s.R}, x.options());
    if (a.carry_output) dcarry_ = at::zeros({B, s.R}, x.options());
  }

  int64_t time(int64_t k) const { return time_of(k, s_.T, a_.reverse); }
  // The cell's k-th saved tensor (after the histories and h_rec).
  const at::Tensor& saved(size_t k) const {
    TORCH_CHECK_VALUE(states_ + 1 + k < a_.saved.size(), "expected the tensors forward saved");
    return a_.saved[states_ + 1 + k];
  }
  // The states entering every step (T, B, width), time-ordered.
  at::Tensor states_entering(int k) const { return a_.saved[k].narrow(0, a_.reverse ? 1 : 0, s_.T); }
  // Every step's recurrent GEMM input, time-ordered (T, B, R): dW_hh = sum_t dG_t^T h_{t-1}.
  at::Tensor gemm_inputs() const { return a_.rmask && s_.T > 0 ? a_.saved[states_] : states_entering(0); }

  // dx = dXG W_ih, dW_ih = dXG^T x and dW_hh = dHG^T h_{t-1} (as requested) from dXG and dHG
  // (T, B, rows of W). When the forward kept x beside h (ForwardLoop's beside_input) and both weights
  // see the same gradient (dXG = dHG: the pre-activations are xg + hg), dW_ih and dW_hh come from one
  // GEMM over the [x | h] rows: dG is read once and the wider product runs faster. The two
  // gradients are then column blocks of that product.
  void weight_grads(const at::Tensor& dxg, const at::Tensor& dhg, at::Tensor& dx, at::Tensor& dw_ih,
                    at::Tensor& dw_hh) const;

  template <typename T>
  BackwardRows<T> rows(int64_t k) const {
    const int64_t t = time(k), B = s_.B, R = s_.R, H = s_.H;
    const bool rev = a_.reverse;
    BackwardRows<T> p{};
    p.B = B;
    p.R = R;
    p.H = H;
    p.grad_out = grad_out_.values.data_ptr<T>() + t * grad_out_.values.stride(0);
    p.grad_row_stride = grad_out_.values.stride(1);
    p.grad_broadcast = grad_out_.values.stride(2) == 0;
    p.dh = dstate_[0].data_ptr<T>();
    p.dc = states_ > 1 ? dstate_[1].data_ptr<T>() : nullptr;
    p.dh_rec = (a_.rmask && k < s_.T - 1) ? dh_rec_.data_ptr<T>() : nullptr;
    p.rmask = data_or_null<T>(a_.rmask);
    p.dcarry = a_.carry_output ? dcarry_.data_ptr<T>() : nullptr;
    p.valid = a_.valid ? a_.valid->data_ptr<bool>() + t * B : nullptr;
    if (!a_.zoneout.empty()) {
      p.zh = a_.zoneout[0].data_ptr<T>() + t * B * R;
      if (states_ > 1) p.zc = a_.zoneout[1].data_ptr<T>() + t * B * H;
    } else {
      p.rate = static_cast<T>(a_.zoneout_rate);
    }
    p.hs = a_.saved[0].stride(1);
    p.h_old = a_.saved[0].data_ptr<T>() + slot_in(t, rev) * a_.saved[0].stride(0);
    p.c_old = states_ > 1 ? a_.saved[1].data_ptr<T>() + slot_in(t, rev) * B * H : nullptr;
    p.h_gemm = a_.rmask ? a_.saved[states_].data_ptr<T>() + t * B * R : p.h_old;
    return p;
  }

  // Where dL/d(GEMM input of this step) accumulates: dh_rec with a recurrent mask (multiplied by
  // it in the next pointwise pass), else the running dh itself.
  at::Tensor& accumulator() { return a_.rmask ? dh_rec_ : dstate_[0]; }
  // Whether a pointwise pass must overwrite the accumulator (dh_rec: its old contents were
  // consumed by this step's pass) rather than add to it (dh).
  bool accumulator_fresh() const { return a_.rmask.has_value(); }

  // dL/d(GEMM input) (+)= g w: a recurrent GEMM's share of dL/dh_{t-1}. The first product of a
  // step overwrites dh_rec unless a pointwise pass wrote it already (first = false).
  void add_recurrent(const at::Tensor& g, const StepWeight& w, bool first = true) {
    at::Tensor& acc = accumulator();
    if (first && a_.rmask) {
      w.into(acc, g);
    } else {
      w.add_into(acc, g);
    }
  }
  // The same with W packed once for the whole loop (see StepGemm; built with transpose = false).
  void add_recurrent(const Step& g, const StepGemm& w, bool first = true) {
    w.run(Step{accumulator()}, g, !(first && a_.rmask));
  }

  // After the loop: {dh0, dc0}.
  std::vector<at::Tensor> initial_state_grads() {
    if (a_.rmask && s_.T > 0) dstate_[0].addcmul_(dh_rec_, *a_.rmask);  // the last product: dh0 += (dG W) * m
    return std::vector<at::Tensor>(dstate_, dstate_ + states_);
  }

 private:
  const SequenceArgs& a_;
  Shapes s_;
  size_t states_;
  at::Tensor dstate_[2], dh_rec_, dcarry_;
  GradOutput grad_out_;
};

// BackwardLoop::weight_grads, after the GEMM helpers it uses.
inline void BackwardLoop::weight_grads(const at::Tensor& dxg, const at::Tensor& dhg, at::Tensor& dx,
                                       at::Tensor& dw_ih, at::Tensor& dw_hh) const {
  const at::Tensor& h = a_.saved[0];
  if (needs_param(a_, 0) && needs_param(a_, 1) && dxg.is_same(dhg) && is_beside_input(h, s_)) {
    const int64_t row = s_.I + s_.R, first = h.storage_offset() - s_.I + (a_.reverse ? h.stride(0) : 0);
    const at::Tensor xh = h.as_strided({s_.T * s_.B, row}, {row, 1}, first);  // [x_t | h entering t] rows
    const at::Tensor dg = dxg.reshape({-1, dxg.size(-1)});
    const at::Tensor dw = gemm(a_.bf16, dg.t(), xh);  // [dW_ih | dW_hh]
    dw_ih = dw.narrow(1, 0, s_.I);
    dw_hh = dw.narrow(1, s_.I, s_.R);
    if (a_.needs[0]) dx = gemm(a_.bf16, dg, *a_.params[0]).view({s_.T, s_.B, s_.I});
    return;
  }
  input_grads(a_, s_, dxg, dx, dw_ih);
  if (needs_param(a_, 1)) dw_hh = weight_grad(a_, dhg, gemm_inputs());
}

}  // namespace lstmkit
