// Fused layer-normalised LSTM time loop for CPU (LayerNormLSTMCell, haste's LayerNormLSTM, Ba et
// al. 2016), forward and backward.
//
//   gates = LN(x W_ih^T; γ_ih) + b_ih + LN(h_{t-1} W_hh^T; γ_hh) + b_hh     (i, f, g, o blocks)
//   i, f, o = σ(.),  g = tanh(.),  c_t = f c_{t-1} + i g,  h_t = o tanh(LN(c_t; γ_c, β_c))
// where LN(v; γ, β) = (v - mean(v)) / sqrt(var(v) + eps) * γ + β over the whole vector (4H values
// for the projections, H for the cell), var the biased variance.
//
// Forward:  the input projection and its layer norm for all T*B rows at once (ATen's layer norm,
//           with both biases as its shift); per step the recurrent GEMM into a scratch buffer and
//           one fused row pass: the row's moments, its normalised projection plus the input part,
//           the gates and c_t, then c_t's moments, LN(c_t) and h_t.
// Backward: per step a fused row pass (three sweeps: dL/dLN(c) and its moments, the gate
//           gradients and dc_{t-1}, then the layer norm's backward onto h W_hh^T) and
//           dh_{t-1} += d(h W_hh^T) W_hh. The gradients of γ_hh, γ_c and β_c are summed in the
//           second sweep, into one row per thread (no (T, B, 4H) product to make and reduce), and
//           so is the biases'. After the loop dW_hh as a single GEMM, and the input layer
//           norm's backward (ATen's) for dW_ih and dx.
// Masks, zoneout, reverse: see loop.h.

#include "loop.h"

namespace lstmkit {
namespace {

template <typename T>
struct Norms {
  const T* g_hh;  // (4H) gain of the recurrent projection's LN
  const T* g_c;   // (H) gain and shift of the cell's LN
  const T* b_c;
  T eps;
};

// Mean and 1 / sqrt(var + eps) of v[0, width), two passes.
template <typename T>
std::pair<T, T> moments(const T* v, int64_t width, T eps) {
  using Vec = Vectorized<T>;
  Vec acc(T(0));
  for_chunks<T>(width, [&](int64_t j, int64_t n) { acc = acc + Vec::set(Vec(T(0)), Vec::loadu(v + j, n), n); });
  const T mean = sum_lanes(acc, Vec::size()) / static_cast<T>(width);
  acc = Vec(T(0));
  for_chunks<T>(width, [&](int64_t j, int64_t n) {
    const Vec d = Vec::set(Vec(T(0)), Vec::loadu(v + j, n) - Vec(mean), n);
    acc = acc + d * d;
  });
  const T var = sum_lanes(acc, Vec::size()) / static_cast<T>(width);
  return {mean, T(1) / std::sqrt(var + eps)};
}

// Saved per step for the backward pass (all nullptr when nothing is stored).
template <typename T>
struct Kept {
  T* xhat;  // (B, 4H) the normalised recurrent projection
  T* chat;  // (B, H) the normalised cell state
  T* rstd;  // (B, 2) 1/std of the recurrent projection and of the cell state
};

template <typename T>
void forward_step(const ForwardRows<T>& p, T* gates, const T* raw, const Norms<T>& ln, const Kept<T>& kept) {
  using Vec = Vectorized<T>;
  const int64_t H = p.H;
  p.for_rows(4 * H, [&](int64_t b) {
    T* g = gates + 4 * b * H;  // in: LN(x W_ih^T) + biases; out: activated i, f, g, o
    const T* r = raw + 4 * b * H;
    T* c_row = p.c_new + b * H;  // holds c_t before zoneout until the last sweep
    const std::pair<T, T> mr = moments(r, 4 * H, ln.eps);  // (no structured bindings: lambdas capture them)
    const T mean = mr.first, rstd = mr.second;
    for_chunks<T>(H, [&](int64_t j, int64_t n) {
      Vec act[4];
      for (int k = 0; k < 4; ++k) {  // pre = xg + LN(h W_hh^T) = xg + (v - mean) rstd γ_hh
        const int64_t col = k * H + j;
        const Vec xhat = (Vec::loadu(r + col, n) - Vec(mean)) * Vec(rstd);
        if (kept.xhat) xhat.store(kept.xhat + 4 * b * H + col, n);
        act[k] = Vec::loadu(g + col, n) + xhat * Vec::loadu(ln.g_hh + col, n);
      }
      const Vec i = sigmoid(act[0]);  // input gate
      const Vec f = sigmoid(act[1]);  // forget gate
      const Vec gg = tanh(act[2]);    // candidate
      const Vec o = sigmoid(act[3]);  // output gate
      i.store(g + j, n);
      f.store(g + H + j, n);
      gg.store(g + 2 * H + j, n);
      o.store(g + 3 * H + j, n);
      const Vec c = f * Vec::loadu(p.c_old + b * H + j, n) + i * gg;  // c_t = f c_{t-1} + i g
      c.store(c_row + j, n);
    });
    const std::pair<T, T> mc = moments(c_row, H, ln.eps);
    const T c_mean = mc.first, c_rstd = mc.second;
    for_chunks<T>(H, [&](int64_t j, int64_t n) {
      const Vec c = Vec::loadu(c_row + j, n);
      const Vec chat = (c - Vec(c_mean)) * Vec(c_rstd);
      if (kept.chat) chat.store(kept.chat + b * H + j, n);
      const Vec cn = chat * Vec::loadu(ln.g_c + j, n) + Vec::loadu(ln.b_c + j, n);  // LN(c_t)
      p.emit_c(b, j, n, c);
      p.emit_h(b, j, n, Vectorized<T>::loadu(g + 3 * H + j, n) * tanh(cn));  // h_t = o tanh(LN(c_t))
    });
    if (kept.rstd) {
      kept.rstd[2 * b] = rstd;
      kept.rstd[2 * b + 1] = c_rstd;
    }
  });
}

// Per-step gradient buffers.
template <typename T>
struct Grads {
  T* dgates;  // (B, 4H) d(pre-activations) = d LN(h W_hh^T) = d(xg)
  T* draw;    // (B, 4H) d(h W_hh^T)
  T* dcn;     // (B, H) d LN(c_t) of the step, between the first and second sweep
  const ThreadSums& sums;  // (10H) dγ_hh (4H), dγ_c (H), dβ_c (H) and the biases' gradient (4H)
};

template <typename T>
void backward_step(const BackwardRows<T>& p, const T* gates, const Kept<T>& kept, const Norms<T>& ln,
                   const Grads<T>& d) {
  using Vec = Vectorized<T>;
  const int64_t H = p.H;
  auto zero = [&](int64_t b) {
    std::fill(d.dgates + 4 * b * H, d.dgates + 4 * (b + 1) * H, T(0));
    std::fill(d.draw + 4 * b * H, d.draw + 4 * (b + 1) * H, T(0));
  };
  p.for_rows(4 * H, zero, [&](int64_t b) {
    const T* g = gates + 4 * b * H;
    const T* chat = kept.chat + b * H;
    const T* xhat = kept.xhat + 4 * b * H;
    T* dg = d.dgates + 4 * b * H;
    T* dcn = d.dcn + b * H;
    T* sums = d.sums.template mine<T>();  // dγ_hh, dγ_c, dβ_c, db
    const T rstd = kept.rstd[2 * b], c_rstd = kept.rstd[2 * b + 1];
    auto tanh_cn = [&](int64_t j, int64_t n) {  // tanh(LN(c_t)) recomputed
      return tanh(Vec::loadu(chat + j, n) * Vec::loadu(ln.g_c + j, n) + Vec::loadu(ln.b_c + j, n));
    };
    // Sweep 1: d LN(c) = dh o (1 - tanh²), and the two means its layer norm's backward needs.
    Vec s1(T(0)), s2(T(0));
    for_chunks<T>(H, [&](int64_t j, int64_t n) {
      const Vec d_cn = p.dh_new(b, j, n).now * Vec::loadu(g + 3 * H + j, n) * dtanh(tanh_cn(j, n));
      d_cn.store(dcn + j, n);
      const Vec d_chat = Vec::set(Vec(T(0)), d_cn * Vec::loadu(ln.g_c + j, n), n);  // d ĉ = d LN(c) γ_c
      s1 = s1 + d_chat;
      s2 = s2 + d_chat * Vec::loadu(chat + j, n);
    });
    const T m1 = sum_lanes(s1, Vec::size()) / H, m2 = sum_lanes(s2, Vec::size()) / H;
    // Sweep 2: dc_t = dc + rstd_c (d ĉ - mean(d ĉ) - ĉ mean(d ĉ ĉ)), the gate gradients, dc_{t-1}.
    Vec s3(T(0)), s4(T(0));
    for_chunks<T>(H, [&](int64_t j, int64_t n) {
      const auto dh = p.dh_new(b, j, n);
      const auto dc = p.dc_new(b, j, n);
      const Vec i = Vec::loadu(g + j, n);
      const Vec f = Vec::loadu(g + H + j, n);
      const Vec gg = Vec::loadu(g + 2 * H + j, n);
      const Vec o = Vec::loadu(g + 3 * H + j, n);
      const Vec c_prev = Vec::loadu(p.c_old + b * H + j, n);
      const Vec d_cn = Vec::loadu(dcn + j, n);
      const Vec c_hat = Vec::loadu(chat + j, n);
      accumulate(sums + 4 * H + j, n, d_cn * c_hat);  // dγ_c += d LN(c_t) ĉ_t
      accumulate(sums + 5 * H + j, n, d_cn);          // dβ_c += d LN(c_t)
      const Vec d_chat = d_cn * Vec::loadu(ln.g_c + j, n);
      const Vec dc_t = dc.now + Vec(c_rstd) * (d_chat - Vec(m1) - c_hat * Vec(m2));
      Vec dpre[4];
      dpre[0] = dc_t * gg * dsigmoid(i);                     // d(pre-i) = dc_t g σ'(i)
      dpre[1] = dc_t * c_prev * dsigmoid(f);                 // d(pre-f) = dc_t c_{t-1} σ'(f)
      dpre[2] = dc_t * i * dtanh(gg);                        // d(pre-g) = dc_t i (1 - g²)
      dpre[3] = dh.now * tanh_cn(j, n) * dsigmoid(o);        // d(pre-o) = dh tanh(LN(c_t)) σ'(o)
      for (int k = 0; k < 4; ++k) {
        const int64_t col = k * H + j;
        dpre[k].store(dg + col, n);
        const Vec x_hat = Vec::loadu(xhat + col, n);
        accumulate(sums + col, n, dpre[k] * x_hat);  // dγ_hh += d pre x̂
        accumulate(sums + 6 * H + col, n, dpre[k]);  // db += d pre
        const Vec dxhat = Vec::set(Vec(T(0)), dpre[k] * Vec::loadu(ln.g_hh + col, n), n);  // d x̂ = d pre γ_hh
        s3 = s3 + dxhat;
        s4 = s4 + dxhat * x_hat;
      }
      p.store_dh(b, j, n, dh.old);  // h_{t-1} reaches h_t only through the recurrent GEMM
      p.store_dc(b, j, n, dc_t * f + dc.old);  // dc_{t-1} = dc_t f (+ zoneout's share)
    });
    const T m3 = sum_lanes(s3, Vec::size()) / (4 * H), m4 = sum_lanes(s4, Vec::size()) / (4 * H);
    // Sweep 3: d(h W_hh^T) = rstd (d x̂ - mean(d x̂) - x̂ mean(d x̂ x̂)).
    for_chunks<T>(4 * H, [&](int64_t j, int64_t n) {
      const Vec dxhat = Vec::loadu(dg + j, n) * Vec::loadu(ln.g_hh + j, n);
      const Vec v = Vec(rstd) * (dxhat - Vec(m3) - Vec::loadu(xhat + j, n) * Vec(m4));
      v.store(d.draw + 4 * b * H + j, n);
    });
  });
}

// Parameter slots: weight_ih, weight_hh, bias_ih, bias_hh, ln_weight_ih, ln_weight_hh, ln_weight_c, ln_bias_c.
Shapes check_layernorm(const SequenceArgs& a) {
  const Shapes s = check_common(a, 4, 2);
  checked_param(a, 4, "ln_weight_ih", {4 * s.H});
  checked_param(a, 5, "ln_weight_hh", {4 * s.H});
  checked_param(a, 6, "ln_weight_c", {s.H});
  checked_param(a, 7, "ln_bias_c", {s.H});
  TORCH_CHECK_VALUE(a.eps >= 0.0, "eps must be >= 0, got ", a.eps);
  return s;
}

template <typename T>
Norms<T> norms(const SequenceArgs& a) {
  return {param(a, 5).data_ptr<T>(), param(a, 6).data_ptr<T>(), param(a, 7).data_ptr<T>(), static_cast<T>(a.eps)};
}

}  // namespace

// Returns {output, h_n, c_n, hs, cs, h_rec, gates (activated i, f, g, o), x̂_hh (T, B, 4H),
// ĉ (T, B, H), rstd (T, B, 2), x W_ih^T (T*B, 4H), its mean and rstd (T*B, 1)}.
std::vector<at::Tensor> layernorm_lstm_forward(const SequenceArgs& a) {
  const Shapes s = check_layernorm(a);
  const int64_t T = s.T, B = s.B, H = s.H;
  c10::NoGradGuard no_grad;
  ForwardLoop loop(a, s);
  const OptTensor bias = a.params[2] ? OptTensor(*a.params[2] + *a.params[3]) : std::nullopt;
  const at::Tensor raw_ih = project_input(a, s, std::nullopt).view({T * B, 4 * H});
  // xg = LN(x W_ih^T; γ_ih) + b_ih + b_hh for all steps
  auto [xg, mean_ih, rstd_ih] = at::native_layer_norm(raw_ih, {4 * H}, param(a, 4), bias, a.eps);
  at::Tensor gates = xg.view({T, B, 4 * H});
  // what the backward reads of the valid rows (padded rows are never read)
  const auto options = a.x.options();
  const at::Tensor xhat = a.store ? at::empty({T, B, 4 * H}, options) : at::Tensor();
  const at::Tensor chat = a.store ? at::empty({T, B, H}, options) : at::Tensor();
  const at::Tensor rstd = a.store ? at::empty({T, B, 2}, options) : at::Tensor();
  at::Tensor raw_hh = at::empty({B, 4 * H}, options);  // h_{t-1} W_hh^T of one step
  const RowBlocks blocks(B, param(a, 1), /*split=*/true);
  const StepGemm recurrent(param(a, 1), blocks, /*transpose=*/true, a.bf16, a.x.size(0));  // h_{t-1} W_hh^T
  AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "layernorm_lstm_forward", [&] {
    using T_ = scalar_t;
    const auto ln = norms<T_>(a);
    blocks.run([&] {
      for (int64_t k = 0; k < T; ++k) {
        const int64_t t = loop.time(k);
        recurrent.run(Step{raw_hh}, loop.gemm_in(t), /*accumulate=*/false);
        Kept<T_> kept{};
        if (a.store) kept = {xhat.data_ptr<T_>() + t * B * 4 * H, chat.data_ptr<T_>() + t * B * H,
                             rstd.data_ptr<T_>() + t * B * 2};
        forward_step(loop.rows<T_>(k), Step{gates, t}.data<T_>(), raw_hh.data_ptr<T_>(), ln, kept);
      }
    });
  });
  if (!a.store) return loop.results({gates});
  return loop.results({gates, xhat, chat, rstd, raw_ih, mean_ih, rstd_ih});
}

// Returns {dx, dW_ih, dW_hh, db_ih, db_hh, dγ_ih, dγ_hh, dγ_c, dβ_c, dh0, dc0}.
std::vector<at::Tensor> layernorm_lstm_backward(const SequenceArgs& a) {
  const Shapes s = check_layernorm(a);
  const int64_t T = s.T, B = s.B, H = s.H;
  c10::NoGradGuard no_grad;
  BackwardLoop loop(a, s, 2);
  const at::Tensor &gates = loop.saved(0), &xhat = loop.saved(1), &chat = loop.saved(2), &rstd = loop.saved(3);
  const at::Tensor &raw_ih = loop.saved(4), &mean_ih = loop.saved(5), &rstd_ih = loop.saved(6);
  check_same(gates, "gates", a.x, {T, B, 4 * H});
  check_same(xhat, "xhat", a.x, {T, B, 4 * H});
  check_same(chat, "chat", a.x, {T, B, H});
  check_same(rstd, "rstd", a.x, {T, B, 2});
  const auto options = a.x.options();
  at::Tensor dgates = at::empty({T, B, 4 * H}, options);
  at::Tensor draw = at::empty({T, B, 4 * H}, options);
  at::Tensor dcn = at::empty({B, H}, options);
  const ThreadSums sums(10 * H, options);
  const RowBlocks blocks(B, param(a, 1), /*split=*/true);
  const StepGemm recurrent(param(a, 1), blocks, /*transpose=*/false, a.bf16, a.x.size(0));  // d(h W_hh^T) W_hh
  AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "layernorm_lstm_backward", [&] {
    using T_ = scalar_t;
    const auto ln = norms<T_>(a);
    blocks.run([&] {
      for (int64_t k = T - 1; k >= 0; --k) {
        const int64_t t = loop.time(k);
        const Kept<T_> kept{xhat.data_ptr<T_>() + t * B * 4 * H, chat.data_ptr<T_>() + t * B * H,
                            rstd.data_ptr<T_>() + t * B * 2};
        const Grads<T_> d{dgates.data_ptr<T_>() + t * B * 4 * H, draw.data_ptr<T_>() + t * B * 4 * H,
                          dcn.data_ptr<T_>(), sums};
        backward_step(loop.rows<T_>(k), gates.data_ptr<T_>() + t * B * 4 * H, kept, ln, d);
        loop.add_recurrent(Step{draw, t}, recurrent);  // dh_{t-1} += d(h W_hh^T) W_hh
      }
    });
  });
  auto dstates = loop.initial_state_grads();

  at::Tensor dx, dw_ih, dw_hh, dg_ih, dg_hh, dg_c, db_c;
  if (a.needs[0] || needs_param(a, 0) || needs_param(a, 4)) {  // the input layer norm's backward
    auto [d_raw, d_gain, d_shift] = at::native_layer_norm_backward(
        dgates.view({T * B, 4 * H}), raw_ih, {4 * H}, mean_ih, rstd_ih, param(a, 4), std::nullopt,
        {a.needs[0] || needs_param(a, 0), needs_param(a, 4), false});
    if (d_raw.defined()) input_grads(a, s, d_raw.view({T, B, 4 * H}), dx, dw_ih);
    dg_ih = d_gain;
  }
  if (needs_param(a, 1)) dw_hh = weight_grad(a, draw, loop.gemm_inputs());  // dW_hh = sum_t d(h W_hh^T)_t^T h_{t-1}
  const at::Tensor norm_grads = sums.total();  // the threads' sums added up
  auto [db_ih, db_hh] = shared_bias_grads(a, [&] { return norm_grads.narrow(0, 6 * H, 4 * H); });
  if (needs_param(a, 5)) dg_hh = norm_grads.narrow(0, 0, 4 * H);  // dγ_hh = sum_t d pre_t x̂_t
  if (needs_param(a, 6)) dg_c = norm_grads.narrow(0, 4 * H, H);   // dγ_c = sum_t d LN(c_t) ĉ_t
  if (needs_param(a, 7)) db_c = norm_grads.narrow(0, 5 * H, H);   // dβ_c = sum_t d LN(c_t)
  return gradients(dx, {dw_ih, dw_hh, db_ih, db_hh, dg_ih, dg_hh, dg_c, db_c}, dstates);
}

}  // namespace lstmkit
