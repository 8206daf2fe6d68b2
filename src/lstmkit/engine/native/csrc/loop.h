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
// The GEMMs (their precision, weights packed once) are in gemm.h, the row blocks in row_blocks.h.
//
// No memory is allocated inside the time loops: per-step views are made before. State histories
// are (T+1)-slot buffers so that "the state entering step t" is a contiguous time-ordered slice:
// forward reads slot t and writes t+1; reverse reads t+1 and writes t.
#pragma once

#include "common.h"
#include "gemm.h"
#include "row_blocks.h"

namespace lstmkit {

// ---------------------------------------------------------------------------------------------
// Forward pointers of one step.
// ---------------------------------------------------------------------------------------------
template <typename T>
struct ForwardRows {
  using Vec = Vectorized<T>;
  int64_t B, R, H;       // batch, width of h, width of c
  int64_t hs;            // row stride of h_old, h_new and h_gemm (R, or I + R with x kept beside h)
  const T* h_old;        // (B, R) state entering the step
  const T* c_old;        // (B, H) or nullptr
  T* h_new;              // (B, R) state leaving the step
  T* c_new;
  const T* h_gemm;       // (B, R) h as this step's recurrent GEMM saw it (times the recurrent mask)
  T* out;                // (B, R) output at this time step
  const T* prev_out;     // output of the previously processed step, nullptr = zeros
  T* h_rec_next;         // (B, R) h_new * recurrent_mask: the next step's GEMM input, or nullptr
  const T* rmask;
  const bool* valid;     // (B) or nullptr
  const T* zh;           // (B, R) zoneout mask of h for this step, or nullptr
  const T* zc;
  T rate;                // zoneout rate when there are no masks (0 = none)
  bool carry_output;

  bool is_valid(int64_t b) const { return valid == nullptr || valid[b]; }

  // New h of row b, columns [j, j + n): zoneout, then the state, the output and the next GEMM input.
  void emit_h(int64_t b, int64_t j, int64_t n, Vec h) const {
    const int64_t i = b * R + j;
    if (zh != nullptr || rate != T(0)) {
      const Vec z = zh ? Vec::loadu(zh + i, n) : Vec(rate);
      h = z * Vec::loadu(h_old + b * hs + j, n) + (Vec(T(1)) - z) * h;  // h' = z h_{t-1} + (1 - z) h_t
    }
    h.store(h_new + b * hs + j, n);
    h.store(out + i, n);
    if (h_rec_next) (h * Vec::loadu(rmask + i, n)).store(h_rec_next + i, n);
  }

  // New c of row b, columns [j, j + n): zoneout, then the state.
  void emit_c(int64_t b, int64_t j, int64_t n, Vec c) const {
    const int64_t i = b * H + j;
    if (zc != nullptr || rate != T(0)) {
      const Vec z = zc ? Vec::loadu(zc + i, n) : Vec(rate);
      c = z * Vec::loadu(c_old + i, n) + (Vec(T(1)) - z) * c;  // c' = z c_{t-1} + (1 - z) c_t
    }
    c.store(c_new + i, n);
  }

  // Padded row: carry the state, output zero or the previous output.
  void carry(int64_t b) const {
    const T* h = h_old + b * hs;
    std::copy(h, h + R, h_new + b * hs);
    if (c_old) std::copy(c_old + b * H, c_old + (b + 1) * H, c_new + b * H);
    if (carry_output && prev_out) {
      std::copy(prev_out + b * R, prev_out + (b + 1) * R, out + b * R);
    } else {
      std::fill(out + b * R, out + (b + 1) * R, T(0));
    }
    if (h_rec_next) {
      for_chunks<T>(R, [&](int64_t j, int64_t n) {
        const int64_t i = b * R + j;
        (Vec::loadu(h_old + b * hs + j, n) * Vec::loadu(rmask + i, n)).store(h_rec_next + i, n);
      });
    }
  }

  // row(b) for every valid row, in parallel over the batch; padded rows are carried.
  template <typename Row>
  void for_rows(int64_t gate_width, const Row& row) const {
    parallel_rows(B, gate_width, [&](int64_t b) {
      if (is_valid(b)) {
        row(b);
      } else {
        carry(b);
      }
    });
  }
  // A second pass over the same step: row(b) for the valid rows only (padded ones are carried).
  template <typename Row>
  void for_valid_rows(int64_t gate_width, const Row& row) const {
    parallel_rows(B, gate_width, [&](int64_t b) {
      if (is_valid(b)) row(b);
    });
  }
};

// ---------------------------------------------------------------------------------------------
// Backward pointers of one step.
// ---------------------------------------------------------------------------------------------
template <typename T>
struct BackwardRows {
  using Vec = Vectorized<T>;
  int64_t B, R, H;
  const T* grad_out;     // dL/d output[t], row b at grad_out + b * grad_row_stride (see GradOutput)
  int64_t grad_row_stride;
  bool grad_broadcast;   // one value per row (the columns' stride is 0)
  T* dh;                 // (B, R) in: dL/dh leaving the step (direct part); out: dL/dh_{t-1} direct part
  T* dc;                 // (B, H) in: dL/dc leaving the step; out: dL/dc_{t-1}; or nullptr
  const T* dh_rec;       // (B, R) the later step's recurrent product, still to be multiplied by rmask
  const T* rmask;
  T* dcarry;             // (B, R) gradient of the previous step's output (carry_output), or nullptr
  const bool* valid;
  const T* zh;
  const T* zc;
  T rate;
  int64_t hs;            // row stride of h_old and h_gemm
  const T* h_old;        // (B, R) state entering the step
  const T* c_old;        // (B, H) or nullptr
  const T* h_gemm;       // (B, R) this step's recurrent GEMM input

  struct Split {
    Vec now;  // gradient reaching the value the cell computed (before zoneout)
    Vec old;  // zoneout's share, reaching the old state directly
  };

  bool is_valid(int64_t b) const { return valid == nullptr || valid[b]; }

  // dH = dh_direct + (later recurrent product) * m: the gradient reaching the state h.
  Vec state_dh(int64_t i, int64_t n) const {
    Vec d = Vec::loadu(dh + i, n);
    if (dh_rec) {
      const Vec rec = Vec::loadu(dh_rec + i, n);
      d = d + (rmask ? rec * Vec::loadu(rmask + i, n) : rec);
    }
    return d;
  }
  // dout = dL/d output[t] + dL/d(copy of this output made by the next padded step).
  Vec output_dh(int64_t b, int64_t j, int64_t n) const {
    const T* row = grad_out + b * grad_row_stride;
    const Vec d = grad_broadcast ? Vec(row[0]) : Vec::loadu(row + j, n);
    return dcarry ? d + Vec::loadu(dcarry + b * R + j, n) : d;
  }
  static Split split(Vec d, const T* z, T rate, int64_t i, int64_t n) {
    if (z == nullptr && rate == T(0)) return {d, Vec(T(0))};
    const Vec keep = z ? Vec::loadu(z + i, n) : Vec(rate);  // s' = z s_old + (1 - z) s_new
    return {(Vec(T(1)) - keep) * d, keep * d};
  }

  // dL/dh' of row b, columns [j, j + n) (the state and the output are the same h'), split by zoneout.
  Split dh_new(int64_t b, int64_t j, int64_t n) const {
    const int64_t i = b * R + j;
    return split(state_dh(i, n) + output_dh(b, j, n), zh, rate, i, n);
  }
  Split dc_new(int64_t b, int64_t j, int64_t n) const {
    const int64_t i = b * H + j;
    return split(Vec::loadu(dc + i, n), zc, rate, i, n);
  }
  // dL/dh_{t-1} (direct part; the recurrent GEMM is added after the pass) and dL/dc_{t-1}.
  void store_dh(int64_t b, int64_t j, int64_t n, const Vec& d) const {
    const int64_t i = b * R + j;
    d.store(dh + i, n);
    if (dcarry) Vec(T(0)).store(dcarry + i, n);  // a valid step's output copies nothing earlier
  }
  void store_dc(int64_t b, int64_t j, int64_t n, const Vec& d) const { d.store(dc + b * H + j, n); }

  // Padded row: h and c were carried unchanged, so their gradients pass straight through; the
  // output was zero (no gradient) or a copy of the previous output (pass dout on).
  void pass_through(int64_t b) const {
    for_chunks<T>(R, [&](int64_t j, int64_t n) {
      const int64_t i = b * R + j;
      state_dh(i, n).store(dh + i, n);
      if (dcarry) output_dh(b, j, n).store(dcarry + i, n);
    });
  }

  // row(b) for every valid row, in parallel over the batch; padded rows pass their gradients
  // through and zero(b) clears the cell's per-row gradient buffers.
  template <typename Zero, typename Row>
  void for_rows(int64_t gate_width, const Zero& zero, const Row& row) const {
    parallel_rows(B, gate_width, [&](int64_t b) {
      if (is_valid(b)) {
        row(b);
      } else {
        pass_through(b);
        zero(b);
      }
    });
  }
  // A second pass over the same step: row(b) for the valid rows, zero(b) for the padded ones
  // (whose gradients the first pass passed through).
  template <typename Zero, typename Row>
  void for_valid_rows(int64_t gate_width, const Zero& zero, const Row& row) const {
    parallel_rows(B, gate_width, [&](int64_t b) {
      if (is_valid(b)) {
        row(b);
      } else {
        zero(b);
      }
    });
  }
};

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

// The pointers of step k of an int8 inference loop (lstm_int8_forward, gru_int8_forward): h (and c,
// when cs is not null) entering and leaving the step in turn in (2, B, H) buffers, the output at t;
// rows where valid (T, B) is false carry their state (forward's semantics).
inline ForwardRows<float> int8_step_rows(int64_t k, const Shapes& s, bool reverse, float* hs, float* cs, float* out,
                                         const bool* valid, bool carry_output) {
  const int64_t t = time_of(k, s.T, reverse), size = s.B * s.H;
  ForwardRows<float> p{};
  p.B = s.B;
  p.R = p.H = p.hs = s.H;
  p.h_old = p.h_gemm = hs + (k % 2) * size;
  p.h_new = hs + ((k + 1) % 2) * size;
  if (cs) {
    p.c_old = cs + (k % 2) * size;
    p.c_new = cs + ((k + 1) % 2) * size;
  }
  p.out = out + t * size;
  p.prev_out = k == 0 ? nullptr : out + time_of(k - 1, s.T, reverse) * size;
  p.valid = valid ? valid + t * s.B : nullptr;
  p.carry_output = carry_output;
  return p;
}

}  // namespace lstmkit
