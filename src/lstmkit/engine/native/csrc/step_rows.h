// The pointers of one time step, as a cell's row functions see them (see loop.h): the state
// entering and leaving the step, the output, masks and zoneout; emit_h / emit_c hand on a new state,
// store_dh / store_dc its gradient, and padded rows are carried here. Also the pointers of a step of
// the int8 inference loops.
#pragma once

#include "common.h"
#include "row_blocks.h"

namespace lstmkit {

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

// The pointers of step k of an int8 inference loop (lstm_int8_forward, gru_int8_forward): h (and c,
// when cs is not null) entering and leaving the step in turn in (2, B, H) buffers, the output at t;
// rows where valid (T, B) is false carry their state (forward's semantics).
inline ForwardRows<float> int8_step_rows(int64_t k, const Shapes& s, bool reverse, float* hs, float* cs, float* out,
                                         const bool* valid, bool carry_output) {
  const int64_t t = time_of(k, s.T, reverse), size = s.B * s.H;
  ForwardRows<float> p{};
  p.B = s.B;
  p.R = p.H = p.hs = s.H;
  p.h_old = p.h_gemm = hs + (k % 2) * size;
  p.h_new = hs + ((k + 1) % 2) * size;
  if (cs) {
    p.c_old = cs + (k % 2) * size;
    p.c_new = cs + ((k + 1) % 2) * size;
  }
  p.out = out + t * size;
  p.prev_out = k == 0 ? nullptr : out + time_of(k - 1, s.T, reverse) * size;
  p.valid = valid ? valid + t * s.B : nullptr;
  p.carry_output = carry_output;
  return p;
}

}  // namespace lstmkit
