// Strategy "direct" of the CPU convolution (see conv2d_cpu.cpp).
#include "ops/conv2d_cpu_common.h"

namespace convkit::conv_cpu {

// The general case: the micro-kernel reads each row's channels in
// place through pointers (padding and rows past the end point at zeros), so
// nothing is packed but the weights, and the whole reduction stays in registers.
void run_direct(const GatherGemm& g, i64 M, i64 npad) {
  const i64 taps = g.R * g.S, Q = taps * g.SC;
  const float* bpack = pack_weights(g, Q, NR);
  const std::vector<float> zeros(static_cast<size_t>(g.SC), 0.f);
  const i64 blocks = (M + kMC - 1) / kMC, tile_cols = cpu::max_tile_cols();
  // With fewer blocks of rows than a few per thread (small maps at batch 1: a 7x7 map is one
  // block), each block's columns are split into tasks too, so that no thread waits.
  const i64 col_tasks = blocks < 4 * omp_get_max_threads() ? (npad + tile_cols - 1) / tile_cols : 1;
  const i64 cols_per_task = (npad + tile_cols * col_tasks - 1) / (tile_cols * col_tasks) * tile_cols;
  const int mr = cpu::direct_rows();
  const std::vector<float> bias = padded_bias(g);
  // A tile's rows are read side by side; when they lie a multiple of 2 KB apart (a 1x1 convolution
  // from 512, 1024 or 2048 channels) they all fall in the same few sets of L1 and evict each other.
  // The block's rows are then copied one cache line further apart each (unless the block's columns
  // are split over tasks: every task would copy them again).
  const i64 stride = pixel_stride(g), restrided = stride + 16;
  const bool restride = taps == 1 && stride % 512 == 0 && g.SC == stride && col_tasks == 1;
#pragma omp parallel
  {
    std::vector<const float*> ptrs(static_cast<size_t>(kMC * taps));
    std::vector<std::pair<i64, i64>> live(static_cast<size_t>(kMC / mr));
    std::vector<float> rows(static_cast<size_t>(restride ? kMC * restrided : 0));
#pragma omp for schedule(dynamic, 1)
    for (i64 task = 0; task < blocks * col_tasks; ++task) {
      const i64 blk = task / col_tasks, m0 = blk * kMC, mc = std::min(kMC, M - m0);
      const i64 j0 = task % col_tasks * cols_per_task, j1 = std::min(npad, j0 + cols_per_task);
      GridCursor cur(g, m0);
      for (i64 ip = 0; ip < mc; ip += mr)
        live[ip / mr] = tile_pointers(g, cur, static_cast<int>(std::min<i64>(mr, mc - ip)), mr, zeros.data(),
                                      ptrs.data() + ip * taps);
      if (restride)
        for (i64 i = 0; i < mc; ++i) {
          float* dst = rows.data() + i * restrided;
          std::copy_n(ptrs[i], g.SC, dst);
          ptrs[i] = dst;
        }
      for (i64 jp = j0; jp < j1; jp += tile_cols) {
        const int cols = static_cast<int>(std::min<i64>(tile_cols, g.ncols - jp));
        for (i64 ip = 0; ip < mc; ip += mr) {
          const auto [r0, r1] = live[ip / mr];  // kernel rows that read only padding are skipped
          cpu::direct_tile((r1 - r0) * g.S, g.SC, ptrs.data() + ip * taps + r0 * g.S * mr,
                           bpack + jp * Q + r0 * g.S * g.SC * NR, Q * NR, g.out + (m0 + ip) * g.ncols + jp, g.ncols,
                           static_cast<int>(std::min<i64>(mr, mc - ip)), cols, nullptr, tile_epilogue(g, bias, jp));
        }
      }
      post_rows(g, m0, mc, 1, j0, std::min(j1, g.ncols));
    }
  }
}

}  // namespace convkit::conv_cpu
