// CUDA pooling, same rules and summation orders as pool2d_cpu.cpp. Forward: one
// thread per output pixel and group of V channels (V = 4: float4 / int4 accesses
// when C % 4 == 0 and the pointers are 16-byte aligned). Backward gathers: one
// thread per input pixel and channel group sums over the windows that contain it,
// in the CPU's output order, so there are no atomics and results are deterministic.
// Indices are 32-bit when every tensor has at most 2^30 elements, else 64-bit.
#include <cstdint>

#include "ops/cuda_check.h"
#include "ops/pool2d.h"

namespace convkit {
namespace {

template <int V>
__device__ __forceinline__ void load(const float* p, float (&v)[V]) {
  if constexpr (V == 4) {
    const float4 t = *reinterpret_cast<const float4*>(p);
    v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
  } else {
    v[0] = *p;
  }
}

template <int V>
__device__ __forceinline__ void load(const std::int32_t* p, std::int32_t (&v)[V]) {
  if constexpr (V == 4) {
    const int4 t = *reinterpret_cast<const int4*>(p);
    v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
  } else {
    v[0] = *p;
  }
}

template <int V>
__device__ __forceinline__ void store(float* p, const float (&v)[V]) {
  if constexpr (V == 4)
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  else
    *p = v[0];
}

template <int V>
__device__ __forceinline__ void store(std::int32_t* p, const std::int32_t (&v)[V]) {
  if constexpr (V == 4)
    *reinterpret_cast<int4*>(p) = make_int4(v[0], v[1], v[2], v[3]);
  else
    *p = v[0];
}

// The descriptor in the kernel's index type.
template <class I>
struct Geom {
  I N, H, W, C, R, S, sh, sw, pt, pl, OH, OW;
  __device__ explicit Geom(const Pool2dDesc& d)
      : N(static_cast<I>(d.N)), H(static_cast<I>(d.H)), W(static_cast<I>(d.W)), C(static_cast<I>(d.C)),
        R(static_cast<I>(d.R)), S(static_cast<I>(d.S)), sh(static_cast<I>(d.sh)), sw(static_cast<I>(d.sw)),
        pt(static_cast<I>(d.pt)), pl(static_cast<I>(d.pl)), OH(static_cast<I>(d.OH)), OW(static_cast<I>(d.OW)) {}
};

// Input cells [lo, hi) of window o, clipped to the input.
template <class I>
__device__ __forceinline__ void window(I o, I stride, I pad, I size, I in, I& lo, I& hi) {
  const I start = o * stride - pad;
  lo = start < 0 ? 0 : start;
  hi = start + size < in ? start + size : in;
}

// Windows [lo, hi] (inclusive) that contain input cell i; empty when lo > hi.
template <class I>
__device__ __forceinline__ void covering(I i, I stride, I pad, I size, I out, I& lo, I& hi) {
  const I num = i + pad - size + 1;  // o * stride >= num
  lo = num <= 0 ? 0 : (num + stride - 1) / stride;
  hi = (i + pad) / stride;  // i + pad >= 0
  if (hi > out - 1) hi = out - 1;
}

// Output element e of a forward pass (one output pixel, one group of V channels): its image n,
// channel group cg and the input cells [h0, h1) x [w0, w1) its window covers.
template <int V, class I>
struct OutputCell {
  I n, cg, h0, h1, w0, w1;
  __device__ OutputCell(const Geom<I>& d, I e) {
    const I CG = d.C / V, pix = e / CG, ow = pix % d.OW, oh = (pix / d.OW) % d.OH;
    cg = e % CG;
    n = pix / (d.OW * d.OH);
    window(oh, d.sh, d.pt, d.R, d.H, h0, h1);
    window(ow, d.sw, d.pl, d.S, d.W, w0, w1);
  }
};

// Input element e of a backward pass: its image n, channel group cg, cell (ih, iw) and the
// windows [oh0, oh1] x [ow0, ow1] that contain it.
template <int V, class I>
struct InputCell {
  I n, cg, ih, iw, oh0, oh1, ow0, ow1;
  __device__ InputCell(const Geom<I>& d, I e) {
    const I CG = d.C / V, pix = e / CG;
    cg = e % CG;
    iw = pix % d.W;
    ih = (pix / d.W) % d.H;
    n = pix / (d.W * d.H);
    covering(ih, d.sh, d.pt, d.R, d.OH, oh0, oh1);
    covering(iw, d.sw, d.pl, d.S, d.OW, ow0, ow1);
  }
};

template <int V>
__device__ __forceinline__ void zero(float (&v)[V]) {
#pragma unroll
  for (int l = 0; l < V; ++l) v[l] = 0.f;
}

#define GRID_STRIDE(I, e, total)                                                         \
  for (I e = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x); e < (total); \
       e += static_cast<I>(gridDim.x) * static_cast<I>(blockDim.x))

template <int V, class I>
__global__ void max_fwd(Pool2dDesc desc, const float* __restrict__ x, float* __restrict__ y,
                        std::int32_t* __restrict__ argmax) {
  const Geom<I> d(desc);
  GRID_STRIDE(I, e, d.N * d.OH * d.OW * (d.C / V)) {
    const OutputCell<V, I> o(d, e);
    const I h0 = o.h0, h1 = o.h1, w0 = o.w0, w1 = o.w1;
    const float* img = x + o.n * d.H * d.W * d.C + o.cg * V;
    // The window is never all padding, so its first cell seeds the max.
    float m[V];
    std::int32_t best[V];
    load(img + (h0 * d.W + w0) * d.C, m);
#pragma unroll
    for (int l = 0; l < V; ++l) best[l] = static_cast<std::int32_t>(h0 * d.W + w0);
    for (I ih = h0; ih < h1; ++ih)
      for (I iw = w0; iw < w1; ++iw) {
        float v[V];
        load(img + (ih * d.W + iw) * d.C, v);
        const auto idx = static_cast<std::int32_t>(ih * d.W + iw);
#pragma unroll
        for (int l = 0; l < V; ++l)
          if (v[l] > m[l] || (v[l] != v[l] && m[l] == m[l])) {  // first of equals stays; NaN wins
            m[l] = v[l];
            best[l] = idx;
          }
      }
    store(y + e * V, m);
    if (argmax) store(argmax + e * V, best);
  }
}

template <int V, class I>
__global__ void max_bwd(Pool2dDesc desc, const float* __restrict__ dy, const std::int32_t* __restrict__ argmax,
                        float* __restrict__ dx) {
  const Geom<I> d(desc);
  GRID_STRIDE(I, e, d.N * d.H * d.W * (d.C / V)) {
    const InputCell<V, I> c(d, e);
    const auto me = static_cast<std::int32_t>(c.ih * d.W + c.iw);
    float acc[V];
    zero(acc);
    for (I oh = c.oh0; oh <= c.oh1; ++oh)
      for (I ow = c.ow0; ow <= c.ow1; ++ow) {
        const I o = ((c.n * d.OH + oh) * d.OW + ow) * d.C + c.cg * V;
        std::int32_t a[V];
        float g[V];
        load(argmax + o, a);
        load(dy + o, g);
#pragma unroll
        for (int l = 0; l < V; ++l)
          if (a[l] == me) acc[l] += g[l];
      }
    store(dx + e * V, acc);
  }
}

// How many argmax entries lie outside their own output's window: per-thread counts, one atomic
// add each (integer, so the total does not depend on the order).
template <int V, class I>
__global__ void argmax_outside(Pool2dDesc desc, const std::int32_t* __restrict__ argmax,
                               unsigned long long* __restrict__ count) {
  const Geom<I> d(desc);
  unsigned long long outside = 0;
  GRID_STRIDE(I, e, d.N * d.OH * d.OW * (d.C / V)) {
    const OutputCell<V, I> o(d, e);
    std::int32_t a[V];
    load(argmax + e * V, a);
#pragma unroll
    for (int l = 0; l < V; ++l) {
      const I cell = a[l], ih = cell / d.W, iw = cell - ih * d.W;
      outside += cell < 0 || ih < o.h0 || ih >= o.h1 || iw < o.w0 || iw >= o.w1;
    }
  }
  if (outside) atomicAdd(count, outside);
}

template <int V, class I>
__global__ void avg_fwd(Pool2dDesc desc, const float* __restrict__ x, float* __restrict__ y) {
  const Geom<I> d(desc);
  GRID_STRIDE(I, e, d.N * d.OH * d.OW * (d.C / V)) {
    const OutputCell<V, I> o(d, e);
    const float* img = x + o.n * d.H * d.W * d.C + o.cg * V;
    float acc[V];
    zero(acc);
    for (I ih = o.h0; ih < o.h1; ++ih)
      for (I iw = o.w0; iw < o.w1; ++iw) {
        float v[V];
        load(img + (ih * d.W + iw) * d.C, v);
#pragma unroll
        for (int l = 0; l < V; ++l) acc[l] += v[l];
      }
    const float inv = 1.f / static_cast<float>((o.h1 - o.h0) * (o.w1 - o.w0));
#pragma unroll
    for (int l = 0; l < V; ++l) acc[l] *= inv;
    store(y + e * V, acc);
  }
}

template <int V, class I>
__global__ void avg_bwd(Pool2dDesc desc, const float* __restrict__ dy, float* __restrict__ dx) {
  const Geom<I> d(desc);
  GRID_STRIDE(I, e, d.N * d.H * d.W * (d.C / V)) {
    const InputCell<V, I> c(d, e);
    float acc[V];
    zero(acc);
    for (I oh = c.oh0; oh <= c.oh1; ++oh) {
      I h0, h1;
      window(oh, d.sh, d.pt, d.R, d.H, h0, h1);
      for (I ow = c.ow0; ow <= c.ow1; ++ow) {
        I w0, w1;
        window(ow, d.sw, d.pl, d.S, d.W, w0, w1);
        const float inv = 1.f / static_cast<float>((h1 - h0) * (w1 - w0));
        float g[V];
        load(dy + ((c.n * d.OH + oh) * d.OW + ow) * d.C + c.cg * V, g);
        // Multiply then add, never fused: the same rounding as the CPU twin.
#pragma unroll
        for (int l = 0; l < V; ++l) acc[l] += __fmul_rn(g[l], inv);
      }
    }
    store(dx + e * V, acc);
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15) == 0; }

// 32-bit indices when both tensors (and the grid-stride step past them) stay below 2^31, and so do
// the window, strides and padding that the 32-bit kernels hold as int.
bool small(const Pool2dDesc& d) {
  constexpr i64 lim = i64{1} << 30;
  for (i64 v : {d.R, d.S, d.sh, d.sw, d.pt, d.pl})
    if (v >= lim) return false;
  return d.N * d.H * d.W * d.C <= lim && d.N * d.OH * d.OW * d.C <= lim;
}

// launch_NAME: picks the vector width and index type, one thread per V of the `elems` elements.
#define CONVKIT_POOL_LAUNCHER(NAME)                                                          \
  template <class... Args>                                                                   \
  void launch_##NAME(const Pool2dDesc& d, i64 elems, bool vec4, cudaStream_t s, Args... a) { \
    if (vec4) {                                                                              \
      if (small(d))                                                                          \
        NAME<4, int><<<grid_for(elems / 4), 256, 0, s>>>(d, a...);                           \
      else                                                                                   \
        NAME<4, long long><<<grid_for(elems / 4), 256, 0, s>>>(d, a...);                     \
    } else {                                                                                 \
      if (small(d))                                                                          \
        NAME<1, int><<<grid_for(elems), 256, 0, s>>>(d, a...);                               \
      else                                                                                   \
        NAME<1, long long><<<grid_for(elems), 256, 0, s>>>(d, a...);                         \
    }                                                                                        \
  }

CONVKIT_POOL_LAUNCHER(max_fwd)
CONVKIT_POOL_LAUNCHER(max_bwd)
CONVKIT_POOL_LAUNCHER(argmax_outside)
CONVKIT_POOL_LAUNCHER(avg_fwd)
CONVKIT_POOL_LAUNCHER(avg_bwd)

}  // namespace

void max_pool2d_fwd_cuda(const Pool2dDesc& d, const float* x, float* y, std::int32_t* argmax, void* stream) {
  const i64 total = d.N * d.OH * d.OW * d.C;
  if (total == 0) return;
  const bool vec4 = d.C % 4 == 0 && aligned16(x) && aligned16(y) && (!argmax || aligned16(argmax));
  launch_max_fwd(d, total, vec4, static_cast<cudaStream_t>(stream), x, y, argmax);
  check_launch("max_pool2d_fwd");
}

void max_pool2d_bwd_cuda(const Pool2dDesc& d, const float* dy, const std::int32_t* argmax, float* dx, void* stream) {
  const i64 total = d.N * d.H * d.W * d.C;
  if (total == 0) return;
  const bool vec4 = d.C % 4 == 0 && aligned16(dy) && aligned16(argmax) && aligned16(dx);
  launch_max_bwd(d, total, vec4, static_cast<cudaStream_t>(stream), dy, argmax, dx);
  check_launch("max_pool2d_bwd");
}

i64 max_pool2d_argmax_outside_cuda(const Pool2dDesc& d, const std::int32_t* argmax, void* stream) {
  const i64 total = d.N * d.OH * d.OW * d.C;
  if (total == 0) return 0;
  const auto s = static_cast<cudaStream_t>(stream);
  unsigned long long* count = nullptr;
  check_cuda(cudaMalloc(reinterpret_cast<void**>(&count), sizeof *count), "max_pool2d_argmax_outside");
  unsigned long long outside = 0;
  try {
    check_cuda(cudaMemsetAsync(count, 0, sizeof *count, s), "max_pool2d_argmax_outside");
    launch_argmax_outside(d, total, d.C % 4 == 0 && aligned16(argmax), s, argmax, count);
    check_launch("max_pool2d_argmax_outside");
    check_cuda(cudaMemcpyAsync(&outside, count, sizeof outside, cudaMemcpyDeviceToHost, s),
               "max_pool2d_argmax_outside");
    check_cuda(cudaStreamSynchronize(s), "max_pool2d_argmax_outside");
  } catch (...) {
    cudaFree(count);
    throw;
  }
  check_cuda(cudaFree(count), "max_pool2d_argmax_outside");
  return static_cast<i64>(outside);
}

void avg_pool2d_fwd_cuda(const Pool2dDesc& d, const float* x, float* y, void* stream) {
  const i64 total = d.N * d.OH * d.OW * d.C;
  if (total == 0) return;
  const bool vec4 = d.C % 4 == 0 && aligned16(x) && aligned16(y);
  launch_avg_fwd(d, total, vec4, static_cast<cudaStream_t>(stream), x, y);
  check_launch("avg_pool2d_fwd");
}

void avg_pool2d_bwd_cuda(const Pool2dDesc& d, const float* dy, float* dx, void* stream) {
  const i64 total = d.N * d.H * d.W * d.C;
  if (total == 0) return;
  const bool vec4 = d.C % 4 == 0 && aligned16(dy) && aligned16(dx);
  launch_avg_bwd(d, total, vec4, static_cast<cudaStream_t>(stream), dy, dx);
  check_launch("avg_pool2d_bwd");
}

}  // namespace convkit
