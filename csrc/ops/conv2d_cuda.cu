// CUDA conv2d as implicit GEMM: nothing is materialised, every tile of the
// virtual im2col matrix is gathered straight from the NHWC tensor into shared
// memory with cp.async (zero-fill for padding and ragged edges).
//
// Forward and backward-data are one "gather GEMM" (see conv2d_cpu.cpp):
//   out[m, j] = sum_q A[m, q] * B[q, j],  q = (r, s, ch) flattened, ch fastest
//   forward:       A from x,  rows = output pixels, B[q, k] = w[r, s, c, k]
//   backward-data: A from dy, rows = input pixels,  B[q, c] = w[r, s, c, k]
// A row's source coordinate through tap r is num = base + r * step, valid when
// num % div == 0 and num / div is inside the source: forward has div = 1,
// backward-data has step = -dh and div = sh (oh = (ih + pt - r*dh) / sh).
//
// Backward-filter is dw[q, k] = sum_m A[m, q] * dy[m, k], reduced over the
// N*OH*OW pixels in splits; each split writes its own partial buffer and a
// second kernel adds them in a fixed order, so results are deterministic.
//
// Two arithmetic modes share the tiling: strict fp32 (FFMA, each thread an 8x4
// micro-tile) and TF32 tensor cores (mma.sync m16n8k8, a warp a 32x32 tile).
// Shapes whose indices do not fit the kernels' 32-bit pixel/coordinate
// arithmetic go to simple grid-stride kernels with 64-bit indices.
#include <algorithm>
#include <climits>
#include <cstdint>

#include "ops/conv2d.h"
#include "ops/cuda_check.h"

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "convkit's CUDA kernels need compute capability 8.0 or newer (cp.async and TF32 mma.sync)"
#endif

namespace convkit {
namespace {

// ----------------------------------------------------------------------------- device helpers

__device__ __forceinline__ unsigned smem_u32(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// 4 or 16 bytes global -> shared, asynchronously; with valid == false nothing is
// read and the destination is zero-filled (src must still be a valid address).
__device__ __forceinline__ void cp_async4(float* dst, const float* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(dst)),
               "l"(__cvta_generic_to_global(src)), "r"(valid ? 4 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async16(float* dst, const float* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)),
               "l"(__cvta_generic_to_global(src)), "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ unsigned tf32(float f) {
  unsigned r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(f));
  return r;
}

// d += a * b for one 16x8x8 TF32 tile. Fragments (g = lane / 4, t = lane % 4):
// a = A[g][t], A[g+8][t], A[g][t+4], A[g+8][t+4]; b = B[t][g], B[t+4][g];
// d = D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1].
__device__ __forceinline__ void mma_tf32(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

constexpr int kStages = 3;        // cp.async pipeline depth
constexpr int kBK = 16;           // reduction slice per stage

// The kStages-deep cp.async pipeline over reduction tiles first .. first + nk - 1: load_a and load_b
// (tile, stage) issue a tile's copies, compute(stage) consumes a landed stage.
template <class LoadA, class LoadB, class Compute>
__device__ __forceinline__ void pipeline(int first, int nk, const LoadA& load_a, const LoadB& load_b, const Compute& compute) {
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < nk) {
      load_a(first + s, s);
      load_b(first + s, s);
    }
    cp_async_commit();
  }
  for (int i = 0; i < nk; ++i) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // tile i landed for every thread; stage (i - 1) % kStages is free again
    const int pf = i + kStages - 1;
    if (pf < nk) {
      load_a(first + pf, pf % kStages);
      load_b(first + pf, pf % kStages);
    }
    cp_async_commit();
    compute(i % kStages);
  }
  cp_async_wait<0>();
}

// One warp's 32 x 32 tile of acc += A B over a BK-deep stage with m16n8k8 TF32 mma: A(r, k) is
// a[r * RS + k * KS] for the warp's rows r < 32, B(k, n) is b[k * BS + n] for its columns n < 32.
// acc[mi * 4 + ni] holds the mma tile of rows 16 mi.., columns 8 ni.. in the PTX C-fragment order.
template <int BK, int RS, int KS, int BS>
__device__ __forceinline__ void warp_mma_tf32(const float* a, int row0, const float* b, int col0, int lane,
                                              float (&acc)[8][4]) {
  const int gq = lane / 4, tq = lane % 4;
#pragma unroll
  for (int k8 = 0; k8 < BK; k8 += 8) {
    unsigned af[2][4], bf[4][2];
#pragma unroll
    for (int mi = 0; mi < 2; ++mi) {
      const float* ap = a + (row0 + mi * 16 + gq) * RS + (k8 + tq) * KS;
      af[mi][0] = tf32(ap[0]);
      af[mi][1] = tf32(ap[8 * RS]);
      af[mi][2] = tf32(ap[4 * KS]);
      af[mi][3] = tf32(ap[8 * RS + 4 * KS]);
    }
#pragma unroll
    for (int ni = 0; ni < 4; ++ni) {
      const float* bp = b + (k8 + tq) * BS + col0 + ni * 8 + gq;
      bf[ni][0] = tf32(bp[0]);
      bf[ni][1] = tf32(bp[4 * BS]);
    }
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) mma_tf32(acc[mi * 4 + ni], af[mi], bf[ni]);
  }
}
constexpr int kInvalid = -(1 << 30);  // row coordinate base of rows past the end: every tap misses

// ----------------------------------------------------------------------------- gather GEMM

struct Gather {
  const float* src;   // (N, SH, SW, SC)
  const float* wt;    // B[q, j] = wt[rs * rs_stride + ch * ch_stride + j * col_stride]
  const float* bias;  // may be null
  const float* scale;  // may be null: each sum times scale[col], before the bias
  const float* residual;  // may be null: laid out as out, added after the bias, before the ReLU
  float* out;         // (M, ncols) row-major
  long long rs_stride;
  int ch_stride, col_stride;
  int SH, SW, SC;
  int GH, GW, M;      // row grid: m = (n * GH + gh) * GW + gw
  int S, Q, ncols;
  int h_mul, h_off, h_step, h_div;  // num = gh * h_mul + h_off + r * h_step
  int w_mul, w_off, w_step, w_div;
  bool relu, vec_out;  // vec_out: ncols % 4 == 0 and out is 16-byte aligned
};

__device__ __forceinline__ bool source_coord(int num, int div, int limit, int& coord) {
  if (div == 1) {
    coord = num;
  } else {
    if (num < 0 || num % div != 0) return false;
    coord = num / div;
  }
  return coord >= 0 && coord < limit;
}

// Block tile 128 x (32 * WN), 4 x WN warps of 32 x 32, 128 * WN threads.
// V = 4: the source has SC % 4 == 0 and is 16-byte aligned, so each group of
// four reduction indices is four contiguous channels of one tap.
template <bool TF32, int V, int WN>
__global__ void __launch_bounds__(128 * WN) gather_gemm(const Gather g) {
  constexpr int BM = 128, BN = 32 * WN, BK = kBK, THREADS = 128 * WN;
  constexpr int AS = BK + 4;  // As[m][k]: 16-byte rows, conflict-free TF32 fragments
  constexpr int BS = BN + 8;  // Bs[k][n]: stride = 8 (mod 32 banks), conflict-free fragments
  __shared__ __align__(16) float As[kStages][BM * AS];
  __shared__ __align__(16) float Bs[kStages][BK * BS];
  __shared__ long long s_img[BM];
  __shared__ int s_h[BM], s_w[BM];

  const int tid = threadIdx.x;
  const long long m0 = static_cast<long long>(blockIdx.x) * BM;
  const int n0 = blockIdx.y * BN;

  for (int i = tid; i < BM; i += THREADS) {
    const long long m = m0 + i;
    if (m < g.M) {
      const int mm = static_cast<int>(m);
      const int gw = mm % g.GW, t = mm / g.GW, gh = t % g.GH, n = t / g.GH;
      s_img[i] = static_cast<long long>(n) * g.SH * g.SW * g.SC;
      s_h[i] = gh * g.h_mul + g.h_off;
      s_w[i] = gw * g.w_mul + g.w_off;
    } else {
      s_img[i] = 0;
      s_h[i] = kInvalid;
      s_w[i] = kInvalid;
    }
  }
  __syncthreads();

  // A loads: KV threads along k (V floats each), the rest along rows.
  constexpr int KV = BK / V, A_ROWS = THREADS / KV, A_PASSES = BM / A_ROWS;
  static_assert(A_PASSES * A_ROWS == BM, "A tile split");
  const int a_k = (tid % KV) * V, a_row = tid / KV;

  auto load_a = [&](int kt, int st) {
    const int q = kt * BK + a_k;
    const bool qok = q < g.Q;
    int ch = 0, dh = 0, dw = 0;
    if (qok) {
      const int rs = q / g.SC, r = rs / g.S;
      ch = q - rs * g.SC;
      dh = r * g.h_step;
      dw = (rs - r * g.S) * g.w_step;
    }
#pragma unroll(A_PASSES > 8 ? 4 : A_PASSES)
    for (int p = 0; p < A_PASSES; ++p) {
      const int row = a_row + p * A_ROWS;
      int ih = 0, iw = 0;
      const bool ok = qok && source_coord(s_h[row] + dh, g.h_div, g.SH, ih) &&
                      source_coord(s_w[row] + dw, g.w_div, g.SW, iw);
      const float* src = ok ? g.src + s_img[row] + (static_cast<long long>(ih) * g.SW + iw) * g.SC + ch : g.src;
      float* dst = &As[st][row * AS + a_k];
      if (V == 4)
        cp_async16(dst, src, ok);
      else
        cp_async4(dst, src, ok);
    }
  };

  // B loads: threads run along whichever of q and j is contiguous in memory.
  constexpr int B_ELEMS = BK * BN / THREADS;
  static_assert(B_ELEMS * THREADS == BK * BN, "B tile split");
  auto load_b = [&](int kt, int st) {
#pragma unroll
    for (int e = 0; e < B_ELEMS; ++e) {
      int kk, jj;
      if (g.col_stride == 1) {
        kk = tid / BN + e * (THREADS / BN);
        jj = tid % BN;
      } else {
        kk = tid % BK;
        jj = tid / BK + e * (THREADS / BK);
      }
      const int q = kt * BK + kk, j = n0 + jj;
      const bool ok = q < g.Q && j < g.ncols;
      const float* src = g.wt;
      if (ok) {
        const int rs = q / g.SC, ch = q - rs * g.SC;
        src += rs * g.rs_stride + static_cast<long long>(ch) * g.ch_stride + static_cast<long long>(j) * g.col_stride;
      }
      cp_async4(&Bs[st][kk * BS + jj], src, ok);
    }
  };

  const int warp = tid / 32, lane = tid % 32;
  const int wm = warp % 4, wn = warp / 4;
  // TF32: acc[mi][ni][4] for 2 x 4 mma tiles; fp32: acc[i][j] for rows tm + 4i, columns 4 tn + j.
  float acc[8][4] = {};

  auto compute = [&](int st) {
    const float* as = As[st];
    const float* bs = Bs[st];
    if constexpr (TF32) {
      warp_mma_tf32<BK, AS, 1, BS>(as, wm * 32, bs, wn * 32, lane, acc);
    } else {
      const int tm = lane / 8, tn = lane % 8;
#pragma unroll
      for (int k4 = 0; k4 < BK; k4 += 4) {
        float4 a[8], b[4];
#pragma unroll
        for (int i = 0; i < 8; ++i)
          a[i] = *reinterpret_cast<const float4*>(as + (wm * 32 + tm + 4 * i) * AS + k4);
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
          b[kk] = *reinterpret_cast<const float4*>(bs + (k4 + kk) * BS + wn * 32 + tn * 4);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          const float av[4] = {a[i].x, a[i].y, a[i].z, a[i].w};
#pragma unroll
          for (int kk = 0; kk < 4; ++kk) {
            acc[i][0] = fmaf(av[kk], b[kk].x, acc[i][0]);
            acc[i][1] = fmaf(av[kk], b[kk].y, acc[i][1]);
            acc[i][2] = fmaf(av[kk], b[kk].z, acc[i][2]);
            acc[i][3] = fmaf(av[kk], b[kk].w, acc[i][3]);
          }
        }
      }
    }
  };

  pipeline(0, (g.Q + BK - 1) / BK, load_a, load_b, compute);

  auto finish = [&](float v, long long row, int col) {
    if (g.scale) v *= __ldg(g.scale + col);
    if (g.bias) v += __ldg(g.bias + col);
    if (g.residual) v += __ldg(g.residual + row * g.ncols + col);
    return g.relu && v < 0.f ? 0.f : v;  // NaN stays NaN, as std::max(v, 0) on the CPU
  };
  if constexpr (TF32) {
    const int gq = lane / 4, tq = lane % 4;
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const long long row = m0 + wm * 32 + mi * 16 + gq + half * 8;
        if (row >= g.M) continue;
        float* orow = g.out + row * g.ncols;
#pragma unroll
        for (int ni = 0; ni < 4; ++ni)
#pragma unroll
          for (int c = 0; c < 2; ++c) {
            const int col = n0 + wn * 32 + ni * 8 + 2 * tq + c;
            if (col < g.ncols) orow[col] = finish(acc[mi * 4 + ni][half * 2 + c], row, col);
          }
      }
  } else {
    const int tm = lane / 8, tn = lane % 8;
    const int col0 = n0 + wn * 32 + tn * 4;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const long long row = m0 + wm * 32 + tm + 4 * i;
      if (row >= g.M) continue;
      float* orow = g.out + row * g.ncols;
      if (g.vec_out && col0 + 3 < g.ncols) {
        *reinterpret_cast<float4*>(orow + col0) =
            make_float4(finish(acc[i][0], row, col0), finish(acc[i][1], row, col0 + 1),
                        finish(acc[i][2], row, col0 + 2), finish(acc[i][3], row, col0 + 3));
      } else {
#pragma unroll
        for (int j = 0; j < 4; ++j)
          if (col0 + j < g.ncols) orow[col0 + j] = finish(acc[i][j], row, col0 + j);
      }
    }
  }
}

// ----------------------------------------------------------------------------- backward-filter

struct Filter {
  const float* x;   // (N, H, W, C)
  const float* dy;  // (M, K)
  float* out;       // partial z at out + z * split_stride, (Q, K) row-major
  long long split_stride;
  int H, W, C, S, K, Q;
  int OH, OW, M;
  int sh, sw, dh, dw, pt, pl;
  int tiles_per_split;  // pixel tiles of kBK per split (gridDim.z splits)
};

// Block tile (32 * WM) x (32 * WN) of dw (rows q, columns k), warps of 32 x 32,
// reducing over the pixel tiles of split blockIdx.z. V = 4: C % 4 == 0 and x
// 16-byte aligned, so four consecutive q are four channels of one pixel.
template <bool TF32, int V, int WM, int WN>
__global__ void __launch_bounds__(32 * WM * WN) filter_gemm(const Filter f) {
  constexpr int BM = 32 * WM, BN = 32 * WN, BK = kBK, THREADS = 32 * WM * WN;
  constexpr int AS = BM + 8;  // As[p][q]: stride = 8 (mod 32 banks), 16-byte rows
  constexpr int BS = BN + 8;  // Bs[p][k]
  __shared__ __align__(16) float As[kStages][BK * AS];
  __shared__ __align__(16) float Bs[kStages][BK * BS];
  __shared__ int s_qh[BM], s_qw[BM], s_qc[BM];

  const int tid = threadIdx.x;
  const int q0 = blockIdx.x * BM, k0 = blockIdx.y * BN;
  for (int i = tid; i < BM; i += THREADS) {
    const int q = q0 + i;
    if (q < f.Q) {
      const int rs = q / f.C, r = rs / f.S;
      s_qc[i] = q - rs * f.C;
      s_qh[i] = r * f.dh - f.pt;
      s_qw[i] = (rs - r * f.S) * f.dw - f.pl;
    } else {
      s_qc[i] = -1;
      s_qh[i] = s_qw[i] = 0;
    }
  }
  __syncthreads();

  constexpr int QV = BM / V, A_PIX = THREADS / QV, A_PASSES = BK / A_PIX;
  static_assert(A_PIX >= 1 && A_PASSES * A_PIX == BK, "A tile split");
  const int a_q = (tid % QV) * V, a_pix = tid / QV;
  const int my_qc = s_qc[a_q], my_qh = s_qh[a_q], my_qw = s_qw[a_q];

  auto load_a = [&](int kt, int st) {
#pragma unroll
    for (int p = 0; p < A_PASSES; ++p) {
      const int pix = a_pix + p * A_PIX;
      const int m = kt * BK + pix;  // kt * BK + BK <= M + BK - 1 fits: checked on the host
      bool ok = my_qc >= 0 && m < f.M;
      const float* src = f.x;
      if (ok) {
        const int ow = m % f.OW, t = m / f.OW, oh = t % f.OH, n = t / f.OH;
        const int ih = oh * f.sh + my_qh, iw = ow * f.sw + my_qw;
        ok = ih >= 0 && ih < f.H && iw >= 0 && iw < f.W;
        if (ok) src += ((static_cast<long long>(n) * f.H + ih) * f.W + iw) * f.C + my_qc;
      }
      float* dst = &As[st][pix * AS + a_q];
      if (V == 4)
        cp_async16(dst, src, ok);
      else
        cp_async4(dst, src, ok);
    }
  };

  constexpr int B_PIX = THREADS / BN, B_PASSES = BK / B_PIX;
  static_assert(B_PASSES * B_PIX == BK, "B tile split");
  auto load_b = [&](int kt, int st) {
    const int kk = tid % BN;
#pragma unroll
    for (int p = 0; p < B_PASSES; ++p) {
      const int pix = tid / BN + p * B_PIX;
      const int m = kt * BK + pix;
      const bool ok = m < f.M && k0 + kk < f.K;
      const float* src = ok ? f.dy + static_cast<long long>(m) * f.K + k0 + kk : f.dy;
      cp_async4(&Bs[st][pix * BS + kk], src, ok);
    }
  };

  const int warp = tid / 32, lane = tid % 32;
  const int wm = warp % WM, wn = warp / WM;
  float acc[8][4] = {};

  auto compute = [&](int st) {
    const float* as = As[st];
    const float* bs = Bs[st];
    if constexpr (TF32) {
      warp_mma_tf32<BK, 1, AS, BS>(as, wm * 32, bs, wn * 32, lane, acc);
    } else {
      // Rows 4 tm + i and 16 + 4 tm + i (i < 4), columns 4 tn + j.
      const int tm = lane / 8, tn = lane % 8;
#pragma unroll
      for (int p = 0; p < BK; ++p) {
        const float4 a0 = *reinterpret_cast<const float4*>(as + p * AS + wm * 32 + tm * 4);
        const float4 a1 = *reinterpret_cast<const float4*>(as + p * AS + wm * 32 + 16 + tm * 4);
        const float4 b = *reinterpret_cast<const float4*>(bs + p * BS + wn * 32 + tn * 4);
        const float av[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          acc[i][0] = fmaf(av[i], b.x, acc[i][0]);
          acc[i][1] = fmaf(av[i], b.y, acc[i][1]);
          acc[i][2] = fmaf(av[i], b.z, acc[i][2]);
          acc[i][3] = fmaf(av[i], b.w, acc[i][3]);
        }
      }
    }
  };

  const int total_tiles = (f.M + BK - 1) / BK;
  const int kt0 = blockIdx.z * f.tiles_per_split;
  const int kt1 = min(total_tiles, kt0 + f.tiles_per_split);
  const int nk = kt1 > kt0 ? kt1 - kt0 : 0;
  pipeline(kt0, nk, load_a, load_b, compute);

  float* out = f.out + blockIdx.z * f.split_stride;
  if constexpr (TF32) {
    const int gq = lane / 4, tq = lane % 4;
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int q = q0 + wm * 32 + mi * 16 + gq + half * 8;
        if (q >= f.Q) continue;
#pragma unroll
        for (int ni = 0; ni < 4; ++ni)
#pragma unroll
          for (int c = 0; c < 2; ++c) {
            const int k = k0 + wn * 32 + ni * 8 + 2 * tq + c;
            if (k < f.K) out[static_cast<long long>(q) * f.K + k] = acc[mi * 4 + ni][half * 2 + c];
          }
      }
  } else {
    const int tm = lane / 8, tn = lane % 8;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int q = q0 + wm * 32 + (i < 4 ? tm * 4 + i : 16 + tm * 4 + i - 4);
      if (q >= f.Q) continue;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int k = k0 + wn * 32 + tn * 4 + j;
        if (k < f.K) out[static_cast<long long>(q) * f.K + k] = acc[i][j];
      }
    }
  }
}

// Column sums of dy (M, K) over the pixel tiles of split blockIdx.y; block 32 x 8.
__global__ void __launch_bounds__(256) bias_partial(const float* __restrict__ dy, int M, int K, int rows_per_split,
                                                    float* __restrict__ out, long long split_stride) {
  __shared__ float part[8][33];
  const int k = blockIdx.x * 32 + threadIdx.x;
  const long long r0 = static_cast<long long>(blockIdx.y) * rows_per_split;
  const long long r1 = min(static_cast<long long>(M), r0 + rows_per_split);
  float acc = 0.f;
  if (k < K)
    for (long long m = r0 + threadIdx.y; m < r1; m += 8) acc += dy[m * K + k];
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && k < K) {
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) s += part[i][threadIdx.x];
    out[blockIdx.y * split_stride + k] = s;
  }
}

// Adds the split partials in order: ws[z][e] for e < QK goes to dw, the K after it to dbias.
__global__ void reduce_splits(const float* __restrict__ ws, int splits, long long stride, long long QK, int nb,
                              float* __restrict__ dw, float* __restrict__ db) {
  const long long total = QK + nb;
  for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<long long>(gridDim.x) * blockDim.x) {
    float s = 0.f;
    for (int z = 0; z < splits; ++z) s += ws[z * stride + e];
    if (e < QK)
      dw[e] = s;
    else
      db[e - QK] = s;
  }
}

// ----------------------------------------------------------------------------- 64-bit fallbacks

__global__ void ref_fwd(Conv2dDesc d, const float* __restrict__ x, const float* __restrict__ w,
                        const float* __restrict__ bias, const float* __restrict__ scale,
                        const float* __restrict__ residual, float* __restrict__ y, bool relu) {
  const i64 total = d.N * d.OH * d.OW * d.K;
  for (i64 e = blockIdx.x * (i64)blockDim.x + threadIdx.x; e < total; e += (i64)gridDim.x * blockDim.x) {
    const i64 k = e % d.K, ow = (e / d.K) % d.OW, oh = (e / (d.K * d.OW)) % d.OH, n = e / (d.K * d.OW * d.OH);
    float acc = 0.f;
    for (i64 r = 0; r < d.R; ++r) {
      const i64 ih = oh * d.sh - d.pt + r * d.dh;
      if (ih < 0 || ih >= d.H) continue;
      for (i64 s = 0; s < d.S; ++s) {
        const i64 iw = ow * d.sw - d.pl + s * d.dw;
        if (iw < 0 || iw >= d.W) continue;
        const float* xp = x + ((n * d.H + ih) * d.W + iw) * d.C;
        const float* wp = w + (r * d.S + s) * d.C * d.K + k;
        for (i64 c = 0; c < d.C; ++c) acc = fmaf(xp[c], wp[c * d.K], acc);
      }
    }
    if (scale) acc *= scale[k];
    if (bias) acc += bias[k];
    if (residual) acc += residual[e];
    y[e] = relu && acc < 0.f ? 0.f : acc;
  }
}

__global__ void ref_bwd_data(Conv2dDesc d, const float* __restrict__ dy, const float* __restrict__ w,
                             float* __restrict__ dx) {
  const i64 total = d.N * d.H * d.W * d.C;
  for (i64 e = blockIdx.x * (i64)blockDim.x + threadIdx.x; e < total; e += (i64)gridDim.x * blockDim.x) {
    const i64 c = e % d.C, iw = (e / d.C) % d.W, ih = (e / (d.C * d.W)) % d.H, n = e / (d.C * d.W * d.H);
    float acc = 0.f;
    for (i64 r = 0; r < d.R; ++r) {
      const i64 nh = ih + d.pt - r * d.dh;
      if (nh < 0 || nh % d.sh != 0 || nh / d.sh >= d.OH) continue;
      for (i64 s = 0; s < d.S; ++s) {
        const i64 nw = iw + d.pl - s * d.dw;
        if (nw < 0 || nw % d.sw != 0 || nw / d.sw >= d.OW) continue;
        const float* g = dy + ((n * d.OH + nh / d.sh) * d.OW + nw / d.sw) * d.K;
        const float* wp = w + ((r * d.S + s) * d.C + c) * d.K;
        for (i64 k = 0; k < d.K; ++k) acc = fmaf(g[k], wp[k], acc);
      }
    }
    dx[e] = acc;
  }
}

// Sum of every thread's v over a 256-thread block, in a fixed order.
__device__ float block_sum(float v) {
  __shared__ float part[256];
  part[threadIdx.x] = v;
  __syncthreads();
  for (int half = 128; half > 0; half /= 2) {
    if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
    __syncthreads();
  }
  const float total = part[0];
  __syncthreads();
  return total;
}

__global__ void __launch_bounds__(256) ref_bwd_filter(Conv2dDesc d, const float* __restrict__ x,
                                                      const float* __restrict__ dy, float* __restrict__ dw) {
  const i64 total = d.R * d.S * d.C * d.K, pixels = d.N * d.OH * d.OW;
  for (i64 e = blockIdx.x; e < total; e += gridDim.x) {
    const i64 k = e % d.K, c = (e / d.K) % d.C, s = (e / (d.K * d.C)) % d.S, r = e / (d.K * d.C * d.S);
    float acc = 0.f;
    for (i64 m = threadIdx.x; m < pixels; m += blockDim.x) {
      const i64 ow = m % d.OW, oh = (m / d.OW) % d.OH, n = m / (d.OW * d.OH);
      const i64 ih = oh * d.sh - d.pt + r * d.dh, iw = ow * d.sw - d.pl + s * d.dw;
      if (ih >= 0 && ih < d.H && iw >= 0 && iw < d.W)
        acc = fmaf(x[((n * d.H + ih) * d.W + iw) * d.C + c], dy[m * d.K + k], acc);
    }
    const float sum = block_sum(acc);
    if (threadIdx.x == 0) dw[e] = sum;
  }
}

__global__ void __launch_bounds__(256) ref_bias_grad(i64 pixels, i64 K, const float* __restrict__ dy,
                                                     float* __restrict__ db) {
  for (i64 k = blockIdx.x; k < K; k += gridDim.x) {
    float acc = 0.f;
    for (i64 m = threadIdx.x; m < pixels; m += blockDim.x) acc += dy[m * K + k];
    const float sum = block_sum(acc);
    if (threadIdx.x == 0) db[k] = sum;
  }
}

// ----------------------------------------------------------------------------- host side

constexpr i64 kSmall = i64{1} << 29;  // every coordinate term below this keeps sums inside int32

bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15) == 0; }

// The gather kernels' 32-bit arithmetic holds: pixel counts, reduction length,
// coordinates and tap offsets, grid rows.
bool gather_fits(const Conv2dDesc& d, i64 rows, i64 ncols) {
  const i64 Q_fwd = d.R * d.S * d.C, Q_bwd = d.R * d.S * d.K;
  return rows <= INT_MAX - 256 && Q_fwd <= INT_MAX - 64 && Q_bwd <= INT_MAX - 64 && d.H < kSmall && d.W < kSmall &&
         d.OH < kSmall && d.OW < kSmall && d.C < kSmall && d.K < kSmall && d.OH * d.sh < kSmall &&
         d.OW * d.sw < kSmall && d.H * d.sh < kSmall && d.W * d.sw < kSmall && d.R * d.dh < kSmall &&
         d.S * d.dw < kSmall && d.pt < kSmall && d.pl < kSmall && (ncols + 31) / 32 <= 65535;
}

template <bool TF32, int V>
void launch_gather_v(const Gather& g, cudaStream_t s) {
  const unsigned mt = static_cast<unsigned>((g.M + 127) / 128);
  if (g.ncols <= 32)
    gather_gemm<TF32, V, 1><<<dim3(mt, 1), 128, 0, s>>>(g);
  else
    gather_gemm<TF32, V, 2><<<dim3(mt, static_cast<unsigned>((g.ncols + 63) / 64)), 256, 0, s>>>(g);
}

void launch_gather(const Gather& g, bool tf32, bool vec4, cudaStream_t s) {
  if (tf32)
    vec4 ? launch_gather_v<true, 4>(g, s) : launch_gather_v<true, 1>(g, s);
  else
    vec4 ? launch_gather_v<false, 4>(g, s) : launch_gather_v<false, 1>(g, s);
}

int sm_count() {
  static int cached[64] = {0};
  int dev = 0;
  check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  if (dev < 0 || dev >= 64) dev = 0;
  if (cached[dev] == 0) {
    int n = 0;
    check_cuda(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
    cached[dev] = n > 0 ? n : 1;
  }
  return cached[dev];
}

template <bool TF32, int V>
void launch_filter_v(const Filter& f, bool big, unsigned splits, cudaStream_t s) {
  if (big)
    filter_gemm<TF32, V, 4, 2><<<dim3((f.Q + 127) / 128, (f.K + 63) / 64, splits), 256, 0, s>>>(f);
  else
    filter_gemm<TF32, V, 1, 1><<<dim3((f.Q + 31) / 32, (f.K + 31) / 32, splits), 32, 0, s>>>(f);
}

constexpr i64 kWorkspaceCap = i64{64} << 20;  // bytes of split partials, at most

// The split partials come from the device's stream-ordered pool. Its default
// release threshold of 0 hands memory back to the driver at every synchronisation,
// which would make each call map fresh pages; keep up to one workspace cached.
void keep_workspace_cached() {
  static bool done[64] = {false};
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64 || done[dev]) return;
  done[dev] = true;
  cudaMemPool_t pool;
  if (cudaDeviceGetDefaultMemPool(&pool, dev) != cudaSuccess) return;
  std::uint64_t have = 0, want = static_cast<std::uint64_t>(kWorkspaceCap);
  if (cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &have) == cudaSuccess && have < want)
    (void)cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &want);
}

}  // namespace

void conv2d_fwd_cuda(const Conv2dDesc& d, const float* x, const float* w, const float* bias, float* y,
                     Activation act, bool tf32, void* stream, const float* scale, const float* residual) {
  const auto s = static_cast<cudaStream_t>(stream);
  const i64 rows = d.N * d.OH * d.OW;
  if (rows == 0) return;
  const bool relu = act == Activation::Relu;
  if (!gather_fits(d, rows, d.K)) {
    ref_fwd<<<grid_for(rows * d.K), 256, 0, s>>>(d, x, w, bias, scale, residual, y, relu);
    check_launch("conv2d_fwd");
    return;
  }
  Gather g{};
  g.src = x;
  g.wt = w;
  g.bias = bias;
  g.scale = scale;
  g.residual = residual;
  g.out = y;
  g.rs_stride = d.C * d.K;
  g.ch_stride = static_cast<int>(d.K);
  g.col_stride = 1;
  g.SH = static_cast<int>(d.H);
  g.SW = static_cast<int>(d.W);
  g.SC = static_cast<int>(d.C);
  g.GH = static_cast<int>(d.OH);
  g.GW = static_cast<int>(d.OW);
  g.M = static_cast<int>(rows);
  g.S = static_cast<int>(d.S);
  g.Q = static_cast<int>(d.R * d.S * d.C);
  g.ncols = static_cast<int>(d.K);
  g.h_mul = static_cast<int>(d.sh);
  g.h_off = static_cast<int>(-d.pt);
  g.h_step = static_cast<int>(d.dh);
  g.h_div = 1;
  g.w_mul = static_cast<int>(d.sw);
  g.w_off = static_cast<int>(-d.pl);
  g.w_step = static_cast<int>(d.dw);
  g.w_div = 1;
  g.relu = relu;
  g.vec_out = d.K % 4 == 0 && aligned16(y);
  launch_gather(g, tf32, d.C % 4 == 0 && aligned16(x), s);
  check_launch("conv2d_fwd");
}

void conv2d_bwd_data_cuda(const Conv2dDesc& d, const float* dy, const float* w, float* dx, bool tf32,
                          void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  const i64 rows = d.N * d.H * d.W;
  if (rows == 0) return;
  if (!gather_fits(d, rows, d.C)) {
    ref_bwd_data<<<grid_for(rows * d.C), 256, 0, s>>>(d, dy, w, dx);
    check_launch("conv2d_bwd_data");
    return;
  }
  Gather g{};
  g.src = dy;
  g.wt = w;
  g.bias = nullptr;
  g.out = dx;
  g.rs_stride = d.C * d.K;
  g.ch_stride = 1;
  g.col_stride = static_cast<int>(d.K);
  g.SH = static_cast<int>(d.OH);
  g.SW = static_cast<int>(d.OW);
  g.SC = static_cast<int>(d.K);
  g.GH = static_cast<int>(d.H);
  g.GW = static_cast<int>(d.W);
  g.M = static_cast<int>(rows);
  g.S = static_cast<int>(d.S);
  g.Q = static_cast<int>(d.R * d.S * d.K);
  g.ncols = static_cast<int>(d.C);
  g.h_mul = 1;
  g.h_off = static_cast<int>(d.pt);
  g.h_step = static_cast<int>(-d.dh);
  g.h_div = static_cast<int>(d.sh);
  g.w_mul = 1;
  g.w_off = static_cast<int>(d.pl);
  g.w_step = static_cast<int>(-d.dw);
  g.w_div = static_cast<int>(d.sw);
  g.relu = false;
  g.vec_out = d.C % 4 == 0 && aligned16(dx);
  launch_gather(g, tf32, d.K % 4 == 0 && aligned16(dy), s);
  check_launch("conv2d_bwd_data");
}

void conv2d_bwd_filter_cuda(const Conv2dDesc& d, const float* x, const float* dy, float* dw, float* dbias,
                            bool tf32, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  const i64 M = d.N * d.OH * d.OW, Q = d.R * d.S * d.C, QK = Q * d.K;
  if (M == 0) {  // empty batch: the gradients are zero
    check_cuda(cudaMemsetAsync(dw, 0, sizeof(float) * QK, s), "conv2d_bwd_filter");
    if (dbias) check_cuda(cudaMemsetAsync(dbias, 0, sizeof(float) * d.K, s), "conv2d_bwd_filter");
    return;
  }
  const bool fits = M <= INT_MAX - 256 && Q <= INT_MAX - 256 && d.H < kSmall && d.W < kSmall && d.OH < kSmall &&
                    d.OW < kSmall && d.C < kSmall && d.K < kSmall && d.OH * d.sh < kSmall && d.OW * d.sw < kSmall &&
                    d.R * d.dh < kSmall && d.S * d.dw < kSmall && d.pt < kSmall && d.pl < kSmall &&
                    (d.K + 31) / 32 <= 65535;
  if (!fits) {
    const auto blocks = [](i64 n) { return static_cast<unsigned>(n < 1 ? 1 : (n > 65535 * 32 ? 65535 * 32 : n)); };
    ref_bwd_filter<<<blocks(QK), 256, 0, s>>>(d, x, dy, dw);
    check_launch("conv2d_bwd_filter");
    if (dbias) {
      ref_bias_grad<<<blocks(d.K), 256, 0, s>>>(M, d.K, dy, dbias);
      check_launch("conv2d_bwd_filter (bias)");
    }
    return;
  }

  Filter f{};
  f.x = x;
  f.dy = dy;
  f.H = static_cast<int>(d.H);
  f.W = static_cast<int>(d.W);
  f.C = static_cast<int>(d.C);
  f.S = static_cast<int>(d.S);
  f.K = static_cast<int>(d.K);
  f.Q = static_cast<int>(Q);
  f.OH = static_cast<int>(d.OH);
  f.OW = static_cast<int>(d.OW);
  f.M = static_cast<int>(M);
  f.sh = static_cast<int>(d.sh);
  f.sw = static_cast<int>(d.sw);
  f.dh = static_cast<int>(d.dh);
  f.dw = static_cast<int>(d.dw);
  f.pt = static_cast<int>(d.pt);
  f.pl = static_cast<int>(d.pl);

  // Enough blocks to fill the GPU a few times over, each split at least 8 pixel tiles long.
  const bool big = Q >= 128 && d.K >= 64;
  const i64 bm = big ? 128 : 32, bn = big ? 64 : 32;
  const i64 tiles = (M + kBK - 1) / kBK;
  const i64 blocks = ((Q + bm - 1) / bm) * ((d.K + bn - 1) / bn);
  const i64 want = 4 * static_cast<i64>(sm_count()) * (big ? 1 : 4);
  const i64 per_split_bytes = sizeof(float) * (QK + d.K);
  i64 splits = (want + blocks - 1) / blocks;
  splits = std::min<i64>(splits, (tiles + 7) / 8);
  splits = std::min<i64>(splits, std::max<i64>(1, kWorkspaceCap / per_split_bytes));
  splits = std::max<i64>(1, std::min<i64>(splits, 1024));
  i64 tps = (tiles + splits - 1) / splits;
  splits = (tiles + tps - 1) / tps;

  float* ws = nullptr;
  if (splits > 1) {
    keep_workspace_cached();
    if (cudaMallocAsync(reinterpret_cast<void**>(&ws), per_split_bytes * splits, s) != cudaSuccess) {
      (void)cudaGetLastError();  // no stream-ordered pool here: run unsplit instead
      ws = nullptr;
      splits = 1;
      tps = tiles;
    }
  }
  f.tiles_per_split = static_cast<int>(tps);
  f.out = ws ? ws : dw;
  f.split_stride = ws ? QK + d.K : 0;
  const bool vec4 = d.C % 4 == 0 && aligned16(x);
  const auto z = static_cast<unsigned>(splits);
  if (tf32)
    vec4 ? launch_filter_v<true, 4>(f, big, z, s) : launch_filter_v<true, 1>(f, big, z, s);
  else
    vec4 ? launch_filter_v<false, 4>(f, big, z, s) : launch_filter_v<false, 1>(f, big, z, s);
  check_launch("conv2d_bwd_filter");
  if (dbias) {
    const int rows_per_split = static_cast<int>(std::min<i64>(tps * kBK, M));
    bias_partial<<<dim3(static_cast<unsigned>((d.K + 31) / 32), z), dim3(32, 8), 0, s>>>(
        dy, f.M, f.K, rows_per_split, ws ? ws + QK : dbias, f.split_stride);
    check_launch("conv2d_bwd_filter (bias)");
  }
  if (ws) {
    reduce_splits<<<grid_for(QK + d.K), 256, 0, s>>>(ws, z, QK + d.K, QK, dbias ? static_cast<int>(d.K) : 0, dw,
                                                     dbias);
    check_launch("conv2d_bwd_filter (reduce)");
    check_cuda(cudaFreeAsync(ws, s), "conv2d_bwd_filter");
  }
}

}  // namespace convkit
