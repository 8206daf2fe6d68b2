// bf16_gemm.h's product on AMX tiles: c (rows x n, float32) (+)= a (rows x k) W (k x n), a and W in
// bfloat16, on the same packed W (slabs of 64 columns in pairs of rows), with k padded to whole tiles.
//
// A tile holds 16 rows of 64 bytes; tdpbf16ps multiplies a tile of a (16 rows x 16 pairs) by a tile of
// W (16 pairs x 16 columns x 2) into a tile of 16 x 16 float32 sums: 8,192 multiply-adds an
// instruction, 256 times vdpbf16ps'. A slab's 16 pairs x 16 columns is a tile as it lies (its rows 256
// bytes apart), so W is packed once for either kernel. Each block of up to 16 rows x 64 columns keeps
// its four product tiles over the whole of k, loading a's tile once per 16 pairs and W's four.
//
// Linux gives a process AMX's tile registers only on request (arch_prctl ARCH_REQ_XCOMP_PERM);
// available() asks once. Compiled for AMX through function attributes; run only where available().
#pragma once

#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "bf16_gemm.h"
#include "kernel_switch.h"

namespace lstmkit {
namespace amx {

// Whether this kernel runs here: the CPU has AMX-BF16, Linux grants the tile state, and
// LSTMKIT_AMX_KERNEL is not "0" (which leaves the products to bf16_gemm.h's kernel, for tests).
inline bool available() {
  static const bool has = [] {
    constexpr long kRequestPermission = 0x1023, kTileData = 18;  // ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA
    return bf16::available() && bf16::amx() && kernel_switched_on("LSTMKIT_AMX_KERNEL") &&
           syscall(SYS_arch_prctl, kRequestPermission, kTileData) == 0;
  }();
  return has;
}

constexpr int64_t kPairs = 16;  // pairs of k in a tile's row (64 bytes of bfloat16)
constexpr int64_t kRows = 16;   // rows of a tile

#define LSTMKIT_AMX_TARGET __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl")))

// Tiles 0-3: a block's product (rows x 16 float32 each); 4: a's rows (rows x 16 pairs); 5-7: W's.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

LSTMKIT_AMX_TARGET inline void configure(int rows) {
  TileConfig config;
  for (int tile = 0; tile < 8; ++tile) {
    config.rows[tile] = static_cast<uint8_t>(tile < 5 ? rows : kPairs);
    config.bytes_per_row[tile] = 64;
  }
  _tile_loadconfig(&config);
}

// One block of the configured rows x 16 V columns: c (row stride ldc floats) (+)= a (row stride lda
// bfloat16, `pairs` a multiple of kPairs) times the slab's columns.
template <int V>
LSTMKIT_AMX_TARGET void block(const uint16_t* a, int64_t lda, const uint16_t* slab, int64_t pairs, float* c,
                              int64_t ldc, bool accumulate) {
  constexpr int64_t kSlabRow = 2 * bf16::kColumns * sizeof(uint16_t);  // bytes from one pair to the next
  const int64_t c_stride = ldc * sizeof(float);
  if (accumulate) {
    _tile_loadd(0, c, c_stride);
    if constexpr (V > 1) _tile_loadd(1, c + 16, c_stride);
    if constexpr (V > 2) _tile_loadd(2, c + 32, c_stride);
    if constexpr (V > 3) _tile_loadd(3, c + 48, c_stride);
  } else {
    _tile_zero(0);
    if constexpr (V > 1) _tile_zero(1);
    if constexpr (V > 2) _tile_zero(2);
    if constexpr (V > 3) _tile_zero(3);
  }
  for (int64_t p = 0; p < pairs; p += kPairs) {
    const uint16_t* w = slab + 2 * p * bf16::kColumns;  // W[2p .. 2p + 32)[the slab's 64 columns]
    _tile_loadd(4, a + 2 * p, lda * sizeof(uint16_t));
    _tile_loadd(5, w, kSlabRow);
    _tile_dpbf16ps(0, 4, 5);
    if constexpr (V > 1) {
      _tile_loadd(6, w + 32, kSlabRow);
      _tile_dpbf16ps(1, 4, 6);
    }
    if constexpr (V > 2) {
      _tile_loadd(7, w + 64, kSlabRow);
      _tile_dpbf16ps(2, 4, 7);
    }
    if constexpr (V > 3) {
      _tile_loadd(5, w + 96, kSlabRow);
      _tile_dpbf16ps(3, 4, 5);
    }
  }
  _tile_stored(0, c, c_stride);
  if constexpr (V > 1) _tile_stored(1, c + 16, c_stride);
  if constexpr (V > 2) _tile_stored(2, c + 32, c_stride);
  if constexpr (V > 3) _tile_stored(3, c + 48, c_stride);
}

LSTMKIT_AMX_TARGET inline void block(int vectors, const uint16_t* a, int64_t lda, const uint16_t* slab,
                                     int64_t pairs, float* c, int64_t ldc, bool accumulate) {
  switch (vectors) {
    case 1: return block<1>(a, lda, slab, pairs, c, ldc, accumulate);
    case 2: return block<2>(a, lda, slab, pairs, c, ldc, accumulate);
    case 3: return block<3>(a, lda, slab, pairs, c, ldc, accumulate);
    default: return block<4>(a, lda, slab, pairs, c, ldc, accumulate);
  }
}

// c[:, columns of the slab] (+)= a W[:, slab's columns] for the configured rows: a slab whose columns
// end inside a tile goes through scratch.
LSTMKIT_AMX_TARGET inline void slab_block(int tile_rows, int64_t n, int64_t pairs, const uint16_t* a, int64_t lda,
                                          const uint16_t* wp, int64_t block_index, float* c, int64_t ldc,
                                          bool accumulate) {
  const int64_t j0 = block_index * bf16::kColumns, columns = std::min<int64_t>(bf16::kColumns, n - j0);
  const int vectors = static_cast<int>((columns + 15) / 16);
  const uint16_t* slab = wp + block_index * pairs * bf16::kColumns * 2;
  float* cr = c + j0;
  if (columns % 16 == 0) return block(vectors, a, lda, slab, pairs, cr, ldc, accumulate);
  alignas(64) float scratch[kRows * bf16::kColumns];
  for (int r = 0; accumulate && r < tile_rows; ++r)
    std::memcpy(scratch + r * bf16::kColumns, cr + r * ldc, columns * sizeof(float));
  block(vectors, a, lda, slab, pairs, scratch, bf16::kColumns, accumulate);
  for (int r = 0; r < tile_rows; ++r) std::memcpy(cr + r * ldc, scratch + r * bf16::kColumns, columns * sizeof(float));
}

// bf16::gemm's contract, with `pairs` a multiple of kPairs (a's padding columns and W's padding rows
// zero): c[:, columns of blocks [first, last_block)] (+)= a W. The whole tiles of 16 rows go slab by
// slab, so that a slab of W is read from memory once and from L1 for every further tile of rows (rows
// outermost, 128 rows x (128, 512) ran at 440 GFLOP/s, W read from L2 by every tile); then the rows
// left over, in tiles configured for them (configuring tiles costs more than a tile's product).
LSTMKIT_AMX_TARGET inline void gemm(int64_t rows, int64_t n, int64_t pairs, const uint16_t* a, int64_t lda,
                                    const uint16_t* wp, float* c, int64_t ldc, bool accumulate, int64_t first,
                                    int64_t last_block) {
  const int64_t whole = rows / kRows * kRows;
  const int tail = static_cast<int>(rows - whole);
  if (whole) {
    configure(kRows);
    for (int64_t block_index = first; block_index < last_block; ++block_index)
      for (int64_t r0 = 0; r0 < whole; r0 += kRows)
        slab_block(kRows, n, pairs, a + r0 * lda, lda, wp, block_index, c + r0 * ldc, ldc, accumulate);
  }
  if (tail) {
    configure(tail);
    for (int64_t block_index = first; block_index < last_block; ++block_index)
      slab_block(tail, n, pairs, a + whole * lda, lda, wp, block_index, c + whole * ldc, ldc, accumulate);
  }
  if (rows) _tile_release();
}

#undef LSTMKIT_AMX_TARGET

}  // namespace amx
}  // namespace lstmkit
