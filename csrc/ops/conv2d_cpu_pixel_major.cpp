// Strategy "pixel_major" of the CPU convolution (see conv2d_cpu.cpp).
#include "ops/conv2d_cpu_common.h"

namespace convkit::conv_cpu {

// Few source channels and few columns (a first layer's forward from 1-3 channel images
// to a handful of filters): compute the transposed product
// out^T = B^T A^T, so that NR consecutive pixels fill the vector lanes rather than a
// handful of columns. B^T (the weights) is packed once as MR-row panels; for each
// block of NR pixels the A^T panel is gathered once and reused by every panel of
// columns. Neighbouring pixels of a stride-1 row read neighbouring source pixels, so
// interior gathers are runs of contiguous copies.
void run_pixel_major(const GatherGemm& g) {
  const i64 Q = g.R * g.S * g.SC;
  const float* wpack = pack_weights(g, Q, MR);
  // Blocks of NR pixels never straddle two grid rows, so each tap of a block reads
  // one source row (lanes past the row's end compute values that are not stored).
  const i64 per_row = (g.GW + NR - 1) / NR, blocks = g.N * g.GH * per_row;
#pragma omp parallel
  {
    std::vector<float> bpack(static_cast<size_t>(Q * NR));
    alignas(32) float tile[MR * NR];
#pragma omp for schedule(dynamic, 8)
    for (i64 blk = 0; blk < blocks; ++blk) {
      const i64 row = blk / per_row, gw0 = (blk % per_row) * NR, gh = row % g.GH, n = row / g.GH;
      const i64 cols = std::min<i64>(NR, g.GW - gw0), m0 = row * g.GW + gw0;
      const float* img = g.src + n * g.SH * g.SW * g.SC;
      float* b = bpack.data();
      for (i64 r = 0; r < g.R; ++r) {
        const i64 ih = g.tab_h[gh * g.R + r];
        for (i64 s = 0; s < g.S; ++s, b += g.SC * NR) {
          if (ih < 0) {
            std::fill(b, b + g.SC * NR, 0.f);
            continue;
          }
          const float* src_row = img + ih * g.SW * g.SC;
          const i64* tw = g.tab_w + gw0 * g.S + s;
          const i64 iw0 = tw[0];
          if (iw0 >= 0 && tw[(cols - 1) * g.S] == iw0 + cols - 1) {  // a contiguous run: copy it
            const float* src = src_row + iw0 * g.SC;
            if (g.SC == 1 && cols == NR)
              std::memcpy(b, src, NR * sizeof(float));  // a constant size: a vector copy, not a call
            else if (g.SC == 1)
              std::memcpy(b, src, static_cast<size_t>(cols) * sizeof(float));
            else
              for (i64 j = 0; j < cols; ++j)
                for (i64 ch = 0; ch < g.SC; ++ch) b[ch * NR + j] = src[j * g.SC + ch];
            continue;
          }
          for (i64 j = 0; j < cols; ++j) {
            const i64 iw = tw[j * g.S];
            for (i64 ch = 0; ch < g.SC; ++ch) b[ch * NR + j] = iw >= 0 ? src_row[iw * g.SC + ch] : 0.f;
          }
        }
      }
      for (i64 k0 = 0; k0 < g.ncols; k0 += MR) {
        cpu::micro_tile(Q, wpack + k0 * Q, bpack.data(), 0, tile, NR, MR, NR, false);
        const i64 rows = std::min<i64>(MR, g.ncols - k0);
        for (i64 j = 0; j < cols; ++j) {
          float* out = g.out + (m0 + j) * g.ncols + k0;
          for (i64 i = 0; i < rows; ++i) {
            const float v = tile[i * NR + j] + (g.bias ? g.bias[k0 + i] : 0.f);
            out[i] = g.act == Activation::Relu ? std::max(v, 0.f) : v;
          }
        }
      }
      post_rows(g, m0, cols, 1, 0, g.ncols);
    }
  }
}

}  // namespace convkit::conv_cpu
