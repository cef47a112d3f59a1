// CUDA depthwise convolution: memory-bound, so every kernel maps consecutive threads to
// consecutive channels of one pixel (contiguous in NHWC), and every global access of a warp is
// coalesced. Forward: one thread per output element sums its R * S taps. Backward-data gathers:
// one thread per input element sums the outputs that read it (no atomics, deterministic).
// Backward-filter: blocks of 32 channels x 8 rows of pixels per tap (one more "tap" row of blocks
// for the bias), each block summing a contiguous share of the N * OH * OW output pixels and
// reducing its 8 rows in shared memory; shares are written apart and summed in a fixed order, so
// results are deterministic too. Indices are 32-bit when every tensor has fewer than 2^31
// elements, else 64-bit.
#include <algorithm>
#include <climits>

#include "ops/cuda_check.h"
#include "ops/depthwise2d.h"

namespace convkit {
namespace {

// The descriptor in the kernel's index type.
template <class I>
struct Geom {
  I N, H, W, C, R, S, M, K, sh, sw, dh, dw, pt, pl, OH, OW;
  explicit Geom(const Depthwise2dDesc& d)
      : N(static_cast<I>(d.N)), H(static_cast<I>(d.H)), W(static_cast<I>(d.W)), C(static_cast<I>(d.C)),
        R(static_cast<I>(d.R)), S(static_cast<I>(d.S)), M(static_cast<I>(d.M)), K(static_cast<I>(d.K)),
        sh(static_cast<I>(d.sh)), sw(static_cast<I>(d.sw)), dh(static_cast<I>(d.dh)), dw(static_cast<I>(d.dw)),
        pt(static_cast<I>(d.pt)), pl(static_cast<I>(d.pl)), OH(static_cast<I>(d.OH)), OW(static_cast<I>(d.OW)) {}
};

template <class I>
__global__ void depthwise_fwd(Geom<I> g, const float* __restrict__ x, const float* __restrict__ w,
                              const float* __restrict__ bias, float* __restrict__ y, int act) {
  const I total = g.N * g.OH * g.OW * g.K;
  for (I e = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<I>(gridDim.x) * blockDim.x) {
    const I j = e % g.K, p = e / g.K, ow = p % g.OW, q = p / g.OW, oh = q % g.OH, n = q / g.OH;
    const I c = j / g.M;
    float acc = bias ? bias[j] : 0.f;
    for (I r = 0; r < g.R; ++r) {
      const I h = oh * g.sh - g.pt + r * g.dh;
      if (h < 0 || h >= g.H) continue;
      const float* xrow = x + ((n * g.H + h) * g.W) * g.C + c;
      for (I s = 0; s < g.S; ++s) {
        const I v = ow * g.sw - g.pl + s * g.dw;
        if (v >= 0 && v < g.W) acc = fmaf(xrow[v * g.C], w[(r * g.S + s) * g.K + j], acc);
      }
    }
    if (act != 0) acc = acc < 0.f ? 0.f : acc;  // not fmaxf, which would turn NaN into 0
    if (act == 2) acc = acc > 6.f ? 6.f : acc;
    y[e] = acc;
  }
}

template <class I>
__global__ void depthwise_bwd_data(Geom<I> g, const float* __restrict__ dy, const float* __restrict__ w,
                                   float* __restrict__ dx) {
  const I total = g.N * g.H * g.W * g.C;
  for (I e = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<I>(gridDim.x) * blockDim.x) {
    const I c = e % g.C, p = e / g.C, v = p % g.W, q = p / g.W, h = q % g.H, n = q / g.H;
    float acc = 0.f;
    for (I r = 0; r < g.R; ++r) {
      const I th = h + g.pt - r * g.dh;
      if (th < 0 || th % g.sh != 0 || th / g.sh >= g.OH) continue;
      for (I s = 0; s < g.S; ++s) {
        const I tw = v + g.pl - s * g.dw;
        if (tw < 0 || tw % g.sw != 0 || tw / g.sw >= g.OW) continue;
        const float* dyp = dy + ((n * g.OH + th / g.sh) * g.OW + tw / g.sw) * g.K + c * g.M;
        const float* wp = w + (r * g.S + s) * g.K + c * g.M;
        for (I m = 0; m < g.M; ++m) acc = fmaf(dyp[m], wp[m], acc);
      }
    }
    dx[e] = acc;
  }
}

constexpr int kRows = 8;  // pixel rows of a backward-filter block (blockDim.y)

// out_w[z * stride + tap * K + j] = sum over the pixels p of split z of x(p, tap, j) * dy[p, j];
// tap R * S is the bias, out_b[z * stride + j] = sum of dy[p, j].
template <class I>
__global__ void depthwise_bwd_filter(Geom<I> g, const float* __restrict__ x, const float* __restrict__ dy,
                                     I per_split, float* __restrict__ out_w, float* __restrict__ out_b, I stride) {
  __shared__ float part[kRows][32];
  const I j = static_cast<I>(blockIdx.x) * 32 + threadIdx.x, tap = blockIdx.y;
  const I P = g.N * g.OH * g.OW, p0 = static_cast<I>(blockIdx.z) * per_split;
  const I p1 = p0 + per_split < P ? p0 + per_split : P;
  const bool bias = tap == g.R * g.S;
  const I r = bias ? 0 : tap / g.S, s = bias ? 0 : tap % g.S;
  float acc = 0.f;
  if (j < g.K) {
    const I c = j / g.M;
    for (I p = p0 + threadIdx.y; p < p1; p += kRows) {
      const float d = dy[p * g.K + j];
      if (bias) {
        acc += d;
        continue;
      }
      const I ow = p % g.OW, q = p / g.OW, oh = q % g.OH, n = q / g.OH;
      const I h = oh * g.sh - g.pt + r * g.dh, v = ow * g.sw - g.pl + s * g.dw;
      if (h >= 0 && h < g.H && v >= 0 && v < g.W) acc = fmaf(x[((n * g.H + h) * g.W + v) * g.C + c], d, acc);
    }
  }
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y != 0 || j >= g.K) return;
  float sum = 0.f;
  for (int i = 0; i < kRows; ++i) sum += part[i][threadIdx.x];
  if (bias)
    out_b[static_cast<I>(blockIdx.z) * stride + j] = sum;
  else
    out_w[static_cast<I>(blockIdx.z) * stride + tap * g.K + j] = sum;
}

// dw = the splits' sums, in split order; the bias gradient follows dw in each split's share.
__global__ void depthwise_sum_splits(const float* __restrict__ ws, int splits, long long stride, long long size,
                                     long long nb, float* __restrict__ dw, float* __restrict__ db) {
  for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < size + nb;
       e += static_cast<long long>(gridDim.x) * blockDim.x) {
    float s = 0.f;
    for (int z = 0; z < splits; ++z) s += ws[z * stride + e];
    if (e < size)
      dw[e] = s;
    else
      db[e - size] = s;
  }
}

bool fits_int(const Depthwise2dDesc& d) {
  const i64 big = std::max({d.N * d.H * d.W * d.C, d.N * d.OH * d.OW * d.K, d.R * d.S * d.K + d.K});
  return big < INT_MAX / 2 && d.H + d.pt + d.R * d.dh < INT_MAX / 2 && d.W + d.pl + d.S * d.dw < INT_MAX / 2;
}

int multiprocessors() {
  int dev = 0, n = 0;
  check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  return n;
}

template <class I>
void filter_grad(const Depthwise2dDesc& d, const float* x, const float* dy, float* dw, float* dbias,
                 cudaStream_t s) {
  const i64 P = d.N * d.OH * d.OW, size = d.R * d.S * d.K, nb = dbias ? d.K : 0;
  const i64 taps = d.R * d.S + (dbias ? 1 : 0), chunks = (d.K + 31) / 32;
  // Enough blocks to fill the GPU a few times over, each split at least 64 pixels long.
  const i64 want = 4 * static_cast<i64>(multiprocessors());
  i64 splits = std::max<i64>(1, std::min<i64>({(want + taps * chunks - 1) / (taps * chunks), (P + 63) / 64, 65535}));
  float* ws = nullptr;
  if (splits > 1 && cudaMallocAsync(reinterpret_cast<void**>(&ws), sizeof(float) * (size + d.K) * splits, s) !=
                        cudaSuccess) {
    (void)cudaGetLastError();  // no stream-ordered pool here: run unsplit instead
    ws = nullptr;
    splits = 1;
  }
  const i64 per_split = (P + splits - 1) / splits;
  const I stride = static_cast<I>(ws ? size + d.K : 0);
  const dim3 grid(static_cast<unsigned>(chunks), static_cast<unsigned>(taps), static_cast<unsigned>(splits));
  depthwise_bwd_filter<I><<<grid, dim3(32, kRows), 0, s>>>(Geom<I>(d), x, dy, static_cast<I>(per_split),
                                                           ws ? ws : dw, ws ? ws + size : dbias, stride);
  check_launch("depthwise2d_bwd_filter");
  if (ws) {
    depthwise_sum_splits<<<grid_for(size + nb), 256, 0, s>>>(ws, static_cast<int>(splits), size + d.K, size, nb,
                                                             dw, dbias);
    check_launch("depthwise2d_bwd_filter (reduce)");
    check_cuda(cudaFreeAsync(ws, s), "depthwise2d_bwd_filter");
  }
}

}  // namespace

void depthwise2d_fwd_cuda(const Depthwise2dDesc& d, const float* x, const float* w, const float* bias, float* y,
                          Activation act, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  const i64 total = d.N * d.OH * d.OW * d.K;
  if (total == 0) return;
  const int a = static_cast<int>(act);
  if (fits_int(d))
    depthwise_fwd<int><<<grid_for(total), 256, 0, s>>>(Geom<int>(d), x, w, bias, y, a);
  else
    depthwise_fwd<long long><<<grid_for(total), 256, 0, s>>>(Geom<long long>(d), x, w, bias, y, a);
  check_launch("depthwise2d_fwd");
}

void depthwise2d_bwd_data_cuda(const Depthwise2dDesc& d, const float* dy, const float* w, float* dx,
                               void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  const i64 total = d.N * d.H * d.W * d.C;
  if (total == 0) return;
  if (fits_int(d))
    depthwise_bwd_data<int><<<grid_for(total), 256, 0, s>>>(Geom<int>(d), dy, w, dx);
  else
    depthwise_bwd_data<long long><<<grid_for(total), 256, 0, s>>>(Geom<long long>(d), dy, w, dx);
  check_launch("depthwise2d_bwd_data");
}

void depthwise2d_bwd_filter_cuda(const Depthwise2dDesc& d, const float* x, const float* dy, float* dw,
                                 float* dbias, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  if (d.N * d.OH * d.OW == 0) {  // empty batch: the gradients are zero
    check_cuda(cudaMemsetAsync(dw, 0, sizeof(float) * d.R * d.S * d.K, s), "depthwise2d_bwd_filter");
    if (dbias) check_cuda(cudaMemsetAsync(dbias, 0, sizeof(float) * d.K, s), "depthwise2d_bwd_filter");
    return;
  }
  if (fits_int(d))
    filter_grad<int>(d, x, dy, dw, dbias, s);
  else
    filter_grad<long long>(d, x, dy, dw, dbias, s);
}

}  // namespace convkit
