// conv2d: the whole C++ contract. Activations are NHWC, kernels HWIO
// (kh, kw, in, out) as in Keras, all float32 and contiguous.
//
//   y[n,oh,ow,k] = b[k] + sum_{r,s,c} x[n, oh*sh - pt + r*dh, ow*sw - pl + s*dw, c] * w[r,s,c,k]
//
// Padded positions read as zero. All index arithmetic is 64-bit.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "common.h"
#include "ops/pointwise.h"

namespace convkit {

struct Conv2dDesc {
  i64 N, H, W, C;    // input
  i64 R, S, K;       // kernel rows, columns, output channels
  i64 sh, sw;        // strides
  i64 dh, dw;        // dilations
  i64 pt, pl;        // padding before (top, left); the rest is implied
  i64 OH, OW;        // output
};

// Validates every argument and derives the output size; throws ShapeError.
Conv2dDesc make_conv2d_desc(i64 N, i64 H, i64 W, i64 C, i64 R, i64 S, i64 K, i64 sh, i64 sw,
                            i64 dh, i64 dw, Padding padding);

// Fused epilogues. conv2d takes None or Relu; depthwise2d takes Relu6 (min(max(v, 0), 6)) too.
enum class Activation : int { None = 0, Relu = 1, Relu6 = 2 };

// CPU twins (conv2d_cpu.cpp). bias / dbias may be null. For inference with a batch normalisation
// folded in, `scale` (when given) multiplies output channel k's weights by scale[k] as they are packed,
// and `post` (when on) is applied to each block of the output as it is finished, while the block is
// still in cache: neither costs a pass of its own. `residual` (when given, shaped as y: a residual block's
// shortcut) is added to the output before the activation and `post`, as the block is finished.
void conv2d_fwd_cpu(const Conv2dDesc& d, const float* x, const float* w, const float* bias, float* y,
                    Activation act, const PointwiseAct& post = {}, const float* scale = nullptr,
                    const float* residual = nullptr);
void conv2d_bwd_data_cpu(const Conv2dDesc& d, const float* dy, const float* w, float* dx);
void conv2d_bwd_filter_cpu(const Conv2dDesc& d, const float* x, const float* dy, float* dw,
                           float* dbias);

// The CPU twins' strategies (conv2d_cpu_<name>.cpp): "direct", "by_position", "pixel_major", "dot"
// (forward and backward-data), "rows" (forward), "filter_rows", "filter_gemm" (backward-filter). "auto"
// chooses by shape; a name forces that strategy wherever it can compute the call. The start-up value comes from
// CONVKIT_CONV_STRATEGY. conv_strategy_runs() counts the calls each strategy has served.
void set_conv_strategy(const std::string& name);
std::string conv_strategy();
std::vector<std::pair<std::string, long long>> conv_strategy_runs();

// CUDA twins (conv2d_cuda.cu): device pointers, launched on `stream` (a cudaStream_t),
// never synchronising. tf32 selects tensor-core TF32 arithmetic instead of strict fp32. scale and residual
// as the CPU's, in each output's store: scale before the bias, the residual after it, before the ReLU.
void conv2d_fwd_cuda(const Conv2dDesc& d, const float* x, const float* w, const float* bias, float* y,
                     Activation act, bool tf32, void* stream, const float* scale = nullptr,
                     const float* residual = nullptr);
void conv2d_bwd_data_cuda(const Conv2dDesc& d, const float* dy, const float* w, float* dx, bool tf32,
                          void* stream);
void conv2d_bwd_filter_cuda(const Conv2dDesc& d, const float* x, const float* dy, float* dw,
                            float* dbias, bool tf32, void* stream);

}  // namespace convkit
