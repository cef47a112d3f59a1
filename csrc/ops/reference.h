// Reference loops for every op, forward and backward: the definitions written as plainly as
// possible (one output at a time, sums in double), with no tiling, packing, vectorisation or
// threads. The tuned CPU kernels, the CUDA kernels (under csrc/emu's emulation) and the
// Python tests are checked against these, so tuned code is never checked only against other
// tuned code. Same contracts as the twins in conv2d.h, depthwise2d.h, pool2d.h and batch_norm.h.
//
// Pooling is exact: the reference adds in the order the twins do (window cells row by row;
// a cell's gradient over windows in output order) and scales by the same float 1/count, so
// results must agree bit for bit.
#pragma once
#include <cstdint>

#include "ops/conv2d.h"
#include "ops/depthwise2d.h"
#include "ops/pointwise.h"
#include "ops/pool2d.h"

namespace convkit::reference {

void conv2d_fwd(const Conv2dDesc& d, const float* x, const float* w, const float* bias, float* y, Activation act,
                const PointwiseAct& post = {}, const float* scale = nullptr, const float* residual = nullptr);
void conv2d_bwd_data(const Conv2dDesc& d, const float* dy, const float* w, float* dx);
void conv2d_bwd_filter(const Conv2dDesc& d, const float* x, const float* dy, float* dw, float* dbias);

void depthwise2d_fwd(const Depthwise2dDesc& d, const float* x, const float* w, const float* bias, float* y,
                     Activation act, const PointwiseAct& post = {});
void depthwise2d_bwd_data(const Depthwise2dDesc& d, const float* dy, const float* w, float* dx);
void depthwise2d_bwd_filter(const Depthwise2dDesc& d, const float* x, const float* dy, float* dw, float* dbias);

void max_pool2d_fwd(const Pool2dDesc& d, const float* x, float* y, std::int32_t* argmax);
// Indices outside [0, H*W) are skipped and counted, as by the twins.
i64 max_pool2d_bwd(const Pool2dDesc& d, const float* dy, const std::int32_t* argmax, float* dx);
// How many argmax entries name a cell outside their own output's window (each window searched).
i64 max_pool2d_argmax_outside(const Pool2dDesc& d, const std::int32_t* argmax);
void avg_pool2d_fwd(const Pool2dDesc& d, const float* x, float* y);
void avg_pool2d_bwd(const Pool2dDesc& d, const float* dy, float* dx);
void pad2d(i64 N, i64 H, i64 W, i64 C, i64 top, i64 bottom, i64 left, i64 right, const float* x, float* y);

void batch_norm_fwd(i64 M, i64 C, const float* x, const float* gamma, const float* beta, float eps, float* y,
                    float* xhat, float* mean, float* var, float* inv);
void batch_norm_bwd(i64 M, i64 C, const float* dy, const float* xhat, const float* inv, const float* gamma,
                    float* dx, float* dgamma, float* dbeta);
void batch_norm_infer(i64 M, i64 C, const float* x, const float* mean, const float* var, const float* gamma,
                      const float* beta, float eps, float* y, const PointwiseAct& act = {});

void pointwise(Pointwise f, i64 n, const float* x, float* y, float lo, float hi);
void binary(Binary op, i64 outer, i64 mid, i64 inner, const float* a, const float* b, float* y,
            const PointwiseAct& post = {});

}  // namespace convkit::reference
