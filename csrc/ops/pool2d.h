// pool2d: max and average pooling over NHWC float32 tensors, the whole C++ contract.
//
// Max pooling: padded cells never win; among equal values the first in
// row-major window order wins (and receives the gradient); NaN wins over
// any number, as in PyTorch. argmax holds ih * W + iw of the winner.
// Average pooling divides by the number of cells inside the input (TensorFlow's
// rule for 'same'), so padded cells never count.
#pragma once
#include "common.h"

namespace convkit {

struct Pool2dDesc {
  i64 N, H, W, C;
  i64 R, S;          // window
  i64 sh, sw;        // strides
  i64 pt, pl;        // padding before (top, left)
  i64 OH, OW;
};

Pool2dDesc make_pool2d_desc(i64 N, i64 H, i64 W, i64 C, i64 R, i64 S, i64 sh, i64 sw, Padding padding);

// CPU twins (pool2d_cpu.cpp). argmax may be null in max_pool2d_fwd_cpu.
void max_pool2d_fwd_cpu(const Pool2dDesc& d, const float* x, float* y, std::int32_t* argmax);
// Returns how many argmax entries lie outside the input [0, H*W): those are skipped, not followed
// (checking each against its own window costs a division per element; convkit.ops does that).
i64 max_pool2d_bwd_cpu(const Pool2dDesc& d, const float* dy, const std::int32_t* argmax, float* dx);
// How many argmax entries name a cell outside their own output's window.
i64 max_pool2d_argmax_outside_cpu(const Pool2dDesc& d, const std::int32_t* argmax);
void avg_pool2d_fwd_cpu(const Pool2dDesc& d, const float* x, float* y);
void avg_pool2d_bwd_cpu(const Pool2dDesc& d, const float* dy, float* dx);
// y (N, top + H + bottom, left + W + right, C): x with zeros around each image (ZeroPadding2D), every
// output row written once, in parallel; NumPy fills the whole output with zeros and then copies x in,
// two passes on one thread.
void pad2d_cpu(i64 N, i64 H, i64 W, i64 C, i64 top, i64 bottom, i64 left, i64 right, const float* x, float* y);

// CUDA twins (pool2d_cuda.cu), on `stream`, never synchronising except the argmax check, which
// waits for its count.
void max_pool2d_fwd_cuda(const Pool2dDesc& d, const float* x, float* y, std::int32_t* argmax, void* stream);
void max_pool2d_bwd_cuda(const Pool2dDesc& d, const float* dy, const std::int32_t* argmax, float* dx,
                         void* stream);
i64 max_pool2d_argmax_outside_cuda(const Pool2dDesc& d, const std::int32_t* argmax, void* stream);
void avg_pool2d_fwd_cuda(const Pool2dDesc& d, const float* x, float* y, void* stream);
void avg_pool2d_bwd_cuda(const Pool2dDesc& d, const float* dy, float* dx, void* stream);

}  // namespace convkit
