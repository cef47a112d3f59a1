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

}  // namespace convkit
