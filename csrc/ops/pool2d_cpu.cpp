// CPU pooling. NHWC makes the channel loop the contiguous inner loop, so every
// window step is a vectorisable pass over C floats. Backward passes scatter into
// dx and run one image per thread, since windows may overlap within an image.
#include "ops/pool2d.h"

#include <algorithm>
#include <cstring>

namespace convkit {
namespace {

struct Span {
  i64 lo, hi;  // [lo, hi) clipped to the input
};

Span window(i64 o, i64 stride, i64 pad, i64 size, i64 in) {
  const i64 start = o * stride - pad;
  return {std::max<i64>(start, 0), std::min(start + size, in)};
}

// Calls body(img, hs, ws, o) for every output pixel: img is its image, hs/ws its window's
// clipped rows and columns, o the offset of its C outputs. Images and rows spread over threads.
template <class Body>
void each_window(const Pool2dDesc& d, const float* x, Body body) {
#pragma omp parallel for collapse(2) schedule(static)
  for (i64 n = 0; n < d.N; ++n)
    for (i64 oh = 0; oh < d.OH; ++oh) {
      const Span hs = window(oh, d.sh, d.pt, d.R, d.H);
      const float* img = x + n * d.H * d.W * d.C;
      for (i64 ow = 0; ow < d.OW; ++ow)
        body(img, hs, window(ow, d.sw, d.pl, d.S, d.W), ((n * d.OH + oh) * d.OW + ow) * d.C);
    }
}

}  // namespace

// Strictly greater keeps the first of equal values; NaN beats any number.
inline bool beats(float v, float m) { return v > m || (v != v && m == m); }

void max_pool2d_fwd_cpu(const Pool2dDesc& d, const float* x, float* y, std::int32_t* argmax) {
  // The window is never all padding (see window_1d), so its first cell seeds the max.
  if (argmax) {
    each_window(d, x, [&](const float* img, Span hs, Span ws, i64 o) {
      float* yo = y + o;
      std::int32_t* ao = argmax + o;
      std::memcpy(yo, img + (hs.lo * d.W + ws.lo) * d.C, sizeof(float) * d.C);
      std::fill(ao, ao + d.C, static_cast<std::int32_t>(hs.lo * d.W + ws.lo));
      for (i64 ih = hs.lo; ih < hs.hi; ++ih)
        for (i64 iw = ws.lo; iw < ws.hi; ++iw) {
          const float* xc = img + (ih * d.W + iw) * d.C;
          const auto idx = static_cast<std::int32_t>(ih * d.W + iw);
          for (i64 c = 0; c < d.C; ++c) {  // selects, not a branch: the loop vectorises
            const bool b = beats(xc[c], yo[c]);
            yo[c] = b ? xc[c] : yo[c];
            ao[c] = b ? idx : ao[c];
          }
        }
    });
    return;
  }
  each_window(d, x, [&](const float* img, Span hs, Span ws, i64 o) {
    float* yo = y + o;
    std::memcpy(yo, img + (hs.lo * d.W + ws.lo) * d.C, sizeof(float) * d.C);
    for (i64 ih = hs.lo; ih < hs.hi; ++ih)
      for (i64 iw = ws.lo; iw < ws.hi; ++iw) {
        const float* xc = img + (ih * d.W + iw) * d.C;
        for (i64 c = 0; c < d.C; ++c) yo[c] = beats(xc[c], yo[c]) ? xc[c] : yo[c];
      }
  });
}

i64 max_pool2d_bwd_cpu(const Pool2dDesc& d, const float* dy, const std::int32_t* argmax, float* dx) {
  const i64 plane = d.H * d.W * d.C, out = d.OH * d.OW * d.C;
  const auto cells = static_cast<std::uint64_t>(d.H * d.W);
  i64 outside = 0;
#pragma omp parallel for schedule(static) reduction(+ : outside)
  for (i64 n = 0; n < d.N; ++n) {
    float* dxi = dx + n * plane;
    std::fill(dxi, dxi + plane, 0.f);
    const float* g = dy + n * out;
    const std::int32_t* a = argmax + n * out;
    for (i64 p = 0; p < d.OH * d.OW; ++p)
      for (i64 c = 0; c < d.C; ++c) {
        const i64 cell = a[p * d.C + c];
        if (static_cast<std::uint64_t>(cell) >= cells) {  // a caller's argmax: counted, never followed
          ++outside;
          continue;
        }
        dxi[cell * d.C + c] += g[p * d.C + c];
      }
  }
  return outside;
}

i64 max_pool2d_argmax_outside_cpu(const Pool2dDesc& d, const std::int32_t* argmax) {
  i64 outside = 0;
#pragma omp parallel for collapse(2) schedule(static) reduction(+ : outside)
  for (i64 n = 0; n < d.N; ++n)
    for (i64 oh = 0; oh < d.OH; ++oh) {
      const Span hs = window(oh, d.sh, d.pt, d.R, d.H);
      for (i64 ow = 0; ow < d.OW; ++ow) {
        const Span ws = window(ow, d.sw, d.pl, d.S, d.W);
        const std::int32_t* a = argmax + ((n * d.OH + oh) * d.OW + ow) * d.C;
        for (i64 c = 0; c < d.C; ++c) {
          const i64 cell = a[c], ih = cell / d.W, iw = cell - ih * d.W;
          outside += cell < 0 || ih < hs.lo || ih >= hs.hi || iw < ws.lo || iw >= ws.hi;
        }
      }
    }
  return outside;
}

void avg_pool2d_fwd_cpu(const Pool2dDesc& d, const float* x, float* y) {
  each_window(d, x, [&](const float* img, Span hs, Span ws, i64 o) {
    float* yo = y + o;
    std::fill(yo, yo + d.C, 0.f);
    for (i64 ih = hs.lo; ih < hs.hi; ++ih)
      for (i64 iw = ws.lo; iw < ws.hi; ++iw) {
        const float* xc = img + (ih * d.W + iw) * d.C;
        for (i64 c = 0; c < d.C; ++c) yo[c] += xc[c];
      }
    const float inv = 1.f / static_cast<float>((hs.hi - hs.lo) * (ws.hi - ws.lo));
    for (i64 c = 0; c < d.C; ++c) yo[c] *= inv;
  });
}

void avg_pool2d_bwd_cpu(const Pool2dDesc& d, const float* dy, float* dx) {
  const i64 plane = d.H * d.W * d.C;
#pragma omp parallel for schedule(static)
  for (i64 n = 0; n < d.N; ++n) {
    float* dxi = dx + n * plane;
    std::fill(dxi, dxi + plane, 0.f);
    for (i64 oh = 0; oh < d.OH; ++oh) {
      const Span hs = window(oh, d.sh, d.pt, d.R, d.H);
      for (i64 ow = 0; ow < d.OW; ++ow) {
        const Span ws = window(ow, d.sw, d.pl, d.S, d.W);
        const float* g = dy + ((n * d.OH + oh) * d.OW + ow) * d.C;
        const float inv = 1.f / static_cast<float>((hs.hi - hs.lo) * (ws.hi - ws.lo));
        for (i64 ih = hs.lo; ih < hs.hi; ++ih)
          for (i64 iw = ws.lo; iw < ws.hi; ++iw) {
            float* dc = dxi + (ih * d.W + iw) * d.C;
            for (i64 c = 0; c < d.C; ++c) dc[c] += g[c] * inv;
          }
      }
    }
  }
}

void pad2d_cpu(i64 N, i64 H, i64 W, i64 C, i64 top, i64 bottom, i64 left, i64 right, const float* x, float* y) {
  const i64 OH = top + H + bottom, row = (left + W + right) * C;
#pragma omp parallel for schedule(static) if (N * OH * row > (1 << 16))
  for (i64 r = 0; r < N * OH; ++r) {
    float* out = y + r * row;
    const i64 h = r % OH - top;
    if (h < 0 || h >= H) {
      std::fill(out, out + row, 0.f);
      continue;
    }
    std::fill(out, out + left * C, 0.f);
    std::copy_n(x + ((r / OH) * H + h) * W * C, W * C, out + left * C);
    std::fill(out + (left + W) * C, out + row, 0.f);
  }
}

}  // namespace convkit
