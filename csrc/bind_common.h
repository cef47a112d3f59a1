// What both binding modules share: argument parsing and the descriptors built
// from the Python-side shapes, so _cpu and _cuda run identical checks.
#pragma once
#include <array>
#include <string>
#include <utility>

#include "ops/conv2d.h"
#include "ops/depthwise2d.h"
#include "ops/pool2d.h"

namespace convkit {

using Pair = std::pair<i64, i64>;
using Shape4 = std::array<i64, 4>;

inline Padding parse_padding(const std::string& p) {
  if (p == "valid") return Padding::Valid;
  if (p == "same") return Padding::Same;
  throw ShapeError("padding must be 'valid' or 'same', got '" + p + "'");
}

// x: (N, H, W, C), kernel: (R, S, C, K)
inline Conv2dDesc conv_desc(const Shape4& x, const Shape4& w, Pair strides, Pair dilation,
                            const std::string& padding) {
  CONVKIT_CHECK(x[3] == w[2], "conv2d: input has " + std::to_string(x[3]) + " channels but the kernel expects " +
                                  std::to_string(w[2]) + " (kernel shape is (kh, kw, in, out))");
  return make_conv2d_desc(x[0], x[1], x[2], x[3], w[0], w[1], w[3], strides.first, strides.second,
                          dilation.first, dilation.second, parse_padding(padding));
}

// x: (N, H, W, C), kernel: (R, S, C, M)
inline Depthwise2dDesc depthwise_desc(const Shape4& x, const Shape4& w, Pair strides, Pair dilation,
                                      const std::string& padding) {
  CONVKIT_CHECK(x[3] == w[2], "depthwise_conv2d: input has " + std::to_string(x[3]) +
                                  " channels but the kernel expects " + std::to_string(w[2]) +
                                  " (kernel shape is (kh, kw, channels, depth_multiplier))");
  return make_depthwise2d_desc(x[0], x[1], x[2], x[3], w[0], w[1], w[3], strides.first, strides.second,
                               dilation.first, dilation.second, parse_padding(padding));
}

// A fused epilogue by name: "linear" (none), "relu" or "relu6".
inline Activation parse_activation(const std::string& a) {
  if (a == "linear") return Activation::None;
  if (a == "relu") return Activation::Relu;
  if (a == "relu6") return Activation::Relu6;
  throw ShapeError("fused activation must be 'linear', 'relu' or 'relu6', got '" + a + "'");
}

inline Pool2dDesc pool_desc(const Shape4& x, Pair pool, Pair strides, const std::string& padding) {
  return make_pool2d_desc(x[0], x[1], x[2], x[3], pool.first, pool.second, strides.first, strides.second,
                          parse_padding(padding));
}

inline Shape4 conv_out_shape(const Conv2dDesc& d) { return {d.N, d.OH, d.OW, d.K}; }
inline Shape4 depthwise_out_shape(const Depthwise2dDesc& d) { return {d.N, d.OH, d.OW, d.K}; }
inline Shape4 pool_out_shape(const Pool2dDesc& d) { return {d.N, d.OH, d.OW, d.C}; }

}  // namespace convkit
