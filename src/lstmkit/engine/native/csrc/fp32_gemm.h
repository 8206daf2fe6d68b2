// A float32 GEMM for the per-step products on AMD CPUs with AVX-512 (Zen 4 and later): c (rows x n)
// (+)= a (rows x k) W (k x n), W packed once per call in slabs of 64 columns (n/64, k, 64), each block
// of up to 4 rows x 64 columns keeping its 16 accumulators in registers over the whole of k.
//
// There MKL runs its generic path (mkl_blas_def_sgemm_kernel_0_zen) and, for every per-step call on a
// packed W, copies the rows of a into its own layout first (mkl_blas_def_sgemm_scopy_down16_bdz: 18% of
// a float32 training step at (100, 16, 512, 512), with its kernel at 62%), and torch.nn.LSTM's oneDNN
// ran the same training step in 0.95-0.97 of lstmkit's time. Intel CPUs keep MKL's packed products.
//
// Built only into the AVX-512 extension; run where available() says so.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "kernel_switch.h"
#include "slab_blocks.h"

namespace lstmkit {
namespace fp32 {

// Whether this kernel runs here: the extension was built for AVX-512, the CPU is AMD's, and the
// environment variable LSTMKIT_FP32_KERNEL is not "0" (which gives MKL's path, for tests; read once).
inline bool available() {
#ifdef __AVX512F__
  static const bool has = __builtin_cpu_is("amd") && __builtin_cpu_supports("avx512f") &&
                          kernel_switched_on("LSTMKIT_FP32_KERNEL");
  return has;
#else
  return false;
#endif
}

// Columns per packed slab of W.
constexpr int64_t kColumns = kSlabColumns;

#ifdef __AVX512F__
// Slab `slab` of W (k x n float32, strides rs and cs): element (p, c) is W[p, 64 slab + c], zero past n.
inline void pack_slab(const float* w, int64_t rs, int64_t cs, int64_t k, int64_t n, int64_t slab, float* out) {
  const int64_t j0 = slab * kColumns, columns = std::min<int64_t>(kColumns, n - j0);
  if (rs == 1 && cs != 1) {  // the transpose of a row-major matrix (W_hh^T): a column of W is contiguous
    for (int64_t c = 0; c < kColumns; ++c) {
      const float* in = w + (j0 + c) * cs;
      for (int64_t p = 0; p < k; ++p) out[p * kColumns + c] = c < columns ? in[p] : 0.0f;
    }
    return;
  }
  for (int64_t p = 0; p < k; ++p) {
    float* row = out + p * kColumns;
    const float* in = w + p * rs + j0 * cs;
    for (int64_t c = 0; c < columns; ++c) row[c] = in[c * cs];
    std::fill(row + columns, row + kColumns, 0.0f);
  }
}

// One block: R rows x V vectors of 16 columns from column j0 (the last vector masked by `last`).
template <int R, int V>
void block(const float* a, int64_t lda, const float* slab, int64_t k, int64_t j0, __mmask16 last, float* c,
           int64_t ldc, bool accumulate) {
  __m512 acc[R][V];
  const auto mask = [&](int v) { return v == V - 1 ? last : static_cast<__mmask16>(0xFFFF); };
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v)
      acc[r][v] = accumulate ? _mm512_maskz_loadu_ps(mask(v), c + r * ldc + j0 + 16 * v) : _mm512_setzero_ps();
  for (int64_t p = 0; p < k; ++p) {
    __m512 w[V];
    for (int v = 0; v < V; ++v) w[v] = _mm512_loadu_ps(slab + p * kColumns + 16 * v);  // W[p][16 columns]
    for (int r = 0; r < R; ++r) {
      const __m512 value = _mm512_set1_ps(a[r * lda + p]);  // a[r, p]
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(value, w[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) _mm512_mask_storeu_ps(c + r * ldc + j0 + 16 * v, mask(v), acc[r][v]);
}

// c[:, slabs [first, last)] (+)= a W: a (rows x k, row stride lda), wp (packed by pack_slab), c (rows x
// n, row stride ldc).
inline void gemm(int64_t rows, int64_t n, int64_t k, const float* a, int64_t lda, const float* wp, float* c,
                 int64_t ldc, bool accumulate, int64_t first, int64_t last_slab) {
  for_each_block(rows, n, first, last_slab, [&](auto r, auto v, int64_t r0, int64_t slab, int64_t j0, __mmask16 last) {
    block<decltype(r)::value, decltype(v)::value>(a + r0 * lda, lda, wp + slab * k * kColumns, k, j0, last,
                                                  c + r0 * ldc, ldc, accumulate);
  });
}
#endif

}  // namespace fp32
}  // namespace lstmkit
