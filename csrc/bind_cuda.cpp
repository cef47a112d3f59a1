// convkit._cuda: arrays exposing the CUDA array interface (CuPy's), checked as the CPU module's
// host arrays are (bind_arrays.h) plus their pointer's device; the op functions are bind_ops.h's,
// shared with convkit._cpu. Kernels launch on CuPy's current stream and never synchronise.
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>

#include "bind_ops.h"
#include "ops/cuda_check.h"

namespace py = pybind11;
using namespace convkit;

namespace convkit {

void check_device_pointer(const void* p, const char* name) {
  if (p == nullptr) return;  // an empty array
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error of a host pointer on older runtimes
    throw py::type_error(std::string(name) + " is not device memory");
  }
  CONVKIT_CHECK(attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged,
                std::string(name) + " is not device memory");
  int current = 0;
  check_cuda(cudaGetDevice(&current), "cudaGetDevice");
  CONVKIT_CHECK(attr.device == current, std::string(name) + " is on GPU " + std::to_string(attr.device) +
                                            " but the current device is GPU " + std::to_string(current));
}

}  // namespace convkit

namespace {

// CuPy's current stream (read with the GIL held), on which every kernel of the call launches.
void* current_stream() {
  static const auto* get = new py::object(py::module_::import("cupy.cuda").attr("get_current_stream"));
  return reinterpret_cast<void*>((*get)().attr("ptr").cast<std::uintptr_t>());
}

// The CUDA kernels for bind_ops.h.
struct CudaKernels {
  static constexpr Device device = Device::Cuda;
  using Run = void*;  // the stream
  static Run prepare() { return current_stream(); }
  // A new CuPy array on the current device, from CuPy's pool and ordered on its current stream.
  static py::object empty(const std::vector<i64>& shape, const char* dtype) {
    static const auto* cupy_empty = new py::object(py::module_::import("cupy").attr("empty"));
    return (*cupy_empty)(py::cast(shape), py::arg("dtype") = dtype);
  }
  static void conv2d_fwd(Run s, const Conv2dDesc& d, const float* x, const float* w, const float* b, float* y,
                         Activation act, bool tf32, const PointwiseAct& post, const float* scale, const float* res) {
    conv2d_fwd_cuda(d, x, w, b, y, act, tf32, s, scale, res);
    pointwise_cuda(post, d.N * d.OH * d.OW * d.K, y, s);
  }
  static void conv2d_bwd_data(Run s, const Conv2dDesc& d, const float* dy, const float* w, float* dx, bool tf32) {
    conv2d_bwd_data_cuda(d, dy, w, dx, tf32, s);
  }
  static void conv2d_bwd_filter(Run s, const Conv2dDesc& d, const float* x, const float* dy, float* dw, float* db,
                                bool tf32) {
    conv2d_bwd_filter_cuda(d, x, dy, dw, db, tf32, s);
  }
  static void depthwise2d_fwd(Run s, const Depthwise2dDesc& d, const float* x, const float* w, const float* b,
                              float* y, Activation act, const PointwiseAct& post) {
    depthwise2d_fwd_cuda(d, x, w, b, y, act, s);
    pointwise_cuda(post, d.N * d.OH * d.OW * d.K, y, s);
  }
  static void depthwise2d_bwd_data(Run s, const Depthwise2dDesc& d, const float* dy, const float* w, float* dx) {
    depthwise2d_bwd_data_cuda(d, dy, w, dx, s);
  }
  static void depthwise2d_bwd_filter(Run s, const Depthwise2dDesc& d, const float* x, const float* dy, float* dw,
                                     float* db) {
    depthwise2d_bwd_filter_cuda(d, x, dy, dw, db, s);
  }
  static void max_pool2d_fwd(Run s, const Pool2dDesc& d, const float* x, float* y, std::int32_t* argmax) {
    max_pool2d_fwd_cuda(d, x, y, argmax, s);
  }
  // The gather ignores indices outside the input (max_pool2d_argmax_outside finds them).
  static i64 max_pool2d_bwd(Run s, const Pool2dDesc& d, const float* dy, const std::int32_t* argmax, float* dx) {
    max_pool2d_bwd_cuda(d, dy, argmax, dx, s);
    return 0;
  }
  static void avg_pool2d_fwd(Run s, const Pool2dDesc& d, const float* x, float* y) { avg_pool2d_fwd_cuda(d, x, y, s); }
  static void avg_pool2d_bwd(Run s, const Pool2dDesc& d, const float* dy, float* dx) {
    avg_pool2d_bwd_cuda(d, dy, dx, s);
  }
  static i64 max_pool2d_argmax_outside(Run s, const Pool2dDesc& d, const std::int32_t* argmax) {
    return max_pool2d_argmax_outside_cuda(d, argmax, s);
  }
  static void batch_norm_fwd(Run s, i64 M, i64 C, const float* x, const float* g, const float* b, float eps, float* y,
                             float* xhat, float* mean, float* var, float* inv) {
    batch_norm_fwd_cuda(M, C, x, g, b, eps, y, xhat, mean, var, inv, s);
  }
  static void batch_norm_bwd(Run s, i64 M, i64 C, const float* dy, const float* xhat, const float* inv,
                             const float* g, float* dx, float* dg, float* db) {
    batch_norm_bwd_cuda(M, C, dy, xhat, inv, g, dx, dg, db, s);
  }
  static void batch_norm_infer(Run s, i64 M, i64 C, const float* x, const float* mean, const float* var,
                               const float* g, const float* b, float eps, float* y, const PointwiseAct& act) {
    batch_norm_infer_cuda(M, C, x, mean, var, g, b, eps, y, act, s);
  }
};

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "convkit CUDA kernels (CUDA array interface in, CuPy's current stream)";

  def_ops<CudaKernels>(m);
  m.def("device_info", []() {
    int dev = 0;
    check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
    cudaDeviceProp p{};
    check_cuda(cudaGetDeviceProperties(&p, dev), "cudaGetDeviceProperties");
    py::dict info;
    info["device"] = dev;
    info["name"] = std::string(p.name);
    info["compute_capability"] = py::make_tuple(p.major, p.minor);
    info["multiprocessors"] = p.multiProcessorCount;
    info["memory_bytes"] = static_cast<std::uint64_t>(p.totalGlobalMem);
    return info;
  }, "The current device: index, name, compute capability (major, minor), multiprocessors, memory.");
  m.def("device_name", []() {
    int dev = 0;
    check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
    cudaDeviceProp p{};
    check_cuda(cudaGetDeviceProperties(&p, dev), "cudaGetDeviceProperties");
    return std::string(p.name) + " (sm_" + std::to_string(p.major) + std::to_string(p.minor) + ")";
  }, "Name and compute capability of the current device, e.g. 'NVIDIA H100 80GB HBM3 (sm_90)'.");
}
