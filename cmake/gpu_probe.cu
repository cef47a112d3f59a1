// Prints the compute capability of every visible GPU (e.g. "90;80"), or nothing and exit
// status 1 when no driver or device answers. CMake's AUTO mode builds the CUDA module only when
// this runs, and for exactly the architectures it prints.
#include <cstdio>
#include <cuda_runtime.h>

int main() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) return 1;
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) return 1;
    std::printf("%s%d%d", i ? ";" : "", p.major, p.minor);
  }
  return 0;
}
