// Fused GRU time loop for CPU (PyTorch / Keras reset_after=True form), forward and backward.
//
// Layout (PyTorch's): gates stacked r, z, n along the last dimension, each block H wide;
// weight_ih (3H, I), weight_hh (3H, H), bias_ih and bias_hh (3H) kept separate because the reset
// gate multiplies the recurrent part of the candidate only:
//
//   r = σ(xr + hr),  z = σ(xz + hz),  n = tanh(xn + r * hn),  h_t = (1 - z) * n + z * h_{t-1}
//   with  [xr, xz, xn] = x W_ih^T + b_ih  and  [hr, hz, hn] = h_{t-1} W_hh^T + b_hh.
//
// Forward:  one GEMM for x W_ih^T over all T*B rows; per step one GEMM (B x H x 3H) into a scratch
//           buffer and one fused pointwise pass. The activated r, z, n overwrite the input
//           projection and hn is kept per step for the backward pass.
// Backward: per step one fused pass writing d[xr, xz, xn] and d[hr, hz, hn], and dh_{t-1} +=
//           d[hr, hz, hn] W_hh; after the loop dW_ih, dW_hh, the biases and dx as single GEMMs/sums.
// valid / carry_output / recurrent_mask / zoneout / reverse as in lstm.cpp (zoneout on h only).

#include "common.h"

namespace lstmkit {
namespace {

template <typename T>
struct GruForwardStep {
  T* xg;                // (B, 3H): input projection in; activated r, z, n out (if store_gates)
  const T* hg;          // (B, 3H): h_{t-1} W_hh^T + b_hh of this step
  T* hn;                // (B, H): hn kept for the backward pass, or nullptr
  const T* h_old;       // (B, H) state entering the step
  T* h_new;             // (B, H) state leaving the step
  T* out;               // (B, H) output at this time step
  const T* prev_out;    // output of the previously processed step, nullptr = zeros
  T* h_rec_next;        // h_new * recurrent_mask (next step's GEMM input), or nullptr
  const T* rmask;
  const bool* valid;
  Zoneout<T> zoneout;
  bool carry_output;
};

template <typename T>
void gru_forward_pointwise(const GruForwardStep<T>& p, int64_t batch, int64_t hidden) {
  using Vec = Vectorized<T>;
  const int64_t H = hidden;
  at::parallel_for(0, batch, grain_rows(3 * H), [&](int64_t b_begin, int64_t b_end) {
    const Vec one(T(1));
    const Vec zero(T(0));
    for (int64_t b = b_begin; b < b_end; ++b) {
      const int64_t row = b * H;
      const T* h_old = p.h_old + row;
      T* h_new = p.h_new + row;
      T* out = p.out + row;
      T* h_rec = p.h_rec_next ? p.h_rec_next + row : nullptr;
      const T* mask = p.rmask ? p.rmask + row : nullptr;

      if (p.valid && !p.valid[b]) {  // padded step: carry h, output zero or the previous output
        for (int64_t j = 0; j < H; j += Vec::size()) {
          const int64_t n = std::min<int64_t>(Vec::size(), H - j);
          const Vec h = Vec::loadu(h_old + j, n);
          h.store(h_new + j, n);
          ((p.carry_output && p.prev_out) ? Vec::loadu(p.prev_out + row + j, n) : zero).store(out + j, n);
          if (h_rec) (h * Vec::loadu(mask + j, n)).store(h_rec + j, n);
        }
        continue;
      }

      T* xr = p.xg + 3 * row;
      T* xz = xr + H;
      T* xn = xz + H;
      const T* hr = p.hg + 3 * row;
      const T* hz = hr + H;
      const T* hn = hz + H;
      for (int64_t j = 0; j < H; j += Vec::size()) {
        const int64_t n = std::min<int64_t>(Vec::size(), H - j);
        const Vec r = sigmoid(Vec::loadu(xr + j, n) + Vec::loadu(hr + j, n));  // r = σ(xr + hr)  reset gate
        const Vec z = sigmoid(Vec::loadu(xz + j, n) + Vec::loadu(hz + j, n));  // z = σ(xz + hz)  update gate
        const Vec h_n = Vec::loadu(hn + j, n);
        const Vec cand = tanh(Vec::loadu(xn + j, n) + r * h_n);               // n = tanh(xn + r * hn)
        const Vec h_prev = Vec::loadu(h_old + j, n);
        Vec h = (one - z) * cand + z * h_prev;                                 // h_t = (1 - z) n + z h_{t-1}
        if (p.zoneout.active()) {
          const Vec zh = p.zoneout.h ? Vec::loadu(p.zoneout.h + row + j, n) : Vec(p.zoneout.rate);
          h = zh * h_prev + (one - zh) * h;  // h' = z_h h_{t-1} + (1 - z_h) h_t
        }
        if (p.hn) {  // what the backward pass needs: r, z, n and hn
          r.store(xr + j, n);
          z.store(xz + j, n);
          cand.store(xn + j, n);
          h_n.store(p.hn + row + j, n);
        }
        h.store(h_new + j, n);
        h.store(out + j, n);
        if (h_rec) (h * Vec::loadu(mask + j, n)).store(h_rec + j, n);
      }
    }
  });
}

template <typename T>
struct GruBackwardStep {
  const T* gates;       // (B, 3H) activated r, z, n
  const T* hn;          // (B, H) hn of this step
  const T* h_old;       // (B, H) state entering the step (unmasked)
  const T* grad_out;    // (B, H)
  T* dh;                // in: dL/dh leaving the step (direct part); out: dL/dh_{t-1} direct part
  const T* dh_rec;      // d[hr,hz,hn]_{later} W_hh not yet added to dh (needs * rmask), or nullptr
  const T* rmask;
  T* dcarry;            // carry_output gradient, or nullptr
  T* dxg;               // (B, 3H) out: dL/d[xr, xz, xn]
  T* dhg;               // (B, 3H) out: dL/d[hr, hz, hn]
  const bool* valid;
  Zoneout<T> zoneout;
};

template <typename T>
void gru_backward_pointwise(const GruBackwardStep<T>& p, int64_t batch, int64_t hidden) {
  using Vec = Vectorized<T>;
  const int64_t H = hidden;
  at::parallel_for(0, batch, grain_rows(3 * H), [&](int64_t b_begin, int64_t b_end) {
    const Vec one(T(1));
    const Vec zero(T(0));
    for (int64_t b = b_begin; b < b_end; ++b) {
      const int64_t row = b * H;
      T* dh = p.dh + row;
      T* dcarry = p.dcarry ? p.dcarry + row : nullptr;
      auto total_dh = [&](int64_t j, int64_t n) {  // dH = dh_direct + (d[hr,hz,hn]_{later} W_hh) * m
        Vec d = Vec::loadu(dh + j, n);
        if (p.dh_rec) {
          const Vec rec = Vec::loadu(p.dh_rec + row + j, n);
          d = d + (p.rmask ? rec * Vec::loadu(p.rmask + row + j, n) : rec);
        }
        return d;
      };
      auto total_dout = [&](int64_t j, int64_t n) {
        Vec d = Vec::loadu(p.grad_out + row + j, n);
        return dcarry ? d + Vec::loadu(dcarry + j, n) : d;
      };

      T* dxr = p.dxg + 3 * row;
      T* dhr = p.dhg + 3 * row;
      if (p.valid && !p.valid[b]) {  // padded step: gradients pass through the carried state
        for (int64_t j = 0; j < H; j += Vec::size()) {
          const int64_t n = std::min<int64_t>(Vec::size(), H - j);
          total_dh(j, n).store(dh + j, n);
          if (dcarry) total_dout(j, n).store(dcarry + j, n);
        }
        std::fill(dxr, dxr + 3 * H, T(0));
        std::fill(dhr, dhr + 3 * H, T(0));
        continue;
      }

      const T* gr = p.gates + 3 * row;
      const T* gz = gr + H;
      const T* gn = gz + H;
      T* dxz = dxr + H;
      T* dxn = dxz + H;
      T* dhz = dhr + H;
      T* dhn = dhz + H;
      for (int64_t j = 0; j < H; j += Vec::size()) {
        const int64_t n = std::min<int64_t>(Vec::size(), H - j);
        const Vec r = Vec::loadu(gr + j, n);
        const Vec z = Vec::loadu(gz + j, n);
        const Vec cand = Vec::loadu(gn + j, n);
        const Vec h_prev = Vec::loadu(p.h_old + row + j, n);
        Vec dh_t = total_dh(j, n) + total_dout(j, n);  // dL/dh_t'
        Vec dh_old = zero;
        if (p.zoneout.active()) {  // h' = z h_{t-1} + (1 - z) h_t
          const Vec zh = p.zoneout.h ? Vec::loadu(p.zoneout.h + row + j, n) : Vec(p.zoneout.rate);
          dh_old = zh * dh_t;
          dh_t = (one - zh) * dh_t;
        }
        // h_t = (1 - z) n + z h_{t-1}
        const Vec d_n = dh_t * (one - z);                // dn = dh (1 - z)
        const Vec d_z = dh_t * (h_prev - cand);          // dz = dh (h_{t-1} - n)
        dh_old = dh_old + dh_t * z;                      // dh_{t-1} = dh z (+ recurrent GEMM later)
        const Vec dn_pre = d_n * (one - cand * cand);    // d(xn + r hn) = dn (1 - n²)
        const Vec dr_pre = dn_pre * Vec::loadu(p.hn + row + j, n) * r * (one - r);  // dr = dn_pre hn; σ'
        const Vec dz_pre = d_z * z * (one - z);          // d(xz + hz) = dz z (1 - z)
        dr_pre.store(dxr + j, n);                        // d xr = d hr = dr_pre
        dz_pre.store(dxz + j, n);                        // d xz = d hz = dz_pre
        dn_pre.store(dxn + j, n);                        // d xn = dn_pre
        dr_pre.store(dhr + j, n);
        dz_pre.store(dhz + j, n);
        (dn_pre * r).store(dhn + j, n);                  // d hn = dn_pre * r
        dh_old.store(dh + j, n);
        if (dcarry) zero.store(dcarry + j, n);
      }
    }
  });
}

Shapes check_gru_args(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh, const OptTensor& b_ih,
                      const OptTensor& b_hh, const OptTensor& valid, const OptTensor& rmask,
                      const OptTensor& zoneout_h) {
  const Shapes s = check_args(3, x, w_ih, w_hh, b_ih, b_hh, valid, rmask);
  if (zoneout_h) check_same(*zoneout_h, "zoneout_h", x, {s.T, s.B, s.H});
  return s;
}

}  // namespace

// Returns {output (T,B,H), h_n, gates (T,B,3H) activated r,z,n, hn (T,B,H), hs (T+1,B,H),
// h_rec (T,B,H) or empty}; the last four are what backward needs (hn is empty without store_gates).
std::vector<at::Tensor> gru_forward(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                                    const OptTensor& b_ih, const OptTensor& b_hh, const at::Tensor& h0,
                                    const OptTensor& valid, const OptTensor& rmask, const OptTensor& zoneout_h,
                                    double zoneout_rate, bool reverse, bool carry_output, bool store_gates) {
  const Shapes s = check_gru_args(x, w_ih, w_hh, b_ih, b_hh, valid, rmask, zoneout_h);
  const int64_t T = s.T, B = s.B, I = s.I, H = s.H;
  check_same(h0, "h0", x, {B, H});
  TORCH_CHECK_VALUE(zoneout_rate >= 0.0 && zoneout_rate < 1.0, "zoneout_rate must lie in [0, 1), got ", zoneout_rate);
  c10::NoGradGuard no_grad;  // no autograd graph when called directly with tensors that require grad

  const at::Tensor x2d = x.view({T * B, I});
  const at::Tensor xg = (b_ih ? at::addmm(*b_ih, x2d, w_ih.t()) : at::mm(x2d, w_ih.t())).view({T, B, 3 * H});
  at::Tensor hg = at::empty({B, 3 * H}, x.options());  // per-step recurrent projection (scratch)
  at::Tensor hn = store_gates ? at::empty({T, B, H}, x.options()) : at::empty({0}, x.options());
  at::Tensor output = at::empty({T, B, H}, x.options());
  at::Tensor hs = at::empty({T + 1, B, H}, x.options());
  hs.select(0, reverse ? T : 0).copy_(h0);
  at::Tensor h_rec;
  if (rmask && T > 0) {
    h_rec = at::empty({T, B, H}, x.options());
    at::Tensor first = h_rec.select(0, time_of(0, T, reverse));
    at::mul_out(first, h0, *rmask);
  }
  const at::Tensor w_hh_t = w_hh.t();
  std::vector<at::Tensor> gemm_in(T);
  for (int64_t t = 0; t < T; ++t) gemm_in[t] = rmask ? h_rec.select(0, t) : hs.select(0, slot_in(t, reverse));

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gru_forward", [&] {
    using T_ = scalar_t;
    T_* hs_p = hs.data_ptr<T_>();
    T_* out_p = output.data_ptr<T_>();
    const bool* valid_p = valid ? valid->data_ptr<bool>() : nullptr;
    const T_* zh_p = data_or_null<T_>(zoneout_h);
    for (int64_t k = 0; k < T; ++k) {
      const int64_t t = time_of(k, T, reverse);
      // [hr, hz, hn] = h_{t-1} W_hh^T + b_hh
      if (b_hh) {
        at::addmm_out(hg, *b_hh, gemm_in[t], w_hh_t);
      } else {
        at::mm_out(hg, gemm_in[t], w_hh_t);
      }
      GruForwardStep<T_> p{};
      p.xg = xg.data_ptr<T_>() + t * B * 3 * H;
      p.hg = hg.data_ptr<T_>();
      p.hn = store_gates ? hn.data_ptr<T_>() + t * B * H : nullptr;
      p.h_old = hs_p + slot_in(t, reverse) * B * H;
      p.h_new = hs_p + slot_out(t, reverse) * B * H;
      p.out = out_p + t * B * H;
      p.prev_out = k > 0 ? out_p + time_of(k - 1, T, reverse) * B * H : nullptr;
      p.h_rec_next = (rmask && k + 1 < T) ? h_rec.data_ptr<T_>() + time_of(k + 1, T, reverse) * B * H : nullptr;
      p.rmask = data_or_null<T_>(rmask);
      p.valid = valid_p ? valid_p + t * B : nullptr;
      p.zoneout.h = zh_p ? zh_p + t * B * H : nullptr;
      p.zoneout.rate = zh_p ? T_(0) : static_cast<T_>(zoneout_rate);
      p.carry_output = carry_output;
      gru_forward_pointwise(p, B, H);
    }
  });

  const int64_t last = reverse ? 0 : T;
  return {output, hs.select(0, last).clone(), xg, hn, hs, h_rec.defined() ? h_rec : at::empty({0}, x.options())};
}

// Returns {dx, dW_ih, dW_hh, db_ih, db_hh, dh0} (undefined when not requested).
std::vector<at::Tensor> gru_backward(const at::Tensor& grad_output, const at::Tensor& grad_hn, const at::Tensor& x,
                                     const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& gates,
                                     const at::Tensor& hn, const at::Tensor& hs, const OptTensor& h_rec,
                                     const OptTensor& valid, const OptTensor& rmask, const OptTensor& zoneout_h,
                                     double zoneout_rate, bool reverse, bool carry_output, bool need_dx,
                                     bool need_weights, bool need_bias) {
  const Shapes s = check_gru_args(x, w_ih, w_hh, std::nullopt, std::nullopt, valid, rmask, zoneout_h);
  const int64_t T = s.T, B = s.B, I = s.I, H = s.H;
  check_same(gates, "gates", x, {T, B, 3 * H});
  check_same(hn, "hn", x, {T, B, H});
  check_same(hs, "hs", x, {T + 1, B, H});
  if (rmask && T > 0) {
    TORCH_CHECK_VALUE(h_rec.has_value(), "h_rec is required with a recurrent mask");
    check_same(*h_rec, "h_rec", x, {T, B, H});
  }
  c10::NoGradGuard no_grad;  // no autograd graph when called directly with tensors that require grad
  const at::Tensor g_out = grad_output.contiguous();
  check_same(g_out, "grad_output", x, {T, B, H});
  at::Tensor dh = grad_hn.contiguous().clone();
  check_same(dh, "grad_h_n", x, {B, H});
  at::Tensor dh_rec = rmask ? at::zeros({B, H}, x.options()) : at::Tensor();
  at::Tensor dcarry = carry_output ? at::zeros({B, H}, x.options()) : at::Tensor();
  at::Tensor dxg = at::empty({T, B, 3 * H}, x.options());
  at::Tensor dhg = at::empty({T, B, 3 * H}, x.options());
  std::vector<at::Tensor> dhg_steps(T);
  for (int64_t t = 0; t < T; ++t) dhg_steps[t] = dhg.select(0, t);

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gru_backward", [&] {
    using T_ = scalar_t;
    const bool* valid_p = valid ? valid->data_ptr<bool>() : nullptr;
    const T_* zh_p = data_or_null<T_>(zoneout_h);
    for (int64_t k = T - 1; k >= 0; --k) {
      const int64_t t = time_of(k, T, reverse);
      GruBackwardStep<T_> p{};
      p.gates = gates.data_ptr<T_>() + t * B * 3 * H;
      p.hn = hn.data_ptr<T_>() + t * B * H;
      p.h_old = hs.data_ptr<T_>() + slot_in(t, reverse) * B * H;
      p.grad_out = g_out.data_ptr<T_>() + t * B * H;
      p.dh = dh.data_ptr<T_>();
      p.dh_rec = (rmask && k < T - 1) ? dh_rec.data_ptr<T_>() : nullptr;
      p.rmask = data_or_null<T_>(rmask);
      p.dcarry = carry_output ? dcarry.data_ptr<T_>() : nullptr;
      p.dxg = dxg.data_ptr<T_>() + t * B * 3 * H;
      p.dhg = dhg.data_ptr<T_>() + t * B * 3 * H;
      p.valid = valid_p ? valid_p + t * B : nullptr;
      p.zoneout.h = zh_p ? zh_p + t * B * H : nullptr;
      p.zoneout.rate = zh_p ? T_(0) : static_cast<T_>(zoneout_rate);
      gru_backward_pointwise(p, B, H);
      // dh_{t-1} += d[hr, hz, hn] W_hh
      if (rmask) {
        at::mm_out(dh_rec, dhg_steps[t], w_hh);
      } else {
        at::addmm_out(dh, dh, dhg_steps[t], w_hh);
      }
    }
  });
  if (rmask && T > 0) dh.addcmul_(dh_rec, *rmask);

  const at::Tensor dx2d = dxg.view({T * B, 3 * H});
  const at::Tensor dh2d = dhg.view({T * B, 3 * H});
  at::Tensor dx, dw_ih, dw_hh, db_ih, db_hh;
  if (need_dx) dx = at::mm(dx2d, w_ih).view({T, B, I});
  if (need_weights) {
    dw_ih = at::mm(dx2d.t(), x.view({T * B, I}));  // dW_ih = sum_t d[xr,xz,xn]_t^T x_t
    const at::Tensor h_prev = rmask ? *h_rec : hs.narrow(0, reverse ? 1 : 0, T);
    dw_hh = at::mm(dh2d.t(), h_prev.reshape({T * B, H}));  // dW_hh = sum_t d[hr,hz,hn]_t^T h_{t-1}
  }
  if (need_bias) {
    db_ih = dx2d.sum(0);
    db_hh = dh2d.sum(0);
  }
  return {dx, dw_ih, dw_hh, db_ih, db_hh, dh};
}

}  // namespace lstmkit
