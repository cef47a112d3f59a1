// Error handling shared by the CUDA twins: every launch is checked and any
// failure becomes a std::runtime_error (RuntimeError in Python) naming the op.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace convkit {

inline void check_launch(const char* op) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string(op) + ": CUDA error: " + cudaGetErrorString(e));
}

inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": CUDA error: " + cudaGetErrorString(e));
}

// Blocks of 256 threads over n items, at most 2^31-1 blocks; kernels stride over the rest.
inline unsigned grid_for(long long n) {
  long long b = (n + 255) / 256;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 2147483647LL ? 2147483647LL : b));
}

}  // namespace convkit
