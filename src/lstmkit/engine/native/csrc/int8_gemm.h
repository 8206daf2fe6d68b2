// An int8 GEMM for int8 inference (lstmkit.quantize_int8's weights): c (rows x n, float32) (+)=
// dequant(q(a) W^T) [+ bias], W int8 (n x k, PyTorch's layout: a row per output) with one scale per
// output row, a float32 (rows x k) quantized here row by row. Products are exact integers: AVX512-VNNI's
// vpdpbusd multiplies 4 unsigned by 4 signed bytes and adds the 4 products to an int32 lane (64
// multiply-adds per instruction, four times an FMA's 16), without saturation.
//
// vpdpbusd takes unsigned bytes on one side, so a row of a is quantized symmetrically, q = round(a *
// 127 / max|a|) in [-127, 127], and stored shifted, q + 128 in [1, 255]; the shift adds 128 sum_k W[k, j]
// to every sum, which is subtracted again (the column's compensation, computed when W is packed):
//   c[r, j] = (sum_k (q[r, k] + 128) W[j, k] - 128 sum_k W[j, k]) * a_scale[r] * w_scale[j] (+ bias[j]).
// The sums fit an int32 up to k = 66,000 (255 * 127 * k < 2^31).
//
// W is packed once per weight as bf16_gemm.h packs its bfloat16 W, for the same reason (a slab's rows
// contiguous, so that it stays in L1 across the row blocks): slabs of 64 columns, each in groups of 4
// along k, (n/64, k/4, 64, 4) bytes, k and n padded with zeros. A 64-byte load is then 4 values of k for
// 16 columns, the layout vpdpbusd reads; a row block of 4 rows x 64 columns keeps its 16 int32
// accumulators in registers over the whole of k, and converts and scales them once at the end.
//
// Compiled for AVX512-VNNI through function attributes, whatever the extension's flags; run only where
// kernel() chose it. int8_avx2.h computes the same on CPUs with AVX2 only.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>


namespace lstmkit {
namespace int8 {

// Which int8 kernel runs here: this file's where the CPU has AVX512-VNNI (with AVX512-BW/VL),
// int8_avx2.h's where it has AVX2 and FMA only, none elsewhere. The environment variable
// LSTMKIT_INT8_KERNEL (read once) narrows the choice for tests: "0" gives the paths of a CPU without
// either, "avx2" the AVX2 kernel on a CPU with VNNI.
enum class Kernel { kNone, kAvx2, kVnni };

inline Kernel kernel() {
  static const Kernel chosen = [] {
    const char* setting = std::getenv("LSTMKIT_INT8_KERNEL");
    const std::string asked = setting ? setting : "";
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const bool vnni = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl");
    if (asked == "0") return Kernel::kNone;
    if (vnni && asked != "avx2") return Kernel::kVnni;
    return avx2 ? Kernel::kAvx2 : Kernel::kNone;
  }();
  return chosen;
}

inline bool available() { return kernel() != Kernel::kNone; }

// The instruction set of kernel(), as explain() reports it: "AVX512-VNNI", "AVX2" or "".
inline const char* kernel_name() {
  switch (kernel()) {
    case Kernel::kVnni: return "AVX512-VNNI";
    case Kernel::kAvx2: return "AVX2";
    default: return "";
  }
}

#define LSTMKIT_VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

// Columns per packed slab of W; values of k per group.
constexpr int64_t kColumns = 64;
constexpr int64_t kGroup = 4;
// What a row's quantized values are shifted by, to be unsigned.
constexpr int32_t kShift = 128;

inline __mmask16 mask_of(int64_t count) {
  return static_cast<__mmask16>(count >= 16 ? 0xFFFF : (1u << count) - 1);
}

// dst[0, k) = round(src[0, k) * 127 / max|src|) + 128 (nearest even); returns the row's scale,
// max|src| / 127 (0 for a row of zeros, whose values all become 128).
LSTMKIT_VNNI_TARGET inline float quantize_row(const float* src, int64_t k, uint8_t* dst) {
  __m512 peak = _mm512_setzero_ps();
  for (int64_t j = 0; j < k; j += 16)
    peak = _mm512_max_ps(peak, _mm512_abs_ps(_mm512_maskz_loadu_ps(mask_of(k - j), src + j)));
  const float largest = _mm512_reduce_max_ps(peak);
  if (!(largest > 0.0f)) {  // zeros (or NaN: the row then quantizes to zeros rather than to garbage)
    std::fill(dst, dst + k, static_cast<uint8_t>(kShift));
    return 0.0f;
  }
  const __m512 inverse = _mm512_set1_ps(127.0f / largest);
  const __m512i shift = _mm512_set1_epi32(kShift);
  for (int64_t j = 0; j < k; j += 16) {
    const __mmask16 m = mask_of(k - j);
    const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, src + j), inverse));
    _mm512_mask_cvtepi32_storeu_epi8(dst + j, m, _mm512_add_epi32(q, shift));
  }
  return largest / 127.0f;
}

// Where a block's sums go: dequantized into c, or (sums != nullptr) as the raw int32 sums, without
// the compensation (tests compare them with an integer product).
struct Output {
  float* c = nullptr;                    // (rows, n), row stride ldc
  int64_t ldc = 0;
  bool accumulate = false;               // c += instead of c =
  const float* row_scale = nullptr;      // a's scale per row
  const float* column_scale = nullptr;   // W's scale per column (output)
  const int32_t* compensation = nullptr; // 128 sum_k W[j, k] per column
  const float* bias = nullptr;           // per column, or nullptr
  int32_t* sums = nullptr;               // (rows, n), row stride ldc, instead of c
};

// One block: R rows x V vectors of 16 columns from column j0, whose W slab is `slab` (the last
// vector masked by `last`); a: shifted bytes, row stride lda (a multiple of 4).
template <int R, int V>
LSTMKIT_VNNI_TARGET void block(const uint8_t* a, int64_t lda, const int8_t* slab, int64_t groups, int64_t j0,
                               __mmask16 last, const Output& out, int64_t r0) {
  __m512i acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_si512();
  for (int64_t p = 0; p < groups; ++p) {
    __m512i w[V];
    for (int v = 0; v < V; ++v)
      w[v] = _mm512_loadu_si512(slab + kGroup * (p * kColumns + 16 * v));  // W[16 columns][4p, 4p+4)
    for (int r = 0; r < R; ++r) {
      const __m512i quad = _mm512_set1_epi32(*reinterpret_cast<const int32_t*>(a + r * lda + kGroup * p));
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], quad, w[v]);
    }
  }
  const auto mask = [&](int v) { return v == V - 1 ? last : static_cast<__mmask16>(0xFFFF); };
  if (out.sums) {
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < V; ++v)
        _mm512_mask_storeu_epi32(out.sums + (r0 + r) * out.ldc + j0 + 16 * v, mask(v), acc[r][v]);
    return;
  }
  for (int v = 0; v < V; ++v) {
    const int64_t j = j0 + 16 * v;
    const __m512i compensation = _mm512_maskz_loadu_epi32(mask(v), out.compensation + j);
    const __m512 column_scale = _mm512_maskz_loadu_ps(mask(v), out.column_scale + j);
    const __m512 bias = out.bias ? _mm512_maskz_loadu_ps(mask(v), out.bias + j) : _mm512_setzero_ps();
    for (int r = 0; r < R; ++r) {
      float* c = out.c + (r0 + r) * out.ldc + j;
      const __m512 scale = _mm512_mul_ps(column_scale, _mm512_set1_ps(out.row_scale[r0 + r]));
      const __m512 sum = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][v], compensation));
      const __m512 base = out.accumulate ? _mm512_add_ps(_mm512_maskz_loadu_ps(mask(v), c), bias) : bias;
      _mm512_mask_storeu_ps(c, mask(v), _mm512_fmadd_ps(sum, scale, base));
    }
  }
}

template <int R>
LSTMKIT_VNNI_TARGET void row_block(int vectors, const uint8_t* a, int64_t lda, const int8_t* slab, int64_t groups,
                                   int64_t j0, __mmask16 last, const Output& out, int64_t r0) {
  switch (vectors) {
    case 1: return block<R, 1>(a, lda, slab, groups, j0, last, out, r0);
    case 2: return block<R, 2>(a, lda, slab, groups, j0, last, out, r0);
    case 3: return block<R, 3>(a, lda, slab, groups, j0, last, out, r0);
    default: return block<R, 4>(a, lda, slab, groups, j0, last, out, r0);
  }
}

// Rows [r_begin, r_end) of the product for the slabs [first, last_slab): a (shifted bytes, row stride
// lda, rows counted from 0), wp (slabs of groups x 64 x 4 bytes, packed as above), n columns.
LSTMKIT_VNNI_TARGET inline void gemm(int64_t r_begin, int64_t r_end, int64_t n, int64_t groups, const uint8_t* a,
                                     int64_t lda, const int8_t* wp, const Output& out, int64_t first,
                                     int64_t last_slab) {
  for (int64_t slab_index = first; slab_index < last_slab; ++slab_index) {
    const int64_t j0 = slab_index * kColumns, columns = std::min<int64_t>(kColumns, n - j0);
    const int vectors = static_cast<int>((columns + 15) / 16);
    const __mmask16 last = mask_of(columns - 16 * (vectors - 1));
    const int8_t* slab = wp + slab_index * groups * kColumns * kGroup;
    for (int64_t r0 = r_begin; r0 < r_end; r0 += 4) {
      const uint8_t* ar = a + r0 * lda;
      switch (std::min<int64_t>(4, r_end - r0)) {
        case 1: row_block<1>(vectors, ar, lda, slab, groups, j0, last, out, r0); break;
        case 2: row_block<2>(vectors, ar, lda, slab, groups, j0, last, out, r0); break;
        case 3: row_block<3>(vectors, ar, lda, slab, groups, j0, last, out, r0); break;
        default: row_block<4>(vectors, ar, lda, slab, groups, j0, last, out, r0); break;
      }
    }
  }
}

#undef LSTMKIT_VNNI_TARGET

}  // namespace int8
}  // namespace lstmkit
