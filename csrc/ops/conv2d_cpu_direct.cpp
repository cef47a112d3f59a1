// Strategy "direct" of the CPU convolution (see conv2d_cpu.cpp).
#include "ops/conv2d_cpu_common.h"

namespace convkit::conv_cpu {

// The general case: the micro-kernel reads each row's channels in
// place through pointers (padding and rows past the end point at zeros), so
// nothing is packed but the weights, and the whole reduction stays in registers.
void run_direct(const GatherGemm& g, i64 M, i64 npad) {
  const i64 taps = g.R * g.S, Q = taps * g.SC;
  const std::vector<float> bpack = pack_weights(g, Q, NR);
  const std::vector<float> zeros(static_cast<size_t>(g.SC), 0.f);
  const i64 blocks = (M + kMC - 1) / kMC, tile_cols = cpu::max_tile_cols();
  const int mr = cpu::direct_rows();
  const std::vector<float> bias = padded_bias(g);
#pragma omp parallel
  {
    std::vector<const float*> ptrs(static_cast<size_t>(kMC * taps));
    std::vector<std::pair<i64, i64>> live(static_cast<size_t>(kMC / mr));
#pragma omp for schedule(dynamic, 1)
    for (i64 blk = 0; blk < blocks; ++blk) {
      const i64 m0 = blk * kMC, mc = std::min(kMC, M - m0);
      GridCursor cur(g, m0);
      for (i64 ip = 0; ip < mc; ip += mr)
        live[ip / mr] = tile_pointers(g, cur, static_cast<int>(std::min<i64>(mr, mc - ip)), mr, zeros.data(),
                                      ptrs.data() + ip * taps);
      for (i64 jp = 0; jp < npad; jp += tile_cols) {
        const int cols = static_cast<int>(std::min<i64>(tile_cols, g.ncols - jp));
        for (i64 ip = 0; ip < mc; ip += mr) {
          const auto [r0, r1] = live[ip / mr];  // kernel rows that read only padding are skipped
          cpu::direct_tile((r1 - r0) * g.S, g.SC, ptrs.data() + ip * taps + r0 * g.S * mr,
                           bpack.data() + jp * Q + r0 * g.S * g.SC * NR, Q * NR, g.out + (m0 + ip) * g.ncols + jp, g.ncols,
                           static_cast<int>(std::min<i64>(mr, mc - ip)), cols, nullptr, tile_epilogue(g, bias, jp));
        }
      }
    }
  }
}

}  // namespace convkit::conv_cpu
