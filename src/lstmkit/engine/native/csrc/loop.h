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
// No memory is allocated inside the time loops: per-step views are made before. State histories
// are (T+1)-slot buffers so that "the state entering step t" is a contiguous time-ordered slice:
// forward reads slot t and writes t+1; reverse reads t+1 and writes t.
#pragma once

#include "bf16_gemm.h"
#include "common.h"
#include "int8_gemm.h"

namespace lstmkit {

// ---------------------------------------------------------------------------------------------
// Row blocks: one thread per block of batch rows, for the whole time loop.
// ---------------------------------------------------------------------------------------------
// Rows never meet within a step: row b of step t needs only row b of the state, in its GEMM and in
// its pointwise pass. So with enough rows each thread runs the whole loop on its own block, with no
// synchronisation between steps, where otherwise every step's GEMM and pass is a parallel region
// whose threads wait for each other. Each thread then reads the whole recurrent weight at every
// step, so blocks are used only while that stays cheap next to the block's GEMM: at least kMinRows
// rows and at most kMaxWeightPerRow bytes of weight per row. Measured on 2 threads, training step /
// nn.LSTM: (50, 32, 64, 128) 0.95 -> 0.82, (100, 8, 64, 128) 0.86 -> 0.75 (256 KB weight, 4 rows
// each), (100, 64, 256, 256) 0.70 -> 0.67; but (100, 16, 512, 512) 0.70 -> 0.78 (4 MB, 8 rows each).
// Inside RowBlocks::run, parallel_rows and StepGemm see only the calling thread's block.
struct RowRange {
  int64_t begin = 0, end = 0;
  bool active = false;
};
inline RowRange& current_rows() {
  static thread_local RowRange range;
  return range;
}

class RowBlocks {
 public:
  static constexpr int64_t kMinRows = 4;
  static constexpr int64_t kMaxWeightPerRow = 128 * 1024;

  // w: the recurrent weight; split = false: one block, the whole batch (kernels whose steps have
  // whole-batch operations).
  RowBlocks(int64_t batch, const at::Tensor& w, bool split) : batch_(batch), count_(1) {
    const int64_t threads = at::get_num_threads(), rows = batch / std::max<int64_t>(threads, 1);
    if (split && threads > 1 && rows >= kMinRows && w.nbytes() <= static_cast<size_t>(rows * kMaxWeightPerRow))
      count_ = threads;
  }
  int64_t count() const { return count_; }
  int64_t batch() const { return batch_; }
  int64_t begin(int64_t k) const { return k * batch_ / count_; }
  int64_t rows(int64_t k) const { return begin(k + 1) - begin(k); }

  // body() on every block, each block on its own thread, parallel_rows and StepGemm limited to it.
  template <typename Body>
  void run(const Body& body) const {
    if (count_ == 1) {
      body();
      return;
    }
    const at::ThreadLocalState caller;  // grad mode and the like, for ATen calls on other threads
    at::parallel_for(0, count_, 1, [&](int64_t first, int64_t last) {
      const at::ThreadLocalStateGuard same_state(caller);
      for (int64_t k = first; k < last; ++k) {
        Scope scope({begin(k), begin(k + 1), true});
        body();
      }
    });
  }

 private:
  struct Scope {  // sets the thread's rows, and clears them however body() ends
    explicit Scope(RowRange range) { current_rows() = range; }
    ~Scope() { current_rows() = RowRange{}; }
  };
  int64_t batch_, count_;
};

// row(b) for every row of the batch, in parallel (gate_width: values per row, for the grain), or
// for the rows of the calling thread's block inside RowBlocks::run.
template <typename Row>
void parallel_rows(int64_t batch, int64_t gate_width, const Row& row) {
  const RowRange& mine = current_rows();
  if (mine.active) {
    for (int64_t b = mine.begin; b < mine.end; ++b) row(b);
    return;
  }
  at::parallel_for(0, batch, grain_rows(gate_width), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) row(b);
  });
}

// ---------------------------------------------------------------------------------------------
// GEMM precision.
// ---------------------------------------------------------------------------------------------
// Under bf16 GEMMs (SequenceArgs::bf16: a float32 call whose kernel name ends in "+bf16") a product
// runs on bfloat16 copies of its operands through oneDNN (AMX or AVX512-BF16 where the CPU has
// them), accumulates in float32 and comes back as float32 after one rounding to bfloat16. The gates,
// the states and every sum over steps stay float32. A product goes to oneDNN only where that pays,
// at kMinBf16Macs multiply-adds or more: below, converting the operands and oneDNN's call cost
// more than the float32 product saves (measured on AVX512-BF16, per step, 2 threads: (1 x 128) x
// (128 x 512) 9 us packed float32 vs 31 us bfloat16; (16 x 512) x (512 x 2048) 534 vs 243 us).
// Where the CPU has AVX512-BF16 the products run bf16_gemm.h's kernel instead (pairs_pay), at any size
// (except the large ones on a CPU with AMX): the per-step ones (StepGemm, StepWeight) and those over
// all steps whose left operand has contiguous rows (the input projection, dx).
constexpr int64_t kMinBf16Macs = int64_t{4} << 20;
inline bool bf16_pays(bool bf16, int64_t m, int64_t n, int64_t k) { return bf16 && m * n * k >= kMinBf16Macs; }
inline at::Tensor bf16_copy(const at::Tensor& t) { return t.to(at::kBFloat16); }

// W (k, n) for bf16_gemm.h's kernel: slabs of 64 columns (n/64, k/2, 64, 2) bfloat16, k and n padded
// with zeros to an even number and to whole slabs; and scratch for up to `batch` rows of the other
// operand in bfloat16 (its padding column stays zero).
class PairedWeight {
 public:
  PairedWeight(const at::Tensor& w, int64_t batch) : k_(w.size(0)), n_(w.size(1)), pairs_((k_ + 1) / 2) {
    const int64_t slabs = (n_ + bf16::kColumns - 1) / bf16::kColumns;
    at::Tensor wk = at::zeros({2 * pairs_, slabs * bf16::kColumns}, w.options().dtype(at::kFloat));
    wk.narrow(0, 0, k_).narrow(1, 0, n_).copy_(w);
    packed_ = wk.view({pairs_, 2, slabs, bf16::kColumns}).permute({2, 0, 3, 1}).contiguous().to(at::kBFloat16);
    a16_ = at::zeros({batch, 2 * pairs_}, wk.options().dtype(at::kBFloat16));
  }

  // c (+)= a W for `rows` rows from row `first`: a (row stride lda), c (row stride n). Unless in_block
  // (the caller's thread runs a block of rows) the threads share the work: many rows by rows, few by
  // the columns' blocks.
  void run(float* c, const float* a, int64_t lda, int64_t first, int64_t rows, bool accumulate, bool in_block) const {
    constexpr int64_t kRowsPerThread = 64;
    const int64_t ld16 = 2 * pairs_, blocks = (n_ + bf16::kColumns - 1) / bf16::kColumns;
    uint16_t* a16 = reinterpret_cast<uint16_t*>(a16_.data_ptr<at::BFloat16>()) + first * ld16;
    a += first * lda;
    c += first * n_;
    const uint16_t* wp = reinterpret_cast<const uint16_t*>(packed_.data_ptr<at::BFloat16>());
    const auto round = [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) bf16::round_row(a + r * lda, k_, a16 + r * ld16);
    };
    const auto part = [&](int64_t r0, int64_t r1, int64_t b0, int64_t b1) {  // rows [r0, r1), blocks [b0, b1)
      bf16::gemm(r1 - r0, n_, pairs_, a16 + r0 * ld16, ld16, wp, c + r0 * n_, n_, accumulate, b0, b1);
    };
    if (in_block) {
      round(0, rows);
      part(0, rows, 0, blocks);
    } else if (rows >= 2 * kRowsPerThread) {
      at::parallel_for(0, rows, kRowsPerThread, [&](int64_t r0, int64_t r1) {
        round(r0, r1);
        part(r0, r1, 0, blocks);
      });
    } else {  // a thread for at least ~256K multiply-adds
      round(0, rows);
      const int64_t per_block = std::max<int64_t>(1, rows * k_ * bf16::kColumns);
      at::parallel_for(0, blocks, std::max<int64_t>(1, (int64_t{256} << 10) / per_block),
                       [&](int64_t b0, int64_t b1) { part(0, rows, b0, b1); });
    }
  }
  // The same with tensors: a (rows, k) with contiguous rows, c (rows, n) contiguous.
  bool runs(const at::Tensor& c, const at::Tensor& a) const {
    return c.is_contiguous() && a.stride(1) == 1 && a.size(0) <= a16_.size(0);
  }
  void run(at::Tensor& c, const at::Tensor& a, bool accumulate) const {
    run(c.data_ptr<float>(), a.data_ptr<float>(), a.stride(0), 0, a.size(0), accumulate, false);
  }

 private:
  int64_t k_, n_, pairs_;
  at::Tensor packed_, a16_;
};

// Whether a per-step product of `rows` rows with W (k, n) under bf16 GEMMs runs bf16_gemm.h's kernel:
// on a CPU with AVX512-BF16, except the products large enough for oneDNN (bf16_pays) on a CPU with
// AMX, whose tiles outrun it.
inline bool pairs_pay(bool bf16, int64_t rows, int64_t n, int64_t k) {
  return bf16 && bf16::available() && n > 0 && k > 0 && !(bf16::amx() && bf16_pays(bf16, rows, n, k));
}

// m1 m2 (m1 (m, k), m2 (k, n)), in the call's dtype: under bf16 GEMMs bf16_gemm.h's kernel where it
// runs (pairs_pay; m1's rows contiguous), else oneDNN's bfloat16 product where it pays.
inline at::Tensor gemm(bool bf16, const at::Tensor& m1, const at::Tensor& m2) {
  const int64_t m = m1.size(0), k = m1.size(1), n = m2.size(1);
  if (pairs_pay(bf16, m, n, k) && m1.scalar_type() == at::kFloat && m1.stride(1) == 1) {
    at::Tensor out = at::empty({m, n}, m1.options());
    PairedWeight(m2, m).run(out.data_ptr<float>(), m1.data_ptr<float>(), m1.stride(0), 0, m, false, false);
    return out;
  }
  if (!bf16_pays(bf16, m, n, k)) return at::mm(m1, m2);
  return at::mm(bf16_copy(m1), bf16_copy(m2)).to(m1.scalar_type());
}

// W (k, n) for oneDNN's bfloat16 product: a bfloat16 copy, and scratch for up to `batch` rows of the
// other operand and of the product, so that a step allocates nothing.
class OneDnnWeight {
 public:
  OneDnnWeight(const at::Tensor& w, int64_t batch)
      : w16_(bf16_copy(w)),
        a16_(at::empty({batch, w.size(0)}, w16_.options())),
        c16_(at::empty({batch, w.size(1)}, w16_.options())) {}

  bool fits(const at::Tensor& a) const { return a.size(0) <= a16_.size(0); }
  // out (+)= a W for a's rows (rows, k), through the scratch's rows from `first`: a rounded to
  // bfloat16, the product rounded once, then added or copied into out (rows, n).
  void run(at::Tensor out, const at::Tensor& a, int64_t first, bool accumulate) const {
    at::Tensor a16 = a16_.narrow(0, first, a.size(0)), c16 = c16_.narrow(0, first, a.size(0));
    a16.copy_(a);
    at::mm_out(c16, a16, w16_);
    accumulate ? out.add_(c16) : out.copy_(c16);
  }

 private:
  at::Tensor w16_, a16_, c16_;
};

// The shapes of an int8 inference call (lstm_int8_forward, gru_int8_forward): x (T, B, I) float32 with
// T > 0, int8 weights (G*H, I) and (G*H, H) (their scales QuantizedWeight checks), h0 (B, H). Returns
// T, B, I, H, R = H, G.
inline Shapes check_int8_call(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                              const at::Tensor& h0, int64_t gates) {
  TORCH_CHECK_VALUE(x.dim() == 3 && x.size(0) > 0, "x must be (T, B, I) with T > 0");
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat, "int8 inference takes float32 input, got ", x.scalar_type());
  const int64_t H = h0.size(-1);
  const Shapes s{x.size(0), x.size(1), x.size(2), H, H, gates};
  check_same(x, "x", x, {s.T, s.B, s.I});
  const char* form = gates == 3 ? "3H" : "4H";
  TORCH_CHECK_VALUE(w_ih.dim() == 2 && w_ih.size(0) == gates * H && w_ih.size(1) == s.I, "weight_ih must be (",
                    form, ", I)");
  TORCH_CHECK_VALUE(w_hh.dim() == 2 && w_hh.size(0) == gates * H && w_hh.size(1) == H, "weight_hh must be (", form,
                    ", H)");
  check_same(h0, "h0", x, {s.B, H});
  return s;
}

// An int8 weight W (n, k) with one float32 scale per row (lstmkit.quantize_int8's), for int8_gemm.h's
// kernel: packed once in slabs (n/64, k/4, 64, 4), its columns' compensation, and scratch for up to
// `batch` rows of the other operand quantized (shifted bytes, a scale per row), so that a step
// allocates nothing. Only where int8::available().
class QuantizedWeight {
 public:
  QuantizedWeight(const at::Tensor& w, const at::Tensor& scale, int64_t batch)
      : n_(w.size(0)), k_(w.size(1)), groups_((k_ + int8::kGroup - 1) / int8::kGroup) {
    TORCH_CHECK_VALUE(int8::available(), "the int8 kernel needs a CPU with AVX512-VNNI (and LSTMKIT_INT8_KERNEL != 0)");
    TORCH_CHECK_TYPE(w.scalar_type() == at::kChar && w.dim() == 2, "expected an int8 (n, k) weight, got ", w.scalar_type());
    TORCH_CHECK_VALUE(scale.numel() == n_, "expected one scale per row of the weight (", n_, "), got ", scale.numel());
    const int64_t slabs = (n_ + int8::kColumns - 1) / int8::kColumns, width = int8::kGroup * groups_;
    at::Tensor wk = at::zeros({slabs * int8::kColumns, width}, w.options());
    wk.narrow(0, 0, n_).narrow(1, 0, k_).copy_(w);
    packed_ = wk.view({slabs, int8::kColumns, groups_, int8::kGroup}).permute({0, 2, 1, 3}).contiguous();
    compensation_ = at::sum(w, {1}, false, at::kInt).mul_(int8::kShift);
    scale_ = scale.to(at::kFloat).reshape({n_}).contiguous();
    a8_ = at::zeros({batch, width}, w.options().dtype(at::kByte));  // the padding columns meet W's zeros
    a_scale_ = at::empty({batch}, w.options().dtype(at::kFloat));
  }

  // c (+)= dequant(q(a) W^T) [+ bias] for `rows` rows: a (row stride lda), c (row stride n), bias (n)
  // or nullptr. Inside RowBlocks::run only the calling thread's rows, on that thread; else many rows
  // are shared out among the threads by rows, few by W's slabs, at least kMinMacs multiply-adds a
  // thread (waking a thread costs a few microseconds: the time of ~1M int8 multiply-adds).
  void run(float* c, const float* a, int64_t lda, int64_t rows, bool accumulate, const float* bias) const {
    constexpr int64_t kRowsPerThread = 64, kMinMacs = int64_t{1} << 20;
    const int64_t ld8 = a8_.size(1), slabs = (n_ + int8::kColumns - 1) / int8::kColumns;
    TORCH_CHECK_VALUE(rows <= a8_.size(0), "more rows (", rows, ") than the weight's scratch holds");
    uint8_t* a8 = a8_.data_ptr<uint8_t>();
    float* a_scale = a_scale_.data_ptr<float>();
    int8::Output out;
    out.c = c;
    out.ldc = n_;
    out.accumulate = accumulate;
    out.row_scale = a_scale;
    out.column_scale = scale_.data_ptr<float>();
    out.compensation = compensation_.data_ptr<int32_t>();
    out.bias = bias;
    const int8_t* wp = packed_.data_ptr<int8_t>();
    const auto quantize = [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) a_scale[r] = int8::quantize_row(a + r * lda, k_, a8 + r * ld8);
    };
    const auto part = [&](int64_t r0, int64_t r1, int64_t s0, int64_t s1) {
      int8::gemm(r0, r1, n_, groups_, a8, ld8, wp, out, s0, s1);
    };
    const RowRange& mine = current_rows();
    if (mine.active) {
      quantize(mine.begin, mine.end);
      part(mine.begin, mine.end, 0, slabs);
    } else if (rows >= 2 * kRowsPerThread) {
      at::parallel_for(0, rows, kRowsPerThread, [&](int64_t r0, int64_t r1) {
        quantize(r0, r1);
        part(r0, r1, 0, slabs);
      });
    } else {
      quantize(0, rows);
      const int64_t per_slab = std::max<int64_t>(1, rows * k_ * int8::kColumns);
      at::parallel_for(0, slabs, std::max<int64_t>(1, kMinMacs / per_slab),
                       [&](int64_t s0, int64_t s1) { part(0, rows, s0, s1); });
    }
  }

  // The raw int32 sums a8 W^T of shifted bytes a8 (rows, k), without the compensation: the kernel's
  // integer arithmetic alone, for tests.
  at::Tensor sums(const at::Tensor& a8) const {
    TORCH_CHECK_TYPE(a8.scalar_type() == at::kByte && a8.dim() == 2 && a8.size(1) == k_, "expected uint8 (rows, ",
                     k_, ")");
    const int64_t rows = a8.size(0), slabs = (n_ + int8::kColumns - 1) / int8::kColumns;
    at::Tensor padded = at::zeros({rows, a8_.size(1)}, a8.options());
    padded.narrow(1, 0, k_).copy_(a8);
    at::Tensor result = at::empty({rows, n_}, a8.options().dtype(at::kInt));
    int8::Output out;
    out.ldc = n_;
    out.sums = result.data_ptr<int32_t>();
    int8::gemm(0, rows, n_, groups_, padded.data_ptr<uint8_t>(), padded.size(1), packed_.data_ptr<int8_t>(), out, 0,
               slabs);
    return result;
  }

 private:
  int64_t n_, k_, groups_;
  at::Tensor packed_, compensation_, scale_, a8_, a_scale_;
};

// A weight every step multiplies by, out = a W [+ bias] with W (k, n), for up to `rows` rows: under
// bf16 GEMMs on a bfloat16 copy through oneDNN where that pays, else in pairs (bf16_gemm.h) where the
// CPU has AVX512-BF16; the copies made once per call.
class StepWeight {
 public:
  StepWeight(const at::Tensor& w, int64_t rows, bool bf16) : w_(w) {
    if (pairs_pay(bf16, rows, w.size(1), w.size(0))) {
      paired_.emplace(w, rows);
    } else if (bf16_pays(bf16, rows, w.size(1), w.size(0))) {
      onednn_.emplace(w, rows);
    }
  }
  void into(at::Tensor& out, const at::Tensor& a, const OptTensor& bias = std::nullopt) const {
    if (paired_ && paired_->runs(out, a)) {
      paired_->run(out, a, false);
      if (bias) out.add_(*bias);
    } else if (onednn_ && onednn_->fits(a)) {
      onednn_->run(out, a, 0, false);
      if (bias) out.add_(*bias);
    } else {
      bias ? at::addmm_out(out, *bias, a, w_) : at::mm_out(out, a, w_);
    }
  }
  // out += a W
  void add_into(at::Tensor& out, const at::Tensor& a) const {
    if (paired_ && paired_->runs(out, a)) {
      paired_->run(out, a, true);
    } else if (onednn_ && onednn_->fits(a)) {
      onednn_->run(out, a, 0, true);
    } else {
      at::addmm_out(out, out, a, w_);
    }
  }

 private:
  at::Tensor w_;
  std::optional<PairedWeight> paired_;
  std::optional<OneDnnWeight> onednn_;
};

// ---------------------------------------------------------------------------------------------
// The per-step GEMM with a weight that stays the same at every step.
// ---------------------------------------------------------------------------------------------
// MKL (in torch's x86 builds) can pack a GEMM operand once into its internal layout and reuse it;
// a plain GEMM repacks the weight at every call, which for the few rows of one time step costs as
// much as the product (measured: 32 x 128 x 512 per step 20 -> 12 us, 16 x 512 x 2048 274 -> 93 us,
// 2 threads). Weak symbols: where torch has no MKL they are null and at::addmm_out runs instead.
// Packed memory is resident memory: the layout of a k x n operand with n < k (the backward's W_hh,
// n = H, k = 4H) touches 5 times its size (1.3 MB for 512 x 128 floats, measured), more than a
// whole training step needs at batch 1, so at batch 1 only the forward's W_hh^T (n >= k) is packed.
inline bool worth_packing(int64_t batch, int64_t n, int64_t k) { return batch > 1 || n >= k; }
extern "C" {
size_t cblas_sgemm_pack_get_size(int identifier, int m, int n, int k) __attribute__((weak));
void cblas_sgemm_pack(int layout, int identifier, int trans, int m, int n, int k, float alpha, const float* src,
                      int ld, float* dest) __attribute__((weak));
void cblas_sgemm_compute(int layout, int transa, int transb, int m, int n, int k, const float* a, int lda,
                         const float* b, int ldb, float beta, float* c, int ldc) __attribute__((weak));
}

// c (B, n) = beta c + a (B, k) op(W), op(W) = W^T (transpose, W (n, k)) or W (W (k, n)), at every
// step; inside RowBlocks::run, on the calling thread's rows only (a GEMM of their own, one thread).
// Under bf16 GEMMs (see GEMM precision): bf16_gemm.h's kernel on W packed in pairs of rows where the
// CPU has AVX512-BF16 (pairs_pay), else oneDNN's bfloat16 product where it pays, else float32.
class StepGemm {
 public:
  StepGemm(const at::Tensor& w, const RowBlocks& blocks, bool transpose, bool bf16)
      : w_(transpose ? w.t() : w), n_(w_.size(1)), k_(w_.size(0)) {
    if (pairs_pay(bf16, blocks.rows(0), n_, k_)) {
      paired_.emplace(w_, blocks.batch());
      return;
    }
    if (bf16_pays(bf16, blocks.rows(0), n_, k_)) {
      onednn_.emplace(w_, blocks.batch());
      return;
    }
    const bool mkl = cblas_sgemm_pack != nullptr && cblas_sgemm_compute != nullptr && cblas_sgemm_pack_get_size;
    if (!mkl || w.scalar_type() != at::kFloat || !w.is_contiguous() || n_ == 0 || k_ == 0) return;
    for (int64_t k = 0; k < blocks.count(); ++k) pack(w, blocks.rows(k), transpose);
  }

  void run(const Step& c, const Step& a, bool accumulate) const {
    constexpr int kRowMajor = 101, kNoTrans = 111, kPacked = 151;
    const RowRange& mine = current_rows();
    const int64_t first = mine.active ? mine.begin : 0, rows = mine.active ? mine.end - mine.begin : a.rows();
    if (paired_ && c.contiguous() && a.rows_contiguous()) {
      paired_->run(c.data<float>(), a.data<float>(), a.row_stride(), first, rows, accumulate, mine.active);
      return;
    }
    if (onednn_) {
      onednn_->run(c.view().narrow(0, first, rows), a.view().narrow(0, first, rows), first, accumulate);
      return;
    }
    const at::Tensor* packed = packed_for(rows);
    const int64_t lda = a.row_stride();
    if (packed && a.rows_contiguous() && c.contiguous()) {
      cblas_sgemm_compute(kRowMajor, kNoTrans, kPacked, rows, n_, k_, a.data<float>() + first * lda, lda,
                          packed->data_ptr<float>(), n_, accumulate ? 1.0f : 0.0f, c.data<float>() + first * n_, n_);
      return;
    }
    at::Tensor out = c.view();  // a view costs about 1 us: narrowed only inside a block
    at::Tensor in = a.view();
    if (mine.active) {
      out = out.narrow(0, first, rows);
      in = in.narrow(0, first, rows);
    }
    if (accumulate) {
      at::addmm_out(out, out, in, w_);
    } else {
      at::mm_out(out, in, w_);
    }
  }

 private:
  // W in MKL's layout for GEMMs of `rows` rows (once per distinct row count).
  void pack(const at::Tensor& w, int64_t rows, bool transpose) {
    constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112, kBMatrix = 162;
    if (rows == 0 || !worth_packing(rows, n_, k_) || packed_for(rows)) return;
    const size_t bytes = cblas_sgemm_pack_get_size(kBMatrix, rows, n_, k_);
    at::Tensor packed = at::empty({static_cast<int64_t>(bytes / sizeof(float)) + 1}, w.options());
    cblas_sgemm_pack(kRowMajor, kBMatrix, transpose ? kTrans : kNoTrans, rows, n_, k_, 1.0f, w.data_ptr<float>(),
                     static_cast<int>(w.size(1)), packed.data_ptr<float>());
    packed_.emplace_back(rows, std::move(packed));
  }
  const at::Tensor* packed_for(int64_t rows) const {
    for (const auto& [r, packed] : packed_)
      if (r == rows) return &packed;
    return nullptr;
  }

  at::Tensor w_;
  int n_, k_;
  std::vector<std::pair<int64_t, at::Tensor>> packed_;  // (rows, packed W)
  std::optional<PairedWeight> paired_;                  // under bf16 GEMMs: W in pairs of rows (bf16_gemm.h)
  std::optional<OneDnnWeight> onednn_;                  // or W for oneDNN's product
};

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

// ---------------------------------------------------------------------------------------------
// The GEMMs over all T*B rows at once.
// ---------------------------------------------------------------------------------------------
// xg = x W_ih^T (+ bias): the input projection of every step, (T, B, width of W_ih).
inline at::Tensor project_input(const SequenceArgs& a, const Shapes& s, const OptTensor& bias) {
  const at::Tensor x2d = a.x.view({s.T * s.B, s.I});
  const at::Tensor& w_ih = *a.params[0];
  at::Tensor xg = gemm(a.bf16, x2d, w_ih.t());
  if (bias) xg.add_(*bias);
  return xg.view({s.T, s.B, w_ih.size(0)});
}

// dx = dXG W_ih, dW_ih = dXG^T x (as requested) from dXG (T, B, width of W_ih).
inline void input_grads(const SequenceArgs& a, const Shapes& s, const at::Tensor& dxg, at::Tensor& dx,
                        at::Tensor& dw_ih) {
  const at::Tensor dxg2d = dxg.reshape({s.T * s.B, dxg.size(-1)});
  if (a.needs[0]) dx = gemm(a.bf16, dxg2d, *a.params[0]).view({s.T, s.B, s.I});
  if (a.needs[1]) dw_ih = gemm(a.bf16, dxg2d.t(), a.x.view({s.T * s.B, s.I}));
}

// dW = dG^T H over all T*B rows: G (T, B, rows of W), H (T, B, columns of W).
inline at::Tensor weight_grad(const SequenceArgs& a, const at::Tensor& dg, const at::Tensor& h) {
  return gemm(a.bf16, dg.reshape({-1, dg.size(-1)}).t(), h.reshape({-1, h.size(-1)}));
}

// Sum over all T*B rows, (T, B, width) -> (width).
inline at::Tensor row_sum(const at::Tensor& t) { return t.reshape({-1, t.size(-1)}).sum(0); }

// {dx, d params..., d initial states...}, the backward entry points' return value.
inline std::vector<at::Tensor> gradients(at::Tensor dx, std::vector<at::Tensor> dparams,
                                         std::vector<at::Tensor> dstates) {
  std::vector<at::Tensor> out{std::move(dx)};
  out.insert(out.end(), dparams.begin(), dparams.end());
  out.insert(out.end(), dstates.begin(), dstates.end());
  return out;
}

// Whether the gradient of parameter k was requested (needs[0] is the input's).
inline bool needs_param(const SequenceArgs& a, size_t k) { return k + 1 < a.needs.size() && a.needs[k + 1]; }

// The same gradient for bias_ih and bias_hh when they are added together: never alias the two.
// db: the sum over all T*B rows of the pre-activations' gradient, computed only when wanted.
template <typename Sum>
std::pair<at::Tensor, at::Tensor> shared_bias_grads(const SequenceArgs& a, const Sum& db_of) {
  if (!needs_param(a, 2) && !needs_param(a, 3)) return {};
  const at::Tensor db = db_of();
  return {needs_param(a, 2) ? db : at::Tensor(), needs_param(a, 3) ? (needs_param(a, 2) ? db.clone() : db) : at::Tensor()};
}
inline std::pair<at::Tensor, at::Tensor> shared_bias_grads(const SequenceArgs& a, const at::Tensor& dgates) {
  return shared_bias_grads(a, [&] { return row_sum(dgates); });
}

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
