// A small bfloat16 GEMM for the per-step products: c (rows x n, float32) (+)= a (rows x k) W (k x n),
// a and W rounded to bfloat16, products summed in float32 by AVX512-BF16's dot product of pairs
// (vdpbf16ps: 32 multiply-adds per instruction, twice an FMA's 16): two to three times MKL's packed
// float32 product at the per-step shapes (docs/engine.md, "Measurements behind the kernels' design").
//
// W is packed once per call in blocks of 64 columns, each in pairs of rows, (n/64, k/2, 64, 2): the
// two values a lane multiplies lie side by side, and a block is one contiguous slab. Each step
// converts its rows of a to bfloat16 (pairs of columns), then every block of 4 rows x 64 columns
// keeps its 16 accumulators in registers over the whole of k, the W slab (k x 64 bfloat16) staying
// in L1 across the row blocks. (Packed as (k/2, n, 2) instead, a slab's rows lie n apart: at
// n = 512 they fall into 8 of L1's 64 sets and are read from L2 at every row block, which held
// the kernel to the float32 FMA's rate.) No library call, no allocation: for the few
// rows of one time step oneDNN's bfloat16 product costs more in its call than in its arithmetic
// (gemm.h, "GEMM precision").
//
// Compiled for AVX512-BF16 through function attributes, whatever the extension's flags; run only
// where available() says the CPU has it.
#pragma once

#include <ATen/cpu/Utils.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "kernel_switch.h"
#include "slab_blocks.h"

namespace lstmkit {
namespace bf16 {

// Whether this kernel runs here: the CPU has AVX512-BF16, and the environment variable
// LSTMKIT_BF16_KERNEL is not "0" (which gives the paths of a CPU without it, for tests; read once).
inline bool available() {
  static const bool has = [] {
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && kernel_switched_on("LSTMKIT_BF16_KERNEL");
  }();
  return has;
}

// Whether the CPU has AMX-BF16 tiles (oneDNN's large bfloat16 products outrun this kernel there).
inline bool amx() {
  static const bool has = [] {
    const auto capabilities = at::cpu::get_cpu_capabilities();
    const auto found = capabilities.find("amx_bf16");
    return found != capabilities.end() && found->second.isBool() && found->second.toBool();
  }();
  return has;
}

#define LSTMKIT_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

// dst[0, n) = src[0, n) rounded to bfloat16 (nearest even)
LSTMKIT_BF16_TARGET inline void round_row(const float* src, int64_t n, uint16_t* dst) {
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m256bh v = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + j));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j), reinterpret_cast<const __m256i&>(v));
  }
  if (j < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - j)) - 1);
    const __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + j));
    _mm256_mask_storeu_epi16(dst + j, m, reinterpret_cast<const __m256i&>(v));
  }
}

// Columns per packed block of W.
constexpr int64_t kColumns = kSlabColumns;

// Packing W (k x n float32) for the kernels: slab `slab`'s pair `pair` is 64 words, word c holding
// W[2 pair, 64 slab + c] (low half) and W[2 pair + 1, 64 slab + c] rounded to bfloat16, zero outside W.
// Rows of W contiguous (row stride ld): 16 columns of the two rows a vector at a time.
LSTMKIT_BF16_TARGET inline void pack_pair_from_rows(const float* w, int64_t ld, int64_t k, int64_t n, int64_t slab,
                                                    int64_t pair, uint16_t* out) {
  const int64_t r0 = 2 * pair, r1 = 2 * pair + 1;
  for (int64_t v = 0; v < kColumns / 16; ++v) {
    const int64_t j0 = slab * kColumns + 16 * v;
    const int64_t inside = std::clamp<int64_t>(n - j0, 0, 16);
    const __mmask16 m = static_cast<__mmask16>((1u << inside) - 1);
    const __m512 low = r0 < k ? _mm512_maskz_loadu_ps(m, w + r0 * ld + j0) : _mm512_setzero_ps();
    const __m512 high = r1 < k ? _mm512_maskz_loadu_ps(m, w + r1 * ld + j0) : _mm512_setzero_ps();
    const __m256bh low16 = _mm512_cvtneps_pbh(low), high16 = _mm512_cvtneps_pbh(high);
    const __m512i words = _mm512_or_si512(_mm512_cvtepu16_epi32(reinterpret_cast<const __m256i&>(low16)),
                                          _mm512_slli_epi32(_mm512_cvtepu16_epi32(reinterpret_cast<const __m256i&>(high16)), 16));
    _mm512_storeu_si512(out + 32 * v, words);
  }
}

// The same for W given as the transpose of a row-major (n x k) matrix t (row stride ld): column c of W
// is row c of t, so 16 pairs of one column are 32 contiguous floats; their words go 64 apart (one per
// pair) into the slab. Pairs [p0, p0 + 16) of every column of the slab: the 4 KB they fill stay in L1
// while the 64 columns scatter into them (pairs outermost, over the whole slab, it ran at half the speed).
LSTMKIT_BF16_TARGET inline void pack_pairs_from_columns(const float* t, int64_t ld, int64_t k, int64_t n,
                                                        int64_t slab, int64_t p0, int64_t pairs, uint16_t* slab_out) {
  const __m512i offsets = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                             _mm512_set1_epi32(static_cast<int>(kColumns)));
  const __mmask16 stored = static_cast<__mmask16>((uint32_t{1} << std::min<int64_t>(16, pairs - p0)) - 1);
  const int64_t r = 2 * p0;
  for (int64_t c = 0; c < kColumns; ++c) {
    const int64_t column = slab * kColumns + c;
    const auto mask_of = [&](int64_t first) {
      const int64_t inside = column < n ? std::clamp<int64_t>(k - first, 0, 16) : 0;
      return static_cast<__mmask16>((uint32_t{1} << inside) - 1);
    };
    const __m512 low = _mm512_maskz_loadu_ps(mask_of(r), t + column * ld + r);
    const __m512 high = _mm512_maskz_loadu_ps(mask_of(r + 16), t + column * ld + r + 16);
    const __m512bh both = _mm512_cvtne2ps_pbh(high, low);  // 32 values: pairs p0 .. p0 + 15 of this column
    _mm512_mask_i32scatter_epi32(reinterpret_cast<int32_t*>(slab_out) + p0 * kColumns + c, stored, offsets,
                                 reinterpret_cast<const __m512i&>(both), 4);
  }
}

// One block: R rows x V vectors of 16 columns from column j0, whose W slab is `slab` (the last vector
// masked by `last`).
template <int R, int V>
LSTMKIT_BF16_TARGET void block(const uint16_t* a, int64_t lda, const uint16_t* slab, int64_t pairs, int64_t j0,
                               __mmask16 last, float* c, int64_t ldc, bool accumulate) {
  __m512 acc[R][V];
  const auto mask = [&](int v) { return v == V - 1 ? last : static_cast<__mmask16>(0xFFFF); };
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v)
      acc[r][v] = accumulate ? _mm512_maskz_loadu_ps(mask(v), c + r * ldc + j0 + 16 * v) : _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    __m512i w[V];
    for (int v = 0; v < V; ++v)
      w[v] = _mm512_loadu_si512(slab + 2 * (p * kColumns + 16 * v));  // W[2p, 2p+1][16 columns] (zero-padded)
    for (int r = 0; r < R; ++r) {
      const __m512i pair = _mm512_set1_epi32(*reinterpret_cast<const int32_t*>(a + r * lda + 2 * p));  // a[r, 2p:2p+2]
      for (int v = 0; v < V; ++v)
        acc[r][v] = _mm512_dpbf16_ps(acc[r][v], reinterpret_cast<const __m512bh&>(pair),
                                     reinterpret_cast<const __m512bh&>(w[v]));
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) _mm512_mask_storeu_ps(c + r * ldc + j0 + 16 * v, mask(v), acc[r][v]);
}

// c[:, slabs [first, last)] (+)= a W: a (rows x 2 pairs bfloat16, row stride lda), wp (n/64 slabs of
// pairs x 64 x 2, packed by the pack_* functions), c (rows x n, row stride ldc).
LSTMKIT_BF16_TARGET inline void gemm(int64_t rows, int64_t n, int64_t pairs, const uint16_t* a, int64_t lda,
                                     const uint16_t* wp, float* c, int64_t ldc, bool accumulate, int64_t first,
                                     int64_t last_block) {
  for_each_block(rows, n, first, last_block, [&](auto r, auto v, int64_t r0, int64_t slab, int64_t j0, __mmask16 last) {
    block<decltype(r)::value, decltype(v)::value>(a + r0 * lda, lda, wp + slab * pairs * kColumns * 2, pairs, j0,
                                                  last, c + r0 * ldc, ldc, accumulate);
  });
}

#undef LSTMKIT_BF16_TARGET

}  // namespace bf16
}  // namespace lstmkit
