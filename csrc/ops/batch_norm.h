// Batch normalisation over the last (channel) axis in training mode, on (M, C) row-major
// views (M = N*H*W for a conv map, N for a dense output). CPU only: on the GPU the same
// formulas run as CuPy element-wise kernels (convkit/ops.py).
#pragma once
#include "common.h"

namespace convkit {

// mean, var (biased), inv = 1/sqrt(var + eps); xhat = (x - mean) * inv; y = xhat * gamma + beta.
// gamma and beta may be null (scale 1, shift 0). Statistics are summed in double.
void batch_norm_fwd_cpu(i64 M, i64 C, const float* x, const float* gamma, const float* beta, float eps, float* y,
                        float* xhat, float* mean, float* var, float* inv);

// dbeta = sum dy, dgamma = sum dy * xhat over the M rows; when dx is not null,
// dx = gamma * inv * (dy - dbeta / M - xhat * dgamma / M). gamma may be null.
void batch_norm_bwd_cpu(i64 M, i64 C, const float* dy, const float* xhat, const float* inv, const float* gamma,
                        float* dx, float* dgamma, float* dbeta);

}  // namespace convkit
