#include "ops/depthwise2d.h"

namespace convkit {

Depthwise2dDesc make_depthwise2d_desc(i64 N, i64 H, i64 W, i64 C, i64 R, i64 S, i64 M, i64 sh, i64 sw, i64 dh,
                                      i64 dw, Padding padding) {
  CONVKIT_CHECK(N >= 0, "depthwise_conv2d: batch size must be >= 0, got " + std::to_string(N));
  CONVKIT_CHECK(C >= 1, "depthwise_conv2d: input channels must be >= 1, got " + std::to_string(C));
  CONVKIT_CHECK(M >= 1, "depthwise_conv2d: depth multiplier must be >= 1, got " + std::to_string(M));
  const Window1d h = window_1d("height", H, R, sh, dh, padding);
  const Window1d w = window_1d("width", W, S, sw, dw, padding);
  const i64 K = checked_mul(C, M, "depthwise_conv2d output channels");
  Depthwise2dDesc d{N, H, W, C, R, S, M, sh, sw, dh, dw, h.pad_before, w.pad_before, h.out, w.out, K};
  checked_mul(checked_mul(checked_mul(N, H, "depthwise_conv2d input"), W, "depthwise_conv2d input"), C,
              "depthwise_conv2d input");
  checked_mul(checked_mul(checked_mul(N, d.OH, "depthwise_conv2d output"), d.OW, "depthwise_conv2d output"), K,
              "depthwise_conv2d output");
  checked_mul(checked_mul(R, S, "depthwise_conv2d kernel"), K, "depthwise_conv2d kernel");
  return d;
}

}  // namespace convkit
