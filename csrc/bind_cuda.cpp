// convkit._cuda: device pointers (integers), shapes and the caller's stream in;
// kernels launch on that stream and never synchronise. Descriptors come from
// bind_common.h, so every check matches the CPU module's.
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>

#include "bind_common.h"
#include "ops/cuda_check.h"

namespace py = pybind11;
using namespace convkit;

namespace {

template <class T>
T* ptr(std::uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

void* stream_of(std::uintptr_t s) { return reinterpret_cast<void*>(s); }

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "convkit CUDA kernels (device pointers in, caller's stream)";

  m.def("conv2d_fwd",
        [](std::uintptr_t x, std::uintptr_t w, std::uintptr_t bias, std::uintptr_t y, Shape4 xs, Shape4 ws,
           Pair strides, Pair dilation, const std::string& padding, bool relu, bool tf32, std::uintptr_t stream) {
          const Conv2dDesc d = conv_desc(xs, ws, strides, dilation, padding);
          py::gil_scoped_release nogil;
          conv2d_fwd_cuda(d, ptr<const float>(x), ptr<const float>(w), ptr<const float>(bias), ptr<float>(y),
                          relu ? Activation::Relu : Activation::None, tf32, stream_of(stream));
        });
  m.def("conv2d_bwd_data",
        [](std::uintptr_t dy, std::uintptr_t w, std::uintptr_t dx, Shape4 xs, Shape4 ws, Pair strides, Pair dilation,
           const std::string& padding, bool tf32, std::uintptr_t stream) {
          const Conv2dDesc d = conv_desc(xs, ws, strides, dilation, padding);
          py::gil_scoped_release nogil;
          conv2d_bwd_data_cuda(d, ptr<const float>(dy), ptr<const float>(w), ptr<float>(dx), tf32, stream_of(stream));
        });
  m.def("conv2d_bwd_filter",
        [](std::uintptr_t x, std::uintptr_t dy, std::uintptr_t dw, std::uintptr_t dbias, Shape4 xs, Shape4 ws,
           Pair strides, Pair dilation, const std::string& padding, bool tf32, std::uintptr_t stream) {
          const Conv2dDesc d = conv_desc(xs, ws, strides, dilation, padding);
          py::gil_scoped_release nogil;
          conv2d_bwd_filter_cuda(d, ptr<const float>(x), ptr<const float>(dy), ptr<float>(dw), ptr<float>(dbias), tf32,
                                 stream_of(stream));
        });
  m.def("max_pool2d_fwd", [](std::uintptr_t x, std::uintptr_t y, std::uintptr_t argmax, Shape4 xs, Pair pool,
                             Pair strides, const std::string& padding, std::uintptr_t stream) {
    const Pool2dDesc d = pool_desc(xs, pool, strides, padding);
    py::gil_scoped_release nogil;
    max_pool2d_fwd_cuda(d, ptr<const float>(x), ptr<float>(y), ptr<std::int32_t>(argmax), stream_of(stream));
  });
  m.def("max_pool2d_bwd", [](std::uintptr_t dy, std::uintptr_t argmax, std::uintptr_t dx, Shape4 xs, Pair pool,
                             Pair strides, const std::string& padding, std::uintptr_t stream) {
    const Pool2dDesc d = pool_desc(xs, pool, strides, padding);
    py::gil_scoped_release nogil;
    max_pool2d_bwd_cuda(d, ptr<const float>(dy), ptr<const std::int32_t>(argmax), ptr<float>(dx), stream_of(stream));
  });
  m.def("avg_pool2d_fwd", [](std::uintptr_t x, std::uintptr_t y, Shape4 xs, Pair pool, Pair strides,
                             const std::string& padding, std::uintptr_t stream) {
    const Pool2dDesc d = pool_desc(xs, pool, strides, padding);
    py::gil_scoped_release nogil;
    avg_pool2d_fwd_cuda(d, ptr<const float>(x), ptr<float>(y), stream_of(stream));
  });
  m.def("avg_pool2d_bwd", [](std::uintptr_t dy, std::uintptr_t dx, Shape4 xs, Pair pool, Pair strides,
                             const std::string& padding, std::uintptr_t stream) {
    const Pool2dDesc d = pool_desc(xs, pool, strides, padding);
    py::gil_scoped_release nogil;
    avg_pool2d_bwd_cuda(d, ptr<const float>(dy), ptr<float>(dx), stream_of(stream));
  });
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
