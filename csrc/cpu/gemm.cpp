#include "cpu/gemm.h"

#include <immintrin.h>

#include <omp.h>

#include <algorithm>
#include <array>
#include <ctime>
#include <cstdlib>
#include <string>
#include <utility>

namespace convkit::cpu {
namespace {

// Portable kernel: a fixed-size accumulator the compiler keeps in vector registers.
void kernel_generic(i64 kc, const float* a, const float* b, float* c, i64 ldc, bool accumulate) {
  float acc[MR][NR] = {};
  for (i64 k = 0; k < kc; ++k, a += MR, b += NR)
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] += a[i] * b[j];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) c[i * ldc + j] = accumulate ? c[i * ldc + j] + acc[i][j] : acc[i][j];
}

// 6 x (8 * NV) tile in 6 * NV ymm accumulators. NV = 2 is the main kernel: per k,
// two B loads and six broadcasts feed twelve FMAs, keeping both FMA ports busy.
// NV = 1 serves panels with at most 8 live columns (K = 6 filters, say), halving
// the wasted work there. B rows are always NR floats apart. The accumulators are
// named variables, not an array: GCC spilled an array to the stack on every k.
#define CONVKIT_ROW(i)                                               \
  {                                                                  \
    const __m256 ai = _mm256_broadcast_ss(a + i);                    \
    c##i##0 = _mm256_fmadd_ps(ai, b0, c##i##0);                      \
    if (NV == 2) c##i##1 = _mm256_fmadd_ps(ai, b1, c##i##1);         \
  }
#define CONVKIT_STORE(i)                                                                      \
  {                                                                                           \
    float* ci = c + i * ldc;                                                                  \
    _mm256_storeu_ps(ci, accumulate ? _mm256_add_ps(c##i##0, _mm256_loadu_ps(ci)) : c##i##0); \
    if (NV == 2)                                                                              \
      _mm256_storeu_ps(ci + 8, accumulate ? _mm256_add_ps(c##i##1, _mm256_loadu_ps(ci + 8)) : c##i##1); \
  }

template <int NV>
__attribute__((target("avx2,fma"))) void kernel_avx2(i64 kc, const float* a, const float* b, float* c, i64 ldc,
                                                     bool accumulate) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (i64 k = 0; k < kc; ++k, a += MR, b += NR) {
    const __m256 b0 = _mm256_loadu_ps(b);
    const __m256 b1 = NV == 2 ? _mm256_loadu_ps(b + 8) : b0;
    CONVKIT_ROW(0) CONVKIT_ROW(1) CONVKIT_ROW(2) CONVKIT_ROW(3) CONVKIT_ROW(4) CONVKIT_ROW(5)
  }
  CONVKIT_STORE(0) CONVKIT_STORE(1) CONVKIT_STORE(2) CONVKIT_STORE(3) CONVKIT_STORE(4) CONVKIT_STORE(5)
}
#undef CONVKIT_ROW
#undef CONVKIT_STORE

// B is either one panel for all taps in order (b_taps null) or a panel per tap.
template <int NV>
__attribute__((target("avx2,fma"))) void direct_avx2(i64 taps, i64 len, const float* const* ptr, const float* b,
                                                     const float* const* b_taps, float* c, i64 ldc, Epilogue ep) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (i64 t = 0; t < taps; ++t, ptr += MR) {
    const float *p0 = ptr[0], *p1 = ptr[1], *p2 = ptr[2], *p3 = ptr[3], *p4 = ptr[4], *p5 = ptr[5];
    if (b_taps) b = b_taps[t];
    for (i64 k = 0; k < len; ++k, b += NR) {
      const __m256 b0 = _mm256_loadu_ps(b);
      const __m256 b1 = NV == 2 ? _mm256_loadu_ps(b + 8) : b0;
#define CONVKIT_ROW(i)                                       \
  {                                                          \
    const __m256 ai = _mm256_broadcast_ss(p##i + k);         \
    c##i##0 = _mm256_fmadd_ps(ai, b0, c##i##0);              \
    if (NV == 2) c##i##1 = _mm256_fmadd_ps(ai, b1, c##i##1); \
  }
      CONVKIT_ROW(0) CONVKIT_ROW(1) CONVKIT_ROW(2) CONVKIT_ROW(3) CONVKIT_ROW(4) CONVKIT_ROW(5)
#undef CONVKIT_ROW
    }
  }
  const __m256 out[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  const __m256 zero = _mm256_setzero_ps();
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) {
      __m256 o = ep.bias ? _mm256_add_ps(out[i][v], _mm256_loadu_ps(ep.bias + 8 * v)) : out[i][v];
      if (ep.relu) o = _mm256_max_ps(zero, o);  // max returns its second operand, o, for NaN
      _mm256_storeu_ps(c + i * ldc + 8 * v, o);
    }
}

void direct_generic(i64 taps, i64 len, const float* const* ptr, const float* b, const float* const* b_taps,
                    float* c, i64 ldc, Epilogue ep) {
  float acc[MR][NR] = {};
  for (i64 t = 0; t < taps; ++t, ptr += MR) {
    if (b_taps) b = b_taps[t];
    for (i64 k = 0; k < len; ++k, b += NR)
      for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) acc[i][j] += ptr[i][k] * b[j];
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) {
      const float v = acc[i][j] + (ep.bias ? ep.bias[j] : 0.f);
      c[i * ldc + j] = ep.relu ? std::max(v, 0.f) : v;
    }
}

__attribute__((target("avx2,fma"))) void gather_avx2(i64 kc, const float* const* ptr, i64 offset, const float* b,
                                                     float* c, i64 ldc) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (i64 k = 0; k < kc; ++k, b += NR) {
    const float* a = ptr[k] + offset;
    const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#define CONVKIT_ROW(i)                                   \
  {                                                      \
    const __m256 ai = _mm256_broadcast_ss(a + i);        \
    c##i##0 = _mm256_fmadd_ps(ai, b0, c##i##0);          \
    c##i##1 = _mm256_fmadd_ps(ai, b1, c##i##1);          \
  }
    CONVKIT_ROW(0) CONVKIT_ROW(1) CONVKIT_ROW(2) CONVKIT_ROW(3) CONVKIT_ROW(4) CONVKIT_ROW(5)
#undef CONVKIT_ROW
  }
  const __m256 out[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < 2; ++v) _mm256_storeu_ps(c + i * ldc + 8 * v, out[i][v]);
}

// AVX-512 (16 lanes), R rows. NV = 2 is the main tile, R x 32 over two B panels `pstride`
// floats apart: per step two B loads and R broadcasts feed 2R multiply-adds, so loads stay
// well under the two pipes' multiply-add rate. NV = 1 serves a single panel; with fewer
// than eight rows its accumulators cannot cover the multiply-add latency (two pipes of four
// cycles want eight sums in flight), so even and odd steps accumulate apart and meet at the
// end. acc[0] and acc[1] are the two panels' or the two steps' sums. a(k, i) is the address
// of row i's value at step k.
template <int R, int NV>
constexpr bool kEvenOdd = NV == 1 && R < 8;

template <int R, int NV, class A>
__attribute__((target("avx512f"), always_inline)) inline void reduce512(i64 kc, const float* b, i64 pstride,
                                                                        __m512 (&acc)[2][R], A a) {
  if (!kEvenOdd<R, NV>) {
    for (i64 k = 0; k < kc; ++k) {
      const __m512 b0 = _mm512_loadu_ps(b + k * NR), b1 = NV == 2 ? _mm512_loadu_ps(b + pstride + k * NR) : b0;
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        const __m512 ai = _mm512_set1_ps(*a(k, i));
        acc[0][i] = _mm512_fmadd_ps(ai, b0, acc[0][i]);
        if (NV == 2) acc[1][i] = _mm512_fmadd_ps(ai, b1, acc[1][i]);
      }
    }
    return;
  }
  i64 k = 0;
  for (; k + 1 < kc; k += 2)
    for (int h = 0; h < 2; ++h) {
      const __m512 bh = _mm512_loadu_ps(b + (k + h) * NR);
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) acc[h][i] = _mm512_fmadd_ps(_mm512_set1_ps(*a(k + h, i)), bh, acc[h][i]);
    }
  if (k < kc) {
    const __m512 bk = _mm512_loadu_ps(b + k * NR);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) acc[0][i] = _mm512_fmadd_ps(_mm512_set1_ps(*a(k, i)), bk, acc[0][i]);
  }
}

template <int R, int NV>
__attribute__((target("avx512f"), always_inline)) inline void store512(const __m512 (&acc)[2][R], float* c, i64 ldc,
                                                                       bool accumulate, Epilogue ep = {}) {
  __m512 bias[NV];
  for (int v = 0; v < NV; ++v) bias[v] = ep.bias ? _mm512_loadu_ps(ep.bias + v * NR) : _mm512_setzero_ps();
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < NV; ++v) {
      __m512 out = kEvenOdd<R, NV> ? _mm512_add_ps(acc[0][i], acc[1][i]) : acc[v][i];
      float* ci = c + i * ldc + v * NR;
      if (accumulate) out = _mm512_add_ps(out, _mm512_loadu_ps(ci));
      if (ep.bias) out = _mm512_add_ps(out, bias[v]);
      if (ep.relu) out = _mm512_max_ps(_mm512_setzero_ps(), out);  // max returns its second operand, out, for NaN
      _mm512_storeu_ps(ci, out);
    }
}

// Every loop over a tile's rows is unrolled in full (here and above): otherwise GCC keeps the
// accumulators in memory as well, zeroing them with a string store and writing them back
// after every tap.
template <int R>
__attribute__((target("avx512f"), always_inline)) inline void zero512(__m512 (&acc)[2][R]) {
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) acc[0][i] = acc[1][i] = _mm512_setzero_ps();
}

template <int NV>
__attribute__((target("avx512f"))) void kernel_avx512(i64 kc, const float* a, const float* b, i64 pstride, float* c,
                                                      i64 ldc, bool accumulate) {
  __m512 acc[2][MR];
  zero512(acc);
  reduce512<MR, NV>(kc, b, pstride, acc, [&](i64 k, int i) { return a + k * MR + i; });
  store512<MR, NV>(acc, c, ldc, accumulate);
}

// R = 12 rows (pixels): a 12 x 32 tile keeps 24 of the 32 registers accumulating, and the
// per-tile set-up (pointers, stores) is spread over twice the work of a 6-row tile.
template <int R, int NV>
__attribute__((target("avx512f"))) void direct_avx512(i64 taps, i64 len, const float* const* ptr, const float* b,
                                                      const float* const* b_taps, i64 pstride, float* c, i64 ldc,
                                                      Epilogue ep) {
  __m512 acc[2][R];
  zero512(acc);
  for (i64 t = 0; t < taps; ++t, ptr += R) {
    const float* p[R];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) p[i] = ptr[i];
    if (b_taps) b = b_taps[t];
    reduce512<R, NV>(len, b, pstride, acc, [&](i64 k, int i) { return p[i] + k; });
    b += len * NR;
  }
  store512<R, NV>(acc, c, ldc, false, ep);
}

// R = 8 rows of channels for layers with 8 or more: their channel counts are mostly
// multiples of 8, so no group overlaps the one before.
template <int R, int NV>
__attribute__((target("avx512f"))) void gather_avx512(i64 kc, const float* const* ptr, i64 offset, const float* b,
                                                      i64 pstride, float* c, i64 ldc) {
  __m512 acc[2][R];
  zero512(acc);
  reduce512<R, NV>(kc, b, pstride, acc, [&](i64 k, int i) { return ptr[k] + offset + i; });
  store512<R, NV>(acc, c, ldc, false);
}

void gather_generic(i64 kc, const float* const* ptr, i64 offset, const float* b, float* c, i64 ldc) {
  float acc[MR][NR] = {};
  for (i64 k = 0; k < kc; ++k, b += NR)
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] += ptr[k][offset + i] * b[j];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) c[i * ldc + j] = acc[i][j];
}

// Pixels per dot tile: P * NC accumulators, NC weight vectors and one source vector fit
// the 16 ymm registers.
constexpr int dot_pixels(int nc) { return nc == 1 ? 8 : nc == 2 ? 6 : 4; }

template <int NC>
__attribute__((target("avx2,fma"))) void dot_avx2(i64 taps, i64 len, const float* const* ptr, const float* w,
                                                  i64 kpad, float* c, i64 ldc) {
  constexpr int P = dot_pixels(NC);
  __m256 acc[P][NC];
#pragma GCC unroll 8
  for (int i = 0; i < P; ++i)
    for (int j = 0; j < NC; ++j) acc[i][j] = _mm256_setzero_ps();
  const i64 full = len / 8 * 8;
  const int rest = static_cast<int>(len - full);
  const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32(rest), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  for (i64 t = 0; t < taps; ++t, ptr += P, w += NC * kpad) {
    for (i64 k = 0; k < kpad; k += 8) {
      __m256 wv[NC];
      for (int j = 0; j < NC; ++j) wv[j] = _mm256_loadu_ps(w + j * kpad + k);
#pragma GCC unroll 8
      for (int i = 0; i < P; ++i) {  // unrolled in full, so that acc stays in registers
        // The last chunk is masked: a source row ends at len and may end its buffer.
        const __m256 a = k < full ? _mm256_loadu_ps(ptr[i] + k) : _mm256_maskload_ps(ptr[i] + k, tail);
        for (int j = 0; j < NC; ++j) acc[i][j] = _mm256_fmadd_ps(a, wv[j], acc[i][j]);
      }
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < P; ++i)
    for (int j = 0; j < NC; ++j) {
      const __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc[i][j]), _mm256_extractf128_ps(acc[i][j], 1));
      const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
      c[i * ldc + j] = _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
    }
}

void dot_generic(i64 taps, i64 len, const float* const* ptr, const float* w, i64 kpad, float* c, i64 ldc, int nc) {
  const int P = dot_pixels(nc);
  float acc[8][kDotMaxCols] = {};
  for (i64 t = 0; t < taps; ++t, ptr += P, w += nc * kpad)
    for (int i = 0; i < P; ++i)
      for (int j = 0; j < nc; ++j)
        for (i64 k = 0; k < len; ++k) acc[i][j] += ptr[i][k] * w[j * kpad + k];
  for (int i = 0; i < P; ++i)
    for (int j = 0; j < nc; ++j) c[i * ldc + j] = acc[i][j];
}

// J (tap column, channel) pairs times NV vectors of filters in registers, plus NV dy
// vectors and a broadcast: J * NV + NV + 1 <= 16.
// Every loop over j is unrolled in full: otherwise GCC keeps the accumulators in memory too,
// with a store after every multiply-add.
template <int J, int NV>
__attribute__((target("avx2,fma"))) void row_grad_avx2(i64 n_rows, const float* const* xrows,
                                                       const float* const* dyrows, i64 n_ow, i64 x_step,
                                                       const i64* off, i64 K, i64 k0, float* acc) {
  __m256 a[J][NV];
  __m256i mask[NV];
  int lanes[NV];
  for (int v = 0; v < NV; ++v) {
    lanes[v] = static_cast<int>(std::max<i64>(0, std::min<i64>(8, K - k0 - 8 * v)));
    mask[v] = _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes[v]), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
#pragma GCC unroll 16
    for (int j = 0; j < J; ++j) a[j][v] = _mm256_setzero_ps();
  }
  const bool full = lanes[NV - 1] == 8;
  for (i64 row = 0; row < n_rows; ++row) {
    const float* x = xrows[row];
    const float* dy = dyrows[row] + k0;
    for (i64 ow = 0; ow < n_ow; ++ow, x += x_step, dy += K) {
      __m256 d[NV];
      for (int v = 0; v < NV; ++v)  // masked: the last filters may end the buffer
        d[v] = full || v + 1 < NV ? _mm256_loadu_ps(dy + 8 * v) : _mm256_maskload_ps(dy + 8 * v, mask[v]);
#pragma GCC unroll 16
      for (int j = 0; j < J; ++j) {
        const __m256 b = _mm256_broadcast_ss(x + off[j]);
        for (int v = 0; v < NV; ++v) a[j][v] = _mm256_fmadd_ps(b, d[v], a[j][v]);
      }
    }
  }
#pragma GCC unroll 16
  for (int j = 0; j < J; ++j)
    for (int v = 0; v < NV; ++v) {
      float* out = acc + j * K + k0 + 8 * v;
      _mm256_maskstore_ps(out, mask[v], _mm256_add_ps(a[j][v], _mm256_maskload_ps(out, mask[v])));
    }
}

// One pixel into one set of sums: a[j] += x[off[j]] * dy, NV vectors of filters (masked:
// never read past K).
template <int J, int NV>
__attribute__((target("avx512f"), always_inline)) inline void row_grad_pixel512(__m512 (&a)[J][NV],
                                                                                const __mmask16 (&mask)[NV],
                                                                                const float* x, const i64* off,
                                                                                const float* dy) {
  __m512 d[NV];
  for (int v = 0; v < NV; ++v) d[v] = _mm512_maskz_loadu_ps(mask[v], dy + 16 * v);
#pragma GCC unroll 16
  for (int j = 0; j < J; ++j) {
    const __m512 b = _mm512_set1_ps(x[off[j]]);
    for (int v = 0; v < NV; ++v) a[j][v] = _mm512_fmadd_ps(b, d[v], a[j][v]);
  }
}

// The same with 16 filters a vector and 32 registers: J * NV + NV + 1 <= 32 holds up to
// J = 14 pairs with two vectors. With fewer than eight sums, even and odd pixels accumulate
// apart so that the multiply-add latency stays covered.
template <int J, int NV>
__attribute__((target("avx512f"))) void row_grad_avx512(i64 n_rows, const float* const* xrows,
                                                        const float* const* dyrows, i64 n_ow, i64 x_step,
                                                        const i64* off, i64 K, i64 k0, float* acc) {
  constexpr bool kTwoSets = J * NV < 8;
  __m512 a[J][NV], b[J][NV];  // b: the odd pixels' sums, when kTwoSets
  __mmask16 mask[NV];
  for (int v = 0; v < NV; ++v) {
    const i64 lanes = std::max<i64>(0, std::min<i64>(16, K - k0 - 16 * v));
    mask[v] = static_cast<__mmask16>((1u << lanes) - 1);
#pragma GCC unroll 16
    for (int j = 0; j < J; ++j) a[j][v] = b[j][v] = _mm512_setzero_ps();
  }
  for (i64 row = 0; row < n_rows; ++row) {
    const float* x = xrows[row];
    const float* dy = dyrows[row] + k0;
    i64 ow = 0;
    if (kTwoSets)
      for (; ow + 2 <= n_ow; ow += 2, x += 2 * x_step, dy += 2 * K) {
        row_grad_pixel512(a, mask, x, off, dy);
        row_grad_pixel512(b, mask, x + x_step, off, dy + K);
      }
    for (; ow < n_ow; ++ow, x += x_step, dy += K) row_grad_pixel512(a, mask, x, off, dy);
  }
#pragma GCC unroll 16
  for (int j = 0; j < J; ++j)
    for (int v = 0; v < NV; ++v) {
      const __m512 sum = kTwoSets ? _mm512_add_ps(a[j][v], b[j][v]) : a[j][v];
      float* out = acc + j * K + k0 + 16 * v;
      _mm512_mask_storeu_ps(out, mask[v], _mm512_add_ps(sum, _mm512_maskz_loadu_ps(mask[v], out)));
    }
}

using RowGrad = void (*)(i64, const float* const*, const float* const*, i64, i64, const i64*, i64, i64, float*);

template <int NV, size_t... J>
constexpr std::array<RowGrad, sizeof...(J)> row_grad512_table(std::index_sequence<J...>) {
  return {row_grad_avx512<static_cast<int>(J) + 1, NV>...};
}

template <int NV, size_t... J>
constexpr std::array<RowGrad, sizeof...(J)> row_grad_table(std::index_sequence<J...>) {
  return {row_grad_avx2<static_cast<int>(J) + 1, NV>...};
}

// The widest instruction set both the CPU and CONVKIT_CPU_KERNEL allow: "generic" forces the
// portable kernels and "avx2" the AVX2 ones, so that every variant can be tested on one machine.
Isa detect_isa() {
  const char* env = std::getenv("CONVKIT_CPU_KERNEL");
  const std::string force = env ? env : "";
  if (force == "generic") return Isa::Generic;
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return Isa::Generic;
  if (force == "avx2" || !__builtin_cpu_supports("avx512f")) return Isa::Avx2;
  return Isa::Avx512;
}

const Isa kIsa = detect_isa();
const bool kAvx2 = kIsa != Isa::Generic;  // the AVX2 kernels serve narrow tiles on AVX-512 CPUs too
const bool kAvx512 = kIsa == Isa::Avx512;
constexpr int kMaxCols = 2 * NR;
constexpr int kGatherRows512 = 8;
constexpr int kDirectRows512 = kMaxDirectRows;

// Columns the kernel chosen for `cols` columns writes: 32 (two panels, AVX-512), 16, or 8
// (the narrow AVX2 tile, for panels with at most 8 live columns: K = 6 filters, say).
int tile_width(int cols, bool narrow_kernel) {
  return cols > NR ? kMaxCols : (cols <= 8 && narrow_kernel && kAvx2) ? 8 : NR;
}

// Runs a kernel that writes `width` columns, `run(out, ld, accumulate)`, for a tile of which
// rows [first_row, rows) x [0, cols) exist in C: straight into C when the whole tile
// exists (and the kernel can add to C when asked to), else into scratch, then stored or added.
template <int R = MR, class Run>
void run_tile(Run run, int width, bool kernel_accumulates, float* c, i64 ldc, int first_row, int rows, int cols,
              bool accumulate) {
  if (first_row == 0 && rows == R && cols == width && (kernel_accumulates || !accumulate)) {
    run(c, ldc, accumulate);
    return;
  }
  alignas(64) float tmp[R * kMaxCols];
  run(tmp, kMaxCols, false);
  for (int i = first_row; i < rows; ++i)
    for (int j = 0; j < cols; ++j) c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0.f) + tmp[i * kMaxCols + j];
}

}  // namespace

int max_tile_cols() { return kAvx512 ? kMaxCols : NR; }

void micro_tile(i64 kc, const float* a, const float* b, i64 pstride, float* c, i64 ldc, int rows, int cols,
                bool accumulate) {
  const int width = tile_width(cols, true);
  run_tile(
      [&](float* out, i64 ld, bool acc) {
        if (width == kMaxCols) kernel_avx512<2>(kc, a, b, pstride, out, ld, acc);
        else if (width == 8) kernel_avx2<1>(kc, a, b, out, ld, acc);
        else if (kAvx512) kernel_avx512<1>(kc, a, b, 0, out, ld, acc);
        else (kAvx2 ? kernel_avx2<2> : kernel_generic)(kc, a, b, out, ld, acc);
      },
      width, true, c, ldc, 0, rows, cols, accumulate);
}

int direct_rows() { return kAvx512 ? kDirectRows512 : MR; }

void direct_tile(i64 taps, i64 len, const float* const* rows_ptr, const float* b, i64 pstride, float* c, i64 ldc,
                 int rows, int cols, const float* const* b_taps, Epilogue ep) {
  if (kAvx512) {
    constexpr int R = kDirectRows512;
    const bool two = cols > NR;
    run_tile<R>([&](float* out, i64 ld, bool) {
      (two ? direct_avx512<R, 2> : direct_avx512<R, 1>)(taps, len, rows_ptr, b, b_taps, pstride, out, ld, ep);
    }, two ? kMaxCols : NR, false, c, ldc, 0, rows, cols, false);
    return;
  }
  const int width = tile_width(cols, true);
  run_tile(
      [&](float* out, i64 ld, bool) {
        if (width == 8) direct_avx2<1>(taps, len, rows_ptr, b, b_taps, out, ld, ep);
        else (kAvx2 ? direct_avx2<2> : direct_generic)(taps, len, rows_ptr, b, b_taps, out, ld, ep);
      },
      width, false, c, ldc, 0, rows, cols, false);
}

int gather_rows(i64 channels) { return kAvx512 && channels >= kGatherRows512 ? kGatherRows512 : MR; }

void gather_tile(i64 kc, const float* const* ptr, i64 offset, const float* b, i64 pstride, float* c, i64 ldc,
                 int rows, int first_row, int cols) {
  const int width = tile_width(cols, false);
  if (rows == kGatherRows512) {
    constexpr int R = kGatherRows512;
    run_tile<R>([&](float* out, i64 ld, bool) {
      (width == kMaxCols ? gather_avx512<R, 2> : gather_avx512<R, 1>)(kc, ptr, offset, b, pstride, out, ld);
    }, width, false, c, ldc, first_row, R, cols, true);
    return;
  }
  run_tile(
      [&](float* out, i64 ld, bool) {
        if (width == kMaxCols) gather_avx512<MR, 2>(kc, ptr, offset, b, pstride, out, ld);
        else if (kAvx512) gather_avx512<MR, 1>(kc, ptr, offset, b, 0, out, ld);
        else (kAvx2 ? gather_avx2 : gather_generic)(kc, ptr, offset, b, out, ld);
      },
      width, false, c, ldc, first_row, MR, cols, true);
}

int dot_rows(int cols) { return dot_pixels(cols); }

void dot_tile(i64 taps, i64 len, const float* const* rows_ptr, const float* w, i64 kpad, float* c, i64 ldc,
              int rows, int cols) {
  const int P = dot_pixels(cols);
  alignas(32) float tmp[8 * kDotMaxCols];
  float* out = rows == P ? c : tmp;
  const i64 ld = rows == P ? ldc : cols;
  if (!kAvx2)
    dot_generic(taps, len, rows_ptr, w, kpad, out, ld, cols);
  else if (cols == 1)
    dot_avx2<1>(taps, len, rows_ptr, w, kpad, out, ld);
  else if (cols == 2)
    dot_avx2<2>(taps, len, rows_ptr, w, kpad, out, ld);
  else
    dot_avx2<3>(taps, len, rows_ptr, w, kpad, out, ld);
  if (out == tmp)
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < cols; ++j) c[i * ldc + j] = tmp[i * cols + j];
}

void row_filter_grad(i64 n_rows, const float* const* xrows, const float* const* dyrows, i64 n_ow, i64 x_step,
                     i64 s_step, int S, int C, i64 K, float* acc) {
  const int J = S * C;
  i64 off[kRowGradMaxPairs];
  for (int j = 0; j < J; ++j) off[j] = (j / C) * s_step + j % C;
  if (!kAvx2) {
    for (i64 row = 0; row < n_rows; ++row)
      for (i64 ow = 0; ow < n_ow; ++ow)
        for (int j = 0; j < J; ++j) {
          const float xv = xrows[row][ow * x_step + off[j]];
          for (i64 k = 0; k < K; ++k) acc[j * K + k] += xv * dyrows[row][ow * K + k];
        }
    return;
  }
  if (kAvx512) {
    static constexpr auto one = row_grad512_table<1>(std::make_index_sequence<kRowGradMaxPairs>());
    static constexpr auto two = row_grad512_table<2>(std::make_index_sequence<kRowGradMaxPairs>());
    for (i64 k0 = 0; k0 < K; k0 += 32)
      (K - k0 > 16 ? two : one)[J - 1](n_rows, xrows, dyrows, n_ow, x_step, off, K, k0, acc);
    return;
  }
  static constexpr auto narrow = row_grad_table<1>(std::make_index_sequence<kRowGradMaxPairs>());
  static constexpr auto wide = row_grad_table<2>(std::make_index_sequence<6>());
  for (i64 k0 = 0; k0 < K;) {
    const bool two = J <= 6 && K - k0 > 8;  // two vectors of filters only when the second has some
    (two ? wide[J - 1] : narrow[J - 1])(n_rows, xrows, dyrows, n_ow, x_step, off, K, k0, acc);
    k0 += two ? 16 : 8;
  }
}

namespace {

// Sixteen columns at a time in registers: summing into memory row by row would wait on the
// previous row's store at every row.
__attribute__((target("avx512f"))) void column_sums_avx512(const float* a, i64 n, i64 K, float* out) {
  for (i64 k0 = 0; k0 < K; k0 += 64) {
    __mmask16 mask[4];
    __m512 s[4];
    for (int v = 0; v < 4; ++v) {
      const i64 lanes = std::max<i64>(0, std::min<i64>(16, K - k0 - 16 * v));
      mask[v] = static_cast<__mmask16>((1u << lanes) - 1);
      s[v] = _mm512_setzero_ps();
    }
    for (i64 e = 0; e < n; ++e)
      for (int v = 0; v < 4; ++v) s[v] = _mm512_add_ps(s[v], _mm512_maskz_loadu_ps(mask[v], a + e * K + k0 + 16 * v));
    for (int v = 0; v < 4; ++v)
      _mm512_mask_storeu_ps(out + k0 + 16 * v, mask[v],
                            _mm512_add_ps(s[v], _mm512_maskz_loadu_ps(mask[v], out + k0 + 16 * v)));
  }
}

__attribute__((target("avx2,fma"))) void column_sums_avx2(const float* a, i64 n, i64 K, float* out) {
  for (i64 k0 = 0; k0 < K; k0 += 32) {
    __m256i mask[4];
    __m256 s[4];
    for (int v = 0; v < 4; ++v) {
      const int lanes = static_cast<int>(std::max<i64>(0, std::min<i64>(8, K - k0 - 8 * v)));
      mask[v] = _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
      s[v] = _mm256_setzero_ps();
    }
    for (i64 e = 0; e < n; ++e)
      for (int v = 0; v < 4; ++v) s[v] = _mm256_add_ps(s[v], _mm256_maskload_ps(a + e * K + k0 + 8 * v, mask[v]));
    for (int v = 0; v < 4; ++v)
      _mm256_maskstore_ps(out + k0 + 8 * v, mask[v], _mm256_add_ps(s[v], _mm256_maskload_ps(out + k0 + 8 * v, mask[v])));
  }
}

}  // namespace

void column_sums(const float* a, i64 n, i64 K, float* out) {
  if (kAvx512) return column_sums_avx512(a, n, K, out);
  if (kAvx2) return column_sums_avx2(a, n, K, out);
  for (i64 e = 0; e < n; ++e)
    for (i64 k = 0; k < K; ++k) out[k] += a[e * K + k];
}

namespace {

// kChains independent accumulators hide the multiply-add latency (4-5 cycles) on two pipes; each
// iteration does kChains vector multiply-adds. The returned sum keeps the loop from being removed.
constexpr int kChains = 12;

__attribute__((target("avx512f"))) float chains_avx512(i64 iters) {
  __m512 acc[kChains];
  for (int k = 0; k < kChains; ++k) acc[k] = _mm512_set1_ps(1e-3f * static_cast<float>(k));
  const __m512 m = _mm512_set1_ps(0.999f), a = _mm512_set1_ps(1e-3f);
  for (i64 i = 0; i < iters; ++i)
    for (int k = 0; k < kChains; ++k) acc[k] = _mm512_fmadd_ps(acc[k], m, a);
  float sum = 0.f;
  for (int k = 0; k < kChains; ++k) sum += _mm512_reduce_add_ps(acc[k]);
  return sum;
}

__attribute__((target("avx2,fma"))) float chains_avx2(i64 iters) {
  __m256 acc[kChains];
  for (int k = 0; k < kChains; ++k) acc[k] = _mm256_set1_ps(1e-3f * static_cast<float>(k));
  const __m256 m = _mm256_set1_ps(0.999f), a = _mm256_set1_ps(1e-3f);
  for (i64 i = 0; i < iters; ++i)
    for (int k = 0; k < kChains; ++k) acc[k] = _mm256_fmadd_ps(acc[k], m, a);
  alignas(32) float lanes[8];
  float sum = 0.f;
  for (int k = 0; k < kChains; ++k) {
    _mm256_store_ps(lanes, acc[k]);
    for (float v : lanes) sum += v;
  }
  return sum;
}

float chains_generic(i64 iters) {
  float acc[kChains];
  for (int k = 0; k < kChains; ++k) acc[k] = 1e-3f * static_cast<float>(k);
  for (i64 i = 0; i < iters; ++i)
    for (int k = 0; k < kChains; ++k) acc[k] = acc[k] * 0.999f + 1e-3f;  // as the generic micro-kernel
  float sum = 0.f;
  for (float v : acc) sum += v;
  return sum;
}

}  // namespace

// Each thread's rate is its own work over its own CPU time (its wall time where the thread clock is
// unavailable), and the peak their sum: a thread that waits for a core does not count the wait. (A
// virtual machine's host can still take time the guest counts as its own; callers keep the larger of
// two measurements.)
double peak_gflops(double min_seconds) {
  const int lanes = kAvx512 ? 16 : kAvx2 ? 8 : 1;
  float (*run)(i64) = kAvx512 ? chains_avx512 : kAvx2 ? chains_avx2 : chains_generic;
  auto seconds = [] {
    timespec t{};
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t) != 0) return omp_get_wtime();
    return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
  };
  constexpr i64 kMaxIters = i64{1} << 36;  // minutes of work: a clock that never advances ends here
  float sink = 0.f;
  double rate = 0.0;
  for (i64 iters = 1 << 16; iters <= kMaxIters; iters *= 2) {
    double slowest = 0.0;
    rate = 0.0;
#pragma omp parallel reduction(+ : rate, sink) reduction(max : slowest)
    {
      const double t0 = seconds();
      sink += run(iters);
      const double s = std::max(seconds() - t0, 1e-9);
      rate += 2.0 * kChains * lanes * static_cast<double>(iters) / s / 1e9;
      slowest = s;
    }
    if (slowest >= min_seconds) break;
  }
  volatile float keep = sink;  // the chains' results are used, so they are computed
  (void)keep;
  return rate;
}

int row_grad_max_pairs() { return kAvx512 ? kRowGradMaxPairs : 6; }

Isa isa() { return kIsa; }

const char* micro_kernel_name() {
  return kAvx512 ? "avx512" : kAvx2 ? "avx2-fma" : "generic";
}

}  // namespace convkit::cpu
