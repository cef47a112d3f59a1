// Strategy "filter_gemm" of the CPU convolution's backward-filter (see conv2d_cpu.cpp).
#include "ops/conv2d_cpu_common.h"

namespace convkit::conv_cpu {

// The general backward-filter: im2col(x)^T panels times dy panels on the micro-kernel, the
// threads' private sums added in a fixed order.
void bwd_filter_gemm(const Conv2dDesc& d, const float* x, const float* dy, float* dw, float* dbias) {
  const i64 M = d.N * d.OH * d.OW, Q = d.R * d.S * d.C, K = d.K, npad = round_up(K, NR);
  const i64 tile_cols = cpu::max_tile_cols();
  const auto th = forward_taps(d.OH, d.R, d.sh, d.dh, d.pt, d.H);
  // With stride 1 along rows, a pixel's S taps along a kernel row read one run of S * C floats
  // once x has its horizontal padding as zero columns, so they merge into one tap of S * C
  // channels: a pointer per pixel and kernel row instead of per tap, and whole groups of
  // channels for layers with few. The source is then (N, H, SW) pixels of C floats, read
  // through SS taps per kernel row of SC channels each.
  // (Merged channels are read in place below, which takes at least MR of them.)
  const bool merge = d.sw == 1 && d.dw == 1 && d.S > 1 && d.S * d.C <= kMergeMaxRunFilter && d.S * d.C >= MR;
  const i64 SW = merge ? d.OW + d.S - 1 : d.W, SS = merge ? 1 : d.S, SC = merge ? d.S * d.C : d.C;
  const std::vector<float> xpad = merge ? pad_columns(x, d.N * d.H, d.W, d.C, d.pl, SW) : std::vector<float>();
  const float* src = merge ? xpad.data() : x;
  const auto tw = merge ? forward_taps(d.OW, 1, 1, 1, 0, SW) : forward_taps(d.OW, d.S, d.sw, d.dw, d.pl, d.W);
  const int group = cpu::gather_rows(SC);
  // The (r, s, c) of every reduction row, so packing does no division.
  std::vector<i64> q_r(Q), q_s(Q), q_c(Q);
  for (i64 q = 0; q < Q; ++q) {
    q_c[q] = q % d.C;
    q_s[q] = (q / d.C) % d.S;
    q_r[q] = q / (d.C * d.S);
  }
  const std::vector<float> zeros(static_cast<size_t>(SC), 0.f);
  Partials partial(Q * K, K, std::max(1, std::min<int>(omp_get_max_threads(), static_cast<int>((M + kKC - 1) / kKC))));
  const int nthreads = partial.threads;
#pragma omp parallel num_threads(nthreads)
  {
    const int t = omp_get_thread_num();
    float *acc = partial.weights(t), *bacc = partial.bias(t);
    const i64 lo = M * t / nthreads, hi = M * (t + 1) / nthreads;
    std::vector<float> bpack(static_cast<size_t>(kKC * npad)), apack(static_cast<size_t>(kMC * kKC));
    std::vector<i64> img(kKC), ph(kKC), pw(kKC);
    std::vector<const float*> mptr(kKC);
    std::vector<std::pair<i64, i64>> runs;  // (first pixel, length) within the block
    for (i64 m0 = lo; m0 < hi; m0 += kKC) {
      const i64 kc = std::min(kKC, hi - m0);
      // B = dy rows [m0, m0 + kc) as NR-wide panels; the bias gradient rides along.
      for (i64 jp = 0; jp < npad; jp += NR) {
        float* dst = bpack.data() + jp * kc;
        const i64 live = std::min<i64>(NR, K - jp);
        for (i64 m = m0; m < m0 + kc; ++m, dst += NR) {
          std::memcpy(dst, dy + m * K + jp, static_cast<size_t>(live) * sizeof(float));
          std::fill(dst + live, dst + NR, 0.f);
        }
      }
      cpu::column_sums(dy + m0 * K, kc, K, bacc);
      // Each pixel's image offset and tap-table rows, stepping (n, oh, ow) without a division per pixel.
      for (i64 u = 0, ow = m0 % d.OW, oh = (m0 / d.OW) % d.OH, n = m0 / (d.OW * d.OH); u < kc; ++u) {
        img[u] = n * d.H * SW * d.C;
        ph[u] = oh * d.R;
        pw[u] = ow * SS;
        if (++ow < d.OW) continue;
        ow = 0;
        if (++oh == d.OH) oh = 0, ++n;
      }
      if (SC >= MR) {
        // A group of consecutive channels of one tap is contiguous in x: read it in place.
        for (i64 rs = 0; rs < d.R * SS; ++rs) {
          const i64 r = rs / SS, s = rs % SS;
          for (i64 u = 0; u < kc; ++u) {
            const i64 ih = th[ph[u] + r], iw = tw[pw[u] + s];
            mptr[u] = (ih >= 0 && iw >= 0) ? src + img[u] + (ih * SW + iw) * d.C : zeros.data();
          }
          for (i64 c0 = 0; c0 < SC; c0 += group) {
            const i64 base = std::min(c0, SC - group);  // the last group overlaps the one before
            for (i64 jp = 0; jp < npad; jp += tile_cols)
              cpu::gather_tile(kc, mptr.data(), base, bpack.data() + jp * kc, kc * NR, acc + (rs * SC + base) * K + jp,
                               K, group, static_cast<int>(c0 - base), static_cast<int>(std::min<i64>(tile_cols, K - jp)));
          }
        }
        continue;
      }
      // The block's pixels as runs along one output row: a tap then reads one source row,
      // and with stride 1 a contiguous stretch of it.
      runs.clear();
      for (i64 u = 0; u < kc;) {
        const i64 len = std::min(kc - u, d.OW - pw[u] / d.S);
        runs.push_back({u, len});
        u += len;
      }
      for (i64 q0 = 0; q0 < Q; q0 += kMC) {
        const i64 mq = std::min(kMC, Q - q0);
        // A = im2col(x)^T rows [q0, q0 + mq) over pixels [m0, m0 + kc).
        float* dst = apack.data();
        for (i64 p = 0; p < mq; p += MR, dst += MR * kc)
          for (i64 i = 0; i < MR; ++i) {
            const i64 q = q0 + p + i;
            if (p + i >= mq) {
              for (i64 u = 0; u < kc; ++u) dst[u * MR + i] = 0.f;
              continue;
            }
            const i64 r = q_r[q], s = q_s[q], c = q_c[q];
            for (const auto& [u0, len] : runs) {
              const i64 ih = th[ph[u0] + r];
              const i64* t = tw.data() + pw[u0] + s;
              const i64 iw0 = t[0];
              if (ih < 0) {
                for (i64 u = u0; u < u0 + len; ++u) dst[u * MR + i] = 0.f;
              } else if (iw0 >= 0 && t[(len - 1) * d.S] == iw0 + len - 1) {
                const float* src = x + img[u0] + (ih * d.W + iw0) * d.C + c;
                for (i64 u = 0; u < len; ++u) dst[(u0 + u) * MR + i] = src[u * d.C];
              } else {
                const float* src = x + img[u0] + ih * d.W * d.C + c;
                for (i64 u = 0; u < len; ++u) {
                  const i64 iw = t[u * d.S];
                  dst[(u0 + u) * MR + i] = iw >= 0 ? src[iw * d.C] : 0.f;
                }
              }
            }
          }
        for (i64 jp = 0; jp < npad; jp += tile_cols) {
          const int cols = static_cast<int>(std::min<i64>(tile_cols, K - jp));
          for (i64 ip = 0; ip < mq; ip += MR)
            cpu::micro_tile(kc, apack.data() + ip * kc, bpack.data() + jp * kc, kc * NR, acc + (q0 + ip) * K + jp, K,
                            static_cast<int>(std::min<i64>(MR, mq - ip)), cols, true);
        }
      }
    }
  }
  partial.reduce(dw, dbias);
}

}  // namespace convkit::conv_cpu
