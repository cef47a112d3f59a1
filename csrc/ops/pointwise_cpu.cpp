// CPU element-wise activations (see pointwise.h). One loop body, compiled for AVX-512, AVX2 and
// the baseline and chosen at run time like the other kernels (cpu::isa()).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "cpu/gemm.h"
#include "ops/pointwise.h"

namespace convkit {
namespace {

// e^a for a <= 0, the only argument sigmoid needs: 2^n * e^r with n = round(a / ln 2), |r| <= ln 2 / 2,
// e^r by its Taylor series to r^7 (truncation under 6e-9, below float's rounding). Branch-free so that
// the loop vectorises: adding 1.5 * 2^23 rounds a / ln 2 to an integer held in the low mantissa bits,
// from which 2^n is built. Below ln(FLT_MIN) 2^n is no normal float, so it is built as 2^(n + 100)
// and the result scaled by 2^-100, which rounds it into the subnormals as exp would.
__attribute__((always_inline)) inline float exp_nonpositive(float a) {
  a = a < -105.f ? -105.f : a;  // e^-105 already rounds to 0; NaN passes
  const bool small = a < -87.3365448f;
  const float magic = 12582912.f;
  const float t = a * 1.44269504f + magic, n = t - magic;
  const float r = (a - n * 0.693145752f) - n * 1.42860677e-6f;  // ln 2 in two parts; n * the first is exact
  float p = 1.f / 5040;
  p = p * r + 1.f / 720;  // plain multiply-adds (the compiler fuses them where the CPU can): a call to
  p = p * r + 1.f / 120;  // fmaf on CPUs without FMA would stop the loop vectorising
  p = p * r + 1.f / 24;
  p = p * r + 1.f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  std::uint32_t bits, magic_bits;
  std::memcpy(&bits, &t, 4);
  std::memcpy(&magic_bits, &magic, 4);
  const std::uint32_t scale_bits = (bits - magic_bits + (small ? 227u : 127u)) << 23;
  float scale;
  std::memcpy(&scale, &scale_bits, 4);
  return p * scale * (small ? 0x1p-100f : 1.f);
}

// 1 / (1 + e^-x) above 0 and e^x / (1 + e^x) below: e never overflows.
__attribute__((always_inline)) inline float sigmoid(float x) {
  const float e = exp_nonpositive(-std::fabs(x));
  return (x >= 0.f ? 1.f : e) / (1.f + e);
}

template <Pointwise F>
__attribute__((always_inline)) inline void body(i64 n, const float* x, float* y, float lo, float hi) {
#pragma omp simd
  for (i64 i = 0; i < n; ++i) {
    const float v = x[i];
    if constexpr (F == Pointwise::Clamp) y[i] = v < lo ? lo : (v > hi ? hi : v);  // NaN compares false: stays
    else if constexpr (F == Pointwise::Sigmoid) y[i] = sigmoid(v);
    else y[i] = v * sigmoid(v);
  }
}

template <Pointwise F>
__attribute__((target("avx512f"))) void body_avx512(i64 n, const float* x, float* y, float lo, float hi) {
  body<F>(n, x, y, lo, hi);
}
template <Pointwise F>
__attribute__((target("avx2,fma"))) void body_avx2(i64 n, const float* x, float* y, float lo, float hi) {
  body<F>(n, x, y, lo, hi);
}
template <Pointwise F>
void body_generic(i64 n, const float* x, float* y, float lo, float hi) {
  body<F>(n, x, y, lo, hi);
}

using Chunk = void (*)(i64, const float*, float*, float, float);

template <Pointwise F>
Chunk for_isa() {
  const cpu::Isa isa = cpu::isa();
  return isa == cpu::Isa::Avx512 ? body_avx512<F> : isa == cpu::Isa::Avx2 ? body_avx2<F> : body_generic<F>;
}

Chunk chunk_for(Pointwise f) {
  switch (f) {
    case Pointwise::Clamp: return for_isa<Pointwise::Clamp>();
    case Pointwise::Sigmoid: return for_isa<Pointwise::Sigmoid>();
    case Pointwise::Silu: break;
  }
  return for_isa<Pointwise::Silu>();
}

}  // namespace

void pointwise_cpu(Pointwise f, i64 n, const float* x, float* y, float lo, float hi) {
  const Chunk chunk = chunk_for(f);
  constexpr i64 kChunk = 1 << 14;  // 64 KB a piece: below a few of them, threads cost more than they save
  const i64 pieces = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (pieces > 2)
  for (i64 p = 0; p < pieces; ++p) chunk(std::min(kChunk, n - p * kChunk), x + p * kChunk, y + p * kChunk, lo, hi);
}

void pointwise_serial_cpu(const PointwiseAct& act, i64 n, const float* x, float* y) {
  chunk_for(act.f)(n, x, y, act.lo, act.hi);
}

namespace {

// y[i] = a[i] op b[i] over one contiguous run (simple enough for every ISA's auto-vectoriser).
template <Binary Op>
void binary_run(i64 n, const float* a, const float* b, float* y) {
#pragma omp simd
  for (i64 i = 0; i < n; ++i) {
    if constexpr (Op == Binary::Add) y[i] = a[i] + b[i];
    else if constexpr (Op == Binary::Subtract) y[i] = a[i] - b[i];
    else if constexpr (Op == Binary::Multiply) y[i] = a[i] * b[i];
    else if constexpr (Op == Binary::Divide) y[i] = a[i] / b[i];
    else {  // both loads unconditional, so that the select vectorises (a blend) instead of branching
      const float g = a[i], out = b[i];
      y[i] = out <= 0.f ? 0.f : g;
    }
  }
}

// Elements [s, e) of the flattened (outer, mid, inner) array, in runs that end at row ends.
template <Binary Op>
void binary_span(i64 s, i64 e, i64 mid, i64 inner, const float* a, const float* b, float* y) {
  while (s < e) {
    const i64 row = s / inner, col = s - row * inner, n = std::min(inner - col, e - s);
    binary_run<Op>(n, a + s, b + (row / mid) * inner + col, y + s);
    s += n;
  }
}

template <Binary Op>
void binary_all(i64 outer, i64 mid, i64 inner, const float* a, const float* b, float* y, const PointwiseAct& post) {
  constexpr i64 kChunk = 1 << 14;  // as pointwise_cpu
  const i64 n = outer * mid * inner, pieces = (n + kChunk - 1) / kChunk;
  // One multiply or add per value is so little work that below a few pieces starting the threads costs more.
#pragma omp parallel for schedule(static) if (pieces > 4)
  for (i64 p = 0; p < pieces; ++p) {
    const i64 s = p * kChunk, e = std::min(n, s + kChunk);
    binary_span<Op>(s, e, mid, inner, a, b, y);
    if (post.on) pointwise_serial_cpu(post, e - s, y + s, y + s);
  }
}

}  // namespace

void binary_cpu(Binary op, i64 outer, i64 mid, i64 inner, const float* a, const float* b, float* y,
                const PointwiseAct& post) {
  switch (op) {
    case Binary::Add: return binary_all<Binary::Add>(outer, mid, inner, a, b, y, post);
    case Binary::Subtract: return binary_all<Binary::Subtract>(outer, mid, inner, a, b, y, post);
    case Binary::Multiply: return binary_all<Binary::Multiply>(outer, mid, inner, a, b, y, post);
    case Binary::Divide: return binary_all<Binary::Divide>(outer, mid, inner, a, b, y, post);
    case Binary::ReluGrad: return binary_all<Binary::ReluGrad>(outer, mid, inner, a, b, y, post);
  }
}

}  // namespace convkit
