// CUDA conv2d, correctness-first: one thread per output element, each looping
// over its whole reduction with 64-bit offsets (grid-stride loops, so any size
// launches). These are the reference the tiled tensor-core kernels are checked
// against; tf32 is accepted and currently computes in strict fp32.
#include "ops/conv2d.h"
#include "ops/cuda_check.h"

namespace convkit {
namespace {

__global__ void fwd_kernel(Conv2dDesc d, const float* __restrict__ x, const float* __restrict__ w,
                           const float* __restrict__ bias, float* __restrict__ y, bool relu) {
  const i64 total = d.N * d.OH * d.OW * d.K;
  for (i64 e = blockIdx.x * (i64)blockDim.x + threadIdx.x; e < total; e += (i64)gridDim.x * blockDim.x) {
    const i64 k = e % d.K, ow = (e / d.K) % d.OW, oh = (e / (d.K * d.OW)) % d.OH, n = e / (d.K * d.OW * d.OH);
    float acc = bias ? bias[k] : 0.f;
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
    y[e] = relu ? fmaxf(acc, 0.f) : acc;
  }
}

// dx[n, ih, iw, c] = sum over taps (r, s) whose output position is exact and in range.
__global__ void bwd_data_kernel(Conv2dDesc d, const float* __restrict__ dy, const float* __restrict__ w,
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

// Sum of every thread's `v` (blockDim.x == 256), in a fixed order; all threads must call it.
__device__ float block_sum(float v) {
  __shared__ float part[256];
  part[threadIdx.x] = v;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
    __syncthreads();
  }
  const float total = part[0];
  __syncthreads();  // part is reused by the next call
  return total;
}

// One block per weight element (r, s, c, k): its threads split the N*OH*OW pixels
// and reduce in shared memory, so the sum order is fixed (deterministic).
__global__ void bwd_filter_kernel(Conv2dDesc d, const float* __restrict__ x, const float* __restrict__ dy,
                                  float* __restrict__ dw) {
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
    const float total_e = block_sum(acc);
    if (threadIdx.x == 0) dw[e] = total_e;
  }
}

__global__ void bias_grad_kernel(i64 pixels, i64 K, const float* __restrict__ dy, float* __restrict__ db) {
  for (i64 k = blockIdx.x; k < K; k += gridDim.x) {
    float acc = 0.f;
    for (i64 m = threadIdx.x; m < pixels; m += blockDim.x) acc += dy[m * K + k];
    const float total = block_sum(acc);
    if (threadIdx.x == 0) db[k] = total;
  }
}

unsigned blocks_for(i64 n) { return static_cast<unsigned>(n < 1 ? 1 : (n > 65535 * 32 ? 65535 * 32 : n)); }

}  // namespace

void conv2d_fwd_cuda(const Conv2dDesc& d, const float* x, const float* w, const float* bias, float* y,
                     Activation act, bool /*tf32*/, void* stream) {
  const i64 total = d.N * d.OH * d.OW * d.K;
  if (total == 0) return;
  fwd_kernel<<<grid_for(total), 256, 0, static_cast<cudaStream_t>(stream)>>>(d, x, w, bias, y, act == Activation::Relu);
  check_launch("conv2d_fwd");
}

void conv2d_bwd_data_cuda(const Conv2dDesc& d, const float* dy, const float* w, float* dx, bool /*tf32*/,
                          void* stream) {
  const i64 total = d.N * d.H * d.W * d.C;
  if (total == 0) return;
  bwd_data_kernel<<<grid_for(total), 256, 0, static_cast<cudaStream_t>(stream)>>>(d, dy, w, dx);
  check_launch("conv2d_bwd_data");
}

void conv2d_bwd_filter_cuda(const Conv2dDesc& d, const float* x, const float* dy, float* dw, float* dbias,
                            bool /*tf32*/, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  // N == 0 still writes zeros: the blocks run with an empty pixel loop.
  bwd_filter_kernel<<<blocks_for(d.R * d.S * d.C * d.K), 256, 0, s>>>(d, x, dy, dw);
  check_launch("conv2d_bwd_filter");
  if (dbias) {
    bias_grad_kernel<<<blocks_for(d.K), 256, 0, s>>>(d.N * d.OH * d.OW, d.K, dy, dbias);
    check_launch("conv2d_bwd_filter (bias)");
  }
}

}  // namespace convkit
