// CPU depthwise convolution. NHWC puts a pixel's channels side by side, and every pass reduces to
// two vector primitives over them, the sums held in registers (AVX-512, AVX2 or portable code,
// chosen at run time as the GEMM micro-kernels are):
//   taps_fma:  out[j] = act(init[j] + sum_t a_t[j] * b_t[j]), for each output of a run.
//     Forward: a_t the input pixels a window reads, b_t the kernel's taps, one call for each run of
//     output columns that read the same taps (all but the border columns). Backward-data gathers
//     the same way from dy (no scatter, so images and rows run on threads without races), in runs
//     of input columns sw apart.
//   pairs_fma: out[j] += sum_i a_i[j] * b_i[j] over strided pixels. Backward-filter: for each tap,
//     the input pixels it reads against the dy pixels of one output row, into each thread's own copy
//     of dkernel; the copies are summed in thread order.
// With a depth multiplier M > 1 an input row is first expanded to C * M channels (x[c] repeated M
// times), so the same primitives apply; backward-data then sums each channel's M products.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/gemm.h"
#include "ops/depthwise2d.h"

namespace convkit {
namespace {

// A run of outputs that read the same taps at a fixed step: output p reads a_t + p * a_step and writes
// out + p * out_step (init is the same for all). Forward calls cover whole runs of an output row.
// With cols > 0 the taps may come in rows of cols neighbours (a[t + 1] = a[t] + a_step within a row),
// which the kernels check before they rely on it.
struct Run {
  i64 pixels = 1, a_step = 0, out_step = 0;
  int cols = 0;
};

using TapsFma = void (*)(int taps, const float* const* a, const float* const* b, i64 len, const float* init,
                         float* out, Activation act, Run run);

void taps_fma_generic(int taps, const float* const* a, const float* const* b, i64 len, const float* init,
                      float* out, Activation act, Run run) {
  for (i64 p = 0; p < run.pixels; ++p, out += run.out_step)
    for (i64 j = 0; j < len; ++j) {
      float acc = init ? init[j] : 0.f;
      for (int t = 0; t < taps; ++t) acc += a[t][p * run.a_step + j] * b[t][j];
      if (act != Activation::None) acc = std::max(acc, 0.f);
      if (act == Activation::Relu6) acc = std::min(acc, 6.f);
      out[j] = acc;
    }
}

// Backward-filter's sum over the output pixels of a row: out[j] += sum over i < count of
// a[i * a_step + j] * b[i * b_step + j], the sums held in registers across the pixels.
using PairsFma = void (*)(i64 count, const float* a, i64 a_step, const float* b, i64 b_step, i64 len, float* out);

void pairs_fma_generic(i64 count, const float* a, i64 a_step, const float* b, i64 b_step, i64 len, float* out) {
  for (i64 i = 0; i < count; ++i)
    for (i64 j = 0; j < len; ++j) out[j] += a[i * a_step + j] * b[i * b_step + j];
}

// The rows' length S when the taps come in rows of S neighbours one a_step apart, so that outputs one
// a_step apart share inputs (see slide in depthwise2d_simd.inc); 0 otherwise.
int sliding_row(int taps, const float* const* a, Run run) {
  const int S = run.cols;
  if ((S != 3 && S != 5) || taps % S != 0) return 0;
  for (int t = 0; t < taps; ++t)
    if (a[t] != a[t - t % S] + (t % S) * run.a_step) return 0;
  return S;
}

// The vector primitives of each instruction set; the kernels over them come from depthwise2d_simd.inc.
// A tail of channels is masked, so it costs no scalar loop. max/min take the value second: they return
// their second operand when either is NaN, so NaN passes ReLU as in NumPy.
#pragma GCC push_options
#pragma GCC target("avx512f")
namespace avx512 {
using Vec = __m512;
using Mask = __mmask16;
constexpr int kLanes = 16;
inline Mask mask_of(i64 n) { return static_cast<Mask>((1u << std::max<i64>(0, std::min<i64>(kLanes, n))) - 1); }
inline Vec load(Mask m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
inline Vec zero() { return _mm512_setzero_ps(); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline void store(float* p, Mask m, Vec v, Activation act) {
  if (act != Activation::None) v = _mm512_max_ps(_mm512_setzero_ps(), v);
  if (act == Activation::Relu6) v = _mm512_min_ps(_mm512_set1_ps(6.f), v);
  _mm512_mask_storeu_ps(p, m, v);
}
#include "ops/depthwise2d_simd.inc"
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
using Vec = __m256;
using Mask = __m256i;
constexpr int kLanes = 8;
inline Mask mask_of(i64 n) {
  const int lanes = static_cast<int>(std::max<i64>(0, std::min<i64>(kLanes, n)));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline Vec load(Mask m, const float* p) { return _mm256_maskload_ps(p, m); }
inline Vec zero() { return _mm256_setzero_ps(); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline void store(float* p, Mask m, Vec v, Activation act) {
  if (act != Activation::None) v = _mm256_max_ps(_mm256_setzero_ps(), v);
  if (act == Activation::Relu6) v = _mm256_min_ps(_mm256_set1_ps(6.f), v);
  _mm256_maskstore_ps(p, m, v);
}
#include "ops/depthwise2d_simd.inc"
}  // namespace avx2
#pragma GCC pop_options

TapsFma choose_taps_fma() {
  switch (cpu::isa()) {
    case cpu::Isa::Avx512: return avx512::taps_fma;
    case cpu::Isa::Avx2: return avx2::taps_fma;
    default: return taps_fma_generic;
  }
}

const TapsFma taps_fma = choose_taps_fma();

PairsFma choose_pairs_fma() {
  switch (cpu::isa()) {
    case cpu::Isa::Avx512: return avx512::pairs_fma;
    case cpu::Isa::Avx2: return avx2::pairs_fma;
    default: return pairs_fma_generic;
  }
}

const PairsFma pairs_fma = choose_pairs_fma();

// Row `h` of image `img` with each channel repeated M times (M > 1), or the row itself (M = 1).
const float* row_of(const Depthwise2dDesc& d, const float* img, i64 h, float* expanded) {
  const float* row = img + h * d.W * d.C;
  if (d.M == 1) return row;
  for (i64 p = 0; p < d.W * d.C; ++p) std::fill(expanded + p * d.M, expanded + (p + 1) * d.M, row[p]);
  return expanded;
}

bool inside(i64 v, i64 size) { return v >= 0 && v < size; }

// The kernel columns [lo, hi) that output column ow reads inside the input (contiguous: the input
// column grows with s).
std::pair<i64, i64> valid_columns(const Depthwise2dDesc& d, i64 ow) {
  i64 lo = 0, hi = d.S;
  while (lo < hi && !inside(ow * d.sw - d.pl + lo * d.dw, d.W)) ++lo;
  while (hi > lo && !inside(ow * d.sw - d.pl + (hi - 1) * d.dw, d.W)) --hi;
  return {lo, hi};
}

// The kernel columns [lo, hi) whose tap lands input column v on an output column (ignoring the stride's
// residue): 0 <= v + pl - s * dw < OW * sw.
std::pair<i64, i64> reaching_columns(const Depthwise2dDesc& d, i64 v) {
  i64 lo = 0, hi = d.S;
  const auto reaches = [&](i64 s) { return inside(v + d.pl - s * d.dw, d.OW * d.sw); };
  while (lo < hi && !reaches(lo)) ++lo;
  while (hi > lo && !reaches(hi - 1)) --hi;
  return {lo, hi};
}

}  // namespace

void depthwise2d_fwd_cpu(const Depthwise2dDesc& d, const float* x, const float* w, const float* bias, float* y,
                         Activation act, const PointwiseAct& post) {
  const i64 K = d.K, taps_max = d.R * d.S;
#pragma omp parallel
  {
    std::vector<float> expanded(d.M > 1 ? d.R * d.W * K : 0);
    std::vector<const float*> a(taps_max), b(taps_max), rows(d.R);
#pragma omp for collapse(2) schedule(static)
    for (i64 n = 0; n < d.N; ++n)
      for (i64 oh = 0; oh < d.OH; ++oh) {
        const float* img = x + n * d.H * d.W * d.C;
        for (i64 r = 0; r < d.R; ++r) {
          const i64 h = oh * d.sh - d.pt + r * d.dh;
          rows[r] = inside(h, d.H) ? row_of(d, img, h, expanded.data() + r * d.W * K) : nullptr;
        }
        float* yrow = y + (n * d.OH + oh) * d.OW * K;
        for (i64 ow = 0; ow < d.OW;) {
          // Columns ow .. end-1 read the same taps, each sw pixels right of the one before.
          const auto [s_lo, s_hi] = valid_columns(d, ow);
          i64 end = ow + 1;
          while (end < d.OW && valid_columns(d, end) == std::make_pair(s_lo, s_hi)) ++end;
          int t = 0;
          for (i64 r = 0; r < d.R; ++r) {
            if (!rows[r]) continue;
            for (i64 s = s_lo; s < s_hi; ++s) {
              a[t] = rows[r] + (ow * d.sw - d.pl + s * d.dw) * K, b[t] = w + (r * d.S + s) * K;
              ++t;
            }
          }
          const Run run{end - ow, d.sw * K, K, static_cast<int>(s_hi - s_lo)};
          taps_fma(t, a.data(), b.data(), K, bias, yrow + ow * K, act, run);
          if (post.on) pointwise_serial_cpu(post, (end - ow) * K, yrow + ow * K, yrow + ow * K);
          ow = end;
        }
      }
  }
}

void depthwise2d_bwd_data_cpu(const Depthwise2dDesc& d, const float* dy, const float* w, float* dx) {
  const i64 K = d.K, taps_max = d.R * d.S;
#pragma omp parallel
  {
    std::vector<float> sums(d.M > 1 ? d.W * K : 0);
    std::vector<const float*> a(taps_max), b(taps_max);
    std::vector<i64> ohs(d.R);
#pragma omp for collapse(2) schedule(static)
    for (i64 n = 0; n < d.N; ++n)
      for (i64 h = 0; h < d.H; ++h) {
        // The output row that reads input row h at tap r, or -1.
        for (i64 r = 0; r < d.R; ++r) {
          const i64 t = h + d.pt - r * d.dh;
          ohs[r] = (t >= 0 && t % d.sh == 0 && t / d.sh < d.OH) ? t / d.sh : -1;
        }
        float* dxrow = dx + (n * d.H + h) * d.W * d.C;
        // Input columns v, v + sw, ... read outputs one apart through the same taps (the kernel columns
        // whose offset has v's residue modulo sw), so each class of columns goes in runs.
        for (i64 v0 = 0; v0 < std::min(d.sw, d.W); ++v0)
          for (i64 v = v0; v < d.W;) {
            const auto range = reaching_columns(d, v);
            i64 end = v + d.sw;
            while (end < d.W && reaching_columns(d, end) == range) end += d.sw;
            int t = 0;
            for (i64 r = 0; r < d.R; ++r) {
              if (ohs[r] < 0) continue;
              for (i64 i = range.first; i < range.second; ++i) {
                const i64 s = d.sw == 1 ? range.first + range.second - 1 - i : i;  // u ascending, for slide
                const i64 u = v + d.pl - s * d.dw;
                if (u % d.sw != 0) continue;
                a[t] = dy + ((n * d.OH + ohs[r]) * d.OW + u / d.sw) * K, b[t] = w + (r * d.S + s) * K;
                ++t;
              }
            }
            const i64 pixels = (end - v + d.sw - 1) / d.sw;
            const int cols = d.sw == 1 ? static_cast<int>(range.second - range.first) : 0;
            if (d.M == 1) {
              taps_fma(t, a.data(), b.data(), K, nullptr, dxrow + v * d.C, Activation::None,
                       Run{pixels, K, d.sw * d.C, cols});
            } else {  // the M products of each channel, then their sums
              taps_fma(t, a.data(), b.data(), K, nullptr, sums.data(), Activation::None, Run{pixels, K, K, cols});
              for (i64 p = 0; p < pixels; ++p)
                for (i64 c = 0; c < d.C; ++c) {
                  float acc = 0.f;
                  for (i64 m = 0; m < d.M; ++m) acc += sums[p * K + c * d.M + m];
                  dxrow[(v + p * d.sw) * d.C + c] = acc;
                }
            }
            v = end;
          }
      }
  }
}

void depthwise2d_bwd_filter_cpu(const Depthwise2dDesc& d, const float* x, const float* dy, float* dw,
                                float* dbias) {
  const i64 K = d.K, size = d.R * d.S * K;
  std::vector<std::vector<float>> partial(static_cast<size_t>(omp_get_max_threads()));
#pragma omp parallel
  {
    std::vector<float>& acc = partial[static_cast<size_t>(omp_get_thread_num())];
    acc.assign(static_cast<size_t>(size), 0.f);
    std::vector<float> expanded(d.M > 1 ? d.W * K : 0);
#pragma omp for collapse(2) schedule(static)
    for (i64 n = 0; n < d.N; ++n)
      for (i64 oh = 0; oh < d.OH; ++oh) {
        const float* dyrow = dy + (n * d.OH + oh) * d.OW * K;
        for (i64 r = 0; r < d.R; ++r) {
          const i64 h = oh * d.sh - d.pt + r * d.dh;
          if (!inside(h, d.H)) continue;
          const float* row = row_of(d, x + n * d.H * d.W * d.C, h, expanded.data());
          for (i64 s = 0; s < d.S; ++s) {
            // Output columns [lo, hi) read input column ow * sw - shift, inside [0, W).
            const i64 shift = d.pl - s * d.dw;
            const i64 lo = shift <= 0 ? 0 : (shift + d.sw - 1) / d.sw;
            const i64 hi = d.W - 1 + shift < 0 ? 0 : std::min(d.OW, (d.W - 1 + shift) / d.sw + 1);
            if (lo >= hi) continue;
            pairs_fma(hi - lo, row + (lo * d.sw - shift) * K, d.sw * K, dyrow + lo * K, K, K,
                      acc.data() + (r * d.S + s) * K);
          }
        }
      }
  }
  // Summed in thread order, so a given thread count always gives the same result.
  std::fill(dw, dw + size, 0.f);
  for (const auto& p : partial)
    for (i64 i = 0; i < static_cast<i64>(p.size()); ++i) dw[i] += p[i];
  if (!dbias) return;
  std::fill(dbias, dbias + K, 0.f);
  cpu::column_sums(dy, d.N * d.OH * d.OW, K, dbias);
}

}  // namespace convkit
