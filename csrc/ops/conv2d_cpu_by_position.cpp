// Strategy "by_position" of the CPU convolution (see conv2d_cpu.cpp).
#include "ops/conv2d_cpu_common.h"

namespace convkit::conv_cpu {

// Small grids (the 2x2 to 8x8 maps deep in a network): a large share of the taps read
// padding, and on a map this small every tile would hold some pixel that needs each
// tap. So tiles run across images instead: the images of a tile at one grid position share the
// same valid taps, and only those are computed (B addressed per tap); the tile's rows
// are GH * GW rows apart in the output.
void run_by_position(const GatherGemm& g, i64 npad) {
  const i64 taps = g.R * g.S, Q = taps * g.SC, cells = g.GH * g.GW, img = g.SH * g.SW * pixel_stride(g);
  const float* bpack = pack_weights(g, Q, NR);
  const i64 groups = (g.N + kMC - 1) / kMC, tasks = cells * groups, tile_cols = cpu::max_tile_cols();
  const int mr = cpu::direct_rows();
  const std::vector<float> bias = padded_bias(g);
#pragma omp parallel
  {
    std::vector<const float*> ptrs(static_cast<size_t>(taps * mr)), btaps(static_cast<size_t>(taps));
    std::vector<i64> src(static_cast<size_t>(taps)), live(static_cast<size_t>(taps));
#pragma omp for schedule(dynamic, 1)
    for (i64 task = 0; task < tasks; ++task) {
      const i64 cell = task % cells, n0 = task / cells * kMC, nc = std::min(kMC, g.N - n0);
      const i64 gh = cell / g.GW, gw = cell % g.GW;
      i64 nt = 0;
      for (i64 r = 0; r < g.R; ++r)
        for (i64 s = 0; s < g.S; ++s) {
          const i64 ih = g.tab_h[gh * g.R + r], iw = g.tab_w[gw * g.S + s];
          if (ih < 0 || iw < 0) continue;
          src[nt] = (ih * g.SW + iw) * pixel_stride(g);
          live[nt++] = r * g.S + s;
        }
      for (i64 i0 = 0; i0 < nc; i0 += mr) {
        const int rows = static_cast<int>(std::min<i64>(mr, nc - i0));
        for (i64 t = 0; t < nt; ++t)
          for (int i = 0; i < mr; ++i) ptrs[t * mr + i] = g.src + (n0 + i0 + std::min(i, rows - 1)) * img + src[t];
        const i64 m = (n0 + i0) * cells + cell;
        for (i64 jp = 0; jp < npad; jp += tile_cols) {
          for (i64 t = 0; t < nt; ++t) btaps[t] = bpack + jp * Q + live[t] * g.SC * NR;
          cpu::direct_tile(nt, g.SC, ptrs.data(), nullptr, Q * NR, g.out + m * g.ncols + jp, cells * g.ncols, rows,
                           static_cast<int>(std::min<i64>(tile_cols, g.ncols - jp)), btaps.data(),
                           tile_epilogue(g, bias, jp));
        }
        post_rows(g, m, rows, cells, 0, g.ncols);
      }
    }
  }
}

}  // namespace convkit::conv_cpu
