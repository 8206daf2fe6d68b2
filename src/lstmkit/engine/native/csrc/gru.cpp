// Fused GRU time loops for CPU, forward and backward, in both forms of the candidate.
//
// Layout (PyTorch's): gates stacked r, z, n along the last dimension, each block H wide;
// weight_ih (3H, I), weight_hh (3H, H), bias_ih and bias_hh (3H) kept apart because the reset gate
// multiplies the recurrent part of the candidate only. [xr, xz, xn] = x W_ih^T + b_ih.
//
// reset_after (PyTorch, Keras' default), with [hr, hz, hn] = h_{t-1} W_hh^T + b_hh:
//   r = σ(xr + hr),  z = σ(xz + hz),  n = tanh(xn + r * hn)
// reset before the multiply (Keras reset_after=False, Cho et al. 2014), with W_hh = [W_hrz; W_hn]:
//   [hr, hz] = h_{t-1} W_hrz^T + b_hrz,  r = σ(xr + hr),  z = σ(xz + hz),
//   n = tanh(xn + (r * h_{t-1}) W_hn^T + b_hn)
// then  h_t = (1 - z) * n + z * h_{t-1}  (with a recurrent mask, the GEMMs see h_{t-1} * m).
//
// Forward:  one GEMM for the input projection of all T*B rows. reset_after: per step one GEMM
//           (B x H x 3H, W_hh packed once) into a scratch buffer and one fused pass that adds the
//           biases; hn is kept per step; each block of rows runs on its own thread for the whole
//           loop (RowBlocks, row_blocks.h). Reset
//           before: per step the (B x H x 2H) GEMM, a pass for r, z and r * h, the (B x H x H)
//           GEMM for the candidate, and a pass for n and h. The activated r, z, n overwrite the
//           input projection for the backward pass.
// Backward: reset_after: per step one fused pass writing d[xr, xz, xn] and d[hr, hz, hn] and
//           summing the biases' gradients, and dh_{t-1} += d[hr, hz, hn] W_hh; by row blocks as
//           the forward. Reset before: a pass for d(pre-z), d(pre-n) and the
//           direct dh_{t-1}; d(r * h) = d(pre-n) W_hn; a pass for d(pre-r) and d(r * h) * r; then
//           dh_{t-1} += d[pre-r, pre-z] W_hrz. After the loop dW_ih, dW_hh, the biases and dx as
//           single GEMMs/sums. Masks, zoneout, reverse: see loop.h.

#include "loop.h"

namespace lstmkit {
namespace {

// ---------------------------------------------------------------------------------------------
// reset_after
// ---------------------------------------------------------------------------------------------
// xg: x W_ih^T of the step, hg: h_{t-1} W_hh^T, b_ih and b_hh (3H each) added here or nullptr.
template <typename T>
void after_forward_step(const ForwardRows<T>& p, T* xg, const T* hg, const T* b_ih, const T* b_hh, T* hn_kept,
                        bool store) {
  using Vec = Vectorized<T>;
  const int64_t H = p.H;
  const auto with = [&](const T* values, const T* bias, int64_t at, int64_t n) {  // values[at] + bias[at]
    const Vec v = Vec::loadu(values + at, n);
    return bias ? v + Vec::loadu(bias + at, n) : v;
  };
  p.for_rows(3 * H, [&](int64_t b) {
    T* xr = xg + 3 * b * H;
    T* xz = xr + H;
    T* xn = xz + H;
    const T* hr = hg + 3 * b * H;
    for_chunks<T>(H, [&](int64_t j, int64_t n) {
      const Vec r = sigmoid(with(xr, b_ih, j, n) + with(hr, b_hh, j, n));          // r = σ(xr + hr)  reset gate
      const Vec z = sigmoid(with(xz, b_ih ? b_ih + H : nullptr, j, n) +
                            with(hr + H, b_hh ? b_hh + H : nullptr, j, n));          // z = σ(xz + hz)  update gate
      const Vec h_n = with(hr + 2 * H, b_hh ? b_hh + 2 * H : nullptr, j, n);        // hn = h_{t-1} W_hn^T + b_hn
      const Vec cand = tanh(with(xn, b_ih ? b_ih + 2 * H : nullptr, j, n) + r * h_n);  // n = tanh(xn + r * hn)
      const Vec h_prev = Vec::loadu(p.h_old + b * p.hs + j, n);
      const Vec one(T(1));
      if (store) {  // what the backward pass needs: r, z, n and hn
        r.store(xr + j, n);
        z.store(xz + j, n);
        cand.store(xn + j, n);
        h_n.store(hn_kept + b * H + j, n);
      }
      p.emit_h(b, j, n, (one - z) * cand + z * h_prev);  // h_t = (1 - z) n + z h_{t-1}
    });
  });
}

// db: where d[xr, xz, xn] and d[hn] (4H: the biases' gradients, d hr = d xr, d hz = d xz) are summed,
// or nullptr.
template <typename T>
void after_backward_step(const BackwardRows<T>& p, const T* gates, const T* hn_kept, T* dxg, T* dhg,
                         const ThreadSums* db) {
  using Vec = Vectorized<T>;
  const int64_t H = p.H;
  auto zero = [&](int64_t b) {
    std::fill(dxg + 3 * b * H, dxg + 3 * (b + 1) * H, T(0));
    std::fill(dhg + 3 * b * H, dhg + 3 * (b + 1) * H, T(0));
  };
  p.for_rows(3 * H, zero, [&](int64_t b) {
    const T* gr = gates + 3 * b * H;
    const T* gz = gr + H;
    const T* gn = gz + H;
    T* dxr = dxg + 3 * b * H;
    T* dxz = dxr + H;
    T* dxn = dxz + H;
    T* dhr = dhg + 3 * b * H;
    T* dhz = dhr + H;
    T* dhn = dhz + H;
    T* sums = db ? db->template mine<T>() : nullptr;
    for_chunks<T>(H, [&](int64_t j, int64_t n) {
      const Vec r = Vec::loadu(gr + j, n);
      const Vec z = Vec::loadu(gz + j, n);
      const Vec cand = Vec::loadu(gn + j, n);
      const Vec h_prev = Vec::loadu(p.h_old + b * p.hs + j, n);
      const auto dh = p.dh_new(b, j, n);
      const Vec one(T(1));
      // h_t = (1 - z) n + z h_{t-1}
      const Vec dn_pre = dh.now * (one - z) * dtanh(cand);       // d(xn + r hn) = dh (1 - z) (1 - n²)
      const Vec dz_pre = dh.now * (h_prev - cand) * dsigmoid(z);  // d(xz + hz) = dh (h_{t-1} - n) σ'(z)
      const Vec dr_pre = dn_pre * Vec::loadu(hn_kept + b * H + j, n) * dsigmoid(r);  // d(xr + hr) = dn_pre hn σ'(r)
      dr_pre.store(dxr + j, n);  // d xr = d hr
      dz_pre.store(dxz + j, n);  // d xz = d hz
      dn_pre.store(dxn + j, n);
      dr_pre.store(dhr + j, n);
      dz_pre.store(dhz + j, n);
      const Vec d_hn = dn_pre * r;  // d hn = dn_pre r
      d_hn.store(dhn + j, n);
      if (sums) {
        accumulate(sums + j, n, dr_pre);
        accumulate(sums + H + j, n, dz_pre);
        accumulate(sums + 2 * H + j, n, dn_pre);
        accumulate(sums + 3 * H + j, n, d_hn);
      }
      p.store_dh(b, j, n, dh.now * z + dh.old);  // dh_{t-1} = dh z (+ the recurrent GEMM later)
    });
  });
}

// ---------------------------------------------------------------------------------------------
// reset before the multiply
// ---------------------------------------------------------------------------------------------
// r and z of every row (padded ones too: harmless, their gradients are zero) and r * h_{t-1}.
template <typename T>
void before_gates(const ForwardRows<T>& p, T* xg, const T* hrz, T* rh) {
  using Vec = Vectorized<T>;
  const int64_t H = p.H;
  parallel_rows(p.B, 3 * H, [&](int64_t b) {
    T* xr = xg + 3 * b * H;
    T* xz = xr + H;
    const T* hr = hrz + 2 * b * H;
    const T* hz = hr + H;
    for_chunks<T>(H, [&](int64_t j, int64_t n) {
      const Vec r = sigmoid(Vec::loadu(xr + j, n) + Vec::loadu(hr + j, n));  // r = σ(xr + hr)  reset gate
      const Vec z = sigmoid(Vec::loadu(xz + j, n) + Vec::loadu(hz + j, n));  // z = σ(xz + hz)  update gate
      r.store(xr + j, n);
      z.store(xz + j, n);
      (r * Vec::loadu(p.h_gemm + b * p.hs + j, n)).store(rh + b * H + j, n);  // r * h_{t-1}
    });
  });
}

template <typename T>
void before_candidate(const ForwardRows<T>& p, T* xg, const T* hn, bool store) {
  using Vec = Vectorized<T>;
  const int64_t H = p.H;
  p.for_rows(3 * H, [&](int64_t b) {
    const T* xz = xg + 3 * b * H + H;
    T* xn = xg + 3 * b * H + 2 * H;
    for_chunks<T>(H, [&](int64_t j, int64_t n) {
      const Vec z = Vec::loadu(xz + j, n);
      const Vec cand = tanh(Vec::loadu(xn + j, n) + Vec::loadu(hn + b * H + j, n));  // n = tanh(xn + (r h) W_hn^T + b_hn)
      if (store) cand.store(xn + j, n);
      const Vec h_prev = Vec::loadu(p.h_old + b * p.hs + j, n);
      p.emit_h(b, j, n, (Vec(T(1)) - z) * cand + z * h_prev);  // h_t = (1 - z) n + z h_{t-1}
    });
  });
}

// d(pre-z), d(pre-n) and the direct part of dh_{t-1}.
template <typename T>
void before_backward_candidate(const BackwardRows<T>& p, const T* gates, T* dxg) {
  using Vec = Vectorized<T>;
  const int64_t H = p.H;
  auto zero = [&](int64_t b) { std::fill(dxg + 3 * b * H, dxg + 3 * (b + 1) * H, T(0)); };
  p.for_rows(3 * H, zero, [&](int64_t b) {
    const T* gz = gates + 3 * b * H + H;
    const T* gn = gz + H;
    T* dxz = dxg + 3 * b * H + H;
    T* dxn = dxz + H;
    for_chunks<T>(H, [&](int64_t j, int64_t n) {
      const Vec z = Vec::loadu(gz + j, n);
      const Vec cand = Vec::loadu(gn + j, n);
      const Vec h_prev = Vec::loadu(p.h_old + b * p.hs + j, n);
      const auto dh = p.dh_new(b, j, n);
      (dh.now * (Vec(T(1)) - z) * dtanh(cand)).store(dxn + j, n);  // d(pre-n) = dh (1 - z) (1 - n²)
      (dh.now * (h_prev - cand) * dsigmoid(z)).store(dxz + j, n);  // d(pre-z) = dh (h_{t-1} - n) σ'(z)
      p.store_dh(b, j, n, dh.now * z + dh.old);                     // dh_{t-1} = dh z (+ the GEMMs later)
    });
  });
}

// d(pre-r) = d(r h) h σ'(r), and d(r h) * r into the GEMM input's gradient.
template <typename T>
void before_backward_reset(const BackwardRows<T>& p, const T* gates, const T* drh, T* dxg, T* acc, bool fresh) {
  using Vec = Vectorized<T>;
  const int64_t H = p.H;
  parallel_rows(p.B, 3 * H, [&](int64_t b) {
    const T* gr = gates + 3 * b * H;
    T* dxr = dxg + 3 * b * H;
    for_chunks<T>(H, [&](int64_t j, int64_t n) {
      const int64_t i = b * H + j;
      const Vec r = Vec::loadu(gr + j, n);
      const Vec d_rh = Vec::loadu(drh + i, n);
      (d_rh * Vec::loadu(p.h_gemm + b * p.hs + j, n) * dsigmoid(r)).store(dxr + j, n);
      const Vec d_h = d_rh * r;
      (fresh ? d_h : Vec::loadu(acc + i, n) + d_h).store(acc + i, n);
    });
  });
}

// reset_after: every row block on its own thread for the whole loop (RowBlocks), W_hh packed once;
// the biases are added in the pass.
std::vector<at::Tensor> forward_reset_after(const SequenceArgs& a, const Shapes& s) {
  const int64_t T = s.T, B = s.B, H = s.H;
  ForwardLoop loop(a, s);
  at::Tensor xg = project_input(a, s, std::nullopt);  // x W_ih^T, all steps
  at::Tensor kept = a.store ? at::empty({T, B, H}, a.x.options()) : at::empty({0}, a.x.options());  // hn, per step
  at::Tensor hg = at::empty({B, 3 * H}, a.x.options());  // [hr, hz, hn] of the step, without b_hh
  const RowBlocks blocks(B, param(a, 1), /*split=*/true);
  const StepGemm recurrent(param(a, 1), blocks, /*transpose=*/true, a.bf16, a.x.size(0));  // hg = h_{t-1} W_hh^T
  AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "gru_forward", [&] {
    const scalar_t* b_ih = data_or_null<scalar_t>(a.params[2]);
    const scalar_t* b_hh = data_or_null<scalar_t>(a.params[3]);
    blocks.run([&] {
      for (int64_t k = 0; k < T; ++k) {
        const int64_t t = loop.time(k);
        recurrent.run(Step{hg}, loop.gemm_in(t), /*accumulate=*/false);
        const auto p = loop.rows<scalar_t>(k);
        after_forward_step(p, Step{xg, t}.data<scalar_t>(), hg.data_ptr<scalar_t>(), b_ih, b_hh,
                           a.store ? Step{kept, t}.data<scalar_t>() : nullptr, a.store);
      }
    });
  });
  return loop.results({xg, kept});
}

std::vector<at::Tensor> forward(const SequenceArgs& a, bool reset_after) {
  const Shapes s = check_common(a, 3, 1);
  const int64_t T = s.T, B = s.B, H = s.H;
  c10::NoGradGuard no_grad;
  if (reset_after) return forward_reset_after(a, s);
  ForwardLoop loop(a, s);
  at::Tensor xg = project_input(a, s, a.params[2]);  // x W_ih^T + b_ih, all steps
  const at::Tensor& w_hh = param(a, 1);
  const OptTensor& b_hh = a.params[3];
  at::Tensor kept = at::empty({T, B, H}, a.x.options());  // r * h_{t-1} of every step
  // the recurrent GEMMs' scratch: [hr, hz] and hn
  at::Tensor hg = at::empty({B, 2 * H}, a.x.options());
  at::Tensor hn = at::empty({B, H}, a.x.options());
  const StepWeight w_t(w_hh.narrow(0, 0, 2 * H).t(), B, a.bf16, T);
  const StepWeight w_n_t(w_hh.narrow(0, 2 * H, H).t(), B, a.bf16, T);
  const OptTensor b_g = b_hh ? OptTensor(b_hh->narrow(0, 0, 2 * H)) : std::nullopt;
  const OptTensor b_n = b_hh ? OptTensor(b_hh->narrow(0, 2 * H, H)) : std::nullopt;
  AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "gru_forward", [&] {
    using T_ = scalar_t;
    for (int64_t k = 0; k < T; ++k) {
      const int64_t t = loop.time(k);
      const auto p = loop.rows<T_>(k);
      const Step xg_t{xg, t}, kept_t{kept, t};
      w_t.into(hg, loop.gemm_in(t).view(), b_g);  // [hr, hz] = h_{t-1} W_hrz^T + b_hrz
      before_gates(p, xg_t.data<T_>(), hg.data_ptr<T_>(), kept_t.data<T_>());
      w_n_t.into(hn, kept_t.view(), b_n);  // hn = (r * h_{t-1}) W_hn^T + b_hn
      before_candidate(p, xg_t.data<T_>(), hn.data_ptr<T_>(), a.store);
    }
  });
  return loop.results({xg, kept});
}

// reset_after, by row blocks as the forward; the biases' gradients summed in the pass.
std::vector<at::Tensor> backward_reset_after(const SequenceArgs& a, const Shapes& s) {
  const int64_t T = s.T, B = s.B, H = s.H;
  BackwardLoop loop(a, s, 1);
  const at::Tensor& gates = loop.saved(0);
  const at::Tensor& kept = loop.saved(1);
  check_same(gates, "gates", a.x, {T, B, 3 * H});
  check_same(kept, "hn", a.x, {T, B, H});
  const auto options = a.x.options();
  at::Tensor dxg = at::empty({T, B, 3 * H}, options);
  at::Tensor dhg = at::empty({T, B, 3 * H}, options);
  const RowBlocks blocks(B, param(a, 1), /*split=*/true);
  const StepGemm recurrent(param(a, 1), blocks, /*transpose=*/false, a.bf16, a.x.size(0));  // dh_{t-1} += d[hr, hz, hn] W_hh
  const bool bias_grads = needs_param(a, 2) || needs_param(a, 3);
  const std::optional<ThreadSums> db = bias_grads ? std::make_optional<ThreadSums>(4 * H, options) : std::nullopt;
  AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "gru_backward", [&] {
    blocks.run([&] {
      for (int64_t k = T - 1; k >= 0; --k) {
        const int64_t t = loop.time(k);
        const auto p = loop.rows<scalar_t>(k);
        after_backward_step(p, Step{gates, t}.data<scalar_t>(), Step{kept, t}.data<scalar_t>(),
                            Step{dxg, t}.data<scalar_t>(), Step{dhg, t}.data<scalar_t>(), db ? &*db : nullptr);
        loop.add_recurrent(Step{dhg, t}, recurrent);
      }
    });
  });
  auto dstates = loop.initial_state_grads();
  at::Tensor dx, dw_ih, dw_hh, db_ih, db_hh;
  input_grads(a, s, dxg, dx, dw_ih);
  if (needs_param(a, 1)) dw_hh = weight_grad(a, dhg, loop.gemm_inputs());  // dW_hh = sum_t d[hr,hz,hn]_t^T h_{t-1}
  if (bias_grads) {  // db_ih = sum d[xr, xz, xn], db_hh = sum d[hr, hz, hn] with d hr = d xr, d hz = d xz
    const at::Tensor sums = db->total();
    if (needs_param(a, 2)) db_ih = sums.narrow(0, 0, 3 * H);
    if (needs_param(a, 3)) db_hh = at::cat({sums.narrow(0, 0, 2 * H), sums.narrow(0, 3 * H, H)});
  }
  return gradients(dx, {dw_ih, dw_hh, db_ih, db_hh}, dstates);
}

// Returns {dx, dW_ih, dW_hh, db_ih, db_hh, dh0}.
std::vector<at::Tensor> backward(const SequenceArgs& a, bool reset_after) {
  const Shapes s = check_common(a, 3, 1);
  const int64_t T = s.T, B = s.B, H = s.H;
  c10::NoGradGuard no_grad;
  if (reset_after) return backward_reset_after(a, s);
  BackwardLoop loop(a, s, 1);
  const at::Tensor& gates = loop.saved(0);
  const at::Tensor& kept = loop.saved(1);
  check_same(gates, "gates", a.x, {T, B, 3 * H});
  check_same(kept, "rh", a.x, {T, B, H});
  const at::Tensor& w_hh = param(a, 1);
  at::Tensor dxg = at::empty({T, B, 3 * H}, a.x.options());
  at::Tensor drh = at::empty({B, H}, a.x.options());
  const StepWeight w_rz(w_hh.narrow(0, 0, 2 * H), B, a.bf16, T);
  const StepWeight w_n(w_hh.narrow(0, 2 * H, H), B, a.bf16, T);
  AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "gru_backward", [&] {
    using T_ = scalar_t;
    for (int64_t k = T - 1; k >= 0; --k) {
      const int64_t t = loop.time(k);
      const auto p = loop.rows<T_>(k);
      const T_* g = gates.data_ptr<T_>() + t * B * 3 * H;
      const Step dxg_t{dxg, t};
      before_backward_candidate(p, g, dxg_t.data<T_>());
      const at::Tensor dxg_view = dxg_t.view();
      w_n.into(drh, dxg_view.narrow(1, 2 * H, H));  // d(r h) = d(pre-n) W_hn
      before_backward_reset(p, g, drh.data_ptr<T_>(), dxg_t.data<T_>(), loop.accumulator().data_ptr<T_>(),
                            loop.accumulator_fresh());
      loop.add_recurrent(dxg_view.narrow(1, 0, 2 * H), w_rz, false);  // dh_{t-1} += d[pre-r, pre-z] W_hrz
    }
  });
  auto dstates = loop.initial_state_grads();

  at::Tensor dx, dw_ih, dw_hh;
  input_grads(a, s, dxg, dx, dw_ih);
  if (needs_param(a, 1)) {  // dW_hrz = sum_t d[pre-r, pre-z]_t^T h_{t-1},  dW_hn = sum_t d(pre-n)_t^T (r h)_t
    dw_hh = at::cat({weight_grad(a, dxg.narrow(2, 0, 2 * H), loop.gemm_inputs()),
                     weight_grad(a, dxg.narrow(2, 2 * H, H), kept)});
  }
  auto [db_ih, db_hh] = shared_bias_grads(a, dxg);  // every bias enters a pre-activation directly
  return gradients(dx, {dw_ih, dw_hh, db_ih, db_hh}, dstates);
}

}  // namespace

// int8 inference of a GRU with reset_after (lstmkit.quantize_int8's layers, no gradient), as
// lstm_int8_forward (lstm.cpp): x W_ih^T + b_ih for all steps and h_{t-1} W_hh^T + b_hh at each step on
// int8_gemm.h's kernel, the gates and h in float32 (after_forward_step). Returns {output, h_n}.
std::vector<at::Tensor> gru_int8_forward(const at::Tensor& x, const Int8Packed& w_ih, const Int8Packed& w_hh,
                                         const OptTensor& bias_ih, const OptTensor& bias_hh, const at::Tensor& h0, bool reverse,
                                         const OptTensor& valid, bool carry_output) {
  const Shapes s = check_int8_call(x, w_ih, w_hh, h0, 3);
  const bool* ok = int8_valid(valid, s);
  const int64_t T = s.T, B = s.B, I = s.I, H = s.H;
  if (bias_ih) check_same(*bias_ih, "bias_ih", x, {3 * H});
  if (bias_hh) check_same(*bias_hh, "bias_hh", x, {3 * H});
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // as entry.h's
  at::Tensor xg = at::empty({T, B, 3 * H}, x.options());
  QuantizedWeight(w_ih, T * B)
      .run(xg.data_ptr<float>(), x.data_ptr<float>(), I, T * B, false,
           bias_ih ? bias_ih->data_ptr<float>() : nullptr);  // x W_ih^T + b_ih, all steps
  const QuantizedWeight recurrent(w_hh, B);
  const RowBlocks blocks(B, w_hh.nbytes(), /*split=*/true);  // as lstm_int8_forward's
  at::Tensor output = at::empty({T, B, H}, x.options());
  at::Tensor hs = at::empty({2, B, H}, x.options());   // h entering and leaving a step, in turn
  at::Tensor hg = at::empty({B, 3 * H}, x.options());  // h_{t-1} W_hh^T + b_hh of the step
  hs[0].copy_(h0);
  const float* b_hh = bias_hh ? bias_hh->data_ptr<float>() : nullptr;
  blocks.run([&] {
    for (int64_t k = 0; k < T; ++k) {
      const ForwardRows<float> p = int8_step_rows(k, s, reverse, hs.data_ptr<float>(), nullptr,
                                                  output.data_ptr<float>(), ok, carry_output);
      recurrent.run(hg.data_ptr<float>(), p.h_old, H, B, /*accumulate=*/false, b_hh);
      after_forward_step(p, xg.data_ptr<float>() + time_of(k, T, reverse) * B * 3 * H, hg.data_ptr<float>(),
                         static_cast<const float*>(nullptr), static_cast<const float*>(nullptr),
                         static_cast<float*>(nullptr), /*store=*/false);  // the biases are in xg and hg
    }
  });
  return {output, hs[T % 2].clone()};
}

std::vector<at::Tensor> gru_forward(const SequenceArgs& a) { return forward(a, true); }
std::vector<at::Tensor> gru_backward(const SequenceArgs& a) { return backward(a, true); }
std::vector<at::Tensor> gru_reset_before_forward(const SequenceArgs& a) { return forward(a, false); }
std::vector<at::Tensor> gru_reset_before_backward(const SequenceArgs& a) { return backward(a, false); }

}  // namespace lstmkit
