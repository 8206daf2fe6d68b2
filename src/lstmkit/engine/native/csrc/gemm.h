// The GEMMs of the time loops (see loop.h): their precision (float32, bf16 through oneDNN or
// bf16_gemm.h, int8 through int8_gemm.h), the per-step products with a weight packed once, and
// the products over all T*B rows at once.

#pragma once

#include <cstring>

#include "amx_gemm.h"
#include "bf16_gemm.h"
#include "common.h"
#include "fp32_gemm.h"
#include "int8_avx2.h"
#include "int8_gemm.h"
#include "row_blocks.h"

namespace lstmkit {

// ---------------------------------------------------------------------------------------------
// GEMM precision.
// ---------------------------------------------------------------------------------------------
// Under bf16 GEMMs (SequenceArgs::bf16: a float32 call whose kernel name ends in "+bf16") a product
// runs on bfloat16 copies of its operands through oneDNN (AMX or AVX512-BF16 where the CPU has
// them), accumulates in float32 and comes back as float32 after one rounding to bfloat16. The gates,
// the states and every sum over steps stay float32. A product goes to oneDNN only where that pays,
// at kMinBf16Macs multiply-adds or more: below, converting the operands and oneDNN's call cost
// more than the float32 product saves (docs/engine.md has the figures).
// Where the CPU has AVX512-BF16 the products run bf16_gemm.h's kernel instead (pairs_pay), at any size
// (except the large ones on a CPU with AMX): the per-step ones (StepGemm, StepWeight) and those over
// all steps whose left operand has contiguous rows (the input projection, dx). Where it has AMX-BF16
// that kernel's packed weights go through amx_gemm.h's tiles, and every per-step product does
// (step_pairs_pay), whatever its size.
constexpr int64_t kMinBf16Macs = int64_t{4} << 20;
inline bool bf16_pays(bool bf16, int64_t m, int64_t n, int64_t k) { return bf16 && m * n * k >= kMinBf16Macs; }
inline at::Tensor bf16_copy(const at::Tensor& t) { return t.to(at::kBFloat16); }

// A per-step product of `rows` rows with W (k x n, in `slabs` slabs of 64 columns) shared among the
// threads: on the calling thread inside a row block (in_block), by rows where there are many (64 a
// thread), else by W's slabs, at least macs_per_thread multiply-adds a thread. prepare(r0, r1) readies
// rows [r0, r1) of the left operand on the thread that multiplies them, part(r0, r1, s0, s1).
template <typename Prepare, typename Part>
void share_product(int64_t rows, int64_t k, int64_t slabs, int64_t macs_per_thread, bool in_block,
                   const Prepare& prepare, const Part& part) {
  constexpr int64_t kRowsPerThread = 64;
  if (in_block) {
    prepare(0, rows);
    part(0, rows, 0, slabs);
  } else if (rows >= 2 * kRowsPerThread) {
    at::parallel_for(0, rows, kRowsPerThread, [&](int64_t r0, int64_t r1) {
      prepare(r0, r1);
      part(r0, r1, 0, slabs);
    });
  } else {
    prepare(0, rows);
    const int64_t per_slab = std::max<int64_t>(1, rows * k * kSlabColumns);
    at::parallel_for(0, slabs, std::max<int64_t>(1, macs_per_thread / per_slab),
                     [&](int64_t s0, int64_t s1) { part(0, rows, s0, s1); });
  }
}

// W (k, n) for bf16_gemm.h's kernel: slabs of 64 columns (n/64, k/2, 64, 2) bfloat16, k and n padded
// with zeros to an even number and to whole slabs; and scratch for up to `batch` rows of the other
// operand in bfloat16 (its padding column stays zero).
class PairedWeight {
 public:
  // W float32 at any strides, packed in one pass: element (slab, pair, column, j) is W[2 pair + j, 64
  // slab + column] rounded to nearest even, or zero in the padding. W with contiguous rows, or the
  // transpose of such a matrix (W_hh^T), goes 16 values a vector (bf16_gemm.h's pack_*: a (512, 2048)
  // weight took 3.4 ms on one thread an element at a time, a tenth of a bf16 training step at (100, 16,
  // 512, 512), packed twice), other strides an element at a time.
  PairedWeight(const at::Tensor& w, int64_t batch)
      : k_(w.size(0)), n_(w.size(1)), tiles_(amx::available()), pairs_(padded_pairs(k_, tiles_)) {
    constexpr int64_t kColumns = bf16::kColumns;
    TORCH_CHECK_TYPE(w.scalar_type() == at::kFloat, "PairedWeight packs a float32 weight, got ", w.scalar_type());
    const int64_t slabs = (n_ + kColumns - 1) / kColumns;
    packed_ = at::empty({slabs, pairs_, kColumns, 2}, w.options().dtype(at::kBFloat16));
    const float* src = w.data_ptr<float>();
    const int64_t row_stride = w.stride(0), column_stride = w.stride(1);
    at::BFloat16* dst = packed_.data_ptr<at::BFloat16>();
    uint16_t* out = reinterpret_cast<uint16_t*>(dst);
    if (column_stride == 1) {  // rows contiguous: two rows' 16 columns a vector (10x the element loop)
      at::parallel_for(0, slabs * pairs_, 64, [&](int64_t begin, int64_t end) {
        for (int64_t index = begin; index < end; ++index)
          bf16::pack_pair_from_rows(src, row_stride, k_, n_, index / pairs_, index % pairs_, out + index * kColumns * 2);
      });
    } else if (row_stride == 1) {  // the transpose of a row-major matrix (W_hh^T): 16 pairs of a column
      const int64_t groups = (pairs_ + 15) / 16;  // of 16 pairs
      at::parallel_for(0, slabs * groups, 4, [&](int64_t begin, int64_t end) {
        for (int64_t index = begin; index < end; ++index) {
          const int64_t slab = index / groups;
          bf16::pack_pairs_from_columns(src, column_stride, k_, n_, slab, 16 * (index % groups), pairs_,
                                        out + slab * pairs_ * kColumns * 2);
        }
      });
    } else {
      pack_elements(src, row_stride, column_stride, slabs, dst);
    }
    a16_ = at::empty({batch, 2 * pairs_}, w.options().dtype(at::kBFloat16));
    a16_.narrow(1, k_, 2 * pairs_ - k_).zero_();  // round_row writes k values; the padding columns stay zero
  }

  // c (+)= a W for `rows` rows from row `first`: a (row stride lda), c (row stride n); unless in_block
  // (the caller's thread runs a block of rows) the threads share it (share_product: a thread for at least
  // ~256K multiply-adds, or 32M on AMX tiles, see kTileMacsPerThread).
  void run(float* c, const float* a, int64_t lda, int64_t first, int64_t rows, bool accumulate, bool in_block) const {
    const int64_t ld16 = 2 * pairs_, blocks = (n_ + bf16::kColumns - 1) / bf16::kColumns;
    uint16_t* a16 = reinterpret_cast<uint16_t*>(a16_.data_ptr<at::BFloat16>()) + first * ld16;
    a += first * lda;
    c += first * n_;
    const uint16_t* wp = reinterpret_cast<const uint16_t*>(packed_.data_ptr<at::BFloat16>());
    const auto round = [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) bf16::round_row(a + r * lda, k_, a16 + r * ld16);
    };
    const auto part = [&](int64_t r0, int64_t r1, int64_t b0, int64_t b1) {  // rows [r0, r1), blocks [b0, b1)
      const auto kernel = tiles_ ? amx::gemm : bf16::gemm;
      kernel(r1 - r0, n_, pairs_, a16 + r0 * ld16, ld16, wp, c + r0 * n_, n_, accumulate, b0, b1);
    };
    share_product(rows, k_, blocks, tiles_ ? kTileMacsPerThread : int64_t{256} << 10, in_block, round, part);
  }
  // The same with tensors: a (rows, k) with contiguous rows, c (rows, n) contiguous.
  bool runs(const at::Tensor& c, const at::Tensor& a) const {
    return c.is_contiguous() && a.stride(1) == 1 && a.size(0) <= a16_.size(0);
  }
  void run(at::Tensor& c, const at::Tensor& a, bool accumulate) const {
    run(c.data_ptr<float>(), a.data_ptr<float>(), a.stride(0), 0, a.size(0), accumulate, false);
  }

 private:
  // Any strides, an element at a time.
  void pack_elements(const float* src, int64_t row_stride, int64_t column_stride, int64_t slabs, at::BFloat16* dst) {
    constexpr int64_t kColumns = bf16::kColumns;
    at::parallel_for(0, slabs * pairs_, 64, [&](int64_t begin, int64_t end) {
      for (int64_t index = begin; index < end; ++index) {  // index = slab * pairs + pair
        const int64_t first = (index % pairs_) * 2, column0 = (index / pairs_) * kColumns;
        at::BFloat16* out = dst + index * kColumns * 2;
        for (int64_t c = 0; c < kColumns; ++c) {
          for (int64_t j = 0; j < 2; ++j) {
            const int64_t row = first + j, column = column0 + c;
            const bool inside = row < k_ && column < n_;
            out[2 * c + j] = at::BFloat16(inside ? src[row * row_stride + column * column_stride] : 0.0f);
          }
        }
      }
    });
  }

  // A product on AMX tiles runs at ~40 us per 16M multiply-adds on one thread, less than threads cost to
  // share it: on a 2-vCPU Xeon with AMX (Sapphire Rapids class) two threads took 66 us against 38 at
  // (64, 256) x (256, 1024), and torch.mm in bfloat16 runs no faster on two (1,160 GFLOP/s either
  // way: the two share one core's tiles). So a per-step product stays on one thread below 32M.
  static constexpr int64_t kTileMacsPerThread = int64_t{32} << 20;

  // Pairs of k's rows: whole AMX tiles of them (amx::kPairs) where the tiles run, else (k + 1) / 2.
  static int64_t padded_pairs(int64_t k, bool tiles) {
    const int64_t pairs = (k + 1) / 2;
    return tiles ? (pairs + amx::kPairs - 1) / amx::kPairs * amx::kPairs : pairs;
  }

  int64_t k_, n_;
  bool tiles_;  // amx_gemm.h's kernel, else bf16_gemm.h's
  int64_t pairs_;
  at::Tensor packed_, a16_;
};

// W (k, n) float32 for fp32_gemm.h's kernel (where fp32::available()): slabs of 64 columns, packed once
// per call; the per-step products of a float32 call multiply by it instead of MKL's packed W.
class SlabWeight {
 public:
  explicit SlabWeight(const at::Tensor& w) : k_(w.size(0)), n_(w.size(1)) {
#ifdef __AVX512F__
    const int64_t slabs = (n_ + fp32::kColumns - 1) / fp32::kColumns;
    packed_ = at::empty({slabs, k_, fp32::kColumns}, w.options());
    const float* src = w.data_ptr<float>();
    float* out = packed_.data_ptr<float>();
    at::parallel_for(0, slabs, 1, [&](int64_t s0, int64_t s1) {
      for (int64_t slab = s0; slab < s1; ++slab)
        fp32::pack_slab(src, w.stride(0), w.stride(1), k_, n_, slab, out + slab * k_ * fp32::kColumns);
    });
#endif
  }

  // c (+)= a W for `rows` rows from row `first`: a (row stride lda), c (row stride n); unless in_block
  // (the caller's thread runs a block of rows) the threads share it (share_product: at least ~256K
  // multiply-adds a thread).
  void run(float* c, const float* a, int64_t lda, int64_t first, int64_t rows, bool accumulate, bool in_block) const {
#ifdef __AVX512F__
    const int64_t slabs = (n_ + fp32::kColumns - 1) / fp32::kColumns;
    a += first * lda;
    c += first * n_;
    const float* wp = packed_.data_ptr<float>();
    const auto part = [&](int64_t r0, int64_t r1, int64_t s0, int64_t s1) {
      fp32::gemm(r1 - r0, n_, k_, a + r0 * lda, lda, wp, c + r0 * n_, n_, accumulate, s0, s1);
    };
    share_product(rows, k_, slabs, int64_t{256} << 10, in_block, [](int64_t, int64_t) {}, part);
#endif
  }
  // The same with tensors: a (rows, k) with contiguous rows, c (rows, n) contiguous.
  bool runs(const at::Tensor& c, const at::Tensor& a) const { return c.is_contiguous() && a.stride(1) == 1; }
  void run(at::Tensor& c, const at::Tensor& a, bool accumulate) const {
    run(c.data_ptr<float>(), a.data_ptr<float>(), a.stride(0), 0, a.size(0), accumulate, false);
  }

 private:
  int64_t k_, n_;
  at::Tensor packed_;
};

// Packing a weight (in bf16 pairs, in MKL's layout, or as a bfloat16 copy for oneDNN) reads it and
// writes it once more than multiplying a few rows by it does, so it pays only when a call multiplies
// at least kMinPackedRows rows by it in all (its steps times its batch). One step of one sequence
// (text generation, streaming) multiplies in float32, unpacked.
constexpr int64_t kMinPackedRows = 8;
inline bool packing_pays(int64_t rows_in_all) { return rows_in_all >= kMinPackedRows; }

// Whether a product of `rows` rows with W (k, n) under bf16 GEMMs runs bf16_gemm.h's kernel: on a CPU
// with AVX512-BF16, except the products large enough for oneDNN (bf16_pays) on a CPU with AMX, whose
// tiles outrun it.
inline bool pairs_pay(bool bf16, int64_t rows, int64_t n, int64_t k) {
  return bf16 && bf16::available() && n > 0 && k > 0 && !(bf16::amx() && bf16_pays(bf16, rows, n, k));
}
// The same for a per-step product, whatever its size where amx_gemm.h's tiles run: on W packed once
// per call they outrun oneDNN's per-step call, which converts both operands and the product at every
// step.
inline bool step_pairs_pay(bool bf16, int64_t rows, int64_t n, int64_t k) {
  return pairs_pay(bf16, rows, n, k) || (bf16 && amx::available() && n > 0 && k > 0);
}

// m1 m2 (m1 (m, k), m2 (k, n)), in the call's dtype: under bf16 GEMMs bf16_gemm.h's kernel where it
// runs (pairs_pay; m1's rows contiguous), else oneDNN's bfloat16 product where it pays.
inline at::Tensor gemm(bool bf16, const at::Tensor& m1, const at::Tensor& m2) {
  const int64_t m = m1.size(0), k = m1.size(1), n = m2.size(1);
  bf16 = bf16 && packing_pays(m);  // m2 packed or copied to bfloat16 for a few rows costs more than it saves
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

// An int8 weight W (n, k) with one float32 scale per row (lstmkit.quantize_int8's), packed once for
// int8_gemm.h's and int8_avx2.h's kernels: slabs (n/64, k/4, 64, 4) and its columns' compensation.
// Python keeps one per weight from call to call (lstmkit.engine.int8_loop), so that a call packs
// nothing: at one step of one stream, packing took most of a call. Only where int8::available().
class Int8Packed {
 public:
  Int8Packed(const at::Tensor& w, const at::Tensor& scale)
      : n_(w.size(0)), k_(w.size(1)), groups_((k_ + int8::kGroup - 1) / int8::kGroup) {
    TORCH_CHECK_VALUE(int8::available(),
                      "the int8 kernel needs a CPU with AVX512-VNNI or AVX2 (and LSTMKIT_INT8_KERNEL != 0)");
    TORCH_CHECK_TYPE(w.scalar_type() == at::kChar && w.dim() == 2, "expected an int8 (n, k) weight, got ", w.scalar_type());
    TORCH_CHECK_VALUE(scale.numel() == n_, "expected one scale per row of the weight (", n_, "), got ", scale.numel());
    pack(w.contiguous());
    scale_ = scale.to(at::kFloat).reshape({n_}).contiguous();
  }

  int64_t n() const { return n_; }
  int64_t k() const { return k_; }
  int64_t groups() const { return groups_; }
  int64_t slabs() const { return (n_ + int8::kColumns - 1) / int8::kColumns; }
  const int8_t* packed() const { return packed_.data_ptr<int8_t>(); }
  const int32_t* compensation() const { return compensation_.data_ptr<int32_t>(); }
  const float* scale() const { return scale_.data_ptr<float>(); }
  int64_t nbytes() const { return packed_.nbytes() + compensation_.nbytes() + scale_.nbytes(); }

 private:
  // W (n, k) contiguous into slabs in one pass: element (slab, group, column, e) is W[64 slab + column,
  // 4 group + e], zero in the padding; and each row's compensation, kShift times its sum.
  void pack(const at::Tensor& w) {
    constexpr int64_t kColumns = int8::kColumns, kGroup = int8::kGroup;
    packed_ = at::empty({slabs(), groups_, kColumns, kGroup}, w.options());
    compensation_ = at::empty({n_}, w.options().dtype(at::kInt));
    const int8_t* src = w.data_ptr<int8_t>();
    int8_t* dst = packed_.data_ptr<int8_t>();
    int32_t* compensation = compensation_.data_ptr<int32_t>();
    at::parallel_for(0, slabs(), 1, [&](int64_t s0, int64_t s1) {
      for (int64_t slab = s0; slab < s1; ++slab) {
        for (int64_t column = 0; column < kColumns; ++column) {
          const int64_t row = slab * kColumns + column;
          int8_t* out = dst + (slab * groups_ * kColumns + column) * kGroup;  // group 0 of this column
          if (row >= n_) {
            for (int64_t group = 0; group < groups_; ++group) std::memset(out + group * kColumns * kGroup, 0, kGroup);
            continue;
          }
          const int8_t* in = src + row * k_;
          int32_t sum = 0;
          for (int64_t k = 0; k < k_; ++k) sum += in[k];
          compensation[row] = sum * int8::kShift;
          const int64_t whole = k_ / kGroup;  // groups of 4 values inside the row
          for (int64_t group = 0; group < whole; ++group) std::memcpy(out + group * kColumns * kGroup, in + group * kGroup, kGroup);
          if (whole < groups_) {  // the last group, padded with zeros
            int8_t last[kGroup] = {0, 0, 0, 0};
            std::memcpy(last, in + whole * kGroup, k_ - whole * kGroup);
            std::memcpy(out + whole * kColumns * kGroup, last, kGroup);
          }
        }
      }
    });
  }

  int64_t n_, k_, groups_;
  at::Tensor packed_, compensation_, scale_;
};

// A packed int8 weight (it must outlive this) with scratch for up to `batch` rows of the other operand
// quantized (shifted bytes for VNNI, int16 for AVX2; a scale per row), so that a step allocates nothing.
class QuantizedWeight {
 public:
  QuantizedWeight(const Int8Packed& w, int64_t batch) : w_(w), vnni_(int8::kernel() == int8::Kernel::kVnni) {
    const int64_t width = int8::kGroup * w.groups();
    const auto options = at::TensorOptions().dtype(vnni_ ? at::kByte : at::kShort);
    quantized_ = at::empty({batch, width}, options);
    if (width > w.k()) quantized_.narrow(1, w.k(), width - w.k()).zero_();  // the padding columns meet W's zeros
    a_scale_ = at::empty({batch}, options.dtype(at::kFloat));
  }

  // c (+)= dequant(q(a) W^T) [+ bias] for `rows` rows: a (row stride lda), c (row stride n), bias (n)
  // or nullptr. Inside RowBlocks::run only the calling thread's rows, on that thread; else many rows
  // are shared out among the threads by rows, few by W's slabs, at least kMinMacs multiply-adds a
  // thread (waking a thread costs a few microseconds: the time of ~1M int8 multiply-adds).
  void run(float* c, const float* a, int64_t lda, int64_t rows, bool accumulate, const float* bias) const {
    constexpr int64_t kRowsPerThread = 64, kMinMacs = int64_t{1} << 20;
    TORCH_CHECK_VALUE(rows <= quantized_.size(0), "more rows (", rows, ") than the weight's scratch holds");
    const int64_t k = w_.k();
    float* a_scale = a_scale_.data_ptr<float>();
    int8::Output out;
    out.c = c;
    out.ldc = w_.n();
    out.accumulate = accumulate;
    out.row_scale = a_scale;
    out.column_scale = w_.scale();
    out.compensation = w_.compensation();
    out.bias = bias;
    const auto quantize = [&](int64_t r0, int64_t r1) {
      const int64_t ld = quantized_.size(1);
      for (int64_t r = r0; r < r1; ++r)
        a_scale[r] = vnni_ ? int8::quantize_row(a + r * lda, k, quantized_.data_ptr<uint8_t>() + r * ld)
                           : int8::avx2::quantize_row(a + r * lda, k, quantized_.data_ptr<int16_t>() + r * ld);
    };
    const auto part = [&](int64_t r0, int64_t r1, int64_t s0, int64_t s1) { product(quantized_, out, r0, r1, s0, s1); };
    const RowRange& mine = current_rows();
    if (mine.active) {
      quantize(mine.begin, mine.end);
      part(mine.begin, mine.end, 0, w_.slabs());
    } else if (rows >= 2 * kRowsPerThread) {
      at::parallel_for(0, rows, kRowsPerThread, [&](int64_t r0, int64_t r1) {
        quantize(r0, r1);
        part(r0, r1, 0, w_.slabs());
      });
    } else {
      quantize(0, rows);
      const int64_t per_slab = std::max<int64_t>(1, rows * k * int8::kColumns);
      at::parallel_for(0, w_.slabs(), std::max<int64_t>(1, kMinMacs / per_slab),
                       [&](int64_t s0, int64_t s1) { part(0, rows, s0, s1); });
    }
  }

  // The raw int32 sums a8 W^T of shifted bytes a8 (rows, k), without the compensation: the kernel's
  // integer arithmetic alone, for tests (AVX2 multiplies the bytes as int16: the same sums).
  at::Tensor sums(const at::Tensor& a8) const {
    TORCH_CHECK_TYPE(a8.scalar_type() == at::kByte && a8.dim() == 2 && a8.size(1) == w_.k(), "expected uint8 (rows, ",
                     w_.k(), ")");
    const int64_t rows = a8.size(0);
    at::Tensor padded = at::zeros({rows, quantized_.size(1)}, quantized_.options());
    padded.narrow(1, 0, w_.k()).copy_(a8);
    at::Tensor result = at::empty({rows, w_.n()}, a8.options().dtype(at::kInt));
    int8::Output out;
    out.ldc = w_.n();
    out.sums = result.data_ptr<int32_t>();
    product(padded, out, 0, rows, 0, w_.slabs());
    return result;
  }

 private:
  // Rows [r0, r1) of the product of quantized rows q (the scratch's type) for the slabs [s0, s1).
  void product(const at::Tensor& q, const int8::Output& out, int64_t r0, int64_t r1, int64_t s0, int64_t s1) const {
    if (vnni_)
      int8::gemm(r0, r1, w_.n(), w_.groups(), q.data_ptr<uint8_t>(), q.size(1), w_.packed(), out, s0, s1);
    else
      int8::avx2::gemm(r0, r1, w_.n(), w_.groups(), q.data_ptr<int16_t>(), q.size(1), w_.packed(), out, s0, s1);
  }

  const Int8Packed& w_;
  bool vnni_;
  at::Tensor quantized_, a_scale_;
};

// The shapes of an int8 inference call (lstm_int8_forward, gru_int8_forward): x (T, B, I) float32 with
// T > 0, packed int8 weights (G*H, I) and (G*H, H), h0 (B, H). Returns T, B, I, H, R = H, G.
inline Shapes check_int8_call(const at::Tensor& x, const Int8Packed& w_ih, const Int8Packed& w_hh,
                              const at::Tensor& h0, int64_t gates) {
  TORCH_CHECK_VALUE(x.dim() == 3 && x.size(0) > 0, "x must be (T, B, I) with T > 0");
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat, "int8 inference takes float32 input, got ", x.scalar_type());
  const int64_t H = h0.size(-1);
  const Shapes s{x.size(0), x.size(1), x.size(2), H, H, gates};
  check_same(x, "x", x, {s.T, s.B, s.I});
  const char* form = gates == 3 ? "3H" : "4H";
  TORCH_CHECK_VALUE(w_ih.n() == gates * H && w_ih.k() == s.I, "weight_ih must be (", form, ", I) = (", gates * H,
                    ", ", s.I, "), got (", w_ih.n(), ", ", w_ih.k(), ")");
  TORCH_CHECK_VALUE(w_hh.n() == gates * H && w_hh.k() == H, "weight_hh must be (", form, ", H) = (", gates * H, ", ",
                    H, "), got (", w_hh.n(), ", ", w_hh.k(), ")");
  check_same(h0, "h0", x, {s.B, H});
  return s;
}

// The valid-step mask of an int8 call: (T, B) bool, contiguous, or none (every step valid).
inline const bool* int8_valid(const OptTensor& valid, const Shapes& s) {
  if (!valid) return nullptr;
  TORCH_CHECK_TYPE(valid->scalar_type() == at::kBool, "valid must be bool, got ", valid->scalar_type());
  TORCH_CHECK_VALUE(valid->dim() == 2 && valid->size(0) == s.T && valid->size(1) == s.B && valid->is_contiguous(),
                    "valid must be a contiguous (T, B) = (", s.T, ", ", s.B, ") mask, got ", valid->sizes());
  return valid->data_ptr<bool>();
}

// A weight every one of `steps` steps multiplies by, out = a W [+ bias] with W (k, n), for up to `rows`
// rows: under bf16 GEMMs on a bfloat16 copy through oneDNN where that pays, else in pairs
// (bf16_gemm.h) where the CPU has AVX512-BF16; in float32 on fp32_gemm.h's slabs on an AMD CPU with
// AVX-512; the copies made once per call, where packing pays.
class StepWeight {
 public:
  StepWeight(const at::Tensor& w, int64_t rows, bool bf16, int64_t steps) : w_(w) {
    if (!packing_pays(rows * steps)) return;
    if (step_pairs_pay(bf16, rows, w.size(1), w.size(0))) {
      paired_.emplace(w, rows);
    } else if (bf16_pays(bf16, rows, w.size(1), w.size(0))) {
      onednn_.emplace(w, rows);
    } else if (w.scalar_type() == at::kFloat && fp32::available() && w.numel() > 0) {
      slabs_.emplace(w);
    }
  }
  void into(at::Tensor& out, const at::Tensor& a, const OptTensor& bias = std::nullopt) const {
    if (paired_ && paired_->runs(out, a)) {
      paired_->run(out, a, false);
      if (bias) out.add_(*bias);
    } else if (onednn_ && onednn_->fits(a)) {
      onednn_->run(out, a, 0, false);
      if (bias) out.add_(*bias);
    } else if (slabs_ && slabs_->runs(out, a)) {
      slabs_->run(out, a, false);
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
    } else if (slabs_ && slabs_->runs(out, a)) {
      slabs_->run(out, a, true);
    } else {
      at::addmm_out(out, out, a, w_);
    }
  }

 private:
  at::Tensor w_;
  std::optional<PairedWeight> paired_;
  std::optional<OneDnnWeight> onednn_;
  std::optional<SlabWeight> slabs_;  // float32 on an AMD CPU with AVX-512 (fp32_gemm.h)
};

// ---------------------------------------------------------------------------------------------
// Products of a few rows.
// ---------------------------------------------------------------------------------------------
// c (rows, n) (+)= a (rows, k) W for rows < kFewRows, W (k, n) given row-major (w_rows = true) or as
// the transpose of a row-major (n, k) matrix: each row of c is n dot products of W^T's rows with the
// row of a, or the sum of k rows of W scaled by it. At batch 1 BLAS takes this product for a
// matrix-vector product, whose call costs several times the arithmetic (MKL's sgemv: ~4 us for a
// 512 x 128 weight that streams from L2 in ~1.5), at every step; docs/engine.md has the figures.
constexpr int64_t kFewRows = 4;

// c[r, 0 .. Q) (+)= a[r] . w[q] for R rows of a and Q rows of w (k values each).
template <typename T, int R, int Q>
__attribute__((always_inline)) inline void few_rows_dots(T* c, int64_t ldc, const T* a, int64_t lda, const T* w, int64_t k, bool accumulate) {
  using Vec = Vectorized<T>;
  constexpr int64_t lanes = Vec::size();
  Vec s[Q][R];
  for (int q = 0; q < Q; ++q)
    for (int r = 0; r < R; ++r) s[q][r] = Vec(T(0));
  for (int64_t i = 0; i < k; i += lanes) {
    const int64_t m = std::min(lanes, k - i);
    Vec x[R];
    for (int r = 0; r < R; ++r) x[r] = Vec::loadu(a + r * lda + i, m);
    for (int q = 0; q < Q; ++q) {
      const Vec wq = Vec::loadu(w + q * k + i, m);
      for (int r = 0; r < R; ++r) s[q][r] = at::vec::fmadd(wq, x[r], s[q][r]);
    }
  }
  for (int q = 0; q < Q; ++q)
    for (int r = 0; r < R; ++r) {
      T& out = c[r * ldc + q];
      out = (accumulate ? out : T(0)) + sum_lanes(s[q][r], lanes);
    }
}

// few_rows_product for R rows: one pass over W for all of them.
template <typename T, int R>
void few_rows(T* c, int64_t ldc, const T* a, int64_t lda, const T* w, bool w_rows, int64_t n, int64_t k,
              bool accumulate) {
  using Vec = Vectorized<T>;
  constexpr int64_t lanes = Vec::size();
  if (!w_rows) {  // c[r, j] = a[r] . (row j of the (n, k) matrix), four of its rows at a time
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) few_rows_dots<T, R, 4>(c + j, ldc, a, lda, w + j * k, k, accumulate);
    for (; j < n; ++j) few_rows_dots<T, R, 1>(c + j, ldc, a, lda, w + j * k, k, accumulate);
    return;
  }
  constexpr int64_t kVectors = 8 / R;  // c[:, j0 .. j0 + kVectors lanes) held in registers over all of W's k rows
  for (int64_t j0 = 0; j0 < n; j0 += kVectors * lanes) {
    const int64_t vectors = std::min(kVectors, (n - j0 + lanes - 1) / lanes);
    const auto width = [&](int64_t v) { return std::min(lanes, n - j0 - v * lanes); };
    Vec acc[R][kVectors];
    for (int r = 0; r < R; ++r)
      for (int64_t v = 0; v < vectors; ++v)
        acc[r][v] = accumulate ? Vec::loadu(c + r * ldc + j0 + v * lanes, width(v)) : Vec(T(0));
    for (int64_t i = 0; i < k; ++i) {
      Vec x[R];
      for (int r = 0; r < R; ++r) x[r] = Vec(a[r * lda + i]);
      const T* wi = w + i * n + j0;
      for (int64_t v = 0; v < vectors; ++v) {
        const Vec wv = Vec::loadu(wi + v * lanes, width(v));
        for (int r = 0; r < R; ++r) acc[r][v] = at::vec::fmadd(x[r], wv, acc[r][v]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int64_t v = 0; v < vectors; ++v) acc[r][v].store(c + r * ldc + j0 + v * lanes, width(v));
  }
}

template <typename T>
void few_rows_product(T* c, int64_t ldc, const T* a, int64_t lda, const T* w, bool w_rows, int64_t rows, int64_t n,
                      int64_t k, bool accumulate) {
  switch (rows) {
    case 1: return few_rows<T, 1>(c, ldc, a, lda, w, w_rows, n, k, accumulate);
    case 2: return few_rows<T, 2>(c, ldc, a, lda, w, w_rows, n, k, accumulate);
    case 3: return few_rows<T, 3>(c, ldc, a, lda, w, w_rows, n, k, accumulate);
    default: TORCH_INTERNAL_ASSERT(rows == 0, "few_rows_product takes fewer than ", kFewRows, " rows");
  }
}

// ---------------------------------------------------------------------------------------------
// The per-step GEMM with a weight that stays the same at every step.
// ---------------------------------------------------------------------------------------------
// MKL (in torch's x86 builds) can pack a GEMM operand once into its internal layout and reuse it;
// a plain GEMM repacks the weight at every call, which for the few rows of one time step costs as
// much as the product (docs/engine.md). Weak symbols: where torch has no MKL they are null and at::addmm_out runs instead.
// Packed memory is resident memory: the layout of a k x n operand with n < k (the backward's W_hh,
// n = H, k = 4H) touches about 5 times its size. Fewer than kFewRows rows take few_rows_product
// instead, which reads W as it is, so only blocks of that many rows or more are packed.
inline bool worth_packing(int64_t rows) { return rows >= kFewRows; }
extern "C" {
size_t cblas_sgemm_pack_get_size(int identifier, int m, int n, int k) __attribute__((weak));
void cblas_sgemm_pack(int layout, int identifier, int trans, int m, int n, int k, float alpha, const float* src,
                      int ld, float* dest) __attribute__((weak));
void cblas_sgemm_compute(int layout, int transa, int transb, int m, int n, int k, const float* a, int lda,
                         const float* b, int ldb, float beta, float* c, int ldc) __attribute__((weak));
}

// c (B, n) = beta c + a (B, k) op(W), op(W) = W^T (transpose, W (n, k)) or W (W (k, n)), at each of
// `steps` steps; inside RowBlocks::run, on the calling thread's rows only (a GEMM of their own, one
// thread). W is packed only where that pays (packing_pays).
// Under bf16 GEMMs (see GEMM precision): bf16_gemm.h's kernel on W packed in pairs of rows where the
// CPU has AVX512-BF16 (pairs_pay), else oneDNN's bfloat16 product where it pays, else float32.
class StepGemm {
 public:
  StepGemm(const at::Tensor& w, const RowBlocks& blocks, bool transpose, bool bf16, int64_t steps)
      : w_(transpose ? w.t() : w), n_(w_.size(1)), k_(w_.size(0)) {
    if (!packing_pays(steps * blocks.batch())) return;
    if (step_pairs_pay(bf16, blocks.rows(0), n_, k_)) {
      paired_.emplace(w_, blocks.batch());
      return;
    }
    if (bf16_pays(bf16, blocks.rows(0), n_, k_)) {
      onednn_.emplace(w_, blocks.batch());
      return;
    }
    if (w.scalar_type() == at::kFloat && fp32::available() && n_ > 0 && k_ > 0) {
      slabs_.emplace(w_);
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
    if (slabs_ && c.contiguous() && a.rows_contiguous()) {
      slabs_->run(c.data<float>(), a.data<float>(), a.row_stride(), first, rows, accumulate, mine.active);
      return;
    }
    const int64_t lda = a.row_stride();
    const bool w_rows = w_.stride(1) == 1 && w_.stride(0) == n_, w_columns = w_.stride(0) == 1 && w_.stride(1) == k_;
    const bool full_precision = w_.scalar_type() == at::kFloat || w_.scalar_type() == at::kDouble;
    if (rows < kFewRows && full_precision && c.contiguous() && a.rows_contiguous() && (w_rows || w_columns)) {
      AT_DISPATCH_FLOATING_TYPES(w_.scalar_type(), "few_rows_product", [&] {
        few_rows_product(c.data<scalar_t>() + first * n_, n_, a.data<scalar_t>() + first * lda, lda,
                         w_.data_ptr<scalar_t>(), w_rows, rows, n_, k_, accumulate);
      });
      return;
    }
    const at::Tensor* packed = packed_for(rows);
    if (packed && a.rows_contiguous() && c.contiguous()) {
      cblas_sgemm_compute(kRowMajor, kNoTrans, kPacked, rows, n_, k_, a.data<float>() + first * lda, lda,
                          packed->data_ptr<float>(), n_, accumulate ? 1.0f : 0.0f, c.data<float>() + first * n_, n_);
      return;
    }
    at::Tensor out = c.view();  // a view costs more than a small step's pointwise pass: narrowed only inside a block
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
    if (!worth_packing(rows) || packed_for(rows)) return;
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
  std::optional<SlabWeight> slabs_;                     // float32 on an AMD CPU with AVX-512 (fp32_gemm.h)
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

}  // namespace lstmkit
