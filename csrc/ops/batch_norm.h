// Batch normalisation over the last (channel) axis on (M, C) row-major views (M = N*H*W for a
// conv map, N for a dense output): training mode (the batch's own statistics) and inference
// (given statistics, the moving ones of a layer). CPU twins in batch_norm_cpu.cpp, CUDA twins in
// batch_norm_cuda.cu; both sum in float over runs of rows and add the runs in double.
#pragma once
#include "common.h"
#include "ops/pointwise.h"

namespace convkit {

// mean, var (biased), inv = 1/sqrt(var + eps); xhat = (x - mean) * inv; y = xhat * gamma + beta.
// gamma and beta may be null (scale 1, shift 0). Statistics are summed in double.
void batch_norm_fwd_cpu(i64 M, i64 C, const float* x, const float* gamma, const float* beta, float eps, float* y,
                        float* xhat, float* mean, float* var, float* inv);

// dbeta = sum dy, dgamma = sum dy * xhat over the M rows; when dx is not null,
// dx = gamma * inv * (dy - dbeta / M - xhat * dgamma / M). gamma may be null.
void batch_norm_bwd_cpu(i64 M, i64 C, const float* dy, const float* xhat, const float* inv, const float* gamma,
                        float* dx, float* dgamma, float* dbeta);

// Inference: y = act(x * s + (beta - mean * s)) with s = gamma / sqrt(var + eps), per channel in
// float (1 / sqrt taken in double); act, when on, is applied before y leaves the cache. gamma and
// beta may be null.
void batch_norm_infer_cpu(i64 M, i64 C, const float* x, const float* mean, const float* var, const float* gamma,
                          const float* beta, float eps, float* y, const PointwiseAct& act = {});

// The CUDA twins, on `stream`, never synchronising.
void batch_norm_fwd_cuda(i64 M, i64 C, const float* x, const float* gamma, const float* beta, float eps, float* y,
                         float* xhat, float* mean, float* var, float* inv, void* stream);
void batch_norm_bwd_cuda(i64 M, i64 C, const float* dy, const float* xhat, const float* inv, const float* gamma,
                         float* dx, float* dgamma, float* dbeta, void* stream);
void batch_norm_infer_cuda(i64 M, i64 C, const float* x, const float* mean, const float* var, const float* gamma,
                           const float* beta, float eps, float* y, const PointwiseAct& act, void* stream);

}  // namespace convkit
