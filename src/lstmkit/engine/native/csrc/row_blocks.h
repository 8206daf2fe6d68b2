// Row blocks: one thread per block of batch rows, for the whole time loop (see loop.h).

#pragma once

#include "common.h"

namespace lstmkit {

// ---------------------------------------------------------------------------------------------
// Row blocks: one thread per block of batch rows, for the whole time loop.
// ---------------------------------------------------------------------------------------------
// Rows never meet within a step: row b of step t needs only row b of the state, in its GEMM and in
// its pointwise pass. So with enough rows each thread runs the whole loop on its own block, with no
// synchronisation between steps, where otherwise every step's GEMM and pass is a parallel region
// whose threads wait for each other. Each thread then reads the whole recurrent weight at every
// step, so blocks are used only while that stays cheap next to the block's GEMM: at least kMinRows
// rows and at most kMaxWeightPerRow bytes of weight per row: blocks made small and middle shapes
// faster and the largest weight slower (docs/engine.md has the figures).
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

  // weight_bytes: the recurrent weight's size; split = false: one block, the whole batch (kernels whose
  // steps have whole-batch operations).
  RowBlocks(int64_t batch, int64_t weight_bytes, bool split) : batch_(batch), count_(1) {
    const int64_t threads = at::get_num_threads(), rows = batch / std::max<int64_t>(threads, 1);
    if (split && threads > 1 && rows >= kMinRows && weight_bytes <= rows * kMaxWeightPerRow) count_ = threads;
  }
  RowBlocks(int64_t batch, const at::Tensor& w, bool split)
      : RowBlocks(batch, static_cast<int64_t>(w.nbytes()), split) {}
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

}  // namespace lstmkit
