#include "common.h"

#include <limits>

namespace convkit {

i64 checked_mul(i64 a, i64 b, const char* what) {
  if (a != 0 && b > std::numeric_limits<i64>::max() / a)
    throw ShapeError(std::string(what) + " overflows a 64-bit element count");
  return a * b;
}

Window1d window_1d(const char* dim, i64 in, i64 kernel, i64 stride, i64 dilation, Padding padding) {
  const std::string d(dim);
  CONVKIT_CHECK(in >= 1, "input " + d + " must be >= 1, got " + std::to_string(in));
  CONVKIT_CHECK(kernel >= 1, "window " + d + " must be >= 1, got " + std::to_string(kernel));
  CONVKIT_CHECK(stride >= 1, "stride along " + d + " must be >= 1, got " + std::to_string(stride));
  CONVKIT_CHECK(dilation >= 1, "dilation along " + d + " must be >= 1, got " + std::to_string(dilation));
  const i64 extent = checked_mul(kernel - 1, dilation, "dilated window") + 1;
  if (padding == Padding::Valid) {
    CONVKIT_CHECK(extent <= in, "window " + d + " (" + std::to_string(extent) +
                                    ") is larger than the input " + d + " (" + std::to_string(in) +
                                    ") with padding='valid'");
    return {(in - extent) / stride + 1, 0, 0};
  }
  const i64 out = (in + stride - 1) / stride;
  i64 total = (out - 1) * stride + extent - in;
  if (total < 0) total = 0;
  return {out, total / 2, total - total / 2};
}

}  // namespace convkit
