// Strategy "filter_rows" of the CPU convolution's backward-filter (see conv2d_cpu.cpp).
#include "ops/conv2d_cpu_common.h"

namespace convkit::conv_cpu {

// A first layer's backward-filter (1-3 input channels): the input is copied once with
// zero columns for the horizontal padding; then for each kernel row, every output row
// pairs with the input row it reads, and cpu::row_filter_grad keeps the gradients of all
// (tap column, channel) pairs in registers across the thread's rows.
void bwd_filter_by_rows(const Conv2dDesc& d, const float* x, const float* dy, float* dw, float* dbias) {
  const i64 rows = d.N * d.OH, Q = d.R * d.S * d.C, K = d.K;
  const i64 wp = (d.OW - 1) * d.sw + (d.S - 1) * d.dw + 1;  // padded input row, in pixels
  const auto th = forward_taps(d.OH, d.R, d.sh, d.dh, d.pt, d.H);
  const std::vector<float> xpad = pad_columns(x, d.N * d.H, d.W, d.C, d.pl, wp);
  Partials partial(Q * K, K, std::max(1, std::min<int>(omp_get_max_threads(), static_cast<int>(rows))));
  const int nthreads = partial.threads;
#pragma omp parallel num_threads(nthreads)
  {
    const int t = omp_get_thread_num();
    float *acc = partial.weights(t), *bacc = partial.bias(t);
    const i64 lo = rows * t / nthreads, hi = rows * (t + 1) / nthreads;
    // Blocks of rows whose dy (about 128 KiB) stays in L2 while the bias sum and every kernel
    // row read it.
    const i64 block = std::max<i64>(1, (32 << 10) / std::max<i64>(1, d.OW * K));
    std::vector<const float*> xrows, dyrows;
    for (i64 b0 = lo; b0 < hi; b0 += block) {
      cpu::column_sums(dy + b0 * d.OW * K, (std::min(hi, b0 + block) - b0) * d.OW, K, bacc);
      for (i64 r = 0; r < d.R; ++r) {
        xrows.clear();
        dyrows.clear();
        for (i64 row = b0; row < std::min(hi, b0 + block); ++row) {
          const i64 n = row / d.OH, ih = th[(row % d.OH) * d.R + r];
          if (ih < 0) continue;
          xrows.push_back(xpad.data() + ((n * d.H + ih) * wp) * d.C);
          dyrows.push_back(dy + row * d.OW * K);
        }
        cpu::row_filter_grad(static_cast<i64>(xrows.size()), xrows.data(), dyrows.data(), d.OW, d.sw * d.C,
                             d.dw * d.C, static_cast<int>(d.S), static_cast<int>(d.C), K, acc + r * d.S * d.C * K);
      }
    }
  }
  partial.reduce(dw, dbias);
}

}  // namespace convkit::conv_cpu
