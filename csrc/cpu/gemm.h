// The register-blocked matrix micro-kernel under every CPU convolution.
//
// Operands arrive packed (BLIS style): an A micro-panel holds kc columns of MR
// rows, k-major (a[k*MR + i]); a B micro-panel holds kc rows of NR columns
// (b[k*NR + j]). The conv drivers in ops/conv2d_cpu.cpp gather straight from the
// activations into these panels, so im2col is never materialised.
#pragma once
#include "common.h"

namespace convkit::cpu {

constexpr int MR = 6;
constexpr int NR = 16;

// Every tile has MR rows and up to max_tile_cols() columns: NR, or 2 * NR on AVX-512 CPUs,
// whose 32 vector registers hold a 6 x 32 tile. Columns past NR come from the next B panel,
// `pstride` floats after the first (unused when cols <= NR).
int max_tile_cols();

// C[0:rows, 0:cols] (+)= A_panel * B_panel, C row-major with leading dimension ldc.
// rows <= MR, cols <= max_tile_cols(); with accumulate=false C is overwritten.
void micro_tile(i64 kc, const float* a, const float* b, i64 pstride, float* c, i64 ldc, int rows, int cols,
                bool accumulate);

// The same product with A read in place, on tiles of direct_rows() rows (MR, or 12 on
// AVX-512 CPUs): for each of `taps` steps, rows[t * direct_rows() + i] points
// at `len` contiguous floats of row i (a pixel's channels); B is the panel for all
// taps * len reduction rows, or, when b_taps is given, b_taps[t] is tap t's len-row panel
// (b unused). This skips packing A when rows are long enough.
// The tile stores out = relu?(sum + bias[j]): the forward pass's bias and ReLU applied
// while the sums are in registers, instead of another pass over the output. bias, when
// given, holds a value for every column the kernel computes (pad it with zeros past the
// last real column, up to a multiple of max_tile_cols()).
struct Epilogue {
  const float* bias = nullptr;
  bool relu = false;
};
constexpr int kMaxDirectRows = 12;
int direct_rows();  // at most kMaxDirectRows
void direct_tile(i64 taps, i64 len, const float* const* rows_ptr, const float* b, i64 pstride, float* c, i64 ldc,
                 int rows, int cols, const float* const* b_taps = nullptr, Epilogue ep = {});

// C[first_row:rows, 0:cols] += A * B_panel where A[k][i] = ptr[k][offset + i]: `rows`
// consecutive channels of the pixel that reduction step k reads (conv backward-filter).
// rows is gather_rows(channels): MR, or 8 on AVX-512 CPUs for 8 channels or more.
// Rows before first_row are computed but not written, so a last group of channels
// can overlap the one before it instead of being padded.
int gather_rows(i64 channels);
void gather_tile(i64 kc, const float* const* ptr, i64 offset, const float* b, i64 pstride, float* c, i64 ldc,
                 int rows, int first_row, int cols);

// Few output columns (backward-data into 1-3 channels): out[i, j] = sum over taps t and
// k < len of rows_ptr[t * dot_rows(cols) + i][k] * w[(t * cols + j) * kpad + k], for the
// rows <= dot_rows(cols) pixels of a tile. The reduction runs along the source channels in
// the vector lanes, so no lane is spent on a missing column; w is zero past len in each
// kpad-float row (kpad a multiple of 8), and sources are never read past len.
constexpr int kDotMaxCols = 3;
int dot_rows(int cols);
void dot_tile(i64 taps, i64 len, const float* const* rows_ptr, const float* w, i64 kpad, float* c, i64 ldc,
              int rows, int cols);

// Backward-filter of a layer with few input channels, over whole output rows: for each of
// the n_rows pairs (x = xrows[i], dy = dyrows[i]),
// acc[j * K + k] += sum over ow < n_ow of x[ow * x_step + off(j)] * dy[ow * K + k] for every
// k < K and the J = S * C (tap column s, channel c) pairs j = s * C + c, off(j) = s * s_step + c.
// Pixels run down the loop and filters along the lanes, and the J x K sums stay in
// registers across all the rows: a first layer's im2col would cost more than its few
// multiply-adds per pixel.
// Up to row_grad_max_pairs() pairs keep two vectors of filters in registers (6 with AVX2's
// 16 registers, 14 with AVX-512's 32); past that the broadcasts outnumber the multiply-adds
// and a packed GEMM wins. The kernel itself takes up to kRowGradMaxPairs.
constexpr int kRowGradMaxPairs = 14;
int row_grad_max_pairs();
void row_filter_grad(i64 n_rows, const float* const* xrows, const float* const* dyrows, i64 n_ow, i64 x_step,
                     i64 s_step, int S, int C, i64 K, float* acc);

// out[k] += sum over e < n of a[e * K + k]: the bias gradient, from dy viewed as (n x K).
void column_sums(const float* a, i64 n, i64 K, float* out);

// The machine's float32 peak with the current threads, measured: every thread runs independent chains
// of multiply-adds on registers of the micro-kernels' width (no memory traffic) until the slowest has
// spent min_seconds of its own CPU time; returns GFLOP/s (2 per multiply-add). What the benchmarks
// divide a kernel's rate by.
double peak_gflops(double min_seconds);

// Which micro-kernels this CPU runs: "avx512", "avx2-fma" or "generic".
const char* micro_kernel_name();

// The instruction set those micro-kernels use (the CPU's widest, unless CONVKIT_CPU_KERNEL forces a
// narrower one), for other kernels that choose their code path at run time the same way.
enum class Isa { Generic, Avx2, Avx512 };
Isa isa();

}  // namespace convkit::cpu
