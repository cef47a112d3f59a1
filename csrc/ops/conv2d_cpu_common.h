// What the CPU convolution's strategies share (conv2d_cpu.cpp chooses among them, one file
// each): the gather GEMM's description, tap tables, weight packing, tile pointers, bias and
// activation epilogues, and the block sizes. Internal to the CPU module.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "cpu/gemm.h"
#include "ops/conv2d.h"

namespace convkit::conv_cpu {

using cpu::MR;
using cpu::NR;

constexpr i64 kKC = 256;  // reduction block: an A panel (MR x kKC) plus a B panel stay in L1
constexpr i64 kMC = 96;   // rows per block: the packed A block (kMC x kKC) stays in L2
static_assert(kMC % MR == 0 && kMC % cpu::kMaxDirectRows == 0, "blocks hold whole tiles of either height");
// Below both, packing the source pixel-major beats reading it in place: with so few
// columns the direct tile would leave most lanes idle (a first layer's 1-3 channels to
// 6 filters); with more columns, the direct tile's vector stores beat the pixel-major
// tile's transposed scalar ones.
constexpr i64 kPixelMajorMaxChannels = 3, kPixelMajorMaxCols = 8;
constexpr i64 kSmallGrid = 64;  // grids of at most this many pixels run tiles across images
// A kernel row's taps merge into one run (padded copy of the source) when S * C is at most
// this: in forward, in backward-data into few channels (S * K), in backward-filter. Past
// these, copying the source costs more than the pointers it saves.
constexpr i64 kMergeMaxRun = 32, kMergeMaxRunBackward = 80, kMergeMaxRunFilter = 80;
constexpr i64 kMergeMaxChannelsBackward = 8;  // backward-data merges only into this many channels or fewer
constexpr i64 kDotMinChannels = 4;     // below this, dot products along channels waste most lanes

inline i64 round_up(i64 v, i64 m) { return (v + m - 1) / m * m; }

inline bool pixel_major_fits(i64 channels, i64 cols) {
  return channels <= kPixelMajorMaxChannels && cols <= kPixelMajorMaxCols;
}

// table[o * taps + t] = source index of output position o through tap t, or -1.
inline std::vector<i64> forward_taps(i64 out, i64 taps, i64 stride, i64 dil, i64 pad, i64 in) {
  std::vector<i64> t(static_cast<size_t>(out * taps));
  for (i64 o = 0; o < out; ++o)
    for (i64 k = 0; k < taps; ++k) {
      const i64 i = o * stride - pad + k * dil;
      t[o * taps + k] = (i >= 0 && i < in) ? i : -1;
    }
  return t;
}

// table[i * taps + t] = the output position that reads input i through tap t, or -1.
inline std::vector<i64> backward_taps(i64 in, i64 taps, i64 stride, i64 dil, i64 pad, i64 out) {
  std::vector<i64> t(static_cast<size_t>(in * taps));
  for (i64 i = 0; i < in; ++i)
    for (i64 k = 0; k < taps; ++k) {
      const i64 num = i + pad - k * dil;
      const bool hit = num >= 0 && num % stride == 0 && num / stride < out;
      t[i * taps + k] = hit ? num / stride : -1;
    }
  return t;
}

struct GatherGemm {
  const float* src;
  i64 SH, SW, SC;        // source tensor (N, SH, SW, SC)
  i64 N, GH, GW;         // row grid: m = (n * GH + gh) * GW + gw
  i64 R, S;              // taps
  const i64* tab_h;      // [GH * R]
  const i64* tab_w;      // [GW * S]
  const float* wt;       // B[(r,s,ch), j] = wt[(r*S+s)*rs_stride + ch*ch_stride + j*col_stride]
  i64 rs_stride, ch_stride, col_stride;
  i64 ncols;
  float* out;            // (rows x ncols), row-major
  const float* bias;     // may be null
  Activation act;
  i64 px = 0;            // floats from one source pixel to the next, when not SC (merged taps)
  PointwiseAct post{};   // conv2d_fwd_cpu's: on each finished block of rows
  const float* scale = nullptr;  // conv2d_fwd_cpu's: B's column j times scale[j], applied while packing
  const float* residual = nullptr;  // conv2d_fwd_cpu's: laid out as out, added to each finished block before post
  bool residual_relu = false;       // ReLU after adding the residual (the tiles' own epilogue is then linear)
};

// The residual (and its ReLU), then `post`, on columns [j0, j1) of `count` output rows from row m0,
// `step` rows apart, while they are in cache.
inline void post_rows(const GatherGemm& g, i64 m0, i64 count, i64 step, i64 j0, i64 j1) {
  if (!g.post.on && !g.residual) return;
  for (i64 i = 0; i < count; ++i) {
    const i64 at = (m0 + i * step) * g.ncols + j0;
    float* row = g.out + at;
    if (g.residual) {
      const float* r = g.residual + at;
      if (g.residual_relu)
        for (i64 j = 0; j < j1 - j0; ++j) row[j] = std::max(row[j] + r[j], 0.f);
      else
        for (i64 j = 0; j < j1 - j0; ++j) row[j] += r[j];
    }
    if (g.post.on) pointwise_serial_cpu(g.post, j1 - j0, row, row);
  }
}

inline i64 pixel_stride(const GatherGemm& g) { return g.px ? g.px : g.SC; }

// The weights as the (Q x ncols) operand, packed once in panels of `width` columns
// (packed[j0 * Q + q * width + i] = B[q, j0 + i], zero past ncols): NR-wide for the
// row-major product, MR-wide for the transposed one. Each row of B is read once, in order,
// and dealt out to the panels: reading a panel at a time went down a column of the weights,
// one cache line per row (a 3x3x512x512 layer's packing took longer than its product at
// batch 1). Rows are packed in parallel, into a buffer the calling thread keeps for its next
// call: a fresh one cost page faults and a zero fill each time, and every call rewrites it.
// The pointer is valid until that thread packs again.
inline const float* pack_weights(const GatherGemm& g, i64 Q, i64 width) {
  const i64 panels = (g.ncols + width - 1) / width, full = g.col_stride == 1 ? g.ncols / width : 0;
  thread_local std::vector<float> buffer;
  buffer.resize(std::max(buffer.size(), static_cast<size_t>(Q * panels * width)));
  float* packed = buffer.data();
#pragma omp parallel for schedule(static)
  for (i64 q = 0; q < Q; ++q) {
    const float* row = g.wt + (q / g.SC) * g.rs_stride + (q % g.SC) * g.ch_stride;
    float* dst = packed + q * width;
    const float* sc = g.scale;
    for (i64 p = 0; p < full; ++p, dst += Q * width)  // whole panels of a row in place
      if (sc)
#pragma GCC unroll 16
        for (i64 j = 0; j < width; ++j) dst[j] = row[p * width + j] * sc[p * width + j];
      else
#pragma GCC unroll 16
        for (i64 j = 0; j < width; ++j) dst[j] = row[p * width + j];
    for (i64 p = full; p < panels; ++p, dst += Q * width)
      for (i64 j = 0, j0 = p * width; j < width; ++j)
        dst[j] = j0 + j < g.ncols ? row[(j0 + j) * g.col_stride] * (sc ? sc[j0 + j] : 1.f) : 0.f;
  }
  return packed;
}

// Walks the row grid pixel by pixel: (n, gh, gw) of row m without a division per row
// (64-bit divisions cost as much as a small layer's whole tap loop).
struct GridCursor {
  i64 GH, GW, n, gh, gw;
  GridCursor(const GatherGemm& g, i64 m) : GH(g.GH), GW(g.GW), n(m / (g.GW * g.GH)), gh((m / g.GW) % g.GH), gw(m % g.GW) {}
  void next() {
    if (++gw < GW) return;
    gw = 0;
    if (++gh < GH) return;
    gh = 0;
    ++n;
  }
};

// Pointers to the source rows that the next `rows` grid pixels read through each tap:
// out[t * P + i] for pixel i < rows, zeros for rows <= i < P; advances the cursor. Within
// one grid row, a tap whose first and last pixels read a contiguous stretch (stride 1, no
// padding in between) gets its pointers by stepping, without a table lookup per pixel.
// Returns the kernel rows [first, last) that some pixel reads outside the padding: the
// rows beyond them (a tile on the top or bottom border) need not be computed.
inline std::pair<i64, i64> tile_pointers(const GatherGemm& g, GridCursor& cur, int rows, int P, const float* zeros,
                                  const float** out) {
  const i64 taps = g.R * g.S;
  for (i64 t = 0; t < taps; ++t)
    for (int i = rows; i < P; ++i) out[t * P + i] = zeros;
  const i64 px = pixel_stride(g);
  const float* img = g.src + cur.n * g.SH * g.SW * px;
  i64 r_first = g.R, r_last = 0;
  if (cur.gw + rows <= g.GW) {
    const i64 *th = g.tab_h + cur.gh * g.R, *tw = g.tab_w + cur.gw * g.S;
    for (i64 r = 0; r < g.R; ++r)
      if (th[r] >= 0) r_first = std::min(r_first, r), r_last = r + 1;
    for (i64 r = 0; r < g.R; ++r)
      for (i64 s = 0; s < g.S; ++s) {
        const float** o = out + (r * g.S + s) * P;
        const i64 first = tw[s], last = tw[(rows - 1) * g.S + s];
        if (th[r] < 0) {
          for (int i = 0; i < rows; ++i) o[i] = zeros;
        } else if (first >= 0 && last - first == rows - 1) {
          const float* base = img + (th[r] * g.SW + first) * px;
          for (int i = 0; i < rows; ++i) o[i] = base + i * px;
        } else {
          for (int i = 0; i < rows; ++i) {
            const i64 iw = tw[i * g.S + s];
            o[i] = iw >= 0 ? img + (th[r] * g.SW + iw) * px : zeros;
          }
        }
      }
    for (int i = 0; i < rows; ++i) cur.next();
    return {r_first, std::max(r_first, r_last)};
  }
  for (int i = 0; i < rows; ++i, cur.next()) {  // the tile crosses grid rows: pixel by pixel
    img = g.src + cur.n * g.SH * g.SW * px;
    const i64 *th = g.tab_h + cur.gh * g.R, *tw = g.tab_w + cur.gw * g.S;
    for (i64 r = 0; r < g.R; ++r) {
      if (th[r] >= 0) r_first = std::min(r_first, r), r_last = std::max(r_last, r + 1);
      for (i64 s = 0; s < g.S; ++s)
        out[(r * g.S + s) * P + i] = (th[r] >= 0 && tw[s] >= 0) ? img + (th[r] * g.SW + tw[s]) * px : zeros;
    }
  }
  return {r_first, std::max(r_first, r_last)};
}

// `rows` image rows of W pixels x C channels with `left` zero columns before them and zeros
// after up to wp columns: column iw lands at padded column iw + left.
inline std::vector<float> pad_columns(const float* x, i64 rows, i64 W, i64 C, i64 left, i64 wp) {
  std::vector<float> xp(static_cast<size_t>(rows * wp * C));
#pragma omp parallel for
  for (i64 row = 0; row < rows; ++row)
    for (i64 p = 0; p < wp; ++p) {
      const i64 iw = p - left;
      for (i64 c = 0; c < C; ++c)
        xp[(row * wp + p) * C + c] = iw >= 0 && iw < W ? x[(row * W + iw) * C + c] : 0.f;
    }
  return xp;
}

// The threads' private backward-filter sums (QK weights + K bias each), added up in a fixed
// thread order at the end so that results do not depend on timing.
struct Partials {
  i64 QK, K;
  int threads;
  std::vector<float> data;
  Partials(i64 qk, i64 k, int n) : QK(qk), K(k), threads(n), data(static_cast<size_t>(n) * (qk + k), 0.f) {}
  float* weights(int t) { return data.data() + static_cast<size_t>(t) * (QK + K); }
  float* bias(int t) { return weights(t) + QK; }
  void reduce(float* dw, float* dbias) const {
    const auto at = [&](int t, i64 e) { return data[static_cast<size_t>(t) * (QK + K) + e]; };
    for (i64 e = 0; e < QK + (dbias ? K : 0); ++e) {
      float sum = 0.f;
      for (int t = 0; t < threads; ++t) sum += at(t, e);
      (e < QK ? dw[e] : dbias[e - QK]) = sum;
    }
  }
};

// The bias padded with zeros to whole tiles, for the tiles' fused epilogue (cpu::Epilogue).
inline std::vector<float> padded_bias(const GatherGemm& g) {
  std::vector<float> b(static_cast<size_t>(g.bias ? round_up(g.ncols, cpu::max_tile_cols()) : 0), 0.f);
  std::copy(g.bias, g.bias + (g.bias ? g.ncols : 0), b.begin());
  return b;
}

inline cpu::Epilogue tile_epilogue(const GatherGemm& g, const std::vector<float>& bias, i64 jp) {
  return {g.bias ? bias.data() + jp : nullptr, g.act == Activation::Relu};
}

// Bias, activation and `post` on `count` output rows from row m0 (for tiles without a fused epilogue).
inline void epilogue(const GatherGemm& g, i64 m0, i64 count) {
  if (g.bias || g.act == Activation::Relu)
    for (i64 m = m0; m < m0 + count; ++m) {
      float* row = g.out + m * g.ncols;
      if (g.bias)
        for (i64 j = 0; j < g.ncols; ++j) row[j] += g.bias[j];
      if (g.act == Activation::Relu)
        for (i64 j = 0; j < g.ncols; ++j) row[j] = std::max(row[j], 0.f);
    }
  post_rows(g, m0, count, 1, 0, g.ncols);
}

// The strategies. Gather GEMMs (forward and backward-data):
void run_direct(const GatherGemm& g, i64 M, i64 npad);       // conv2d_cpu_direct.cpp: any shape
void run_by_position(const GatherGemm& g, i64 npad);         // conv2d_cpu_by_position.cpp: any shape
void run_pixel_major(const GatherGemm& g);                   // conv2d_cpu_pixel_major.cpp: taps not merged
void run_dot(const GatherGemm& g, i64 M);                    // conv2d_cpu_dot.cpp: at most cpu::kDotMaxCols columns
void run_rows(const GatherGemm& g, i64 M);                   // conv2d_cpu_rows.cpp: weights' rows contiguous
constexpr i64 kRowsMax = 4;                                  // the automatic choice of rows: at most this many
// Backward-filter:
void bwd_filter_by_rows(const Conv2dDesc& d, const float* x, const float* dy, float* dw, float* dbias);
                                                             // conv2d_cpu_filter_rows.cpp: S * C <= row_grad_max_pairs()
void bwd_filter_gemm(const Conv2dDesc& d, const float* x, const float* dy, float* dw, float* dbias);
                                                             // conv2d_cpu_filter_gemm.cpp: any shape

}  // namespace convkit::conv_cpu
