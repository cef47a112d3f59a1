#include "ops/conv2d.h"

namespace convkit {

Conv2dDesc make_conv2d_desc(i64 N, i64 H, i64 W, i64 C, i64 R, i64 S, i64 K, i64 sh, i64 sw,
                            i64 dh, i64 dw, Padding padding) {
  CONVKIT_CHECK(N >= 0, "conv2d: batch size must be >= 0, got " + std::to_string(N));
  CONVKIT_CHECK(C >= 1, "conv2d: input channels must be >= 1, got " + std::to_string(C));
  CONVKIT_CHECK(K >= 1, "conv2d: filters must be >= 1, got " + std::to_string(K));
  const Window1d h = window_1d("height", H, R, sh, dh, padding);
  const Window1d w = window_1d("width", W, S, sw, dw, padding);
  Conv2dDesc d{N, H, W, C, R, S, K, sh, sw, dh, dw, h.pad_before, w.pad_before, h.out, w.out};
  checked_mul(checked_mul(checked_mul(N, H, "conv2d input"), W, "conv2d input"), C, "conv2d input");
  checked_mul(checked_mul(checked_mul(N, d.OH, "conv2d output"), d.OW, "conv2d output"), K, "conv2d output");
  checked_mul(checked_mul(checked_mul(R, S, "conv2d kernel"), C, "conv2d kernel"), K, "conv2d kernel");
  return d;
}

}  // namespace convkit
