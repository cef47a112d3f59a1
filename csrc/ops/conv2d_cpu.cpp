// CPU convolution as implicit GEMM over the micro-kernel in cpu/gemm.h.
//
// Forward and backward-data are the same computation, a "gather GEMM":
//   out[m, j] = sum_q A[m, q] * B[q, j],  q = (r, s, ch)
// where row m is a pixel of the output grid and A[m, q] is read from a source
// tensor at a pixel given by per-dimension tap tables (-1 = padding, reads 0).
//   forward:       source x,  rows = output pixels, B[q=(r,s,c), k] = w[r,s,c,k]
//   backward-data: source dy, rows = input pixels,  B[q=(r,s,k), c] = w[r,s,c,k]
// For backward-data the tap table maps input row ih and tap r to the output row
// oh = (ih + pt - r*dh) / sh when that division is exact, which handles every
// stride and dilation with one code path.
// Backward-filter reduces over pixels instead: dw[q, k] = sum_m im2col(x)[m, q] * dy[m, k],
// split over threads by pixel ranges with private accumulators.
#include "ops/conv2d.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "cpu/gemm.h"

namespace convkit {
namespace {

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

i64 round_up(i64 v, i64 m) { return (v + m - 1) / m * m; }

bool pixel_major_fits(i64 channels, i64 cols) {
  return channels <= kPixelMajorMaxChannels && cols <= kPixelMajorMaxCols;
}

// table[o * taps + t] = source index of output position o through tap t, or -1.
std::vector<i64> forward_taps(i64 out, i64 taps, i64 stride, i64 dil, i64 pad, i64 in) {
  std::vector<i64> t(static_cast<size_t>(out * taps));
  for (i64 o = 0; o < out; ++o)
    for (i64 k = 0; k < taps; ++k) {
      const i64 i = o * stride - pad + k * dil;
      t[o * taps + k] = (i >= 0 && i < in) ? i : -1;
    }
  return t;
}

// table[i * taps + t] = the output position that reads input i through tap t, or -1.
std::vector<i64> backward_taps(i64 in, i64 taps, i64 stride, i64 dil, i64 pad, i64 out) {
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
};

i64 pixel_stride(const GatherGemm& g) { return g.px ? g.px : g.SC; }

// The weights as the (Q x ncols) operand, packed once in panels of `width` columns
// (packed[j0 * Q + q * width + i] = B[q, j0 + i], zero past ncols): NR-wide for the
// row-major product, MR-wide for the transposed one.
std::vector<float> pack_weights(const GatherGemm& g, i64 Q, i64 width) {
  std::vector<float> packed(static_cast<size_t>(Q * round_up(g.ncols, width)));
  float* dst = packed.data();
  for (i64 j0 = 0; j0 < g.ncols; j0 += width)
    for (i64 q = 0; q < Q; ++q) {
      const float* row = g.wt + (q / g.SC) * g.rs_stride + (q % g.SC) * g.ch_stride;
      for (i64 j = j0; j < j0 + width; ++j) *dst++ = j < g.ncols ? row[j * g.col_stride] : 0.f;
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
std::pair<i64, i64> tile_pointers(const GatherGemm& g, GridCursor& cur, int rows, int P, const float* zeros,
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
std::vector<float> pad_columns(const float* x, i64 rows, i64 W, i64 C, i64 left, i64 wp) {
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
std::vector<float> padded_bias(const GatherGemm& g) {
  std::vector<float> b(static_cast<size_t>(g.bias ? round_up(g.ncols, cpu::max_tile_cols()) : 0), 0.f);
  std::copy(g.bias, g.bias + (g.bias ? g.ncols : 0), b.begin());
  return b;
}

cpu::Epilogue tile_epilogue(const GatherGemm& g, const std::vector<float>& bias, i64 jp) {
  return {g.bias ? bias.data() + jp : nullptr, g.act == Activation::Relu};
}

// Bias and activation on `count` output rows from row m0 (for tiles without a fused epilogue).
void epilogue(const GatherGemm& g, i64 m0, i64 count) {
  if (!g.bias && g.act != Activation::Relu) return;
  for (i64 m = m0; m < m0 + count; ++m) {
    float* row = g.out + m * g.ncols;
    if (g.bias)
      for (i64 j = 0; j < g.ncols; ++j) row[j] += g.bias[j];
    if (g.act == Activation::Relu)
      for (i64 j = 0; j < g.ncols; ++j) row[j] = std::max(row[j], 0.f);
  }
}

// The general case: the micro-kernel reads each row's channels in
// place through pointers (padding and rows past the end point at zeros), so
// nothing is packed but the weights, and the whole reduction stays in registers.
void run_direct(const GatherGemm& g, i64 M, i64 npad) {
  const i64 taps = g.R * g.S, Q = taps * g.SC;
  const std::vector<float> bpack = pack_weights(g, Q, NR);
  const std::vector<float> zeros(static_cast<size_t>(g.SC), 0.f);
  const i64 blocks = (M + kMC - 1) / kMC, tile_cols = cpu::max_tile_cols();
  const int mr = cpu::direct_rows();
  const std::vector<float> bias = padded_bias(g);
#pragma omp parallel
  {
    std::vector<const float*> ptrs(static_cast<size_t>(kMC * taps));
    std::vector<std::pair<i64, i64>> live(static_cast<size_t>(kMC / mr));
#pragma omp for schedule(dynamic, 1)
    for (i64 blk = 0; blk < blocks; ++blk) {
      const i64 m0 = blk * kMC, mc = std::min(kMC, M - m0);
      GridCursor cur(g, m0);
      for (i64 ip = 0; ip < mc; ip += mr)
        live[ip / mr] = tile_pointers(g, cur, static_cast<int>(std::min<i64>(mr, mc - ip)), mr, zeros.data(),
                                      ptrs.data() + ip * taps);
      for (i64 jp = 0; jp < npad; jp += tile_cols) {
        const int cols = static_cast<int>(std::min<i64>(tile_cols, g.ncols - jp));
        for (i64 ip = 0; ip < mc; ip += mr) {
          const auto [r0, r1] = live[ip / mr];  // kernel rows that read only padding are skipped
          cpu::direct_tile((r1 - r0) * g.S, g.SC, ptrs.data() + ip * taps + r0 * g.S * mr,
                           bpack.data() + jp * Q + r0 * g.S * g.SC * NR, Q * NR, g.out + (m0 + ip) * g.ncols + jp, g.ncols,
                           static_cast<int>(std::min<i64>(mr, mc - ip)), cols, nullptr, tile_epilogue(g, bias, jp));
        }
      }
    }
  }
}

// Small grids (the 2x2 to 8x8 maps deep in a network): a large share of the taps read
// padding, and on a map this small every tile would hold some pixel that needs each
// tap. So tiles run across images instead: the images of a tile at one grid position share the
// same valid taps, and only those are computed (B addressed per tap); the tile's rows
// are GH * GW rows apart in the output.
void run_by_position(const GatherGemm& g, i64 npad) {
  const i64 taps = g.R * g.S, Q = taps * g.SC, cells = g.GH * g.GW, img = g.SH * g.SW * pixel_stride(g);
  const std::vector<float> bpack = pack_weights(g, Q, NR);
  const i64 groups = (g.N + kMC - 1) / kMC, tasks = cells * groups, tile_cols = cpu::max_tile_cols();
  const int mr = cpu::direct_rows();
  const std::vector<float> bias = padded_bias(g);
#pragma omp parallel
  {
    std::vector<const float*> ptrs(static_cast<size_t>(taps * mr)), btaps(static_cast<size_t>(taps));
    std::vector<i64> src(static_cast<size_t>(taps)), live(static_cast<size_t>(taps));
#pragma omp for schedule(dynamic, 1)
    for (i64 task = 0; task < tasks; ++task) {
      const i64 cell = task % cells, n0 = task / cells * kMC, nc = std::min(kMC, g.N - n0);
      const i64 gh = cell / g.GW, gw = cell % g.GW;
      i64 nt = 0;
      for (i64 r = 0; r < g.R; ++r)
        for (i64 s = 0; s < g.S; ++s) {
          const i64 ih = g.tab_h[gh * g.R + r], iw = g.tab_w[gw * g.S + s];
          if (ih < 0 || iw < 0) continue;
          src[nt] = (ih * g.SW + iw) * pixel_stride(g);
          live[nt++] = r * g.S + s;
        }
      for (i64 i0 = 0; i0 < nc; i0 += mr) {
        const int rows = static_cast<int>(std::min<i64>(mr, nc - i0));
        for (i64 t = 0; t < nt; ++t)
          for (int i = 0; i < mr; ++i) ptrs[t * mr + i] = g.src + (n0 + i0 + std::min(i, rows - 1)) * img + src[t];
        const i64 m = (n0 + i0) * cells + cell;
        for (i64 jp = 0; jp < npad; jp += tile_cols) {
          for (i64 t = 0; t < nt; ++t) btaps[t] = bpack.data() + jp * Q + live[t] * g.SC * NR;
          cpu::direct_tile(nt, g.SC, ptrs.data(), nullptr, Q * NR, g.out + m * g.ncols + jp, cells * g.ncols, rows,
                           static_cast<int>(std::min<i64>(tile_cols, g.ncols - jp)), btaps.data(),
                           tile_epilogue(g, bias, jp));
        }
      }
    }
  }
}

// Few source channels and few columns (a first layer's forward from 1-3 channel images
// to a handful of filters): compute the transposed product
// out^T = B^T A^T, so that NR consecutive pixels fill the vector lanes rather than a
// handful of columns. B^T (the weights) is packed once as MR-row panels; for each
// block of NR pixels the A^T panel is gathered once and reused by every panel of
// columns. Neighbouring pixels of a stride-1 row read neighbouring source pixels, so
// interior gathers are runs of contiguous copies.
void run_pixel_major(const GatherGemm& g) {
  const i64 Q = g.R * g.S * g.SC;
  const std::vector<float> wpack = pack_weights(g, Q, MR);
  // Blocks of NR pixels never straddle two grid rows, so each tap of a block reads
  // one source row (lanes past the row's end compute values that are not stored).
  const i64 per_row = (g.GW + NR - 1) / NR, blocks = g.N * g.GH * per_row;
#pragma omp parallel
  {
    std::vector<float> bpack(static_cast<size_t>(Q * NR));
    alignas(32) float tile[MR * NR];
#pragma omp for schedule(dynamic, 8)
    for (i64 blk = 0; blk < blocks; ++blk) {
      const i64 row = blk / per_row, gw0 = (blk % per_row) * NR, gh = row % g.GH, n = row / g.GH;
      const i64 cols = std::min<i64>(NR, g.GW - gw0), m0 = row * g.GW + gw0;
      const float* img = g.src + n * g.SH * g.SW * g.SC;
      float* b = bpack.data();
      for (i64 r = 0; r < g.R; ++r) {
        const i64 ih = g.tab_h[gh * g.R + r];
        for (i64 s = 0; s < g.S; ++s, b += g.SC * NR) {
          if (ih < 0) {
            std::fill(b, b + g.SC * NR, 0.f);
            continue;
          }
          const float* src_row = img + ih * g.SW * g.SC;
          const i64* tw = g.tab_w + gw0 * g.S + s;
          const i64 iw0 = tw[0];
          if (iw0 >= 0 && tw[(cols - 1) * g.S] == iw0 + cols - 1) {  // a contiguous run: copy it
            const float* src = src_row + iw0 * g.SC;
            if (g.SC == 1 && cols == NR)
              std::memcpy(b, src, NR * sizeof(float));  // a constant size: a vector copy, not a call
            else if (g.SC == 1)
              std::memcpy(b, src, static_cast<size_t>(cols) * sizeof(float));
            else
              for (i64 j = 0; j < cols; ++j)
                for (i64 ch = 0; ch < g.SC; ++ch) b[ch * NR + j] = src[j * g.SC + ch];
            continue;
          }
          for (i64 j = 0; j < cols; ++j) {
            const i64 iw = tw[j * g.S];
            for (i64 ch = 0; ch < g.SC; ++ch) b[ch * NR + j] = iw >= 0 ? src_row[iw * g.SC + ch] : 0.f;
          }
        }
      }
      for (i64 k0 = 0; k0 < g.ncols; k0 += MR) {
        cpu::micro_tile(Q, wpack.data() + k0 * Q, bpack.data(), 0, tile, NR, MR, NR, false);
        const i64 rows = std::min<i64>(MR, g.ncols - k0);
        for (i64 j = 0; j < cols; ++j) {
          float* out = g.out + (m0 + j) * g.ncols + k0;
          for (i64 i = 0; i < rows; ++i) {
            const float v = tile[i * NR + j] + (g.bias ? g.bias[k0 + i] : 0.f);
            out[i] = g.act == Activation::Relu ? std::max(v, 0.f) : v;
          }
        }
      }
    }
  }
}

// One to three output columns (backward-data into 1-3 image channels) from a source with
// a few channels or more: each output is a dot product along the source's channels, so the
// vector lanes run over channels instead of waiting on columns that do not exist.
void run_dot(const GatherGemm& g, i64 M) {
  const i64 taps = g.R * g.S, kpad = round_up(g.SC, 8);
  const int nc = static_cast<int>(g.ncols), P = cpu::dot_rows(nc);
  std::vector<float> wpack(static_cast<size_t>(taps * nc * kpad), 0.f);  // [tap][column][channel]
  for (i64 t = 0; t < taps; ++t)
    for (i64 j = 0; j < nc; ++j)
      for (i64 ch = 0; ch < g.SC; ++ch)
        wpack[(t * nc + j) * kpad + ch] = g.wt[t * g.rs_stride + ch * g.ch_stride + j * g.col_stride];
  const std::vector<float> zeros(static_cast<size_t>(g.SC), 0.f);
  const i64 blocks = (M + kMC - 1) / kMC;
#pragma omp parallel
  {
    std::vector<const float*> ptrs(static_cast<size_t>(taps * P));
#pragma omp for schedule(dynamic, 1)
    for (i64 blk = 0; blk < blocks; ++blk) {
      const i64 m0 = blk * kMC, mc = std::min(kMC, M - m0);
      GridCursor cur(g, m0);
      for (i64 p0 = m0; p0 < m0 + mc; p0 += P) {
        const int rows = static_cast<int>(std::min<i64>(P, m0 + mc - p0));
        const auto [r0, r1] = tile_pointers(g, cur, rows, P, zeros.data(), ptrs.data());
        cpu::dot_tile((r1 - r0) * g.S, g.SC, ptrs.data() + r0 * g.S * P, wpack.data() + r0 * g.S * nc * kpad, kpad,
                      g.out + p0 * g.ncols, g.ncols, rows, nc);
      }
      epilogue(g, m0, mc);
    }
  }
}

void run_gather_gemm(const GatherGemm& g) {
  const i64 M = g.N * g.GH * g.GW, npad = round_up(g.ncols, NR);
  if (M == 0) return;
  if (g.ncols <= cpu::kDotMaxCols && g.SC >= kDotMinChannels)
    run_dot(g, M);
  else if (pixel_major_fits(g.SC, g.ncols) && !g.px)
    run_pixel_major(g);
  else if (g.GH * g.GW <= kSmallGrid && g.R * g.S > 1)
    run_by_position(g, npad);
  else
    run_direct(g, M, npad);
}

}  // namespace

void conv2d_fwd_cpu(const Conv2dDesc& d, const float* x, const float* w, const float* bias, float* y,
                    Activation act) {
  const auto th = forward_taps(d.OH, d.R, d.sh, d.dh, d.pt, d.H);
  const bool merge = d.dw == 1 && d.S > 1 && d.C * d.S <= kMergeMaxRun && d.K > kPixelMajorMaxCols;
  const bool pixel_major = pixel_major_fits(d.C, d.K);
  const i64 wp = (d.OW - 1) * d.sw + (d.S - 1) * d.dw + 1;  // input columns read, padding included
  if (merge || (pixel_major && (d.pl > 0 || wp > d.W))) {
    // Few channels (a first layer): the input is copied once with its horizontal padding as
    // real zero columns, so every tap reads a stretch of one row with no padding in it.
    const std::vector<float> xp = pad_columns(x, d.N * d.H, d.W, d.C, d.pl, wp);
    if (!merge) {  // the pixel-major tile then copies runs instead of testing every pixel for padding
      const auto tw = forward_taps(d.OW, d.S, d.sw, d.dw, 0, wp);
      run_gather_gemm({xp.data(), d.H, wp, d.C, d.N, d.OH, d.OW, d.R, d.S, th.data(), tw.data(), w, d.C * d.K,
                       d.K, 1, d.K, y, bias, act});
      return;
    }
    // With more filters, a pixel's S taps along a kernel row read one run of S * C floats, so
    // they merge into one tap of that length, and the tile handles a run per kernel row
    // rather than a pointer and a few multiply-adds per tap. HWIO weights keep (s, c)
    // adjacent, so the merged tap's weights are the same rows in the same order.
    std::vector<i64> tw(static_cast<size_t>(d.OW));
    for (i64 ow = 0; ow < d.OW; ++ow) tw[ow] = ow * d.sw;
    run_gather_gemm({xp.data(), d.H, wp, d.S * d.C, d.N, d.OH, d.OW, d.R, 1, th.data(), tw.data(), w,
                     d.S * d.C * d.K, d.K, 1, d.K, y, bias, act, d.C});
    return;
  }
  const auto tw = forward_taps(d.OW, d.S, d.sw, d.dw, d.pl, d.W);
  run_gather_gemm({x, d.H, d.W, d.C, d.N, d.OH, d.OW, d.R, d.S, th.data(), tw.data(), w, d.C * d.K,
                   d.K, 1, d.K, y, bias, act});
}

void conv2d_bwd_data_cpu(const Conv2dDesc& d, const float* dy, const float* w, float* dx) {
  if (d.H == d.R && d.W == d.S && d.dh == 1 && d.dw == 1 && d.OH == 1 && d.OW == 1) {
    // The window covers the whole input (a classifier-like layer on a small map): every input
    // pixel sees exactly one tap, so dx (N x R*S*C) = dy (N x K) * w^T, one plain GEMM, rather
    // than a gather over R*S taps of which all but one read padding.
    const i64 zero = 0;
    run_gather_gemm({dy, 1, 1, d.K, d.N, 1, 1, 1, 1, &zero, &zero, w, 0, 1, d.K, d.R * d.S * d.C, dx, nullptr,
                     Activation::None});
    return;
  }
  const auto th = backward_taps(d.H, d.R, d.sh, d.dh, d.pt, d.OH);
  if (d.sw == 1 && d.dw == 1 && d.S > 1 && d.C <= kMergeMaxChannelsBackward && d.K >= kDotMinChannels &&
      d.S * d.K <= kMergeMaxRunBackward) {
    // Into few channels (dot products for 1-3): with stride 1, input column iw reads dy columns
    // iw + pl - s for s = S-1 .. 0, one run of S * K floats once dy has zero columns on both
    // sides, so a kernel row's taps merge into one as in the forward pass. The run visits s
    // backwards, so the weights are flipped along s to match.
    const i64 left = d.S - 1 - d.pl, wp = d.W + d.S - 1;
    const std::vector<float> dyp = pad_columns(dy, d.N * d.OH, d.OW, d.K, left, wp);
    std::vector<float> wf(static_cast<size_t>(d.R * d.S * d.K * d.C));  // [r][S-1-s][k][c]
    for (i64 r = 0; r < d.R; ++r)
      for (i64 s = 0; s < d.S; ++s)
        for (i64 c = 0; c < d.C; ++c)
          for (i64 k = 0; k < d.K; ++k)
            wf[((r * d.S + d.S - 1 - s) * d.K + k) * d.C + c] = w[((r * d.S + s) * d.C + c) * d.K + k];
    std::vector<i64> tw(static_cast<size_t>(d.W));
    for (i64 iw = 0; iw < d.W; ++iw) tw[iw] = iw;
    run_gather_gemm({dyp.data(), d.OH, wp, d.S * d.K, d.N, d.H, d.W, d.R, 1, th.data(), tw.data(), wf.data(),
                     d.S * d.K * d.C, d.C, 1, d.C, dx, nullptr, Activation::None, d.K});
    return;
  }
  const auto tw = backward_taps(d.W, d.S, d.sw, d.dw, d.pl, d.OW);
  run_gather_gemm({dy, d.OH, d.OW, d.K, d.N, d.H, d.W, d.R, d.S, th.data(), tw.data(), w, d.C * d.K,
                   1, d.K, d.C, dx, nullptr, Activation::None});
}

namespace {

// A first layer's backward-filter (1-3 input channels): the input is copied once with
// zero columns for the horizontal padding; then for each kernel row, every output row
// pairs with the input row it reads, and cpu::row_filter_grad keeps the gradients of all
// (tap column, channel) pairs in registers across the thread's rows.
void bwd_filter_by_rows(const Conv2dDesc& d, const float* x, const float* dy, float* dw, float* dbias) {
  const i64 rows = d.N * d.OH, Q = d.R * d.S * d.C, K = d.K;
  const i64 wp = (d.OW - 1) * d.sw + (d.S - 1) * d.dw + 1;  // padded input row, in pixels
  const auto th = forward_taps(d.OH, d.R, d.sh, d.dh, d.pt, d.H);
  const std::vector<float> xpad = pad_columns(x, d.N * d.H, d.W, d.C, d.pl, wp);
  Partials partial(Q * K, K, std::max(1, std::min<int>(omp_get_max_threads(), static_cast<int>(rows))));
  const int nthreads = partial.threads;
#pragma omp parallel num_threads(nthreads)
  {
    const int t = omp_get_thread_num();
    float *acc = partial.weights(t), *bacc = partial.bias(t);
    const i64 lo = rows * t / nthreads, hi = rows * (t + 1) / nthreads;
    // Blocks of rows whose dy (about 128 KiB) stays in L2 while the bias sum and every kernel
    // row read it.
    const i64 block = std::max<i64>(1, (32 << 10) / std::max<i64>(1, d.OW * K));
    std::vector<const float*> xrows, dyrows;
    for (i64 b0 = lo; b0 < hi; b0 += block) {
      cpu::column_sums(dy + b0 * d.OW * K, (std::min(hi, b0 + block) - b0) * d.OW, K, bacc);
      for (i64 r = 0; r < d.R; ++r) {
        xrows.clear();
        dyrows.clear();
        for (i64 row = b0; row < std::min(hi, b0 + block); ++row) {
          const i64 n = row / d.OH, ih = th[(row % d.OH) * d.R + r];
          if (ih < 0) continue;
          xrows.push_back(xpad.data() + ((n * d.H + ih) * wp) * d.C);
          dyrows.push_back(dy + row * d.OW * K);
        }
        cpu::row_filter_grad(static_cast<i64>(xrows.size()), xrows.data(), dyrows.data(), d.OW, d.sw * d.C,
                             d.dw * d.C, static_cast<int>(d.S), static_cast<int>(d.C), K, acc + r * d.S * d.C * K);
      }
    }
  }
  partial.reduce(dw, dbias);
}

}  // namespace

void conv2d_bwd_filter_cpu(const Conv2dDesc& d, const float* x, const float* dy, float* dw,
                           float* dbias) {
  // Few (tap column, channel) pairs: their gradients stay in registers (cpu::row_grad_max_pairs);
  // with more, the packed GEMM below wins.
  if (d.S * d.C <= cpu::row_grad_max_pairs() && d.N * d.OH * d.OW > 0) {
    bwd_filter_by_rows(d, x, dy, dw, dbias);
    return;
  }
  const i64 M = d.N * d.OH * d.OW, Q = d.R * d.S * d.C, K = d.K, npad = round_up(K, NR);
  const i64 tile_cols = cpu::max_tile_cols();
  const auto th = forward_taps(d.OH, d.R, d.sh, d.dh, d.pt, d.H);
  // With stride 1 along rows, a pixel's S taps along a kernel row read one run of S * C floats
  // once x has its horizontal padding as zero columns, so they merge into one tap of S * C
  // channels: a pointer per pixel and kernel row instead of per tap, and whole groups of
  // channels for layers with few. The source is then (N, H, SW) pixels of C floats, read
  // through SS taps per kernel row of SC channels each.
  // (Merged channels are read in place below, which takes at least MR of them.)
  const bool merge = d.sw == 1 && d.dw == 1 && d.S > 1 && d.S * d.C <= kMergeMaxRunFilter && d.S * d.C >= MR;
  const i64 SW = merge ? d.OW + d.S - 1 : d.W, SS = merge ? 1 : d.S, SC = merge ? d.S * d.C : d.C;
  const std::vector<float> xpad = merge ? pad_columns(x, d.N * d.H, d.W, d.C, d.pl, SW) : std::vector<float>();
  const float* src = merge ? xpad.data() : x;
  const auto tw = merge ? forward_taps(d.OW, 1, 1, 1, 0, SW) : forward_taps(d.OW, d.S, d.sw, d.dw, d.pl, d.W);
  const int group = cpu::gather_rows(SC);
  // The (r, s, c) of every reduction row, so packing does no division.
  std::vector<i64> q_r(Q), q_s(Q), q_c(Q);
  for (i64 q = 0; q < Q; ++q) {
    q_c[q] = q % d.C;
    q_s[q] = (q / d.C) % d.S;
    q_r[q] = q / (d.C * d.S);
  }
  const std::vector<float> zeros(static_cast<size_t>(SC), 0.f);
  Partials partial(Q * K, K, std::max(1, std::min<int>(omp_get_max_threads(), static_cast<int>((M + kKC - 1) / kKC))));
  const int nthreads = partial.threads;
#pragma omp parallel num_threads(nthreads)
  {
    const int t = omp_get_thread_num();
    float *acc = partial.weights(t), *bacc = partial.bias(t);
    const i64 lo = M * t / nthreads, hi = M * (t + 1) / nthreads;
    std::vector<float> bpack(static_cast<size_t>(kKC * npad)), apack(static_cast<size_t>(kMC * kKC));
    std::vector<i64> img(kKC), ph(kKC), pw(kKC);
    std::vector<const float*> mptr(kKC);
    std::vector<std::pair<i64, i64>> runs;  // (first pixel, length) within the block
    for (i64 m0 = lo; m0 < hi; m0 += kKC) {
      const i64 kc = std::min(kKC, hi - m0);
      // B = dy rows [m0, m0 + kc) as NR-wide panels; the bias gradient rides along.
      for (i64 jp = 0; jp < npad; jp += NR) {
        float* dst = bpack.data() + jp * kc;
        const i64 live = std::min<i64>(NR, K - jp);
        for (i64 m = m0; m < m0 + kc; ++m, dst += NR) {
          std::memcpy(dst, dy + m * K + jp, static_cast<size_t>(live) * sizeof(float));
          std::fill(dst + live, dst + NR, 0.f);
        }
      }
      cpu::column_sums(dy + m0 * K, kc, K, bacc);
      // Each pixel's image offset and tap-table rows, stepping (n, oh, ow) without a division per pixel.
      for (i64 u = 0, ow = m0 % d.OW, oh = (m0 / d.OW) % d.OH, n = m0 / (d.OW * d.OH); u < kc; ++u) {
        img[u] = n * d.H * SW * d.C;
        ph[u] = oh * d.R;
        pw[u] = ow * SS;
        if (++ow < d.OW) continue;
        ow = 0;
        if (++oh == d.OH) oh = 0, ++n;
      }
      if (SC >= MR) {
        // A group of consecutive channels of one tap is contiguous in x: read it in place.
        for (i64 rs = 0; rs < d.R * SS; ++rs) {
          const i64 r = rs / SS, s = rs % SS;
          for (i64 u = 0; u < kc; ++u) {
            const i64 ih = th[ph[u] + r], iw = tw[pw[u] + s];
            mptr[u] = (ih >= 0 && iw >= 0) ? src + img[u] + (ih * SW + iw) * d.C : zeros.data();
          }
          for (i64 c0 = 0; c0 < SC; c0 += group) {
            const i64 base = std::min(c0, SC - group);  // the last group overlaps the one before
            for (i64 jp = 0; jp < npad; jp += tile_cols)
              cpu::gather_tile(kc, mptr.data(), base, bpack.data() + jp * kc, kc * NR, acc + (rs * SC + base) * K + jp,
                               K, group, static_cast<int>(c0 - base), static_cast<int>(std::min<i64>(tile_cols, K - jp)));
          }
        }
        continue;
      }
      // The block's pixels as runs along one output row: a tap then reads one source row,
      // and with stride 1 a contiguous stretch of it.
      runs.clear();
      for (i64 u = 0; u < kc;) {
        const i64 len = std::min(kc - u, d.OW - pw[u] / d.S);
        runs.push_back({u, len});
        u += len;
      }
      for (i64 q0 = 0; q0 < Q; q0 += kMC) {
        const i64 mq = std::min(kMC, Q - q0);
        // A = im2col(x)^T rows [q0, q0 + mq) over pixels [m0, m0 + kc).
        float* dst = apack.data();
        for (i64 p = 0; p < mq; p += MR, dst += MR * kc)
          for (i64 i = 0; i < MR; ++i) {
            const i64 q = q0 + p + i;
            if (p + i >= mq) {
              for (i64 u = 0; u < kc; ++u) dst[u * MR + i] = 0.f;
              continue;
            }
            const i64 r = q_r[q], s = q_s[q], c = q_c[q];
            for (const auto& [u0, len] : runs) {
              const i64 ih = th[ph[u0] + r];
              const i64* t = tw.data() + pw[u0] + s;
              const i64 iw0 = t[0];
              if (ih < 0) {
                for (i64 u = u0; u < u0 + len; ++u) dst[u * MR + i] = 0.f;
              } else if (iw0 >= 0 && t[(len - 1) * d.S] == iw0 + len - 1) {
                const float* src = x + img[u0] + (ih * d.W + iw0) * d.C + c;
                for (i64 u = 0; u < len; ++u) dst[(u0 + u) * MR + i] = src[u * d.C];
              } else {
                const float* src = x + img[u0] + ih * d.W * d.C + c;
                for (i64 u = 0; u < len; ++u) {
                  const i64 iw = t[u * d.S];
                  dst[(u0 + u) * MR + i] = iw >= 0 ? src[iw * d.C] : 0.f;
                }
              }
            }
          }
        for (i64 jp = 0; jp < npad; jp += tile_cols) {
          const int cols = static_cast<int>(std::min<i64>(tile_cols, K - jp));
          for (i64 ip = 0; ip < mq; ip += MR)
            cpu::micro_tile(kc, apack.data() + ip * kc, bpack.data() + jp * kc, kc * NR, acc + (q0 + ip) * K + jp, K,
                            static_cast<int>(std::min<i64>(MR, mq - ip)), cols, true);
        }
      }
    }
  }
  partial.reduce(dw, dbias);
}

}  // namespace convkit
