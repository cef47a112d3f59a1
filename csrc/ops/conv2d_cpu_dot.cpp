// Strategy "dot" of the CPU convolution (see conv2d_cpu.cpp).
#include "ops/conv2d_cpu_common.h"

namespace convkit::conv_cpu {

// One to three output columns (backward-data into 1-3 image channels) from a source with
// a few channels or more: each output is a dot product along the source's channels, so the
// vector lanes run over channels instead of waiting on columns that do not exist.
void run_dot(const GatherGemm& g, i64 M) {
  const i64 taps = g.R * g.S, kpad = round_up(g.SC, 8);
  const int nc = static_cast<int>(g.ncols), P = cpu::dot_rows(nc);
  std::vector<float> wpack(static_cast<size_t>(taps * nc * kpad), 0.f);  // [tap][column][channel]
  for (i64 t = 0; t < taps; ++t)
    for (i64 j = 0; j < nc; ++j)
      for (i64 ch = 0; ch < g.SC; ++ch)
        wpack[(t * nc + j) * kpad + ch] =
            g.wt[t * g.rs_stride + ch * g.ch_stride + j * g.col_stride] * (g.scale ? g.scale[j] : 1.f);
  const std::vector<float> zeros(static_cast<size_t>(g.SC), 0.f);
  const i64 blocks = (M + kMC - 1) / kMC;
#pragma omp parallel
  {
    std::vector<const float*> ptrs(static_cast<size_t>(taps * P));
#pragma omp for schedule(dynamic, 1)
    for (i64 blk = 0; blk < blocks; ++blk) {
      const i64 m0 = blk * kMC, mc = std::min(kMC, M - m0);
      GridCursor cur(g, m0);
      for (i64 p0 = m0; p0 < m0 + mc; p0 += P) {
        const int rows = static_cast<int>(std::min<i64>(P, m0 + mc - p0));
        const auto [r0, r1] = tile_pointers(g, cur, rows, P, zeros.data(), ptrs.data());
        cpu::dot_tile((r1 - r0) * g.S, g.SC, ptrs.data() + r0 * g.S * P, wpack.data() + r0 * g.S * nc * kpad, kpad,
                      g.out + p0 * g.ncols, g.ncols, rows, nc);
      }
      epilogue(g, m0, mc);
    }
  }
}

}  // namespace convkit::conv_cpu
