#include "ops/reference.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace convkit::reference {
namespace {

// Input row (or column) read by output position o at window tap r; may fall in the padding.
i64 tap(i64 o, i64 stride, i64 pad, i64 r, i64 dilation) { return o * stride - pad + r * dilation; }

i64 xi(const Conv2dDesc& d, i64 n, i64 h, i64 w, i64 c) { return ((n * d.H + h) * d.W + w) * d.C + c; }
i64 wi(const Conv2dDesc& d, i64 r, i64 s, i64 c, i64 k) { return ((r * d.S + s) * d.C + c) * d.K + k; }
i64 yi(const Conv2dDesc& d, i64 n, i64 oh, i64 ow, i64 k) { return ((n * d.OH + oh) * d.OW + ow) * d.K + k; }

bool inside(i64 v, i64 size) { return v >= 0 && v < size; }

}  // namespace

void conv2d_fwd(const Conv2dDesc& d, const float* x, const float* w, const float* bias, float* y, Activation act,
                const PointwiseAct& post, const float* scale, const float* residual) {
  for (i64 n = 0; n < d.N; ++n)
    for (i64 oh = 0; oh < d.OH; ++oh)
      for (i64 ow = 0; ow < d.OW; ++ow)
        for (i64 k = 0; k < d.K; ++k) {
          double acc = 0.0;
          for (i64 r = 0; r < d.R; ++r)
            for (i64 s = 0; s < d.S; ++s) {
              const i64 h = tap(oh, d.sh, d.pt, r, d.dh), v = tap(ow, d.sw, d.pl, s, d.dw);
              if (!inside(h, d.H) || !inside(v, d.W)) continue;
              for (i64 c = 0; c < d.C; ++c) acc += double(x[xi(d, n, h, v, c)]) * w[wi(d, r, s, c, k)];
            }
          acc = acc * (scale ? scale[k] : 1.0) + (bias ? bias[k] : 0.0);
          if (residual) acc += residual[yi(d, n, oh, ow, k)];
          if (act == Activation::Relu) acc = std::max(acc, 0.0);
          y[yi(d, n, oh, ow, k)] = static_cast<float>(acc);
        }
  if (post.on) pointwise(post.f, d.N * d.OH * d.OW * d.K, y, y, post.lo, post.hi);
}

void conv2d_bwd_data(const Conv2dDesc& d, const float* dy, const float* w, float* dx) {
  std::vector<double> acc(static_cast<size_t>(d.N * d.H * d.W * d.C), 0.0);
  for (i64 n = 0; n < d.N; ++n)
    for (i64 oh = 0; oh < d.OH; ++oh)
      for (i64 ow = 0; ow < d.OW; ++ow)
        for (i64 r = 0; r < d.R; ++r)
          for (i64 s = 0; s < d.S; ++s) {
            const i64 h = tap(oh, d.sh, d.pt, r, d.dh), v = tap(ow, d.sw, d.pl, s, d.dw);
            if (!inside(h, d.H) || !inside(v, d.W)) continue;
            for (i64 c = 0; c < d.C; ++c)
              for (i64 k = 0; k < d.K; ++k) acc[xi(d, n, h, v, c)] += double(dy[yi(d, n, oh, ow, k)]) * w[wi(d, r, s, c, k)];
          }
  for (size_t i = 0; i < acc.size(); ++i) dx[i] = static_cast<float>(acc[i]);
}

void conv2d_bwd_filter(const Conv2dDesc& d, const float* x, const float* dy, float* dw, float* dbias) {
  for (i64 r = 0; r < d.R; ++r)
    for (i64 s = 0; s < d.S; ++s)
      for (i64 c = 0; c < d.C; ++c)
        for (i64 k = 0; k < d.K; ++k) {
          double acc = 0.0;
          for (i64 n = 0; n < d.N; ++n)
            for (i64 oh = 0; oh < d.OH; ++oh)
              for (i64 ow = 0; ow < d.OW; ++ow) {
                const i64 h = tap(oh, d.sh, d.pt, r, d.dh), v = tap(ow, d.sw, d.pl, s, d.dw);
                if (inside(h, d.H) && inside(v, d.W)) acc += double(x[xi(d, n, h, v, c)]) * dy[yi(d, n, oh, ow, k)];
              }
          dw[wi(d, r, s, c, k)] = static_cast<float>(acc);
        }
  if (!dbias) return;
  for (i64 k = 0; k < d.K; ++k) {
    double acc = 0.0;
    for (i64 p = 0; p < d.N * d.OH * d.OW; ++p) acc += dy[p * d.K + k];
    dbias[k] = static_cast<float>(acc);
  }
}

namespace {

// Depthwise indices: x is (N, H, W, C), the kernel (R, S, C, M), y (N, OH, OW, C * M).
i64 dxi(const Depthwise2dDesc& d, i64 n, i64 h, i64 w, i64 c) { return ((n * d.H + h) * d.W + w) * d.C + c; }
i64 dwi(const Depthwise2dDesc& d, i64 r, i64 s, i64 c, i64 m) { return ((r * d.S + s) * d.C + c) * d.M + m; }
i64 dyi(const Depthwise2dDesc& d, i64 n, i64 oh, i64 ow, i64 c, i64 m) {
  return ((n * d.OH + oh) * d.OW + ow) * d.K + c * d.M + m;
}

}  // namespace

void depthwise2d_fwd(const Depthwise2dDesc& d, const float* x, const float* w, const float* bias, float* y,
                     Activation act, const PointwiseAct& post) {
  for (i64 n = 0; n < d.N; ++n)
    for (i64 oh = 0; oh < d.OH; ++oh)
      for (i64 ow = 0; ow < d.OW; ++ow)
        for (i64 c = 0; c < d.C; ++c)
          for (i64 m = 0; m < d.M; ++m) {
            double acc = bias ? bias[c * d.M + m] : 0.0;
            for (i64 r = 0; r < d.R; ++r)
              for (i64 s = 0; s < d.S; ++s) {
                const i64 h = tap(oh, d.sh, d.pt, r, d.dh), v = tap(ow, d.sw, d.pl, s, d.dw);
                if (inside(h, d.H) && inside(v, d.W)) acc += double(x[dxi(d, n, h, v, c)]) * w[dwi(d, r, s, c, m)];
              }
            if (act != Activation::None) acc = std::max(acc, 0.0);
            if (act == Activation::Relu6) acc = std::min(acc, 6.0);
            y[dyi(d, n, oh, ow, c, m)] = static_cast<float>(acc);
          }
  if (post.on) pointwise(post.f, d.N * d.OH * d.OW * d.K, y, y, post.lo, post.hi);
}

void depthwise2d_bwd_data(const Depthwise2dDesc& d, const float* dy, const float* w, float* dx) {
  std::vector<double> acc(static_cast<size_t>(d.N * d.H * d.W * d.C), 0.0);
  for (i64 n = 0; n < d.N; ++n)
    for (i64 oh = 0; oh < d.OH; ++oh)
      for (i64 ow = 0; ow < d.OW; ++ow)
        for (i64 r = 0; r < d.R; ++r)
          for (i64 s = 0; s < d.S; ++s) {
            const i64 h = tap(oh, d.sh, d.pt, r, d.dh), v = tap(ow, d.sw, d.pl, s, d.dw);
            if (!inside(h, d.H) || !inside(v, d.W)) continue;
            for (i64 c = 0; c < d.C; ++c)
              for (i64 m = 0; m < d.M; ++m)
                acc[dxi(d, n, h, v, c)] += double(dy[dyi(d, n, oh, ow, c, m)]) * w[dwi(d, r, s, c, m)];
          }
  for (size_t i = 0; i < acc.size(); ++i) dx[i] = static_cast<float>(acc[i]);
}

void depthwise2d_bwd_filter(const Depthwise2dDesc& d, const float* x, const float* dy, float* dw, float* dbias) {
  for (i64 r = 0; r < d.R; ++r)
    for (i64 s = 0; s < d.S; ++s)
      for (i64 c = 0; c < d.C; ++c)
        for (i64 m = 0; m < d.M; ++m) {
          double acc = 0.0;
          for (i64 n = 0; n < d.N; ++n)
            for (i64 oh = 0; oh < d.OH; ++oh)
              for (i64 ow = 0; ow < d.OW; ++ow) {
                const i64 h = tap(oh, d.sh, d.pt, r, d.dh), v = tap(ow, d.sw, d.pl, s, d.dw);
                if (inside(h, d.H) && inside(v, d.W)) acc += double(x[dxi(d, n, h, v, c)]) * dy[dyi(d, n, oh, ow, c, m)];
              }
          dw[dwi(d, r, s, c, m)] = static_cast<float>(acc);
        }
  if (!dbias) return;
  for (i64 k = 0; k < d.K; ++k) {
    double acc = 0.0;
    for (i64 p = 0; p < d.N * d.OH * d.OW; ++p) acc += dy[p * d.K + k];
    dbias[k] = static_cast<float>(acc);
  }
}

namespace {

// The clipped window [lo, hi) of output o along one dimension (never empty, see window_1d).
struct Span {
  i64 lo, hi;
};
Span window(i64 o, i64 stride, i64 pad, i64 size, i64 in) {
  const i64 start = o * stride - pad;
  return {std::max<i64>(start, 0), std::min(start + size, in)};
}

i64 pi(const Pool2dDesc& d, i64 n, i64 h, i64 w, i64 c) { return ((n * d.H + h) * d.W + w) * d.C + c; }
i64 qi(const Pool2dDesc& d, i64 n, i64 oh, i64 ow, i64 c) { return ((n * d.OH + oh) * d.OW + ow) * d.C + c; }

}  // namespace

void max_pool2d_fwd(const Pool2dDesc& d, const float* x, float* y, std::int32_t* argmax) {
  for (i64 n = 0; n < d.N; ++n)
    for (i64 oh = 0; oh < d.OH; ++oh)
      for (i64 ow = 0; ow < d.OW; ++ow)
        for (i64 c = 0; c < d.C; ++c) {
          const Span hs = window(oh, d.sh, d.pt, d.R, d.H), ws = window(ow, d.sw, d.pl, d.S, d.W);
          float best = x[pi(d, n, hs.lo, ws.lo, c)];
          i64 at = hs.lo * d.W + ws.lo;
          for (i64 h = hs.lo; h < hs.hi; ++h)
            for (i64 w = ws.lo; w < ws.hi; ++w) {
              const float v = x[pi(d, n, h, w, c)];
              // strictly greater keeps the first of equal values; NaN beats any number
              if (v > best || (std::isnan(v) && !std::isnan(best))) best = v, at = h * d.W + w;
            }
          y[qi(d, n, oh, ow, c)] = best;
          if (argmax) argmax[qi(d, n, oh, ow, c)] = static_cast<std::int32_t>(at);
        }
}

i64 max_pool2d_bwd(const Pool2dDesc& d, const float* dy, const std::int32_t* argmax, float* dx) {
  std::fill(dx, dx + d.N * d.H * d.W * d.C, 0.f);
  i64 outside = 0;
  for (i64 n = 0; n < d.N; ++n)
    for (i64 oh = 0; oh < d.OH; ++oh)
      for (i64 ow = 0; ow < d.OW; ++ow)
        for (i64 c = 0; c < d.C; ++c) {
          const i64 cell = argmax[qi(d, n, oh, ow, c)];
          if (cell < 0 || cell >= d.H * d.W) {
            ++outside;
            continue;
          }
          dx[pi(d, n, cell / d.W, cell % d.W, c)] += dy[qi(d, n, oh, ow, c)];
        }
  return outside;
}

i64 max_pool2d_argmax_outside(const Pool2dDesc& d, const std::int32_t* argmax) {
  i64 outside = 0;
  for (i64 n = 0; n < d.N; ++n)
    for (i64 oh = 0; oh < d.OH; ++oh)
      for (i64 ow = 0; ow < d.OW; ++ow)
        for (i64 c = 0; c < d.C; ++c) {
          const Span hs = window(oh, d.sh, d.pt, d.R, d.H), ws = window(ow, d.sw, d.pl, d.S, d.W);
          const i64 cell = argmax[qi(d, n, oh, ow, c)];
          bool in = false;
          for (i64 h = hs.lo; h < hs.hi; ++h)
            for (i64 w = ws.lo; w < ws.hi; ++w) in |= cell == h * d.W + w;
          outside += !in;
        }
  return outside;
}

void avg_pool2d_fwd(const Pool2dDesc& d, const float* x, float* y) {
  for (i64 n = 0; n < d.N; ++n)
    for (i64 oh = 0; oh < d.OH; ++oh)
      for (i64 ow = 0; ow < d.OW; ++ow)
        for (i64 c = 0; c < d.C; ++c) {
          const Span hs = window(oh, d.sh, d.pt, d.R, d.H), ws = window(ow, d.sw, d.pl, d.S, d.W);
          float sum = 0.f;
          for (i64 h = hs.lo; h < hs.hi; ++h)
            for (i64 w = ws.lo; w < ws.hi; ++w) sum += x[pi(d, n, h, w, c)];
          y[qi(d, n, oh, ow, c)] = sum * (1.f / static_cast<float>((hs.hi - hs.lo) * (ws.hi - ws.lo)));
        }
}

void avg_pool2d_bwd(const Pool2dDesc& d, const float* dy, float* dx) {
  std::fill(dx, dx + d.N * d.H * d.W * d.C, 0.f);
  for (i64 n = 0; n < d.N; ++n)
    for (i64 oh = 0; oh < d.OH; ++oh)
      for (i64 ow = 0; ow < d.OW; ++ow) {
        const Span hs = window(oh, d.sh, d.pt, d.R, d.H), ws = window(ow, d.sw, d.pl, d.S, d.W);
        const float inv = 1.f / static_cast<float>((hs.hi - hs.lo) * (ws.hi - ws.lo));
        for (i64 h = hs.lo; h < hs.hi; ++h)
          for (i64 w = ws.lo; w < ws.hi; ++w)
            for (i64 c = 0; c < d.C; ++c) dx[pi(d, n, h, w, c)] += dy[qi(d, n, oh, ow, c)] * inv;
      }
}

void batch_norm_fwd(i64 M, i64 C, const float* x, const float* gamma, const float* beta, float eps, float* y,
                    float* xhat, float* mean, float* var, float* inv) {
  for (i64 c = 0; c < C; ++c) {
    double s = 0.0;
    for (i64 m = 0; m < M; ++m) s += x[m * C + c];
    const double mu = M ? s / M : 0.0;
    double q = 0.0;
    for (i64 m = 0; m < M; ++m) q += (x[m * C + c] - mu) * (x[m * C + c] - mu);
    const double v = M ? q / M : 0.0, iv = 1.0 / std::sqrt(v + eps);
    mean[c] = static_cast<float>(mu), var[c] = static_cast<float>(v), inv[c] = static_cast<float>(iv);
    for (i64 m = 0; m < M; ++m) {
      const double h = (x[m * C + c] - mu) * iv;
      xhat[m * C + c] = static_cast<float>(h);
      y[m * C + c] = static_cast<float>(h * (gamma ? gamma[c] : 1.0) + (beta ? beta[c] : 0.0));
    }
  }
}

void batch_norm_bwd(i64 M, i64 C, const float* dy, const float* xhat, const float* inv, const float* gamma,
                    float* dx, float* dgamma, float* dbeta) {
  for (i64 c = 0; c < C; ++c) {
    double db = 0.0, dg = 0.0;
    for (i64 m = 0; m < M; ++m) db += dy[m * C + c], dg += double(dy[m * C + c]) * xhat[m * C + c];
    dbeta[c] = static_cast<float>(db), dgamma[c] = static_cast<float>(dg);
    if (!dx) continue;
    const double scale = double(inv[c]) * (gamma ? gamma[c] : 1.0);
    for (i64 m = 0; m < M; ++m)
      dx[m * C + c] = static_cast<float>(scale * (dy[m * C + c] - db / M - xhat[m * C + c] * dg / M));
  }
}

void batch_norm_infer(i64 M, i64 C, const float* x, const float* mean, const float* var, const float* gamma,
                      const float* beta, float eps, float* y, const PointwiseAct& act) {
  for (i64 m = 0; m < M; ++m)
    for (i64 c = 0; c < C; ++c)
      y[m * C + c] = static_cast<float>((x[m * C + c] - double(mean[c])) / std::sqrt(double(var[c]) + eps) *
                                            (gamma ? gamma[c] : 1.0) +
                                        (beta ? beta[c] : 0.0));
  if (act.on) pointwise(act.f, M * C, y, y, act.lo, act.hi);
}

void pointwise(Pointwise f, i64 n, const float* x, float* y, float lo, float hi) {
  for (i64 i = 0; i < n; ++i) {
    const double v = x[i], s = 1.0 / (1.0 + std::exp(-v));
    y[i] = f == Pointwise::Clamp ? (v < lo ? lo : v > hi ? hi : x[i])
                                 : static_cast<float>(f == Pointwise::Sigmoid ? s : v * s);
  }
}

void pad2d(i64 N, i64 H, i64 W, i64 C, i64 top, i64 bottom, i64 left, i64 right, const float* x, float* y) {
  const i64 OH = top + H + bottom, OW = left + W + right;
  for (i64 n = 0; n < N; ++n)
    for (i64 oh = 0; oh < OH; ++oh)
      for (i64 ow = 0; ow < OW; ++ow)
        for (i64 c = 0; c < C; ++c) {
          const i64 h = oh - top, w = ow - left;
          y[((n * OH + oh) * OW + ow) * C + c] = inside(h, H) && inside(w, W) ? x[((n * H + h) * W + w) * C + c] : 0.f;
        }
}

void binary(Binary op, i64 outer, i64 mid, i64 inner, const float* a, const float* b, float* y,
            const PointwiseAct& post) {
  for (i64 o = 0; o < outer; ++o)
    for (i64 m = 0; m < mid; ++m)
      for (i64 i = 0; i < inner; ++i) {
        const i64 k = (o * mid + m) * inner + i;
        const float u = a[k], v = b[o * inner + i];
        y[k] = op == Binary::Add        ? u + v
               : op == Binary::Subtract ? u - v
               : op == Binary::Multiply ? u * v
               : op == Binary::Divide   ? u / v
                                        : (v <= 0.f ? 0.f : u);
      }
  if (post.on) pointwise(post.f, outer * mid * inner, y, y, post.lo, post.hi);
}

}  // namespace convkit::reference
