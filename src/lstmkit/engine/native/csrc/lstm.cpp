// Fused LSTM time loops for CPU, forward and backward of a whole sequence in one call:
// LSTMCell, LSTMCell with a projection (proj_size > 0) and PeepholeLSTMCell (Gers & Schmidhuber
// 2000; diagonal weights w_ci, w_cf, w_co).
//
// Layout (PyTorch's): gates stacked i, f, g, o along the last dimension, each block H wide;
// weight_ih (4H, I), weight_hh (4H, H), bias_ih and bias_hh (4H) added together.
//
//   i = σ(xi + hi [+ w_ci c_{t-1}]),  f = σ(xf + hf [+ w_cf c_{t-1}]),  g = tanh(xg + hg),
//   c_t = f c_{t-1} + i g,  o = σ(xo + ho [+ w_co c_t]),  h_t = o tanh(c_t)  [h_t = W_hr (o tanh(c_t))]
//   with [xi, xf, xg, xo] = x W_ih^T + b_ih + b_hh and [hi, hf, hg, ho] = h_{t-1} W_hh^T
//   (the biases are added in the pointwise pass).
// With a projection h is P wide: weight_hh (4H, P), weight_hr (P, H), h0 (B, P).
//
// Forward:  one GEMM for the input projection of all T*B rows; per step gates[t] += h_{t-1} W_hh^T
//           (one GEMM, in place) and one fused vectorised pass over the row's four gate blocks,
//           which overwrites the pre-activations with the activated gates for the backward pass;
//           with a projection, then h_t = m W_hr^T (one GEMM, m = o tanh(c_t) kept) and a pass
//           handing h_t on.
// Backward: per step (reverse order) one fused pass computing dgates[t] (with a projection first
//           a pass collecting dh_t and the GEMM dm = dh_t W_hr), then dh_{t-1} += dgates[t] W_hh
//           (one GEMM), db summed in the pass (one running row per thread); after the loop, over
//           all T*B rows at once (and dW_hr = sum_t dh_t^T m_t):
//           dW_ih = dgates^T x, dW_hh = dgates^T h_prev, dx = dgates W_ih, and the
//           peephole weights' gradients as sums over steps (the gate gradient times the cell state
//           it saw).
// Masks, zoneout, reverse: see loop.h.

#include "loop.h"

namespace lstmkit {
namespace {

enum class Variant { kPlain, kPeephole, kProjection };

template <typename T>
struct Peepholes {  // diagonal weights, or all nullptr for a plain LSTM
  const T* ci = nullptr;
  const T* cf = nullptr;
  const T* co = nullptr;
};

// bias: b_ih + b_hh (4H) or nullptr, added here rather than broadcast into the input projection
// (addmm's broadcast copy of the bias costs as much as this whole pass at small shapes).
// m: with a projection, where o tanh(c_t) goes (B, H) instead of on to h_t.
template <typename T>
void forward_step(const ForwardRows<T>& p, T* gates, const T* bias, const Peepholes<T>& w, bool store, T* m) {
  using Vec = Vectorized<T>;
  const int64_t H = p.H;
  p.for_rows(4 * H, [&](int64_t b) {
    T* gi = gates + 4 * b * H;  // the row's four gate blocks
    T* gf = gi + H;
    T* gg = gf + H;
    T* go = gg + H;
    for_chunks<T>(H, [&](int64_t j, int64_t n) {
      const Vec c_prev = Vec::loadu(p.c_old + b * H + j, n);
      Vec pre_i = Vec::loadu(gi + j, n);
      Vec pre_f = Vec::loadu(gf + j, n);
      Vec pre_g = Vec::loadu(gg + j, n);
      Vec pre_o = Vec::loadu(go + j, n);
      if (bias) {
        pre_i = pre_i + Vec::loadu(bias + j, n);
        pre_f = pre_f + Vec::loadu(bias + H + j, n);
        pre_g = pre_g + Vec::loadu(bias + 2 * H + j, n);
        pre_o = pre_o + Vec::loadu(bias + 3 * H + j, n);
      }
      if (w.ci) {  // the input and forget gates look at the old cell state
        pre_i = pre_i + Vec::loadu(w.ci + j, n) * c_prev;
        pre_f = pre_f + Vec::loadu(w.cf + j, n) * c_prev;
      }
      const Vec i = sigmoid(pre_i);                // i = σ(x W_ii + h W_hi + b_i [+ w_ci c_{t-1}])
      const Vec f = sigmoid(pre_f);                // f = σ(x W_if + h W_hf + b_f [+ w_cf c_{t-1}])
      const Vec g = tanh(pre_g);                   // g = tanh(x W_ig + h W_hg + b_g)   candidate
      const Vec c = f * c_prev + i * g;            // c_t = f * c_{t-1} + i * g
      if (w.co) pre_o = pre_o + Vec::loadu(w.co + j, n) * c;  // the output gate looks at the new one
      const Vec o = sigmoid(pre_o);                // o = σ(x W_io + h W_ho + b_o [+ w_co c_t])
      const Vec h = o * tanh(c);                   // h_t = o * tanh(c_t)
      if (store) {  // the backward pass needs the activated gates
        i.store(gi + j, n);
        f.store(gf + j, n);
        g.store(gg + j, n);
        o.store(go + j, n);
      }
      p.emit_c(b, j, n, c);
      if (m) {
        h.store(m + b * H + j, n);
      } else {
        p.emit_h(b, j, n, h);
      }
    });
  });
}

// h_t = W_hr m (computed by the GEMM into hp, (B, P)) handed on as the new h of the valid rows.
template <typename T>
void projection_forward(const ForwardRows<T>& p, const T* hp) {
  p.for_valid_rows(p.R, [&](int64_t b) {
    for_chunks<T>(p.R, [&](int64_t j, int64_t n) { p.emit_h(b, j, n, Vectorized<T>::loadu(hp + b * p.R + j, n)); });
  });
}

// dL/dh_t of every valid row into dhp (B, P), before the GEMM d m = dh_t W_hr.
template <typename T>
void projection_backward(const BackwardRows<T>& p, T* dhp) {
  const int64_t P = p.R;
  auto zero = [&](int64_t b) { std::fill(dhp + b * P, dhp + (b + 1) * P, T(0)); };
  p.for_rows(P, zero, [&](int64_t b) {
    for_chunks<T>(P, [&](int64_t j, int64_t n) {
      const auto dh = p.dh_new(b, j, n);
      dh.now.store(dhp + b * P + j, n);
      p.store_dh(b, j, n, dh.old);
    });
  });
}

// dm: with a projection, dL/d(o tanh(c_t)) (B, H) from projection_backward's GEMM.
// db: where the biases' gradient (4H) is summed, or nullptr.
template <typename T>
void backward_step(const BackwardRows<T>& p, const T* gates, T* dgates, const Peepholes<T>& w, const T* dm,
                   const ThreadSums* db) {
  using Vec = Vectorized<T>;
  using Split = typename BackwardRows<T>::Split;
  const int64_t H = p.H;
  auto zero = [&](int64_t b) { std::fill(dgates + 4 * b * H, dgates + 4 * (b + 1) * H, T(0)); };
  auto row = [&](int64_t b) {
    const T* gi = gates + 4 * b * H;
    const T* gf = gi + H;
    const T* gg = gf + H;
    const T* go = gg + H;
    T* dgi = dgates + 4 * b * H;
    T* dgf = dgi + H;
    T* dgg = dgf + H;
    T* dgo = dgg + H;
    T* sums = db ? db->template mine<T>() : nullptr;
    for_chunks<T>(H, [&](int64_t j, int64_t n) {
      const Vec i = Vec::loadu(gi + j, n);
      const Vec f = Vec::loadu(gf + j, n);
      const Vec g = Vec::loadu(gg + j, n);
      const Vec o = Vec::loadu(go + j, n);
      const Vec c_prev = Vec::loadu(p.c_old + b * H + j, n);
      const Vec tc = tanh(f * c_prev + i * g);     // tanh(c_t), c_t recomputed as the forward did
      // dL/dh_t (or d(o tanh c_t)), and zoneout's direct share of dh_{t-1}
      const Split dh = dm ? Split{Vec::loadu(dm + b * H + j, n), Vec(T(0))} : p.dh_new(b, j, n);
      const auto dc = p.dc_new(b, j, n);
      const Vec d_o = dh.now * tc * dsigmoid(o);   // d(pre-o) = dh tanh(c_t) σ'(o)
      Vec dc_t = dc.now + dh.now * o * dtanh(tc);  // dc_t = dc + dh o (1 - tanh²(c_t))
      if (w.co) dc_t = dc_t + d_o * Vec::loadu(w.co + j, n);  //        + w_co d(pre-o)
      const Vec d_i = dc_t * g * dsigmoid(i);      // d(pre-i) = dc_t g σ'(i)
      const Vec d_f = dc_t * c_prev * dsigmoid(f); // d(pre-f) = dc_t c_{t-1} σ'(f)
      const Vec d_g = dc_t * i * dtanh(g);         // d(pre-g) = dc_t i (1 - g²)
      Vec dc_old = dc_t * f + dc.old;              // dc_{t-1} = dc_t f (+ zoneout's share)
      if (w.ci) dc_old = dc_old + d_i * Vec::loadu(w.ci + j, n) + d_f * Vec::loadu(w.cf + j, n);
      d_i.store(dgi + j, n);
      d_f.store(dgf + j, n);
      d_g.store(dgg + j, n);
      d_o.store(dgo + j, n);
      if (sums) {  // db += d(pre-activations)
        accumulate(sums + j, n, d_i);
        accumulate(sums + H + j, n, d_f);
        accumulate(sums + 2 * H + j, n, d_g);
        accumulate(sums + 3 * H + j, n, d_o);
      }
      if (!dm) p.store_dh(b, j, n, dh.old);  // the recurrent part dgates W_hh is added by the GEMM later
      p.store_dc(b, j, n, dc_old);
    });
  };
  if (dm) {
    p.for_valid_rows(4 * H, zero, row);  // projection_backward passed the padded rows through
  } else {
    p.for_rows(4 * H, zero, row);
  }
}

// Parameter slots: weight_ih, weight_hh, bias_ih, bias_hh [, weight_ci, weight_cf, weight_co | weight_hr].
Shapes check_lstm(const SequenceArgs& a, Variant variant) {
  int64_t projection = 0;
  if (variant == Variant::kProjection) {
    TORCH_CHECK_VALUE(a.params.size() > 4 && a.params[4] && a.params[4]->dim() == 2 && a.params[4]->size(0) > 0,
                      "weight_hr must be a (P, H) tensor");
    projection = a.params[4]->size(0);
  }
  const Shapes s = check_common(a, 4, 2, projection);
  if (projection) checked_param(a, 4, "weight_hr", {s.R, s.H});
  if (variant == Variant::kPeephole) {
    checked_param(a, 4, "weight_ci", {s.H});
    checked_param(a, 5, "weight_cf", {s.H});
    checked_param(a, 6, "weight_co", {s.H});
  }
  return s;
}

template <typename T>
Peepholes<T> peepholes(const SequenceArgs& a, Variant variant) {
  if (variant != Variant::kPeephole) return {};
  return {param(a, 4).data_ptr<T>(), param(a, 5).data_ptr<T>(), param(a, 6).data_ptr<T>()};
}

// Returns {output, h_n, c_n, hs, cs, h_rec, gates (T, B, 4H): activated i, f, g, o when stored
// [, m (T, B, H): o tanh(c_t) with a projection]}.
std::vector<at::Tensor> forward(const SequenceArgs& a, Variant variant) {
  const Shapes s = check_lstm(a, variant);
  const bool projection = variant == Variant::kProjection;
  c10::NoGradGuard no_grad;  // no autograd graph when called directly with tensors that require grad
  ForwardLoop loop(a, s, /*beside_input=*/a.store);  // only the backward reads x beside h
  const OptTensor bias = a.params[2] ? OptTensor(*a.params[2] + *a.params[3]) : std::nullopt;  // added per step
  at::Tensor gates = project_input(a, s, std::nullopt);  // x W_ih^T, all steps
  const RowBlocks blocks(s.B, param(a, 1), /*split=*/!projection);  // a projection's GEMM takes the whole batch
  const StepGemm recurrent(param(a, 1), blocks, /*transpose=*/true, a.bf16, a.x.size(0));  // gates[t] += h_{t-1} W_hh^T
  // with a projection: m = o tanh(c_t) of every step (padded rows stay zero) and h_t = m W_hr^T
  const auto options = a.x.options();
  const at::Tensor m = !projection ? at::Tensor()
                       : a.valid  ? at::zeros({s.T, s.B, s.H}, options)
                                  : at::empty({s.T, s.B, s.H}, options);
  at::Tensor hp = projection ? at::empty({s.B, s.R}, options) : at::Tensor();
  const std::optional<StepWeight> w_hr_t =
      projection ? std::make_optional<StepWeight>(param(a, 4).t(), s.B, a.bf16, s.T) : std::nullopt;
  AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "lstm_forward", [&] {
    const auto w = peepholes<scalar_t>(a, variant);
    blocks.run([&] {
      for (int64_t k = 0; k < s.T; ++k) {
        const int64_t t = loop.time(k);
        recurrent.run(Step{gates, t}, loop.gemm_in(t), /*accumulate=*/true);  // gates[t] += h_{t-1} W_hh^T
        const auto p = loop.rows<scalar_t>(k);
        const Step m_t{m, t};
        forward_step(p, Step{gates, t}.data<scalar_t>(), data_or_null<scalar_t>(bias), w, a.store,
                     projection ? m_t.data<scalar_t>() : nullptr);
        if (projection) {
          w_hr_t->into(hp, m_t.view());  // h_t = W_hr (o tanh(c_t))
          projection_forward(p, hp.data_ptr<scalar_t>());
        }
      }
    });
  });
  return projection ? loop.results({gates, m}) : loop.results({gates});
}

// Returns {dx, dW_ih, dW_hh, db_ih, db_hh [, dw_ci, dw_cf, dw_co | dW_hr], dh0, dc0}.
std::vector<at::Tensor> backward(const SequenceArgs& a, Variant variant) {
  const Shapes s = check_lstm(a, variant);
  const bool projection = variant == Variant::kProjection;
  const int64_t T = s.T, B = s.B, H = s.H;
  c10::NoGradGuard no_grad;
  BackwardLoop loop(a, s, 2);
  const at::Tensor& gates = loop.saved(0);
  check_same(gates, "gates", a.x, {T, B, 4 * H});
  const auto options = a.x.options();
  at::Tensor dgates = at::empty({T, B, 4 * H}, options);
  const at::Tensor m = projection ? loop.saved(1) : at::Tensor();
  if (projection) check_same(m, "m", a.x, {T, B, H});
  const at::Tensor dhp = projection ? at::empty({T, B, s.R}, options) : at::Tensor();  // dL/dh_t of every step
  at::Tensor dm = projection ? at::empty({B, H}, options) : at::Tensor();
  const std::optional<StepWeight> w_hr = projection ? std::make_optional<StepWeight>(param(a, 4), B, a.bf16, T) : std::nullopt;
  const RowBlocks blocks(B, param(a, 1), /*split=*/!projection);
  const StepGemm recurrent(param(a, 1), blocks, /*transpose=*/false, a.bf16, a.x.size(0));  // dh_{t-1} += dgates[t] W_hh
  const bool bias_grads = needs_param(a, 2) || needs_param(a, 3);
  const std::optional<ThreadSums> db = bias_grads ? std::make_optional<ThreadSums>(4 * H, options) : std::nullopt;
  AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "lstm_backward", [&] {
    const auto w = peepholes<scalar_t>(a, variant);
    blocks.run([&] {
      for (int64_t k = T - 1; k >= 0; --k) {  // processed steps in reverse order
        const int64_t t = loop.time(k);
        const auto p = loop.rows<scalar_t>(k);
        if (projection) {
          const Step dhp_t{dhp, t};
          projection_backward(p, dhp_t.data<scalar_t>());
          w_hr->into(dm, dhp_t.view());  // d(o tanh(c_t)) = dh_t W_hr
        }
        backward_step(p, gates.data_ptr<scalar_t>() + t * B * 4 * H, Step{dgates, t}.data<scalar_t>(), w,
                      projection ? dm.data_ptr<scalar_t>() : nullptr, db ? &*db : nullptr);
        loop.add_recurrent(Step{dgates, t}, recurrent);  // dh_{t-1} += dgates[t] W_hh
      }
    });
  });
  auto dstates = loop.initial_state_grads();

  at::Tensor dx, dw_ih, dw_hh;
  loop.weight_grads(dgates, dgates, dx, dw_ih, dw_hh);  // dW_ih = dgates^T x, dW_hh = sum_t dgates_t^T h_{t-1}
  auto [db_ih, db_hh] = shared_bias_grads(a, [&] { return db->total(); });  // summed in the loop
  std::vector<at::Tensor> dparams{dw_ih, dw_hh, db_ih, db_hh};
  if (projection) dparams.push_back(needs_param(a, 4) ? weight_grad(a, dhp, m) : at::Tensor());  // dW_hr = sum_t dh_t^T m_t
  if (variant == Variant::kPeephole) {
    // dw_ci = sum_t d(pre-i) c_{t-1},  dw_cf = sum_t d(pre-f) c_{t-1},  dw_co = sum_t d(pre-o) c_t
    const at::Tensor dg = dgates.view({T, B, 4, H});
    const at::Tensor g = gates.view({T, B, 4, H});
    const at::Tensor c_prev = loop.states_entering(1);
    auto sum = [&](int gate, const at::Tensor& c) { return (dg.select(2, gate) * c).sum({0, 1}); };
    dparams.push_back(needs_param(a, 4) ? sum(0, c_prev) : at::Tensor());
    dparams.push_back(needs_param(a, 5) ? sum(1, c_prev) : at::Tensor());
    if (needs_param(a, 6)) {  // c_t before zoneout, recomputed: f c_{t-1} + i g
      dparams.push_back(sum(3, g.select(2, 1) * c_prev + g.select(2, 0) * g.select(2, 2)));
    } else {
      dparams.emplace_back();
    }
  }
  return gradients(dx, dparams, dstates);
}

}  // namespace

// int8 inference of a plain LSTM (lstmkit.quantize_int8's layers, no gradient): both products on
// int8_gemm.h's kernel, x W_ih^T for all steps at once and h_{t-1} W_hh^T at each step, each operand
// quantized row by row as it comes; the gates, c and h in float32 (forward_step). Weights int8 (4H, I)
// and (4H, H) with one scale per row, packed, bias: b_ih + b_hh (4H) or none. Returns {output, h_n, c_n}.
std::vector<at::Tensor> lstm_int8_forward(const at::Tensor& x, const Int8Packed& w_ih, const Int8Packed& w_hh,
                                          const OptTensor& bias,
                                          const at::Tensor& h0, const at::Tensor& c0, bool reverse,
                                          const OptTensor& valid, bool carry_output) {
  const Shapes s = check_int8_call(x, w_ih, w_hh, h0, 4);
  const bool* ok = int8_valid(valid, s);
  const int64_t T = s.T, B = s.B, I = s.I, H = s.H;
  check_same(c0, "c0", x, {B, H});
  if (bias) check_same(*bias, "bias", x, {4 * H});
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // as entry.h's
  at::Tensor gates = at::empty({T, B, 4 * H}, x.options());
  QuantizedWeight(w_ih, T * B)
      .run(gates.data_ptr<float>(), x.data_ptr<float>(), I, T * B, false, bias ? bias->data_ptr<float>() : nullptr);
  const QuantizedWeight recurrent(w_hh, B);
  // each thread its own rows for the whole loop where that pays (RowBlocks; the int8 W_hh is a
  // quarter of the float32 one, so more shapes qualify)
  const RowBlocks blocks(B, w_hh.nbytes(), /*split=*/true);
  at::Tensor output = at::empty({T, B, H}, x.options());
  at::Tensor hs = at::empty({2, B, H}, x.options());     // h entering and leaving a step, in turn
  at::Tensor cells = at::empty({2, B, H}, x.options());  // and c
  hs[0].copy_(h0);
  cells[0].copy_(c0);
  blocks.run([&] {
    for (int64_t k = 0; k < T; ++k) {
      const ForwardRows<float> p = int8_step_rows(k, s, reverse, hs.data_ptr<float>(), cells.data_ptr<float>(),
                                                  output.data_ptr<float>(), ok, carry_output);
      float* g = gates.data_ptr<float>() + time_of(k, T, reverse) * B * 4 * H;
      recurrent.run(g, p.h_old, H, B, /*accumulate=*/true, nullptr);  // gates[t] += h_{t-1} W_hh^T
      forward_step(p, g, static_cast<const float*>(nullptr), Peepholes<float>{}, /*store=*/false,
                   static_cast<float*>(nullptr));
    }
  });
  return {output, hs[T % 2].clone(), cells[T % 2].clone()};
}

std::vector<at::Tensor> lstm_forward(const SequenceArgs& a) { return forward(a, Variant::kPlain); }
std::vector<at::Tensor> lstm_backward(const SequenceArgs& a) { return backward(a, Variant::kPlain); }
std::vector<at::Tensor> lstm_projection_forward(const SequenceArgs& a) { return forward(a, Variant::kProjection); }
std::vector<at::Tensor> lstm_projection_backward(const SequenceArgs& a) { return backward(a, Variant::kProjection); }
std::vector<at::Tensor> peephole_lstm_forward(const SequenceArgs& a) { return forward(a, Variant::kPeephole); }
std::vector<at::Tensor> peephole_lstm_backward(const SequenceArgs& a) { return backward(a, Variant::kPeephole); }

}  // namespace lstmkit
