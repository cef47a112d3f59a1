// The op functions of both extension modules, defined once: the same names, arguments, checks
// (bind_arrays.h: device, dtype, contiguity, shape, writability) and descriptors
// (bind_common.h) on the CPU and on the GPU. `K` supplies the device and its kernels:
// CpuKernels in bind_cpu.cpp, CudaKernels (launching on CuPy's current stream) in bind_cuda.cpp.
// Results are written into arrays the caller allocated; the kernels run with the GIL released.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "bind_arrays.h"
#include "bind_common.h"

namespace convkit {

inline std::vector<i64> vec(const Shape4& s) { return {s.begin(), s.end()}; }

template <class K>
void def_ops(py::module_& m) {
  constexpr Device D = K::device;
  using i32 = std::int32_t;

  m.def("conv2d_fwd",
        [](py::handle x, py::handle w, py::handle bias, py::handle y, Pair strides, Pair dilation,
           const std::string& padding, bool relu, bool tf32) {
          const Conv2dDesc d = conv_desc(array_shape4(x, "x", D), array_shape4(w, "kernel", D), strides, dilation,
                                         padding);
          const float* px = array_data<float, D>(x, "x", {d.N, d.H, d.W, d.C}, false);
          const float* pw = array_data<float, D>(w, "kernel", {d.R, d.S, d.C, d.K}, false);
          const float* pb = optional_data<float, D>(bias, "bias", {d.K}, false);
          float* py_ = array_data<float, D>(y, "y", vec(conv_out_shape(d)), true);
          auto run = K::prepare();
          py::gil_scoped_release nogil;
          K::conv2d_fwd(run, d, px, pw, pb, py_, relu ? Activation::Relu : Activation::None, tf32);
        },
        py::arg("x"), py::arg("kernel"), py::arg("bias"), py::arg("y"), py::arg("strides"), py::arg("dilation"),
        py::arg("padding"), py::arg("relu") = false, py::arg("tf32") = false,
        "y = conv2d(x, kernel) + bias (ReLU fused when relu); tf32 selects TF32 arithmetic on the GPU.");

  m.def("conv2d_bwd_data",
        [](py::handle dy, py::handle w, py::handle dx, Pair strides, Pair dilation, const std::string& padding,
           bool tf32) {
          const Conv2dDesc d = conv_desc(array_shape4(dx, "dx", D), array_shape4(w, "kernel", D), strides, dilation,
                                         padding);
          const float* pdy = array_data<float, D>(dy, "dy", vec(conv_out_shape(d)), false);
          const float* pw = array_data<float, D>(w, "kernel", {d.R, d.S, d.C, d.K}, false);
          float* pdx = array_data<float, D>(dx, "dx", {d.N, d.H, d.W, d.C}, true);
          auto run = K::prepare();
          py::gil_scoped_release nogil;
          K::conv2d_bwd_data(run, d, pdy, pw, pdx, tf32);
        },
        py::arg("dy"), py::arg("kernel"), py::arg("dx"), py::arg("strides"), py::arg("dilation"), py::arg("padding"),
        py::arg("tf32") = false);

  m.def("conv2d_bwd_filter",
        [](py::handle x, py::handle dy, py::handle dw, py::handle dbias, Pair strides, Pair dilation,
           const std::string& padding, bool tf32) {
          const Conv2dDesc d = conv_desc(array_shape4(x, "x", D), array_shape4(dw, "dkernel", D), strides, dilation,
                                         padding);
          const float* px = array_data<float, D>(x, "x", {d.N, d.H, d.W, d.C}, false);
          const float* pdy = array_data<float, D>(dy, "dy", vec(conv_out_shape(d)), false);
          float* pdw = array_data<float, D>(dw, "dkernel", {d.R, d.S, d.C, d.K}, true);
          float* pdb = optional_data<float, D>(dbias, "dbias", {d.K}, true);
          auto run = K::prepare();
          py::gil_scoped_release nogil;
          K::conv2d_bwd_filter(run, d, px, pdy, pdw, pdb, tf32);
        },
        py::arg("x"), py::arg("dy"), py::arg("dkernel"), py::arg("dbias"), py::arg("strides"), py::arg("dilation"),
        py::arg("padding"), py::arg("tf32") = false);

  m.def("depthwise2d_fwd",
        [](py::handle x, py::handle w, py::handle bias, py::handle y, Pair strides, Pair dilation,
           const std::string& padding, const std::string& activation) {
          const Depthwise2dDesc d = depthwise_desc(array_shape4(x, "x", D), array_shape4(w, "kernel", D), strides,
                                                   dilation, padding);
          const Activation act = parse_activation(activation);
          const float* px = array_data<float, D>(x, "x", {d.N, d.H, d.W, d.C}, false);
          const float* pw = array_data<float, D>(w, "kernel", {d.R, d.S, d.C, d.M}, false);
          const float* pb = optional_data<float, D>(bias, "bias", {d.K}, false);
          float* py_ = array_data<float, D>(y, "y", vec(depthwise_out_shape(d)), true);
          auto run = K::prepare();
          py::gil_scoped_release nogil;
          K::depthwise2d_fwd(run, d, px, pw, pb, py_, act);
        },
        py::arg("x"), py::arg("kernel"), py::arg("bias"), py::arg("y"), py::arg("strides"), py::arg("dilation"),
        py::arg("padding"), py::arg("activation") = "linear",
        "y = depthwise_conv2d(x, kernel) + bias, kernel (kh, kw, C, M), activation 'linear', 'relu' or 'relu6'.");

  m.def("depthwise2d_bwd_data",
        [](py::handle dy, py::handle w, py::handle dx, Pair strides, Pair dilation, const std::string& padding) {
          const Depthwise2dDesc d = depthwise_desc(array_shape4(dx, "dx", D), array_shape4(w, "kernel", D), strides,
                                                   dilation, padding);
          const float* pdy = array_data<float, D>(dy, "dy", vec(depthwise_out_shape(d)), false);
          const float* pw = array_data<float, D>(w, "kernel", {d.R, d.S, d.C, d.M}, false);
          float* pdx = array_data<float, D>(dx, "dx", {d.N, d.H, d.W, d.C}, true);
          auto run = K::prepare();
          py::gil_scoped_release nogil;
          K::depthwise2d_bwd_data(run, d, pdy, pw, pdx);
        },
        py::arg("dy"), py::arg("kernel"), py::arg("dx"), py::arg("strides"), py::arg("dilation"), py::arg("padding"));

  m.def("depthwise2d_bwd_filter",
        [](py::handle x, py::handle dy, py::handle dw, py::handle dbias, Pair strides, Pair dilation,
           const std::string& padding) {
          const Depthwise2dDesc d = depthwise_desc(array_shape4(x, "x", D), array_shape4(dw, "dkernel", D), strides,
                                                   dilation, padding);
          const float* px = array_data<float, D>(x, "x", {d.N, d.H, d.W, d.C}, false);
          const float* pdy = array_data<float, D>(dy, "dy", vec(depthwise_out_shape(d)), false);
          float* pdw = array_data<float, D>(dw, "dkernel", {d.R, d.S, d.C, d.M}, true);
          float* pdb = optional_data<float, D>(dbias, "dbias", {d.K}, true);
          auto run = K::prepare();
          py::gil_scoped_release nogil;
          K::depthwise2d_bwd_filter(run, d, px, pdy, pdw, pdb);
        },
        py::arg("x"), py::arg("dy"), py::arg("dkernel"), py::arg("dbias"), py::arg("strides"), py::arg("dilation"),
        py::arg("padding"));

  m.def("max_pool2d_fwd",
        [](py::handle x, py::handle y, py::handle argmax, Pair pool, Pair strides, const std::string& padding) {
          const Pool2dDesc d = pool_desc(array_shape4(x, "x", D), pool, strides, padding);
          const float* px = array_data<float, D>(x, "x", {d.N, d.H, d.W, d.C}, false);
          float* py_ = array_data<float, D>(y, "y", vec(pool_out_shape(d)), true);
          i32* pa = optional_data<i32, D>(argmax, "argmax", vec(pool_out_shape(d)), true);
          auto run = K::prepare();
          py::gil_scoped_release nogil;
          K::max_pool2d_fwd(run, d, px, py_, pa);
        },
        py::arg("x"), py::arg("y"), py::arg("argmax"), py::arg("pool_size"), py::arg("strides"), py::arg("padding"));

  m.def("max_pool2d_bwd",
        [](py::handle dy, py::handle argmax, py::handle dx, Pair pool, Pair strides, const std::string& padding) {
          const Pool2dDesc d = pool_desc(array_shape4(dx, "dx", D), pool, strides, padding);
          const float* pdy = array_data<float, D>(dy, "dy", vec(pool_out_shape(d)), false);
          const i32* pa = array_data<i32, D>(argmax, "argmax", vec(pool_out_shape(d)), false);
          float* pdx = array_data<float, D>(dx, "dx", {d.N, d.H, d.W, d.C}, true);
          auto run = K::prepare();
          i64 outside;
          {
            py::gil_scoped_release nogil;
            outside = K::max_pool2d_bwd(run, d, pdy, pa, pdx);
          }
          if (outside)
            throw py::value_error("argmax holds " + std::to_string(outside) + " of " +
                                  std::to_string(d.N * d.OH * d.OW * d.C) + " indices outside the input");
        },
        py::arg("dy"), py::arg("argmax"), py::arg("dx"), py::arg("pool_size"), py::arg("strides"), py::arg("padding"));

  m.def("avg_pool2d_fwd",
        [](py::handle x, py::handle y, Pair pool, Pair strides, const std::string& padding) {
          const Pool2dDesc d = pool_desc(array_shape4(x, "x", D), pool, strides, padding);
          const float* px = array_data<float, D>(x, "x", {d.N, d.H, d.W, d.C}, false);
          float* py_ = array_data<float, D>(y, "y", vec(pool_out_shape(d)), true);
          auto run = K::prepare();
          py::gil_scoped_release nogil;
          K::avg_pool2d_fwd(run, d, px, py_);
        },
        py::arg("x"), py::arg("y"), py::arg("pool_size"), py::arg("strides"), py::arg("padding"));

  m.def("avg_pool2d_bwd",
        [](py::handle dy, py::handle dx, Pair pool, Pair strides, const std::string& padding) {
          const Pool2dDesc d = pool_desc(array_shape4(dx, "dx", D), pool, strides, padding);
          const float* pdy = array_data<float, D>(dy, "dy", vec(pool_out_shape(d)), false);
          float* pdx = array_data<float, D>(dx, "dx", {d.N, d.H, d.W, d.C}, true);
          auto run = K::prepare();
          py::gil_scoped_release nogil;
          K::avg_pool2d_bwd(run, d, pdy, pdx);
        },
        py::arg("dy"), py::arg("dx"), py::arg("pool_size"), py::arg("strides"), py::arg("padding"));
}

}  // namespace convkit
