#include "cpu/gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <string>
#include <utility>

namespace convkit::cpu {
namespace {

using Kernel = void (*)(i64, const float*, const float*, float*, i64, bool);

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
                                                     const float* const* b_taps, float* c, i64 ldc) {
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
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) _mm256_storeu_ps(c + i * ldc + 8 * v, out[i][v]);
}

void direct_generic(i64 taps, i64 len, const float* const* ptr, const float* b, const float* const* b_taps,
                    float* c, i64 ldc) {
  float acc[MR][NR] = {};
  for (i64 t = 0; t < taps; ++t, ptr += MR) {
    if (b_taps) b = b_taps[t];
    for (i64 k = 0; k < len; ++k, b += NR)
      for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) acc[i][j] += ptr[i][k] * b[j];
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) c[i * ldc + j] = acc[i][j];
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
  for (int i = 0; i < P; ++i)
    for (int j = 0; j < NC; ++j) acc[i][j] = _mm256_setzero_ps();
  const i64 full = len / 8 * 8;
  const int rest = static_cast<int>(len - full);
  const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32(rest), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  for (i64 t = 0; t < taps; ++t, ptr += P, w += NC * kpad) {
    for (i64 k = 0; k < kpad; k += 8) {
      __m256 wv[NC];
      for (int j = 0; j < NC; ++j) wv[j] = _mm256_loadu_ps(w + j * kpad + k);
      for (int i = 0; i < P; ++i) {
        // The last chunk is masked: a source row ends at len and may end its buffer.
        const __m256 a = k < full ? _mm256_loadu_ps(ptr[i] + k) : _mm256_maskload_ps(ptr[i] + k, tail);
        for (int j = 0; j < NC; ++j) acc[i][j] = _mm256_fmadd_ps(a, wv[j], acc[i][j]);
      }
    }
  }
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
      for (int j = 0; j < J; ++j) {
        const __m256 b = _mm256_broadcast_ss(x + off[j]);
        for (int v = 0; v < NV; ++v) a[j][v] = _mm256_fmadd_ps(b, d[v], a[j][v]);
      }
    }
  }
  alignas(32) float tmp[8];
  for (int j = 0; j < J; ++j)
    for (int v = 0; v < NV; ++v) {
      _mm256_store_ps(tmp, a[j][v]);
      float* out = acc + j * K + k0 + 8 * v;
      for (int l = 0; l < lanes[v]; ++l) out[l] += tmp[l];
    }
}

using RowGrad = void (*)(i64, const float* const*, const float* const*, i64, i64, const i64*, i64, i64, float*);

template <int NV, size_t... J>
constexpr std::array<RowGrad, sizeof...(J)> row_grad_table(std::index_sequence<J...>) {
  return {row_grad_avx2<static_cast<int>(J) + 1, NV>...};
}

bool has_avx2_fma() {
  // CONVKIT_CPU_KERNEL=generic forces the portable kernel (to test it on any machine).
  const char* force = std::getenv("CONVKIT_CPU_KERNEL");
  if (force && std::string(force) == "generic") return false;
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

const bool kAvx2 = has_avx2_fma();
const Kernel kKernel = kAvx2 ? kernel_avx2<2> : kernel_generic;
const Kernel kNarrow = kAvx2 ? kernel_avx2<1> : kernel_generic;  // writes 8 of the NR columns

}  // namespace

void micro_tile(i64 kc, const float* a, const float* b, float* c, i64 ldc, int rows, int cols,
                bool accumulate) {
  if (rows == MR && cols == NR) {
    kKernel(kc, a, b, c, ldc, accumulate);
    return;
  }
  // Edge tile: compute into a scratch block, then copy the part that exists.
  alignas(32) float tmp[MR * NR];
  (cols <= 8 ? kNarrow : kKernel)(kc, a, b, tmp, NR, false);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j)
      c[i * ldc + j] = accumulate ? c[i * ldc + j] + tmp[i * NR + j] : tmp[i * NR + j];
}

void direct_tile(i64 taps, i64 len, const float* const* rows_ptr, const float* b, float* c, i64 ldc, int rows,
                 int cols, const float* const* b_taps) {
  using Direct = void (*)(i64, i64, const float* const*, const float*, const float* const*, float*, i64);
  const Direct f = !kAvx2 ? direct_generic : cols <= 8 ? direct_avx2<1> : direct_avx2<2>;
  if (rows == MR && cols == NR) {
    f(taps, len, rows_ptr, b, b_taps, c, ldc);
    return;
  }
  alignas(32) float tmp[MR * NR];
  f(taps, len, rows_ptr, b, b_taps, tmp, NR);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) c[i * ldc + j] = tmp[i * NR + j];
}

void gather_tile(i64 kc, const float* const* ptr, i64 offset, const float* b, float* c, i64 ldc, int first_row,
                 int cols) {
  alignas(32) float tmp[MR * NR];
  (kAvx2 ? gather_avx2 : gather_generic)(kc, ptr, offset, b, tmp, NR);
  for (int i = first_row; i < MR; ++i)
    for (int j = 0; j < cols; ++j) c[i * ldc + j] += tmp[i * NR + j];
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
  static constexpr auto narrow = row_grad_table<1>(std::make_index_sequence<kRowGradMaxPairs>());
  static constexpr auto wide = row_grad_table<2>(std::make_index_sequence<6>());
  for (i64 k0 = 0; k0 < K;) {
    const bool two = J <= 6 && K - k0 > 8;  // two vectors of filters only when the second has some
    (two ? wide[J - 1] : narrow[J - 1])(n_rows, xrows, dyrows, n_ow, x_step, off, K, k0, acc);
    k0 += two ? 16 : 8;
  }
}

const char* micro_kernel_name() { return kAvx2 ? "avx2-fma" : "generic"; }

}  // namespace convkit::cpu
