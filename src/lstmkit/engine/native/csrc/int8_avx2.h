// The int8 GEMM of int8_gemm.h for CPUs with AVX2 but without AVX512-VNNI: the same product, the same
// packed W and the same quantization of a, so the same integer sums and the same float32 results bit
// for bit; only the instructions differ.
//
// AVX2 has no instruction that multiplies bytes into int32 sums without saturating (vpmaddubsw
// saturates its int16 pair sums: torch's fbgemm quantizes activations to 7 bits to stay clear of it).
// Here a row of a is quantized to the same symmetric values as for VNNI, q = round(a * 127 / max|a|)
// in [-127, 127], but stored as int16 and unshifted (no compensation), and W's bytes are widened to
// int16 as they are loaded; vpmaddwd multiplies 16 int16 pairs and adds each pair into an int32 lane,
// exactly (16 multiply-adds per instruction; with two per cycle twice float32's FMA rate). Measured on
// Zen 3, one thread: ~55 GMAC/s against torch.mm's ~33 in float32. Bytes through vpmaddubsw with the
// sign of a moved onto W (vpsignb; exact for |a|, |W| <= 127) take as many multiply instructions per
// product (vpmaddubsw, then vpmaddwd by ones to widen) and ran no faster.
//
// W keeps int8_gemm.h's packing, slabs of 64 columns in groups of 4 along k: 16 bytes of a group are
// 4 columns x 4 values of k, widened to 16 int16; a row's 4 values of a broadcast to every 64-bit lane,
// so vpmaddwd leaves two partial sums per column, which the block adds together at its end (vphaddd).
// A block is R <= 4 rows x 8 columns (two such chunks): 8 accumulators, 2 of W and the broadcasts in
// the 16 registers, over the whole of k (6 rows, 12 accumulators, spill: 40 against 57 GMAC/s). Its
// stores are plain ones but at W's last columns: masked stores are microcoded on AMD, and with them
// the whole layer took twice as long.
//
// Compiled for AVX2 through function attributes, whatever the extension's flags; run only where
// int8::kernel() chose it.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "int8_gemm.h"

namespace lstmkit {
namespace int8 {
namespace avx2 {

#define LSTMKIT_AVX2_TARGET __attribute__((target("avx2,fma")))

// Rows per block.
constexpr int kRows = 4;

// round(x), x = a * 127 / max|a| in [-127, 127] (nearest even), and 0 for NaN, as int8_gemm.h's
// quantize_row (whose NaN becomes the shift, i.e. 0).
inline int16_t quantized(float x) { return std::isnan(x) ? 0 : static_cast<int16_t>(std::nearbyint(x)); }

// dst[0, k) = round(src[0, k) * 127 / max|src|) as int16; returns the row's scale, max|src| / 127 (0 for
// a row of zeros, whose values all become 0). The values of int8_gemm.h's quantize_row, unshifted.
LSTMKIT_AVX2_TARGET inline float quantize_row(const float* src, int64_t k, int16_t* dst) {
  const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 peak = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= k; j += 8) peak = _mm256_max_ps(peak, _mm256_and_ps(_mm256_loadu_ps(src + j), magnitude));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, peak);
  float largest = *std::max_element(lanes, lanes + 8);
  for (; j < k; ++j) largest = std::max(largest, std::fabs(src[j]));
  if (!(largest > 0.0f)) {  // zeros (or NaN), as int8_gemm.h's
    std::fill(dst, dst + k, int16_t{0});
    return 0.0f;
  }
  const float inverse = 127.0f / largest;
  const __m256 scale = _mm256_set1_ps(inverse);
  const auto convert = [&](const float* from) {  // NaN -> 0 before the conversion
    const __m256 x = _mm256_mul_ps(_mm256_loadu_ps(from), scale);
    return _mm256_cvtps_epi32(_mm256_and_ps(x, _mm256_cmp_ps(x, x, _CMP_ORD_Q)));
  };
  for (j = 0; j + 16 <= k; j += 16) {  // packs interleaves the 128-bit lanes; the permute restores order
    const __m256i pair = _mm256_packs_epi32(convert(src + j), convert(src + j + 8));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j), _mm256_permute4x64_epi64(pair, 0xD8));
  }
  for (; j < k; ++j) dst[j] = quantized(src[j] * inverse);
  return largest / 127.0f;
}

// Columns [j, j + count) of 8 as a mask of lanes.
LSTMKIT_AVX2_TARGET inline __m256i lanes_below(int64_t count) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(std::min<int64_t>(count, 8))),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// One block: R rows of a (int16, row stride lda, a multiple of 4) x the 8 columns from column j of W,
// whose packed bytes start at `w` (column j's group 0), `valid` of them inside W.
template <int R>
LSTMKIT_AVX2_TARGET void block(const int16_t* a, int64_t lda, const int8_t* w, int64_t groups, int64_t j,
                               int64_t valid, const Output& out, int64_t r0) {
  __m256i acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  for (int64_t p = 0; p < groups; ++p) {
    const int8_t* group = w + p * kColumns * kGroup;  // W[4 columns][4p, 4p+4) twice
    const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(group)));
    const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(group + 16)));
    for (int r = 0; r < R; ++r) {
      int64_t four;  // a[r][4p, 4p+4)
      std::memcpy(&four, a + r * lda + kGroup * p, sizeof four);
      const __m256i quad = _mm256_set1_epi64x(four);
      acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(quad, w0));
      acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(quad, w1));
    }
  }
  // plain loads and stores for whole groups of 8 columns: masked ones are slow (microcoded on AMD)
  const bool whole = valid >= 8;
  const __m256i mask = lanes_below(valid);
  const auto load = [&](const float* from) { return whole ? _mm256_loadu_ps(from) : _mm256_maskload_ps(from, mask); };
  const __m256 column_scale = out.sums ? _mm256_setzero_ps() : load(out.column_scale + j);
  const __m256 bias = out.bias ? load(out.bias + j) : _mm256_setzero_ps();
  for (int r = 0; r < R; ++r) {
    // lanes (column, half of k): c0 c0 c1 c1 | c2 c2 c3 c3 and c4.. c7; hadd gives c0 c1 c4 c5 | c2 c3 c6 c7
    const __m256i sums = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[r][0], acc[r][1]), 0xD8);
    if (out.sums) {
      _mm256_maskstore_epi32(out.sums + (r0 + r) * out.ldc + j, mask, sums);
      continue;
    }
    float* c = out.c + (r0 + r) * out.ldc + j;
    const __m256 scale = _mm256_mul_ps(column_scale, _mm256_set1_ps(out.row_scale[r0 + r]));
    const __m256 base = out.accumulate ? _mm256_add_ps(load(c), bias) : bias;
    const __m256 result = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, base);
    if (whole)
      _mm256_storeu_ps(c, result);
    else
      _mm256_maskstore_ps(c, mask, result);
  }
}

// Rows [r_begin, r_end) of the product for the slabs [first, last_slab), as int8_gemm.h's gemm: a
// (int16, row stride lda), wp (int8_gemm.h's packing), n columns. The rows go in panels of kPanel, each
// panel through every slab: a panel's int16 rows stay in L2 while W passes (many rows of int16 would
// not: all of x's T*B rows are 3 MB at (100, 64, 256)), a block's rows in L1 across a slab.
LSTMKIT_AVX2_TARGET inline void gemm(int64_t r_begin, int64_t r_end, int64_t n, int64_t groups, const int16_t* a,
                                     int64_t lda, const int8_t* wp, const Output& out, int64_t first,
                                     int64_t last_slab) {
  constexpr int64_t kPanel = 128;
  for (int64_t panel = r_begin; panel < r_end; panel += kPanel) {
    const int64_t panel_end = std::min(r_end, panel + kPanel);
    for (int64_t slab_index = first; slab_index < last_slab; ++slab_index) {
      const int8_t* slab = wp + slab_index * groups * kColumns * kGroup;
      const int64_t j_end = std::min(n, (slab_index + 1) * kColumns);
      for (int64_t r0 = panel; r0 < panel_end; r0 += kRows) {
        const int16_t* ar = a + r0 * lda;
        const int64_t rows = std::min<int64_t>(kRows, panel_end - r0);
        for (int64_t j = slab_index * kColumns; j < j_end; j += 8) {
          const int8_t* w = slab + (j % kColumns) * kGroup;
          switch (rows) {
            case 1: block<1>(ar, lda, w, groups, j, n - j, out, r0); break;
            case 2: block<2>(ar, lda, w, groups, j, n - j, out, r0); break;
            case 3: block<3>(ar, lda, w, groups, j, n - j, out, r0); break;
            default: block<4>(ar, lda, w, groups, j, n - j, out, r0); break;
          }
        }
      }
    }
  }
}

#undef LSTMKIT_AVX2_TARGET

}  // namespace avx2
}  // namespace int8
}  // namespace lstmkit
