// Strategy "rows" of the CPU convolution (see conv2d_cpu.cpp).
#include "ops/conv2d_cpu_common.h"

namespace convkit::conv_cpu {

// A handful of output pixels (squeeze-and-excitation's 1x1 maps, a classifier head written as a 1x1
// convolution, at batch 1): each output row is a sum of the weights' rows, each scaled by one source
// value, read in place (HWIO keeps a row's filters side by side). Packing the weights for the
// micro-kernel would read and write all of them to use each once, and the tile would fill one row
// in twelve: a 1152 -> 48 layer at batch 1 took 52 us that way. Columns are split over threads when
// there is enough work.
void run_rows(const GatherGemm& g, i64 M) {
  constexpr i64 kChunk = 256;
  const i64 K = g.ncols, chunks = (K + kChunk - 1) / kChunk, px = pixel_stride(g);
  const bool parallel = chunks > 1 && M * g.R * g.S * g.SC * K > (1 << 18);
#pragma omp parallel for schedule(static) if (parallel)
  for (i64 c = 0; c < chunks; ++c) {
    const i64 j0 = c * kChunk, n = std::min(K, j0 + kChunk) - j0;
    for (i64 m = 0; m < M; ++m) {
      const i64 img = m / (g.GH * g.GW), gh = m / g.GW % g.GH, gw = m % g.GW;
      float* out = g.out + m * K + j0;
      std::fill(out, out + n, 0.f);
      for (i64 r = 0; r < g.R; ++r)
        for (i64 s = 0; s < g.S; ++s) {
          const i64 ih = g.tab_h[gh * g.R + r], iw = g.tab_w[gw * g.S + s];
          if (ih < 0 || iw < 0) continue;
          const float* src = g.src + ((img * g.SH + ih) * g.SW + iw) * px;
          const float* w = g.wt + (r * g.S + s) * g.rs_stride + j0;
          for (i64 ch = 0; ch < g.SC; ++ch) {
            const float v = src[ch];
            const float* wr = w + ch * g.ch_stride;
            for (i64 j = 0; j < n; ++j) out[j] += v * wr[j];
          }
        }
      for (i64 j = 0; j < n; ++j) {
        float v = out[j] * (g.scale ? g.scale[j0 + j] : 1.f) + (g.bias ? g.bias[j0 + j] : 0.f);
        out[j] = g.act == Activation::Relu ? std::max(v, 0.f) : v;
      }
      post_rows(g, m, 1, 1, j0, j0 + n);
    }
  }
}

}  // namespace convkit::conv_cpu
