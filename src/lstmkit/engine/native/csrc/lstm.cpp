// Fused LSTM time loop for CPU: forward and backward of a whole sequence in one call.
//
// Layout (PyTorch's): gates are stacked i, f, g, o along the last dimension, each block H wide;
// weight_ih is (4H, I), weight_hh is (4H, H). All tensors time-major: x (T, B, I).
//
// Forward:  xg = x W_ih^T + (b_ih + b_hh)            one GEMM for all T*B rows
//           per step t: gates = xg[t] + h_{t-1} W_hh^T  one GEMM (B x H x 4H) into xg[t] in place
//                       one fused vectorised pass over the row's four gate blocks (see below)
// Backward: per step (reverse order): one fused pass computing dgates[t], then
//                       dh_{t-1} += dgates[t] W_hh       one GEMM
//           after the loop, over all T*B rows at once:
//                       dW_ih = dgates^T x,  dW_hh = dgates^T h_prev,  db = sum dgates,  dx = dgates W_ih
//
// Sequence features, all optional, with the semantics of lstmkit.engine.reference.run_sequence:
//   valid (T, B) bool    at an invalid step the state is carried and the output is zero, or with
//                        carry_output the previous step's output repeated;
//   recurrent_mask (B,H) multiplies h before the recurrent GEMM (variational recurrent dropout);
//   zoneout              h' = z_h * h_old + (1 - z_h) * h_new (same for c), with z either a 0/1
//                        mask per step (T, B, H) in training or the constant rate in evaluation;
//   reverse              walks t = T-1 .. 0; outputs stay aligned with the input's time axis.
//
// No memory is allocated inside the time loops: all per-step tensors are views created before.
// State histories use a (T+1)-slot buffer so that "the state entering step t" is always a
// contiguous time-ordered slice: forward reads slot t and writes t+1; reverse reads t+1, writes t.

#include "common.h"

namespace lstmkit {
namespace {

// ---------------------------------------------------------------------------------------------
// Forward pointwise pass of one step.
// ---------------------------------------------------------------------------------------------
template <typename T>
struct ForwardStep {
  T* gates;             // (B, 4H): pre-activations in; activated i, f, g, o out (if store_gates)
  const T* h_old;       // (B, H) state entering the step
  const T* c_old;
  T* h_new;             // (B, H) state leaving the step
  T* c_new;
  T* out;               // (B, H) output at this time step
  const T* prev_out;    // (B, H) output of the previously processed step, nullptr = zeros
  T* h_rec_next;        // (B, H) h_new * recurrent_mask: next step's GEMM input, or nullptr
  const T* rmask;       // (B, H) recurrent mask or nullptr
  const bool* valid;    // (B) or nullptr
  Zoneout<T> zoneout;
  bool carry_output;
  bool store_gates;
};

template <typename T>
void forward_pointwise(const ForwardStep<T>& p, int64_t batch, int64_t hidden) {
  using Vec = Vectorized<T>;
  const int64_t H = hidden;
  at::parallel_for(0, batch, grain_rows(4 * H), [&](int64_t b_begin, int64_t b_end) {
    const Vec one(T(1));
    const Vec zero(T(0));
    for (int64_t b = b_begin; b < b_end; ++b) {
      const int64_t row = b * H;
      const T* h_old = p.h_old + row;
      const T* c_old = p.c_old + row;
      T* h_new = p.h_new + row;
      T* c_new = p.c_new + row;
      T* out = p.out + row;
      const T* mask = p.rmask ? p.rmask + row : nullptr;
      T* h_rec = p.h_rec_next ? p.h_rec_next + row : nullptr;

      if (p.valid && !p.valid[b]) {
        // Invalid (padded) step: carry the state, output zero or the previous output.
        for (int64_t j = 0; j < H; j += Vec::size()) {
          const int64_t n = std::min<int64_t>(Vec::size(), H - j);
          const Vec h = Vec::loadu(h_old + j, n);
          h.store(h_new + j, n);
          Vec::loadu(c_old + j, n).store(c_new + j, n);
          const Vec o = (p.carry_output && p.prev_out) ? Vec::loadu(p.prev_out + row + j, n) : zero;
          o.store(out + j, n);
          if (h_rec) (h * Vec::loadu(mask + j, n)).store(h_rec + j, n);
        }
        continue;
      }

      T* gi = p.gates + 4 * row;  // the row's four gate blocks
      T* gf = gi + H;
      T* gg = gf + H;
      T* go = gg + H;
      for (int64_t j = 0; j < H; j += Vec::size()) {
        const int64_t n = std::min<int64_t>(Vec::size(), H - j);
        const Vec i = sigmoid(Vec::loadu(gi + j, n));  // i = σ(x W_ii + h W_hi + b_i)   input gate
        const Vec f = sigmoid(Vec::loadu(gf + j, n));  // f = σ(x W_if + h W_hf + b_f)   forget gate
        const Vec g = tanh(Vec::loadu(gg + j, n));       // g = tanh(x W_ig + h W_hg + b_g) candidate
        const Vec o = sigmoid(Vec::loadu(go + j, n));  // o = σ(x W_io + h W_ho + b_o)   output gate
        const Vec c_prev = Vec::loadu(c_old + j, n);
        Vec c = f * c_prev + i * g;                    // c_t = f * c_{t-1} + i * g
        Vec h = o * tanh(c);                           // h_t = o * tanh(c_t)
        if (p.zoneout.active()) {
          // Zoneout: keep each unit's old value with coefficient z.
          const Vec zh = p.zoneout.h ? Vec::loadu(p.zoneout.h + row + j, n) : Vec(p.zoneout.rate);
          const Vec zc = p.zoneout.c ? Vec::loadu(p.zoneout.c + row + j, n) : Vec(p.zoneout.rate);
          h = zh * Vec::loadu(h_old + j, n) + (one - zh) * h;  // h' = z_h h_{t-1} + (1 - z_h) h_t
          c = zc * c_prev + (one - zc) * c;                    // c' = z_c c_{t-1} + (1 - z_c) c_t
        }
        if (p.store_gates) {  // the backward pass needs the activated gates
          i.store(gi + j, n);
          f.store(gf + j, n);
          g.store(gg + j, n);
          o.store(go + j, n);
        }
        c.store(c_new + j, n);
        h.store(h_new + j, n);
        h.store(out + j, n);
        if (h_rec) (h * Vec::loadu(mask + j, n)).store(h_rec + j, n);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Backward pointwise pass of one step.
// ---------------------------------------------------------------------------------------------
template <typename T>
struct BackwardStep {
  const T* gates;       // (B, 4H) activated i, f, g, o saved by the forward pass
  const T* c_old;       // (B, H) cell state entering the step
  const T* grad_out;    // (B, H) dL/d output[t]
  T* dh;                // (B, H) in: dL/dh leaving the step (direct part); out: dL/dh_{t-1} direct part
  T* dc;                // (B, H) in: dL/dc leaving the step; out: dL/dc_{t-1}
  const T* dh_rec;      // (B, H) dgates_{later step} W_hh not yet added to dh (needs * rmask), or nullptr
  const T* rmask;       // (B, H) or nullptr
  T* dcarry;            // (B, H) gradient of the previous step's output (carry_output), or nullptr
  T* dgates;            // (B, 4H) out: dL/d pre-activations
  const bool* valid;    // (B) or nullptr
  Zoneout<T> zoneout;
};

template <typename T>
void backward_pointwise(const BackwardStep<T>& p, int64_t batch, int64_t hidden) {
  using Vec = Vectorized<T>;
  const int64_t H = hidden;
  at::parallel_for(0, batch, grain_rows(4 * H), [&](int64_t b_begin, int64_t b_end) {
    const Vec one(T(1));
    const Vec zero(T(0));
    for (int64_t b = b_begin; b < b_end; ++b) {
      const int64_t row = b * H;
      T* dh = p.dh + row;
      T* dc = p.dc + row;
      T* dcarry = p.dcarry ? p.dcarry + row : nullptr;
      const T* c_old = p.c_old + row;
      const bool is_valid = !p.valid || p.valid[b];

      // Gradient arriving at this step's state h (all paths) and at its output.
      //   dH   = dh_direct + (dgates_{later} W_hh) * m
      //   dout = dL/d output[t] + dL/d(copy of this output made by the next padded step)
      auto total_dh = [&](int64_t j, int64_t n) {
        Vec d = Vec::loadu(dh + j, n);
        if (p.dh_rec) {
          const Vec rec = Vec::loadu(p.dh_rec + row + j, n);
          d = d + (p.rmask ? rec * Vec::loadu(p.rmask + row + j, n) : rec);
        }
        return d;
      };
      auto total_dout = [&](int64_t j, int64_t n) {
        Vec d = Vec::loadu(p.grad_out + row + j, n);
        if (dcarry) d = d + Vec::loadu(dcarry + j, n);
        return d;
      };

      T* dgi = p.dgates + 4 * row;
      if (!is_valid) {
        // Padded step: h and c were carried unchanged, so their gradients pass straight through;
        // the output was zero (no gradient) or a copy of the previous output (pass dout on).
        for (int64_t j = 0; j < H; j += Vec::size()) {
          const int64_t n = std::min<int64_t>(Vec::size(), H - j);
          total_dh(j, n).store(dh + j, n);
          if (dcarry) total_dout(j, n).store(dcarry + j, n);
        }
        std::fill(dgi, dgi + 4 * H, T(0));
        continue;
      }

      const T* gi = p.gates + 4 * row;
      const T* gf = gi + H;
      const T* gg = gf + H;
      const T* go = gg + H;
      T* dgf = dgi + H;
      T* dgg = dgf + H;
      T* dgo = dgg + H;
      for (int64_t j = 0; j < H; j += Vec::size()) {
        const int64_t n = std::min<int64_t>(Vec::size(), H - j);
        const Vec i = Vec::loadu(gi + j, n);
        const Vec f = Vec::loadu(gf + j, n);
        const Vec g = Vec::loadu(gg + j, n);
        const Vec o = Vec::loadu(go + j, n);
        const Vec c_prev = Vec::loadu(c_old + j, n);
        const Vec c = f * c_prev + i * g;  // recompute c_t = f * c_{t-1} + i * g (as the forward did)
        const Vec tc = tanh(c);            // tanh(c_t)

        Vec dh_t = total_dh(j, n) + total_dout(j, n);  // dL/dh_t' (state and output are the same h')
        Vec dc_t = Vec::loadu(dc + j, n);               // dL/dc_t'
        Vec dh_old = zero;                              // direct part of dL/dh_{t-1}
        Vec dc_old = zero;                              // direct part of dL/dc_{t-1}
        if (p.zoneout.active()) {
          // h' = z h_{t-1} + (1 - z) h_t  =>  dh_{t-1} += z dh',  dh_t = (1 - z) dh'   (same for c)
          const Vec zh = p.zoneout.h ? Vec::loadu(p.zoneout.h + row + j, n) : Vec(p.zoneout.rate);
          const Vec zc = p.zoneout.c ? Vec::loadu(p.zoneout.c + row + j, n) : Vec(p.zoneout.rate);
          dh_old = zh * dh_t;
          dh_t = (one - zh) * dh_t;
          dc_old = zc * dc_t;
          dc_t = (one - zc) * dc_t;
        }
        const Vec d_o = dh_t * tc;                             // do = dh_t * tanh(c_t)
        const Vec dc_total = dc_t + dh_t * o * (one - tc * tc);  // dc = dc_t + dh_t * o * (1 - tanh²(c_t))
        const Vec d_i = dc_total * g;                          // di = dc * g
        const Vec d_f = dc_total * c_prev;                     // df = dc * c_{t-1}
        const Vec d_g = dc_total * i;                          // dg = dc * i
        dc_old = dc_old + dc_total * f;                        // dc_{t-1} = dc * f (+ zoneout part)
        // Through the activations: σ' = σ (1 - σ), tanh' = 1 - tanh².
        (d_i * i * (one - i)).store(dgi + j, n);  // d(pre-i) = di * i (1 - i)
        (d_f * f * (one - f)).store(dgf + j, n);  // d(pre-f) = df * f (1 - f)
        (d_g * (one - g * g)).store(dgg + j, n);  // d(pre-g) = dg * (1 - g²)
        (d_o * o * (one - o)).store(dgo + j, n);  // d(pre-o) = do * o (1 - o)
        dh_old.store(dh + j, n);  // the recurrent part dgates W_hh is added by the GEMM after this pass
        dc_old.store(dc + j, n);
        if (dcarry) zero.store(dcarry + j, n);  // a valid step's output copies nothing earlier
      }
    }
  });
}

Shapes check_lstm_args(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh, const OptTensor& b_ih,
                       const OptTensor& b_hh, const OptTensor& valid, const OptTensor& rmask,
                       const OptTensor& zoneout_h, const OptTensor& zoneout_c) {
  const Shapes s = check_args(4, x, w_ih, w_hh, b_ih, b_hh, valid, rmask);
  TORCH_CHECK_VALUE(zoneout_h.has_value() == zoneout_c.has_value(), "give both zoneout masks or neither");
  if (zoneout_h) check_same(*zoneout_h, "zoneout_h", x, {s.T, s.B, s.H});
  if (zoneout_c) check_same(*zoneout_c, "zoneout_c", x, {s.T, s.B, s.H});
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------
// Returns {output (T,B,H), h_n, c_n, gates (T,B,4H), hs (T+1,B,H), cs (T+1,B,H), h_rec (T,B,H) or empty}.
// gates holds the activated i, f, g, o when store_gates; hs/cs the state histories; h_rec the masked
// recurrent GEMM inputs (only with a recurrent mask). The last four are what backward needs.
std::vector<at::Tensor> lstm_forward(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                                     const OptTensor& b_ih, const OptTensor& b_hh,
                                     const at::Tensor& h0, const at::Tensor& c0,
                                     const OptTensor& valid, const OptTensor& rmask,
                                     const OptTensor& zoneout_h,
                                     const OptTensor& zoneout_c, double zoneout_rate, bool reverse,
                                     bool carry_output, bool store_gates) {
  const Shapes s = check_lstm_args(x, w_ih, w_hh, b_ih, b_hh, valid, rmask, zoneout_h, zoneout_c);
  const int64_t T = s.T, B = s.B, I = s.I, H = s.H;
  check_same(h0, "h0", x, {B, H});
  check_same(c0, "c0", x, {B, H});
  TORCH_CHECK_VALUE(zoneout_rate >= 0.0 && zoneout_rate < 1.0, "zoneout_rate must lie in [0, 1), got ", zoneout_rate);
  c10::NoGradGuard no_grad;  // no autograd graph when called directly with tensors that require grad

  // Input projection for all steps at once, with both biases folded in: (T*B, 4H).
  const at::Tensor x2d = x.view({T * B, I});
  at::Tensor gates = b_ih ? at::addmm(*b_ih + *b_hh, x2d, w_ih.t()) : at::mm(x2d, w_ih.t());
  gates = gates.view({T, B, 4 * H});

  at::Tensor output = at::empty({T, B, H}, x.options());
  at::Tensor hs = at::empty({T + 1, B, H}, x.options());
  at::Tensor cs = at::empty({T + 1, B, H}, x.options());
  hs.select(0, reverse ? T : 0).copy_(h0);
  cs.select(0, reverse ? T : 0).copy_(c0);
  at::Tensor h_rec;  // masked GEMM inputs, one per step, time-indexed
  if (rmask && T > 0) {
    h_rec = at::empty({T, B, H}, x.options());
    at::Tensor first = h_rec.select(0, time_of(0, T, reverse));
    at::mul_out(first, h0, *rmask);
  }

  // Views for every step, made before the loop.
  const at::Tensor w_hh_t = w_hh.t();
  std::vector<at::Tensor> gate_steps(T), gemm_in(T);
  for (int64_t t = 0; t < T; ++t) {
    gate_steps[t] = gates.select(0, t);
    gemm_in[t] = rmask ? h_rec.select(0, t) : hs.select(0, slot_in(t, reverse));
  }

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_forward", [&] {
    using T_ = scalar_t;
    T_* hs_p = hs.data_ptr<T_>();
    T_* cs_p = cs.data_ptr<T_>();
    T_* out_p = output.data_ptr<T_>();
    const bool* valid_p = valid ? valid->data_ptr<bool>() : nullptr;
    const T_* zh_p = data_or_null<T_>(zoneout_h);
    const T_* zc_p = data_or_null<T_>(zoneout_c);
    for (int64_t k = 0; k < T; ++k) {
      const int64_t t = time_of(k, T, reverse);
      // gates[t] += h_{t-1} W_hh^T   (the recurrent GEMM, in place)
      at::addmm_out(gate_steps[t], gate_steps[t], gemm_in[t], w_hh_t);

      ForwardStep<T_> p{};
      p.gates = gates.data_ptr<T_>() + t * B * 4 * H;
      p.h_old = hs_p + slot_in(t, reverse) * B * H;
      p.c_old = cs_p + slot_in(t, reverse) * B * H;
      p.h_new = hs_p + slot_out(t, reverse) * B * H;
      p.c_new = cs_p + slot_out(t, reverse) * B * H;
      p.out = out_p + t * B * H;
      p.prev_out = k > 0 ? out_p + time_of(k - 1, T, reverse) * B * H : nullptr;
      p.h_rec_next = (rmask && k + 1 < T) ? h_rec.data_ptr<T_>() + time_of(k + 1, T, reverse) * B * H : nullptr;
      p.rmask = data_or_null<T_>(rmask);
      p.valid = valid_p ? valid_p + t * B : nullptr;
      p.zoneout.h = zh_p ? zh_p + t * B * H : nullptr;
      p.zoneout.c = zc_p ? zc_p + t * B * H : nullptr;
      p.zoneout.rate = zh_p ? T_(0) : static_cast<T_>(zoneout_rate);
      p.carry_output = carry_output;
      p.store_gates = store_gates;
      forward_pointwise(p, B, H);
    }
  });

  const int64_t last = reverse ? 0 : T;
  return {output, hs.select(0, last).clone(), cs.select(0, last).clone(), gates, hs, cs,
          h_rec.defined() ? h_rec : at::empty({0}, x.options())};
}

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------
// Returns {dx, dW_ih, dW_hh, db, dh0, dc0}; db is the gradient of both bias_ih and bias_hh.
// dx / the weight gradients are undefined tensors (None) when not requested.
std::vector<at::Tensor> lstm_backward(const at::Tensor& grad_output, const at::Tensor& grad_hn,
                                      const at::Tensor& grad_cn, const at::Tensor& x, const at::Tensor& w_ih,
                                      const at::Tensor& w_hh, const at::Tensor& gates, const at::Tensor& hs,
                                      const at::Tensor& cs, const OptTensor& h_rec,
                                      const OptTensor& valid,
                                      const OptTensor& rmask,
                                      const OptTensor& zoneout_h,
                                      const OptTensor& zoneout_c, double zoneout_rate, bool reverse,
                                      bool carry_output, bool need_dx, bool need_weights, bool need_bias) {
  const Shapes s = check_lstm_args(x, w_ih, w_hh, std::nullopt, std::nullopt, valid, rmask, zoneout_h, zoneout_c);
  const int64_t T = s.T, B = s.B, I = s.I, H = s.H;
  check_same(gates, "gates", x, {T, B, 4 * H});
  check_same(hs, "hs", x, {T + 1, B, H});
  check_same(cs, "cs", x, {T + 1, B, H});
  if (rmask && T > 0) {
    TORCH_CHECK_VALUE(h_rec.has_value(), "h_rec is required with a recurrent mask");
    check_same(*h_rec, "h_rec", x, {T, B, H});
  }
  c10::NoGradGuard no_grad;  // no autograd graph when called directly with tensors that require grad
  const at::Tensor g_out = grad_output.contiguous();
  check_same(g_out, "grad_output", x, {T, B, H});
  at::Tensor dh = grad_hn.contiguous().clone();  // running dL/dh of the state (direct part)
  at::Tensor dc = grad_cn.contiguous().clone();  // running dL/dc of the state
  check_same(dh, "grad_h_n", x, {B, H});
  check_same(dc, "grad_c_n", x, {B, H});
  at::Tensor dh_rec = rmask ? at::zeros({B, H}, x.options()) : at::Tensor();  // dgates W_hh before * mask
  at::Tensor dcarry = carry_output ? at::zeros({B, H}, x.options()) : at::Tensor();
  at::Tensor dgates = at::empty({T, B, 4 * H}, x.options());

  std::vector<at::Tensor> dgate_steps(T);
  for (int64_t t = 0; t < T; ++t) dgate_steps[t] = dgates.select(0, t);

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_backward", [&] {
    using T_ = scalar_t;
    const T_* cs_p = cs.data_ptr<T_>();
    const bool* valid_p = valid ? valid->data_ptr<bool>() : nullptr;
    const T_* zh_p = data_or_null<T_>(zoneout_h);
    const T_* zc_p = data_or_null<T_>(zoneout_c);
    for (int64_t k = T - 1; k >= 0; --k) {  // processed steps in reverse order
      const int64_t t = time_of(k, T, reverse);
      BackwardStep<T_> p{};
      p.gates = gates.data_ptr<T_>() + t * B * 4 * H;
      p.c_old = cs_p + slot_in(t, reverse) * B * H;
      p.grad_out = g_out.data_ptr<T_>() + t * B * H;
      p.dh = dh.data_ptr<T_>();
      p.dc = dc.data_ptr<T_>();
      p.dh_rec = (rmask && k < T - 1) ? dh_rec.data_ptr<T_>() : nullptr;
      p.rmask = data_or_null<T_>(rmask);
      p.dcarry = carry_output ? dcarry.data_ptr<T_>() : nullptr;
      p.dgates = dgates.data_ptr<T_>() + t * B * 4 * H;
      p.valid = valid_p ? valid_p + t * B : nullptr;
      p.zoneout.h = zh_p ? zh_p + t * B * H : nullptr;
      p.zoneout.c = zc_p ? zc_p + t * B * H : nullptr;
      p.zoneout.rate = zh_p ? T_(0) : static_cast<T_>(zoneout_rate);
      backward_pointwise(p, B, H);
      // dh_{t-1} += dgates[t] W_hh   (with a recurrent mask the product is multiplied by it first,
      // inside the next pointwise pass)
      if (rmask) {
        at::mm_out(dh_rec, dgate_steps[t], w_hh);
      } else {
        at::addmm_out(dh, dh, dgate_steps[t], w_hh);
      }
    }
  });
  if (rmask && T > 0) dh.addcmul_(dh_rec, *rmask);  // the last product: dh0 += (dgates W_hh) * m

  // Parameter and input gradients: one GEMM each over all T*B rows.
  const at::Tensor dg2d = dgates.view({T * B, 4 * H});
  at::Tensor dx, dw_ih, dw_hh, db;
  if (need_dx) dx = at::mm(dg2d, w_ih).view({T, B, I});
  if (need_weights) {
    dw_ih = at::mm(dg2d.t(), x.view({T * B, I}));  // dW_ih = sum_t dgates_t^T x_t
    const at::Tensor h_prev = rmask ? *h_rec : hs.narrow(0, reverse ? 1 : 0, T);
    dw_hh = at::mm(dg2d.t(), h_prev.reshape({T * B, H}));  // dW_hh = sum_t dgates_t^T h_{t-1}
  }
  if (need_bias) db = dg2d.sum(0);  // db = sum_t dgates_t
  return {dx, dw_ih, dw_hh, db, dh, dc};
}

}  // namespace lstmkit
