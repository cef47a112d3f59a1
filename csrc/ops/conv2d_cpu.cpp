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
//
// Each strategy lives in a file of its own (conv2d_cpu_<name>.cpp, sharing
// conv2d_cpu_common.h); this file chooses among them by shape. set_conv_strategy(name) (from
// CONVKIT_CONV_STRATEGY=<name> when the module loads) forces one wherever it can compute the
// call, the automatic choice serving the rest, so that tests reach every strategy on any shape.
#include <algorithm>
#include <array>
#include <atomic>
#include <string>

#include "ops/conv2d_cpu_common.h"

namespace convkit {

using namespace conv_cpu;

namespace {

enum Strategy : int { Auto = -1, Direct, ByPosition, PixelMajor, Dot, Rows, FilterRows, FilterGemm, kStrategies };
constexpr std::array<const char*, kStrategies> kNames = {"direct", "by_position", "pixel_major", "dot", "rows",
                                                          "filter_rows", "filter_gemm"};

int parse_strategy(const std::string& name) {
  if (name == "auto") return Auto;
  for (int i = 0; i < kStrategies; ++i)
    if (name == kNames[i]) return i;
  std::string known = "auto";
  for (const char* n : kNames) known += std::string(", ") + n;
  throw ShapeError("unknown convolution strategy '" + name + "'; known: " + known);
}

std::atomic<int> forced{Auto};
std::array<std::atomic<long long>, kStrategies> runs{};

int counted(int s) {
  runs[s].fetch_add(1, std::memory_order_relaxed);
  return s;
}

// Tiles across images (by_position) skip the taps that read padding, but fill their rows only
// with as many images as a tile has rows; at batch 1 each holds one pixel. Compares the
// (row, tap) products each strategy computes.
bool by_position_pays(const GatherGemm& g) {
  const auto live = [](const i64* table, i64 n) { return std::count_if(table, table + n, [](i64 i) { return i >= 0; }); };
  const i64 mr = cpu::direct_rows();
  const i64 by_position = round_up(g.N, mr) * live(g.tab_h, g.GH * g.R) * live(g.tab_w, g.GW * g.S);
  return by_position < round_up(g.N * g.GH * g.GW, mr) * g.R * g.S;
}

int choose_gather(const GatherGemm& g) {
  const int f = forced.load(std::memory_order_relaxed);
  if (f == Direct || f == ByPosition || (f == PixelMajor && !g.px) || (f == Dot && g.ncols <= cpu::kDotMaxCols) ||
      (f == Rows && g.col_stride == 1))
    return counted(f);
  if (g.col_stride == 1 && g.N * g.GH * g.GW <= kRowsMax) return counted(Rows);
  if (g.ncols <= cpu::kDotMaxCols && g.SC >= kDotMinChannels) return counted(Dot);
  if (pixel_major_fits(g.SC, g.ncols) && !g.px) return counted(PixelMajor);
  if (g.GH * g.GW <= kSmallGrid && g.R * g.S > 1 && by_position_pays(g)) return counted(ByPosition);
  return counted(Direct);
}

void run_gather_gemm(const GatherGemm& g) {
  const i64 M = g.N * g.GH * g.GW, npad = round_up(g.ncols, NR);
  if (M == 0) return;
  switch (choose_gather(g)) {
    case Dot: return run_dot(g, M);
    case Rows: return run_rows(g, M);
    case PixelMajor: return run_pixel_major(g);
    case ByPosition: return run_by_position(g, npad);
    default: return run_direct(g, M, npad);
  }
}

}  // namespace

void set_conv_strategy(const std::string& name) { forced = parse_strategy(name); }

std::string conv_strategy() {
  const int f = forced.load();
  return f == Auto ? "auto" : kNames[f];
}

std::vector<std::pair<std::string, long long>> conv_strategy_runs() {
  std::vector<std::pair<std::string, long long>> out;
  for (int i = 0; i < kStrategies; ++i) out.emplace_back(kNames[i], runs[i].load());
  return out;
}

void conv2d_fwd_cpu(const Conv2dDesc& d, const float* x, const float* w, const float* bias, float* y,
                    Activation act, const PointwiseAct& post, const float* scale, const float* residual) {
  const auto run = [&](GatherGemm g) {  // the ReLU moves behind the residual's sum
    g.residual = residual;
    g.residual_relu = residual && act == Activation::Relu;
    if (residual) g.act = Activation::None;
    run_gather_gemm(g);
  };
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
      run({xp.data(), d.H, wp, d.C, d.N, d.OH, d.OW, d.R, d.S, th.data(), tw.data(), w, d.C * d.K, d.K, 1, d.K, y,
           bias, act, 0, post, scale});
      return;
    }
    // With more filters, a pixel's S taps along a kernel row read one run of S * C floats, so
    // they merge into one tap of that length, and the tile handles a run per kernel row
    // rather than a pointer and a few multiply-adds per tap. HWIO weights keep (s, c)
    // adjacent, so the merged tap's weights are the same rows in the same order.
    std::vector<i64> tw(static_cast<size_t>(d.OW));
    for (i64 ow = 0; ow < d.OW; ++ow) tw[ow] = ow * d.sw;
    run({xp.data(), d.H, wp, d.S * d.C, d.N, d.OH, d.OW, d.R, 1, th.data(), tw.data(), w, d.S * d.C * d.K, d.K, 1,
         d.K, y, bias, act, d.C, post, scale});
    return;
  }
  const auto tw = forward_taps(d.OW, d.S, d.sw, d.dw, d.pl, d.W);
  run({x, d.H, d.W, d.C, d.N, d.OH, d.OW, d.R, d.S, th.data(), tw.data(), w, d.C * d.K, d.K, 1, d.K, y, bias, act, 0,
       post, scale});
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

void conv2d_bwd_filter_cpu(const Conv2dDesc& d, const float* x, const float* dy, float* dw, float* dbias) {
  // Few (tap column, channel) pairs: their gradients stay in registers (cpu::row_grad_max_pairs);
  // with more, the packed GEMM wins.
  const bool rows_can = d.S * d.C <= cpu::row_grad_max_pairs() && d.N * d.OH * d.OW > 0;
  const int f = forced.load(std::memory_order_relaxed);
  const int use = counted(f == FilterGemm || (f == FilterRows && rows_can) ? f : rows_can ? FilterRows : FilterGemm);
  if (use == FilterRows)
    bwd_filter_by_rows(d, x, dy, dw, dbias);
  else
    bwd_filter_gemm(d, x, dy, dw, dbias);
}

}  // namespace convkit
