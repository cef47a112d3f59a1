// Element-wise activations over whole feature maps on the CPU: clamp (ReLU, ReLU6), sigmoid and
// silu in one parallel, vectorised pass. NumPy takes two to five single-threaded passes with a
// temporary each for the same (sigmoid was a third of EfficientNet's inference). On the GPU these
// stay CuPy element-wise kernels, which already make one pass.
#pragma once
#include "common.h"

namespace convkit {

enum class Pointwise { Clamp, Sigmoid, Silu };

// y[i] = f(x[i]) for i < n; y may be x. Clamp: lo below lo, hi above hi, x between (NaN stays
// NaN). Sigmoid: 1 / (1 + e^-x) within a few ulp (subnormal results included); silu: x * sigmoid(x).
void pointwise_cpu(Pointwise f, i64 n, const float* x, float* y, float lo, float hi);

// An activation that another kernel applies to its output on the way out (batch normalisation at
// inference), saving a second pass over the feature map; off by default.
struct PointwiseAct {
  bool on = false;
  Pointwise f = Pointwise::Clamp;
  float lo = 0.f, hi = 0.f;
};

// pointwise_cpu on one thread, for kernels that call it inside their own parallel loops.
void pointwise_serial_cpu(const PointwiseAct& act, i64 n, const float* x, float* y);

// y[i] = act(y[i]) for i < n on the GPU (batch_norm_cuda.cu, beside the same function's use in the
// normalisation's store): the convolutions' `post` there, as a pass after the kernel. No-op when off.
void pointwise_cuda(const PointwiseAct& act, i64 n, float* y, void* stream);

// y = post(a op b) with b repeated along a middle axis: a and y are (outer, mid, inner), b is
// (outer, inner). (N, H, W, C) * (N, 1, 1, C) (squeeze-and-excitation) is outer N, mid H * W, inner C; a
// residual sum of equal shapes is mid 1 (with post, the ReLU after it); (rows, C) + (C) is outer 1. y may
// be a. NumPy's broadcasting loops run on one thread (a twelfth of EfficientNet's inference); this is one
// parallel pass. ReluGrad is ReLU's backward, y = b <= 0 ? 0 : a (a the gradient, b ReLU's output): a
// select, as PyTorch's threshold_backward, so a NaN gradient behind a closed unit stays 0.
enum class Binary { Add, Subtract, Multiply, Divide, ReluGrad };
void binary_cpu(Binary op, i64 outer, i64 mid, i64 inner, const float* a, const float* b, float* y,
                const PointwiseAct& post = {});

}  // namespace convkit
