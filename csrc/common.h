// Shared by every op: the error type and the padding rule.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

namespace convkit {

using i64 = std::int64_t;

// Thrown for any invalid shape or argument; the bindings turn it into ValueError.
struct ShapeError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

#define CONVKIT_CHECK(cond, msg)                                  \
  do {                                                            \
    if (!(cond)) throw ::convkit::ShapeError(std::string(msg));   \
  } while (0)

enum class Padding : int { Valid = 0, Same = 1 };

// One spatial dimension of a sliding window: output size and the padding
// before the first element. Follows TensorFlow exactly: 'same' gives
// ceil(in / stride) outputs and puts the odd pixel of padding after the data.
struct Window1d {
  i64 out;
  i64 pad_before;
  i64 pad_after;
};

Window1d window_1d(const char* dim, i64 in, i64 kernel, i64 stride, i64 dilation, Padding padding);

// a * b, refusing results that would not fit in int64.
i64 checked_mul(i64 a, i64 b, const char* what);

}  // namespace convkit
