#include "cpu/gemm.h"

#include <immintrin.h>

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

// 6x16 tile in 12 ymm accumulators: per k, two B loads and six broadcasts feed
// twelve FMAs, which keeps both FMA ports busy on Zen and Skylake alike.
__attribute__((target("avx2,fma"))) void kernel_avx2(i64 kc, const float* a, const float* b, float* c,
                                                     i64 ldc, bool accumulate) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
  __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
  __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
  __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  for (i64 k = 0; k < kc; ++k, a += MR, b += NR) {
    const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
    __m256 ai = _mm256_broadcast_ss(a + 0);
    c00 = _mm256_fmadd_ps(ai, b0, c00); c01 = _mm256_fmadd_ps(ai, b1, c01);
    ai = _mm256_broadcast_ss(a + 1);
    c10 = _mm256_fmadd_ps(ai, b0, c10); c11 = _mm256_fmadd_ps(ai, b1, c11);
    ai = _mm256_broadcast_ss(a + 2);
    c20 = _mm256_fmadd_ps(ai, b0, c20); c21 = _mm256_fmadd_ps(ai, b1, c21);
    ai = _mm256_broadcast_ss(a + 3);
    c30 = _mm256_fmadd_ps(ai, b0, c30); c31 = _mm256_fmadd_ps(ai, b1, c31);
    ai = _mm256_broadcast_ss(a + 4);
    c40 = _mm256_fmadd_ps(ai, b0, c40); c41 = _mm256_fmadd_ps(ai, b1, c41);
    ai = _mm256_broadcast_ss(a + 5);
    c50 = _mm256_fmadd_ps(ai, b0, c50); c51 = _mm256_fmadd_ps(ai, b1, c51);
  }
  const __m256 rows[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  for (int i = 0; i < MR; ++i) {
    float* ci = c + i * ldc;
    __m256 lo = rows[i][0], hi = rows[i][1];
    if (accumulate) {
      lo = _mm256_add_ps(lo, _mm256_loadu_ps(ci));
      hi = _mm256_add_ps(hi, _mm256_loadu_ps(ci + 8));
    }
    _mm256_storeu_ps(ci, lo);
    _mm256_storeu_ps(ci + 8, hi);
  }
}

bool has_avx2_fma() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

const bool kAvx2 = has_avx2_fma();
const Kernel kKernel = kAvx2 ? kernel_avx2 : kernel_generic;

}  // namespace

void micro_tile(i64 kc, const float* a, const float* b, float* c, i64 ldc, int rows, int cols,
                bool accumulate) {
  if (rows == MR && cols == NR) {
    kKernel(kc, a, b, c, ldc, accumulate);
    return;
  }
  // Edge tile: compute the full tile into a scratch block, then copy the part that exists.
  alignas(32) float tmp[MR * NR];
  kKernel(kc, a, b, tmp, NR, false);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j)
      c[i * ldc + j] = accumulate ? c[i * ldc + j] + tmp[i * NR + j] : tmp[i * NR + j];
}

const char* micro_kernel_name() { return kAvx2 ? "avx2-fma" : "generic"; }

}  // namespace convkit::cpu
