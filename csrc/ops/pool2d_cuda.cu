// CUDA pooling: one thread per output element forward; backward gathers, one
// thread per input element summing over the windows that contain it, so no
// atomics are needed and results are deterministic. Same rules as pool2d_cpu.cpp.
#include "ops/cuda_check.h"
#include "ops/pool2d.h"

namespace convkit {
namespace {

__device__ inline i64 clamp_lo(i64 v) { return v < 0 ? 0 : v; }

// Output positions o whose window [o*stride - pad, o*stride - pad + size) contains i.
__device__ inline void covering(i64 i, i64 stride, i64 pad, i64 size, i64 out, i64& lo, i64& hi) {
  const i64 num = i + pad - size + 1;  // o >= ceil(num / stride)
  lo = clamp_lo(num <= 0 ? 0 : (num + stride - 1) / stride);
  hi = (i + pad) / stride;  // i + pad >= 0 always
  if (hi > out - 1) hi = out - 1;
}

__device__ inline void window(i64 o, i64 stride, i64 pad, i64 size, i64 in, i64& lo, i64& hi) {
  const i64 start = o * stride - pad;
  lo = clamp_lo(start);
  hi = start + size < in ? start + size : in;
}

// The input window [h0, h1) x [w0, w1) of output element e = ((n * OH + oh) * OW + ow) * C + c,
// and the offset of its image's channel c.
struct OutWindow {
  i64 img, h0, h1, w0, w1;
};

__device__ inline OutWindow out_window(const Pool2dDesc& d, i64 e) {
  const i64 c = e % d.C, ow = (e / d.C) % d.OW, oh = (e / (d.C * d.OW)) % d.OH, n = e / (d.C * d.OW * d.OH);
  OutWindow o;
  o.img = n * d.H * d.W * d.C + c;
  window(oh, d.sh, d.pt, d.R, d.H, o.h0, o.h1);
  window(ow, d.sw, d.pl, d.S, d.W, o.w0, o.w1);
  return o;
}

#define GRID_STRIDE(e, total) \
  for (i64 e = blockIdx.x * (i64)blockDim.x + threadIdx.x; e < (total); e += (i64)gridDim.x * blockDim.x)

__global__ void max_fwd(Pool2dDesc d, const float* __restrict__ x, float* __restrict__ y,
                        std::int32_t* __restrict__ argmax) {
  GRID_STRIDE(e, d.N * d.OH * d.OW * d.C) {
    const OutWindow o = out_window(d, e);
    const float* img = x + o.img;
    float m = img[(o.h0 * d.W + o.w0) * d.C];
    i64 best = o.h0 * d.W + o.w0;
    for (i64 ih = o.h0; ih < o.h1; ++ih)
      for (i64 iw = o.w0; iw < o.w1; ++iw) {
        const float v = img[(ih * d.W + iw) * d.C];
        if (v > m || (v != v && m == m)) m = v, best = ih * d.W + iw;
      }
    y[e] = m;
    if (argmax) argmax[e] = static_cast<std::int32_t>(best);
  }
}

__global__ void max_bwd(Pool2dDesc d, const float* __restrict__ dy, const std::int32_t* __restrict__ argmax,
                        float* __restrict__ dx) {
  GRID_STRIDE(e, d.N * d.H * d.W * d.C) {
    const i64 c = e % d.C, iw = (e / d.C) % d.W, ih = (e / (d.C * d.W)) % d.H, n = e / (d.C * d.W * d.H);
    i64 oh0, oh1, ow0, ow1;
    covering(ih, d.sh, d.pt, d.R, d.OH, oh0, oh1);
    covering(iw, d.sw, d.pl, d.S, d.OW, ow0, ow1);
    const std::int32_t me = static_cast<std::int32_t>(ih * d.W + iw);
    float acc = 0.f;
    for (i64 oh = oh0; oh <= oh1; ++oh)
      for (i64 ow = ow0; ow <= ow1; ++ow) {
        const i64 o = ((n * d.OH + oh) * d.OW + ow) * d.C + c;
        if (argmax[o] == me) acc += dy[o];
      }
    dx[e] = acc;
  }
}

__global__ void avg_fwd(Pool2dDesc d, const float* __restrict__ x, float* __restrict__ y) {
  GRID_STRIDE(e, d.N * d.OH * d.OW * d.C) {
    const OutWindow o = out_window(d, e);
    const float* img = x + o.img;
    float acc = 0.f;
    for (i64 ih = o.h0; ih < o.h1; ++ih)
      for (i64 iw = o.w0; iw < o.w1; ++iw) acc += img[(ih * d.W + iw) * d.C];
    y[e] = acc * (1.f / static_cast<float>((o.h1 - o.h0) * (o.w1 - o.w0)));
  }
}

__global__ void avg_bwd(Pool2dDesc d, const float* __restrict__ dy, float* __restrict__ dx) {
  GRID_STRIDE(e, d.N * d.H * d.W * d.C) {
    const i64 c = e % d.C, iw = (e / d.C) % d.W, ih = (e / (d.C * d.W)) % d.H, n = e / (d.C * d.W * d.H);
    i64 oh0, oh1, ow0, ow1;
    covering(ih, d.sh, d.pt, d.R, d.OH, oh0, oh1);
    covering(iw, d.sw, d.pl, d.S, d.OW, ow0, ow1);
    float acc = 0.f;
    for (i64 oh = oh0; oh <= oh1; ++oh) {
      i64 h0, h1;
      window(oh, d.sh, d.pt, d.R, d.H, h0, h1);
      for (i64 ow = ow0; ow <= ow1; ++ow) {
        i64 w0, w1;
        window(ow, d.sw, d.pl, d.S, d.W, w0, w1);
        acc += dy[((n * d.OH + oh) * d.OW + ow) * d.C + c] * (1.f / static_cast<float>((h1 - h0) * (w1 - w0)));
      }
    }
    dx[e] = acc;
  }
}

}  // namespace

void max_pool2d_fwd_cuda(const Pool2dDesc& d, const float* x, float* y, std::int32_t* argmax, void* stream) {
  const i64 total = d.N * d.OH * d.OW * d.C;
  if (total == 0) return;
  max_fwd<<<grid_for(total), 256, 0, static_cast<cudaStream_t>(stream)>>>(d, x, y, argmax);
  check_launch("max_pool2d_fwd");
}

void max_pool2d_bwd_cuda(const Pool2dDesc& d, const float* dy, const std::int32_t* argmax, float* dx, void* stream) {
  const i64 total = d.N * d.H * d.W * d.C;
  if (total == 0) return;
  max_bwd<<<grid_for(total), 256, 0, static_cast<cudaStream_t>(stream)>>>(d, dy, argmax, dx);
  check_launch("max_pool2d_bwd");
}

void avg_pool2d_fwd_cuda(const Pool2dDesc& d, const float* x, float* y, void* stream) {
  const i64 total = d.N * d.OH * d.OW * d.C;
  if (total == 0) return;
  avg_fwd<<<grid_for(total), 256, 0, static_cast<cudaStream_t>(stream)>>>(d, x, y);
  check_launch("avg_pool2d_fwd");
}

void avg_pool2d_bwd_cuda(const Pool2dDesc& d, const float* dy, float* dx, void* stream) {
  const i64 total = d.N * d.H * d.W * d.C;
  if (total == 0) return;
  avg_bwd<<<grid_for(total), 256, 0, static_cast<cudaStream_t>(stream)>>>(d, dy, dx);
  check_launch("avg_pool2d_bwd");
}

}  // namespace convkit
