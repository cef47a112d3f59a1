#include "ops/pool2d.h"

#include <limits>

namespace convkit {

Pool2dDesc make_pool2d_desc(i64 N, i64 H, i64 W, i64 C, i64 R, i64 S, i64 sh, i64 sw, Padding padding) {
  CONVKIT_CHECK(N >= 0, "pool2d: batch size must be >= 0, got " + std::to_string(N));
  CONVKIT_CHECK(C >= 1, "pool2d: channels must be >= 1, got " + std::to_string(C));
  const Window1d h = window_1d("height", H, R, sh, 1, padding);
  const Window1d w = window_1d("width", W, S, sw, 1, padding);
  // argmax stores ih * W + iw in 32 bits.
  CONVKIT_CHECK(checked_mul(H, W, "pool2d plane") <= std::numeric_limits<std::int32_t>::max(),
                "pool2d: an input plane of " + std::to_string(H) + "x" + std::to_string(W) +
                    " has more than 2^31-1 pixels");
  checked_mul(checked_mul(checked_mul(N, H, "pool2d input"), W, "pool2d input"), C, "pool2d input");
  return {N, H, W, C, R, S, sh, sw, h.pad_before, w.pad_before, h.out, w.out};
}

}  // namespace convkit
