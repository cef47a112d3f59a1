// CUDA batch normalisation on (M, C) row-major views, the contract of batch_norm.h with the sums
// of batch_norm_cpu.cpp: per channel, each thread adds its rows in float over runs of kRun rows
// and the runs in double, the mean is summed as deviations from the first row, the variance about
// the double mean. Blocks are 32 channels x kRows rows of threads, so a warp reads 32 consecutive
// channels of a row (coalesced). Every sum has a fixed order (no atomics): results are
// deterministic. A statistic over many rows is cut into splits, one block per (32 channels,
// split), whose double partial sums land in a stream-ordered workspace and are added in split
// order; with one split (few rows, or no memory pool) one block per 32 channels does the whole
// pass, statistics and output, alone. Indices are 32-bit when M * C < 2^31, else 64-bit.
#include <algorithm>
#include <climits>

#include "ops/batch_norm.h"
#include "ops/cuda_check.h"

namespace convkit {
namespace {

constexpr int kRows = 8;   // rows of threads in a block
constexpr int kRun = 64;   // a thread's rows summed in float before they join its double total

// The block's sums over rows [lo, hi) of the two terms f(m, t0, t1) adds for the thread's channel,
// returned in threads of row 0 (0 elsewhere). Every thread of the block must call it.
template <class I, class F>
__device__ void column_sums(I lo, I hi, F f, double& s0, double& s1) {
  __shared__ double part[2][kRows][32];
  double d0 = 0, d1 = 0;
  float f0 = 0.f, f1 = 0.f;
  int run = 0;
  for (I m = lo + static_cast<I>(threadIdx.y); m < hi; m += kRows) {
    f(m, f0, f1);
    if (++run == kRun) {
      d0 += f0, d1 += f1;
      f0 = f1 = 0.f;
      run = 0;
    }
  }
  part[0][threadIdx.y][threadIdx.x] = d0 + f0;
  part[1][threadIdx.y][threadIdx.x] = d1 + f1;
  __syncthreads();
  s0 = s1 = 0;
  if (threadIdx.y == 0)
    for (int r = 0; r < kRows; ++r) s0 += part[0][r][threadIdx.x], s1 += part[1][r][threadIdx.x];
  __syncthreads();  // part is reused by the next call
}

// The terms of each pass, for channel c of row m.
template <class I>
struct Terms {
  I C;
  const float *a, *b;  // x (forward) or dy and xhat (backward)
  __device__ void shifted(I m, I c, float shift, float& t) const { t += a[m * C + c] - shift; }
  __device__ void squared(I m, I c, double mu, float& t) const {
    const float dev = static_cast<float>(a[m * C + c] - mu);
    t += dev * dev;
  }
  __device__ void gradients(I m, I c, float& db, float& dg) const {
    const float g = a[m * C + c];
    db += g;
    dg += g * b[m * C + c];
  }
};

__device__ __forceinline__ float normalised(float x, double mu, float inv) { return static_cast<float>(x - mu) * inv; }

// The forward's per-channel results from the sums, shared by both paths.
__device__ __forceinline__ double mean_of(long long M, float shift, double sum) { return M ? shift + sum / M : 0.0; }
__device__ __forceinline__ float var_of(long long M, double sq) { return M ? static_cast<float>(sq / M) : 0.f; }
__device__ __forceinline__ float inv_of(float var, float eps) {
  return static_cast<float>(1.0 / sqrt(static_cast<double>(var) + eps));
}

// The whole forward for 32 channels in one block: both statistics, then xhat and y.
template <class I>
__global__ void fwd_whole(I M, I C, const float* __restrict__ x, const float* __restrict__ gamma,
                          const float* __restrict__ beta, float eps, float* __restrict__ y, float* __restrict__ xhat,
                          float* __restrict__ mean, float* __restrict__ var, float* __restrict__ inv) {
  __shared__ double mu_of[32];
  __shared__ float inv_at[32];
  const I c = static_cast<I>(blockIdx.x) * 32 + threadIdx.x;
  const bool in = c < C;
  const Terms<I> t{C, x, nullptr};
  const float shift = in && M ? x[c] : 0.f;
  double s, unused;
  column_sums<I>(0, M, [&](I m, float& t0, float&) { if (in) t.shifted(m, c, shift, t0); }, s, unused);
  if (threadIdx.y == 0) {
    mu_of[threadIdx.x] = mean_of(M, shift, s);
    if (in) mean[c] = static_cast<float>(mu_of[threadIdx.x]);
  }
  __syncthreads();
  const double mu = mu_of[threadIdx.x];
  column_sums<I>(0, M, [&](I m, float& t0, float&) { if (in) t.squared(m, c, mu, t0); }, s, unused);
  if (threadIdx.y == 0) {
    const float v = var_of(M, s);
    inv_at[threadIdx.x] = inv_of(v, eps);
    if (in) var[c] = v, inv[c] = inv_at[threadIdx.x];
  }
  __syncthreads();
  if (!in) return;
  const float iv = inv_at[threadIdx.x], g = gamma ? gamma[c] : 1.f, b = beta ? beta[c] : 0.f;
  for (I m = threadIdx.y; m < M; m += kRows) {
    const float h = normalised(x[m * C + c], mu, iv);
    xhat[m * C + c] = h;
    y[m * C + c] = (gamma ? h * g : h) + b;
  }
}

// One split's share of a forward statistic: the sum of x - x[0] (mu null) or of (x - mu)^2.
template <class I>
__global__ void fwd_partial(I M, I C, I per_split, const float* __restrict__ x, const double* __restrict__ mu,
                            double* __restrict__ part) {
  const I c = static_cast<I>(blockIdx.x) * 32 + threadIdx.x, lo = static_cast<I>(blockIdx.y) * per_split;
  const I hi = lo + per_split < M ? lo + per_split : M;
  const bool in = c < C;
  const Terms<I> t{C, x, nullptr};
  double s, unused;
  if (mu) {
    const double mc = in ? mu[c] : 0.0;
    column_sums<I>(lo, hi, [&](I m, float& t0, float&) { if (in) t.squared(m, c, mc, t0); }, s, unused);
  } else {
    const float shift = in ? x[c] : 0.f;
    column_sums<I>(lo, hi, [&](I m, float& t0, float&) { if (in) t.shifted(m, c, shift, t0); }, s, unused);
  }
  if (threadIdx.y == 0 && in) part[static_cast<I>(blockIdx.y) * C + c] = s;
}

// The splits' partial sums added in split order: the mean (mu still null) or the variance and inv.
__global__ void fwd_finish(long long M, long long C, int splits, const float* __restrict__ x,
                           const double* __restrict__ part, double* __restrict__ mu, bool second, float eps,
                           float* __restrict__ mean, float* __restrict__ var, float* __restrict__ inv) {
  for (long long c = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; c < C;
       c += static_cast<long long>(gridDim.x) * blockDim.x) {
    double s = 0;
    for (int z = 0; z < splits; ++z) s += part[z * C + c];
    if (!second) {
      mu[c] = mean_of(M, x[c], s);
      mean[c] = static_cast<float>(mu[c]);
    } else {
      var[c] = var_of(M, s);
      inv[c] = inv_of(var[c], eps);
    }
  }
}

template <class I>
__global__ void fwd_normalise(I M, I C, const float* __restrict__ x, const double* __restrict__ mu,
                              const float* __restrict__ inv, const float* __restrict__ gamma,
                              const float* __restrict__ beta, float* __restrict__ y, float* __restrict__ xhat) {
  for (I e = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; e < M * C;
       e += static_cast<I>(gridDim.x) * blockDim.x) {
    const I c = e % C;
    const float h = normalised(x[e], mu[c], inv[c]);
    xhat[e] = h;
    y[e] = (gamma ? h * gamma[c] : h) + (beta ? beta[c] : 0.f);
  }
}

// dx of one element from the channel's sums, as batch_norm_cpu.cpp computes it.
__device__ __forceinline__ float input_grad(float g, float h, long long M, float db, float dg, float inv,
                                            const float* gamma, long long c) {
  const float k = gamma ? gamma[c] * inv : inv, a = db / static_cast<float>(M), b = dg / static_cast<float>(M);
  return k * (g - a - h * b);
}

// The whole backward for 32 channels in one block: dbeta, dgamma, then dx.
template <class I>
__global__ void bwd_whole(I M, I C, const float* __restrict__ dy, const float* __restrict__ xhat,
                          const float* __restrict__ inv, const float* __restrict__ gamma, float* __restrict__ dx,
                          float* __restrict__ dgamma, float* __restrict__ dbeta) {
  __shared__ float sums[2][32];
  const I c = static_cast<I>(blockIdx.x) * 32 + threadIdx.x;
  const bool in = c < C;
  const Terms<I> t{C, dy, xhat};
  double db, dg;
  column_sums<I>(0, M, [&](I m, float& t0, float& t1) { if (in) t.gradients(m, c, t0, t1); }, db, dg);
  if (threadIdx.y == 0) {
    sums[0][threadIdx.x] = static_cast<float>(db);
    sums[1][threadIdx.x] = static_cast<float>(dg);
    if (in) dbeta[c] = sums[0][threadIdx.x], dgamma[c] = sums[1][threadIdx.x];
  }
  __syncthreads();
  if (!in || !dx) return;
  for (I m = threadIdx.y; m < M; m += kRows)
    dx[m * C + c] = input_grad(dy[m * C + c], xhat[m * C + c], M, sums[0][threadIdx.x], sums[1][threadIdx.x],
                               inv[c], gamma, c);
}

// One split's share of the backward's sums: dy and dy * xhat.
template <class I>
__global__ void bwd_partial(I M, I C, I per_split, const float* __restrict__ dy, const float* __restrict__ xhat,
                            double* __restrict__ part) {
  const I c = static_cast<I>(blockIdx.x) * 32 + threadIdx.x, lo = static_cast<I>(blockIdx.y) * per_split;
  const I hi = lo + per_split < M ? lo + per_split : M;
  const bool in = c < C;
  const Terms<I> t{C, dy, xhat};
  double db, dg;
  column_sums<I>(lo, hi, [&](I m, float& t0, float& t1) { if (in) t.gradients(m, c, t0, t1); }, db, dg);
  if (threadIdx.y == 0 && in) {
    part[(static_cast<I>(blockIdx.y) * 2) * C + c] = db;
    part[(static_cast<I>(blockIdx.y) * 2 + 1) * C + c] = dg;
  }
}

__global__ void bwd_finish(long long C, int splits, const double* __restrict__ part, float* __restrict__ dgamma,
                           float* __restrict__ dbeta) {
  for (long long c = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; c < C;
       c += static_cast<long long>(gridDim.x) * blockDim.x) {
    double db = 0, dg = 0;
    for (int z = 0; z < splits; ++z) db += part[(z * 2) * C + c], dg += part[(z * 2 + 1) * C + c];
    dbeta[c] = static_cast<float>(db);
    dgamma[c] = static_cast<float>(dg);
  }
}

template <class I>
__global__ void bwd_input(I M, I C, const float* __restrict__ dy, const float* __restrict__ xhat,
                          const float* __restrict__ inv, const float* __restrict__ gamma,
                          const float* __restrict__ dgamma, const float* __restrict__ dbeta, float* __restrict__ dx) {
  for (I e = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; e < M * C;
       e += static_cast<I>(gridDim.x) * blockDim.x) {
    const I c = e % C;
    dx[e] = input_grad(dy[e], xhat[e], M, dbeta[c], dgamma[c], inv[c], gamma, c);
  }
}

// The fused activation of pointwise.h on one value (sigmoid as exp(-|v|) over 1 + itself, which never
// overflows).
__device__ inline float activate(const PointwiseAct& act, float v) {
  if (!act.on) return v;
  if (act.f == Pointwise::Clamp) return v < act.lo ? act.lo : (v > act.hi ? act.hi : v);
  const float e = expf(-fabsf(v)), sig = (v >= 0.f ? 1.f : e) / (1.f + e);
  return act.f == Pointwise::Sigmoid ? sig : v * sig;
}

// Inference: each block takes the scale and shift of its 32 channels once, then a share of the rows.
template <class I>
__global__ void infer(I M, I C, I per_block, const float* __restrict__ x, const float* __restrict__ mean,
                      const float* __restrict__ var, const float* __restrict__ gamma, const float* __restrict__ beta,
                      float eps, float* __restrict__ y, PointwiseAct act) {
  const I c = static_cast<I>(blockIdx.x) * 32 + threadIdx.x, lo = static_cast<I>(blockIdx.y) * per_block;
  if (c >= C) return;
  const float iv = inv_of(var[c], eps), s = gamma ? gamma[c] * iv : iv;
  const float shift = (beta ? beta[c] : 0.f) - mean[c] * s;
  const I hi = lo + per_block < M ? lo + per_block : M;
  for (I m = lo + threadIdx.y; m < hi; m += kRows) y[m * C + c] = activate(act, x[m * C + c] * s + shift);
}

// pointwise_cuda's pass: y = act(y) over n values.
__global__ void __launch_bounds__(256) activate_all(long long n, float* __restrict__ y, PointwiseAct act) {
  for (long long e = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += static_cast<long long>(gridDim.x) * blockDim.x)
    y[e] = activate(act, y[e]);
}

bool fits_int(i64 M, i64 C) { return M * C < INT_MAX / 2 && M < INT_MAX / 2 - kRows; }

int multiprocessors() {
  int dev = 0, n = 0;
  check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  return n;
}

// How many splits the rows get: enough blocks to fill the GPU a few times over, each split at
// least 32 rows per thread row.
i64 splits_for(i64 M, i64 C) {
  const i64 tiles = (C + 31) / 32, want = 4 * static_cast<i64>(multiprocessors());
  return std::max<i64>(1, std::min<i64>({(want + tiles - 1) / tiles, M / (32 * kRows), 65535}));
}

// A stream-ordered workspace of `n` doubles, or null when the device has no memory pool.
double* workspace(i64 n, cudaStream_t s) {
  double* ws = nullptr;
  if (cudaMallocAsync(reinterpret_cast<void**>(&ws), sizeof(double) * static_cast<size_t>(n), s) != cudaSuccess) {
    (void)cudaGetLastError();
    return nullptr;
  }
  return ws;
}

dim3 tiles(i64 C, i64 splits) { return dim3(static_cast<unsigned>((C + 31) / 32), static_cast<unsigned>(splits)); }

template <class I>
void forward(i64 M, i64 C, const float* x, const float* gamma, const float* beta, float eps, float* y, float* xhat,
             float* mean, float* var, float* inv, cudaStream_t s) {
  const i64 splits = splits_for(M, C);
  double* ws = splits > 1 ? workspace(splits * C + C, s) : nullptr;
  const dim3 block(32, kRows);
  if (!ws) {
    fwd_whole<I><<<tiles(C, 1), block, 0, s>>>(M, C, x, gamma, beta, eps, y, xhat, mean, var, inv);
    check_launch("batch_norm_fwd");
    return;
  }
  const I per_split = static_cast<I>((M + splits - 1) / splits);
  double* mu = ws + splits * C;
  const auto z = static_cast<int>(splits);
  fwd_partial<I><<<tiles(C, splits), block, 0, s>>>(M, C, per_split, x, nullptr, ws);
  fwd_finish<<<grid_for(C), 256, 0, s>>>(M, C, z, x, ws, mu, false, eps, mean, var, inv);
  fwd_partial<I><<<tiles(C, splits), block, 0, s>>>(M, C, per_split, x, mu, ws);
  fwd_finish<<<grid_for(C), 256, 0, s>>>(M, C, z, x, ws, mu, true, eps, mean, var, inv);
  fwd_normalise<I><<<grid_for(M * C), 256, 0, s>>>(M, C, x, mu, inv, gamma, beta, y, xhat);
  check_launch("batch_norm_fwd");
  check_cuda(cudaFreeAsync(ws, s), "batch_norm_fwd");
}

template <class I>
void backward(i64 M, i64 C, const float* dy, const float* xhat, const float* inv, const float* gamma, float* dx,
              float* dgamma, float* dbeta, cudaStream_t s) {
  const i64 splits = splits_for(M, C);
  double* ws = splits > 1 ? workspace(splits * 2 * C, s) : nullptr;
  const dim3 block(32, kRows);
  if (!ws) {
    bwd_whole<I><<<tiles(C, 1), block, 0, s>>>(M, C, dy, xhat, inv, gamma, dx, dgamma, dbeta);
    check_launch("batch_norm_bwd");
    return;
  }
  bwd_partial<I><<<tiles(C, splits), block, 0, s>>>(M, C, static_cast<I>((M + splits - 1) / splits), dy, xhat, ws);
  bwd_finish<<<grid_for(C), 256, 0, s>>>(C, static_cast<int>(splits), ws, dgamma, dbeta);
  if (dx) bwd_input<I><<<grid_for(M * C), 256, 0, s>>>(M, C, dy, xhat, inv, gamma, dgamma, dbeta, dx);
  check_launch("batch_norm_bwd");
  check_cuda(cudaFreeAsync(ws, s), "batch_norm_bwd");
}

template <class I>
void inference(i64 M, i64 C, const float* x, const float* mean, const float* var, const float* gamma,
               const float* beta, float eps, float* y, const PointwiseAct& act, cudaStream_t s) {
  const i64 splits = std::max<i64>(1, std::min<i64>((M + 32 * kRows - 1) / (32 * kRows), 65535));
  infer<I><<<tiles(C, splits), dim3(32, kRows), 0, s>>>(M, C, static_cast<I>((M + splits - 1) / splits), x, mean,
                                                         var, gamma, beta, eps, y, act);
  check_launch("batch_norm_infer");
}

}  // namespace

void batch_norm_fwd_cuda(i64 M, i64 C, const float* x, const float* gamma, const float* beta, float eps, float* y,
                         float* xhat, float* mean, float* var, float* inv, void* stream) {
  if (C == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  if (fits_int(M, C))
    forward<int>(M, C, x, gamma, beta, eps, y, xhat, mean, var, inv, s);
  else
    forward<long long>(M, C, x, gamma, beta, eps, y, xhat, mean, var, inv, s);
}

void batch_norm_bwd_cuda(i64 M, i64 C, const float* dy, const float* xhat, const float* inv, const float* gamma,
                         float* dx, float* dgamma, float* dbeta, void* stream) {
  if (C == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  if (fits_int(M, C))
    backward<int>(M, C, dy, xhat, inv, gamma, dx, dgamma, dbeta, s);
  else
    backward<long long>(M, C, dy, xhat, inv, gamma, dx, dgamma, dbeta, s);
}

void pointwise_cuda(const PointwiseAct& act, i64 n, float* y, void* stream) {
  if (!act.on || n == 0) return;
  activate_all<<<grid_for(n), 256, 0, static_cast<cudaStream_t>(stream)>>>(n, y, act);
  check_launch("pointwise");
}

void batch_norm_infer_cuda(i64 M, i64 C, const float* x, const float* mean, const float* var, const float* gamma,
                           const float* beta, float eps, float* y, const PointwiseAct& act, void* stream) {
  if (M == 0 || C == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  if (fits_int(M, C))
    inference<int>(M, C, x, mean, var, gamma, beta, eps, y, act, s);
  else
    inference<long long>(M, C, x, mean, var, gamma, beta, eps, y, act, s);
}

}  // namespace convkit
