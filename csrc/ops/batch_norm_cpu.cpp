// Batch normalisation: each pass is one sweep over the (M, C) rows, split over threads by
// row ranges with private per-channel sums added in a fixed thread order (so results do not
// depend on timing). Rows are summed in float within blocks of kBlock rows and the block
// sums in double, which keeps the inner loops vectorised and the totals accurate.
#include "ops/batch_norm.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace convkit {
namespace {

constexpr i64 kBlock = 64;

// out[c] = sum over rows m of f(m, c), for the two per-channel sums a pass needs.
template <class F>
void channel_sums(i64 M, i64 C, F f, std::vector<double>& s0, std::vector<double>& s1) {
  const int threads = std::max(1, std::min<int>(omp_get_max_threads(), static_cast<int>((M + kBlock - 1) / kBlock)));
  std::vector<double> part(static_cast<size_t>(threads) * 2 * C, 0.0);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    double* p0 = part.data() + static_cast<size_t>(t) * 2 * C;
    double* p1 = p0 + C;
    std::vector<float> b0(static_cast<size_t>(C)), b1(static_cast<size_t>(C));
    const i64 lo = M * t / threads, hi = M * (t + 1) / threads;
    for (i64 m0 = lo; m0 < hi; m0 += kBlock) {
      std::fill(b0.begin(), b0.end(), 0.f);
      std::fill(b1.begin(), b1.end(), 0.f);
      for (i64 m = m0; m < std::min(hi, m0 + kBlock); ++m) f(m, b0.data(), b1.data());
      for (i64 c = 0; c < C; ++c) p0[c] += b0[c], p1[c] += b1[c];
    }
  }
  s0.assign(static_cast<size_t>(C), 0.0);
  s1.assign(static_cast<size_t>(C), 0.0);
  for (int t = 0; t < threads; ++t)
    for (i64 c = 0; c < C; ++c) s0[c] += part[(t * 2) * C + c], s1[c] += part[(t * 2 + 1) * C + c];
}

}  // namespace

void batch_norm_fwd_cpu(i64 M, i64 C, const float* x, const float* gamma, const float* beta, float eps, float* y,
                        float* xhat, float* mean, float* var, float* inv) {
  // Summed as deviations from the first row, so that the float block sums stay small where
  // the data sit far from zero.
  const float* shift = x;
  std::vector<double> sum, unused;
  channel_sums(M, C, [&](i64 m, float* s, float*) {
    const float* row = x + m * C;
    for (i64 c = 0; c < C; ++c) s[c] += row[c] - shift[c];
  }, sum, unused);
  // Deviations are taken from the mean in double: rounded to float, the mean of data far from
  // zero (100 +- 0.01, say) would be off by a sizeable part of the spread.
  std::vector<double> mu(static_cast<size_t>(C));
  for (i64 c = 0; c < C; ++c) {
    mu[c] = M ? shift[c] + sum[c] / M : 0.0;
    mean[c] = static_cast<float>(mu[c]);
  }
  // The variance about the mean, not E[x^2] - mean^2, which cancels for the same data.
  std::vector<double> sq;
  channel_sums(M, C, [&](i64 m, float* s, float*) {
    const float* row = x + m * C;
    for (i64 c = 0; c < C; ++c) {
      const float d = static_cast<float>(row[c] - mu[c]);
      s[c] += d * d;
    }
  }, sq, unused);
  for (i64 c = 0; c < C; ++c) {
    var[c] = M ? static_cast<float>(sq[c] / M) : 0.f;
    inv[c] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var[c]) + eps));
  }
#pragma omp parallel for schedule(static)
  for (i64 m = 0; m < M; ++m) {
    const float* row = x + m * C;
    float *h = xhat + m * C, *out = y + m * C;
    for (i64 c = 0; c < C; ++c) {
      const float v = static_cast<float>(row[c] - mu[c]) * inv[c];
      h[c] = v;
      out[c] = (gamma ? v * gamma[c] : v) + (beta ? beta[c] : 0.f);
    }
  }
}

void batch_norm_bwd_cpu(i64 M, i64 C, const float* dy, const float* xhat, const float* inv, const float* gamma,
                        float* dx, float* dgamma, float* dbeta) {
  std::vector<double> db, dg;
  channel_sums(M, C, [&](i64 m, float* s0, float* s1) {
    const float *g = dy + m * C, *h = xhat + m * C;
    for (i64 c = 0; c < C; ++c) s0[c] += g[c], s1[c] += g[c] * h[c];
  }, db, dg);
  for (i64 c = 0; c < C; ++c) dbeta[c] = static_cast<float>(db[c]), dgamma[c] = static_cast<float>(dg[c]);
  if (!dx || M == 0) return;
  std::vector<float> k(static_cast<size_t>(C)), a(static_cast<size_t>(C)), b(static_cast<size_t>(C));
  for (i64 c = 0; c < C; ++c) {
    k[c] = gamma ? gamma[c] * inv[c] : inv[c];
    a[c] = dbeta[c] / static_cast<float>(M);
    b[c] = dgamma[c] / static_cast<float>(M);
  }
#pragma omp parallel for schedule(static)
  for (i64 m = 0; m < M; ++m) {
    const float *g = dy + m * C, *h = xhat + m * C;
    float* out = dx + m * C;
    for (i64 c = 0; c < C; ++c) out[c] = k[c] * (g[c] - a[c] - h[c] * b[c]);
  }
}

void batch_norm_infer_cpu(i64 M, i64 C, const float* x, const float* mean, const float* var, const float* gamma,
                          const float* beta, float eps, float* y, const PointwiseAct& act) {
  std::vector<float> s(static_cast<size_t>(C)), shift(static_cast<size_t>(C));
  for (i64 c = 0; c < C; ++c) {
    const float inv = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var[c]) + eps));
    s[c] = gamma ? gamma[c] * inv : inv;
    shift[c] = (beta ? beta[c] : 0.f) - mean[c] * s[c];
  }
  const i64 rows = std::max<i64>(1, 4096 / std::max<i64>(C, 1));  // blocks of about 16 KB, for act while in L1
#pragma omp parallel for schedule(static)
  for (i64 m0 = 0; m0 < M; m0 += rows) {
    const i64 m1 = std::min(M, m0 + rows);
    for (i64 m = m0; m < m1; ++m) {
      const float* row = x + m * C;
      float* out = y + m * C;
      for (i64 c = 0; c < C; ++c) out[c] = row[c] * s[c] + shift[c];
    }
    if (act.on) pointwise_serial_cpu(act, (m1 - m0) * C, y + m0 * C, y + m0 * C);
  }
}

}  // namespace convkit
