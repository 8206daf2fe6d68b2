// Fused Elman RNN time loop for CPU (RNNCell, tanh or relu), forward and backward.
//
//   h_t = act(x W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),   weight_ih (H, I), weight_hh (H, H)
//
// Forward:  one GEMM for x W_ih^T + b_ih + b_hh over all T*B rows; per step the recurrent GEMM in
//           place and one pass applying the activation (its value is kept for the backward pass).
// Backward: per step one pass for d(pre-activation), then dh_{t-1} += dpre W_hh; after the loop
//           dW_ih, dW_hh, the biases and dx as single GEMMs/sums. Masks, zoneout, reverse: loop.h.

#include "loop.h"

namespace lstmkit {
namespace {

enum class Activation { kTanh, kRelu };

template <typename T>
void forward_step(const ForwardRows<T>& p, T* pre, Activation act, bool store) {
  using Vec = Vectorized<T>;
  const int64_t H = p.H;
  p.for_rows(H, [&](int64_t b) {
    T* row = pre + b * H;
    for_chunks<T>(H, [&](int64_t j, int64_t n) {
      const Vec x = Vec::loadu(row + j, n);
      // h_t = tanh(pre) or max(pre, 0)
      const Vec h = act == Activation::kTanh ? tanh(x) : at::vec::maximum(x, Vec(T(0)));
      if (store) h.store(row + j, n);  // the backward pass needs h_t (before zoneout)
      p.emit_h(b, j, n, h);
    });
  });
}

template <typename T>
void backward_step(const BackwardRows<T>& p, const T* hs, T* dpre, Activation act) {
  using Vec = Vectorized<T>;
  const int64_t H = p.H;
  auto zero = [&](int64_t b) { std::fill(dpre + b * H, dpre + (b + 1) * H, T(0)); };
  p.for_rows(H, zero, [&](int64_t b) {
    for_chunks<T>(H, [&](int64_t j, int64_t n) {
      const Vec h = Vec::loadu(hs + b * H + j, n);
      const auto dh = p.dh_new(b, j, n);
      // d(pre) = dh (1 - h_t²) for tanh; dh where h_t > 0 (pre > 0) for relu
      const Vec d = act == Activation::kTanh ? dh.now * dtanh(h)
                                             : Vec::blendv(Vec(T(0)), dh.now, h > Vec(T(0)));
      d.store(dpre + b * H + j, n);
      p.store_dh(b, j, n, dh.old);  // the recurrent part dpre W_hh is added by the GEMM after this pass
    });
  });
}

// Returns {output, h_n, hs, h_rec, h (T, B, H): the activations before zoneout, when stored}.
std::vector<at::Tensor> forward(const SequenceArgs& a, Activation act) {
  const Shapes s = check_common(a, 1, 1);
  c10::NoGradGuard no_grad;
  ForwardLoop loop(a, s, /*beside_input=*/a.store);  // only the backward reads x beside h
  const OptTensor bias = a.params[2] ? OptTensor(*a.params[2] + *a.params[3]) : std::nullopt;
  at::Tensor pre = project_input(a, s, bias);  // x W_ih^T + b_ih + b_hh, all steps
  const RowBlocks blocks(s.B, param(a, 1), /*split=*/true);
  const StepGemm recurrent(param(a, 1), blocks, /*transpose=*/true, a.bf16, a.x.size(0));  // pre[t] += h_{t-1} W_hh^T
  AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "rnn_forward", [&] {
    blocks.run([&] {
      for (int64_t k = 0; k < s.T; ++k) {
        const int64_t t = loop.time(k);
        recurrent.run(Step{pre, t}, loop.gemm_in(t), /*accumulate=*/true);  // pre[t] += h_{t-1} W_hh^T
        forward_step(loop.rows<scalar_t>(k), Step{pre, t}.data<scalar_t>(), act, a.store);
      }
    });
  });
  return loop.results({pre});
}

// Returns {dx, dW_ih, dW_hh, db_ih, db_hh, dh0}.
std::vector<at::Tensor> backward(const SequenceArgs& a, Activation act) {
  const Shapes s = check_common(a, 1, 1);
  const int64_t T = s.T, B = s.B, H = s.H;
  c10::NoGradGuard no_grad;
  BackwardLoop loop(a, s, 1);
  const at::Tensor& hs = loop.saved(0);
  check_same(hs, "activations", a.x, {T, B, H});
  at::Tensor dpre = at::empty({T, B, H}, a.x.options());
  const RowBlocks blocks(B, param(a, 1), /*split=*/true);
  const StepGemm recurrent(param(a, 1), blocks, /*transpose=*/false, a.bf16, a.x.size(0));  // dh_{t-1} += dpre[t] W_hh
  AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "rnn_backward", [&] {
    blocks.run([&] {
      for (int64_t k = T - 1; k >= 0; --k) {
        const int64_t t = loop.time(k);
        backward_step(loop.rows<scalar_t>(k), hs.data_ptr<scalar_t>() + t * B * H, Step{dpre, t}.data<scalar_t>(),
                      act);
        loop.add_recurrent(Step{dpre, t}, recurrent);  // dh_{t-1} += dpre[t] W_hh
      }
    });
  });
  auto dstates = loop.initial_state_grads();
  at::Tensor dx, dw_ih, dw_hh;
  loop.weight_grads(dpre, dpre, dx, dw_ih, dw_hh);  // dW_ih = dpre^T x, dW_hh = sum_t dpre_t^T h_{t-1}
  auto [db_ih, db_hh] = shared_bias_grads(a, dpre);
  return gradients(dx, {dw_ih, dw_hh, db_ih, db_hh}, dstates);
}

}  // namespace

std::vector<at::Tensor> rnn_tanh_forward(const SequenceArgs& a) { return forward(a, Activation::kTanh); }
std::vector<at::Tensor> rnn_tanh_backward(const SequenceArgs& a) { return backward(a, Activation::kTanh); }
std::vector<at::Tensor> rnn_relu_forward(const SequenceArgs& a) { return forward(a, Activation::kRelu); }
std::vector<at::Tensor> rnn_relu_backward(const SequenceArgs& a) { return backward(a, Activation::kRelu); }

}  // namespace lstmkit
