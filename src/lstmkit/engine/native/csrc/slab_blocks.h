// The loop the per-step product kernels share (bf16_gemm.h, fp32_gemm.h): W packed in slabs of 64
// columns, c's columns taken slab by slab and, on each slab while it stays in cache, every block of up
// to 4 rows x 4 vectors of 16 columns, whose accumulators stay in registers over the whole of k.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace lstmkit {

// Columns per packed slab of W.
constexpr int64_t kSlabColumns = 64;

namespace slab_detail {
template <int R, typename Block>
void with_vectors(int vectors, const Block& block) {
  using Rows = std::integral_constant<int, R>;
  switch (vectors) {
    case 1: return block(Rows{}, std::integral_constant<int, 1>{});
    case 2: return block(Rows{}, std::integral_constant<int, 2>{});
    case 3: return block(Rows{}, std::integral_constant<int, 3>{});
    default: return block(Rows{}, std::integral_constant<int, 4>{});
  }
}
}  // namespace slab_detail

// block(R, V, r0, slab, j0, last) for every block of `rows` rows and the slabs [first, last_slab) of
// W (n columns): R rows from row r0 and V vectors of 16 columns from column j0 = 64 slab, R and V as
// std::integral_constant, the last vector masked by `last`.
template <typename Block>
void for_each_block(int64_t rows, int64_t n, int64_t first, int64_t last_slab, const Block& block) {
  for (int64_t slab = first; slab < last_slab; ++slab) {
    const int64_t j0 = slab * kSlabColumns, columns = std::min<int64_t>(kSlabColumns, n - j0);
    const int vectors = static_cast<int>((columns + 15) / 16);
    const int64_t tail = columns - 16 * (vectors - 1);
    const __mmask16 last = static_cast<__mmask16>(tail == 16 ? 0xFFFF : (1u << tail) - 1);
    for (int64_t r0 = 0; r0 < rows; r0 += 4) {
      const auto at = [&](auto r, auto v) { block(r, v, r0, slab, j0, last); };
      switch (std::min<int64_t>(4, rows - r0)) {
        case 1: slab_detail::with_vectors<1>(vectors, at); break;
        case 2: slab_detail::with_vectors<2>(vectors, at); break;
        case 3: slab_detail::with_vectors<3>(vectors, at); break;
        default: slab_detail::with_vectors<4>(vectors, at); break;
      }
    }
  }
}

}  // namespace lstmkit
