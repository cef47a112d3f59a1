// depthwise2d: depthwise 2-D convolution, the whole C++ contract. Activations are NHWC, the
// kernel (kh, kw, C, M) as in Keras (M = depth multiplier), all float32 and contiguous. Output
// channel j = c * M + m of the C * M comes from input channel c alone:
//
//   y[n,oh,ow,c*M+m] = b[c*M+m] + sum_{r,s} x[n, oh*sh - pt + r*dh, ow*sw - pl + s*dw, c] * w[r,s,c,m]
//
// Padded positions read as zero; padding follows window_1d (TensorFlow's rule). Each output
// reads R * S inputs, so the op is bound by memory, not arithmetic: the kernels stream channels
// (contiguous in NHWC) through vector lanes / coalesced threads instead of forming a GEMM.
#pragma once
#include "common.h"
#include "ops/conv2d.h"  // Activation

namespace convkit {

struct Depthwise2dDesc {
  i64 N, H, W, C;    // input
  i64 R, S, M;       // kernel rows, columns, depth multiplier
  i64 sh, sw;        // strides
  i64 dh, dw;        // dilations
  i64 pt, pl;        // padding before (top, left)
  i64 OH, OW;        // output
  i64 K;             // output channels, C * M
};

// Validates every argument and derives the output size; throws ShapeError.
Depthwise2dDesc make_depthwise2d_desc(i64 N, i64 H, i64 W, i64 C, i64 R, i64 S, i64 M, i64 sh, i64 sw, i64 dh,
                                      i64 dw, Padding padding);

// CPU twins (depthwise2d_cpu.cpp). bias / dbias may be null. act is None, Relu or Relu6; `post`, as
// conv2d_fwd_cpu's, on each run of outputs as it is finished.
void depthwise2d_fwd_cpu(const Depthwise2dDesc& d, const float* x, const float* w, const float* bias, float* y,
                         Activation act, const PointwiseAct& post = {});
void depthwise2d_bwd_data_cpu(const Depthwise2dDesc& d, const float* dy, const float* w, float* dx);
void depthwise2d_bwd_filter_cpu(const Depthwise2dDesc& d, const float* x, const float* dy, float* dw,
                                float* dbias);

// CUDA twins (depthwise2d_cuda.cu): device pointers, launched on `stream`, never synchronising.
void depthwise2d_fwd_cuda(const Depthwise2dDesc& d, const float* x, const float* w, const float* bias, float* y,
                          Activation act, void* stream);
void depthwise2d_bwd_data_cuda(const Depthwise2dDesc& d, const float* dy, const float* w, float* dx,
                               void* stream);
void depthwise2d_bwd_filter_cuda(const Depthwise2dDesc& d, const float* x, const float* dy, float* dw,
                                 float* dbias, void* stream);

}  // namespace convkit
