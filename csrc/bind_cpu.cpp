// convkit._cpu: host arrays in (NumPy's array interface, checked in bind_arrays.h), results written
// into arrays Python allocated. The op functions are bind_ops.h's, shared with convkit._cuda.
#include <omp.h>
#if __has_include(<malloc.h>)
#include <malloc.h>  // mallopt, where the C library is glibc
#endif
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdlib>
#include <vector>

#include "bind_ops.h"
#include "ops/pointwise.h"
#include "ops/reference.h"
#include "cpu/gemm.h"

namespace py = pybind11;
using namespace convkit;

namespace {

// The CPU kernels for bind_ops.h; tf32 is ignored (the CPU computes in float32).
struct CpuKernels {
  static constexpr Device device = Device::Cpu;
  struct Run {};
  static Run prepare() { return {}; }
  static py::object empty(const std::vector<i64>& shape, const char* dtype) {
    return py::array(py::dtype(dtype), std::vector<py::ssize_t>(shape.begin(), shape.end()));
  }
  static void conv2d_fwd(Run, const Conv2dDesc& d, const float* x, const float* w, const float* b, float* y,
                         Activation act, bool, const PointwiseAct& post, const float* scale, const float* res) {
    conv2d_fwd_cpu(d, x, w, b, y, act, post, scale, res);
  }
  static void conv2d_bwd_data(Run, const Conv2dDesc& d, const float* dy, const float* w, float* dx, bool) {
    conv2d_bwd_data_cpu(d, dy, w, dx);
  }
  static void conv2d_bwd_filter(Run, const Conv2dDesc& d, const float* x, const float* dy, float* dw, float* db,
                                bool) {
    conv2d_bwd_filter_cpu(d, x, dy, dw, db);
  }
  static void depthwise2d_fwd(Run, const Depthwise2dDesc& d, const float* x, const float* w, const float* b,
                              float* y, Activation act, const PointwiseAct& post) {
    depthwise2d_fwd_cpu(d, x, w, b, y, act, post);
  }
  static void depthwise2d_bwd_data(Run, const Depthwise2dDesc& d, const float* dy, const float* w, float* dx) {
    depthwise2d_bwd_data_cpu(d, dy, w, dx);
  }
  static void depthwise2d_bwd_filter(Run, const Depthwise2dDesc& d, const float* x, const float* dy, float* dw,
                                     float* db) {
    depthwise2d_bwd_filter_cpu(d, x, dy, dw, db);
  }
  static void max_pool2d_fwd(Run, const Pool2dDesc& d, const float* x, float* y, std::int32_t* argmax) {
    max_pool2d_fwd_cpu(d, x, y, argmax);
  }
  static i64 max_pool2d_bwd(Run, const Pool2dDesc& d, const float* dy, const std::int32_t* argmax, float* dx) {
    return max_pool2d_bwd_cpu(d, dy, argmax, dx);
  }
  static void avg_pool2d_fwd(Run, const Pool2dDesc& d, const float* x, float* y) { avg_pool2d_fwd_cpu(d, x, y); }
  static void avg_pool2d_bwd(Run, const Pool2dDesc& d, const float* dy, float* dx) { avg_pool2d_bwd_cpu(d, dy, dx); }
  static i64 max_pool2d_argmax_outside(Run, const Pool2dDesc& d, const std::int32_t* argmax) {
    return max_pool2d_argmax_outside_cpu(d, argmax);
  }
  static void batch_norm_fwd(Run, i64 M, i64 C, const float* x, const float* g, const float* b, float eps, float* y,
                             float* xhat, float* mean, float* var, float* inv) {
    batch_norm_fwd_cpu(M, C, x, g, b, eps, y, xhat, mean, var, inv);
  }
  static void batch_norm_bwd(Run, i64 M, i64 C, const float* dy, const float* xhat, const float* inv, const float* g,
                             float* dx, float* dg, float* db) {
    batch_norm_bwd_cpu(M, C, dy, xhat, inv, g, dx, dg, db);
  }
  static void batch_norm_infer(Run, i64 M, i64 C, const float* x, const float* mean, const float* var,
                               const float* g, const float* b, float eps, float* y, const PointwiseAct& act) {
    batch_norm_infer_cpu(M, C, x, mean, var, g, b, eps, y, act);
  }
};

// The reference loops (ops/reference.h) behind the same functions, in convkit._cpu.reference.
struct ReferenceKernels {
  static constexpr Device device = Device::Cpu;
  struct Run {};
  static Run prepare() { return {}; }
  static py::object empty(const std::vector<i64>& shape, const char* dtype) {
    return py::array(py::dtype(dtype), std::vector<py::ssize_t>(shape.begin(), shape.end()));
  }
  static void conv2d_fwd(Run, const Conv2dDesc& d, const float* x, const float* w, const float* b, float* y,
                         Activation act, bool, const PointwiseAct& post, const float* scale, const float* res) {
    reference::conv2d_fwd(d, x, w, b, y, act, post, scale, res);
  }
  static void conv2d_bwd_data(Run, const Conv2dDesc& d, const float* dy, const float* w, float* dx, bool) {
    reference::conv2d_bwd_data(d, dy, w, dx);
  }
  static void conv2d_bwd_filter(Run, const Conv2dDesc& d, const float* x, const float* dy, float* dw, float* db,
                                bool) {
    reference::conv2d_bwd_filter(d, x, dy, dw, db);
  }
  static void depthwise2d_fwd(Run, const Depthwise2dDesc& d, const float* x, const float* w, const float* b,
                              float* y, Activation act, const PointwiseAct& post) {
    reference::depthwise2d_fwd(d, x, w, b, y, act, post);
  }
  static void depthwise2d_bwd_data(Run, const Depthwise2dDesc& d, const float* dy, const float* w, float* dx) {
    reference::depthwise2d_bwd_data(d, dy, w, dx);
  }
  static void depthwise2d_bwd_filter(Run, const Depthwise2dDesc& d, const float* x, const float* dy, float* dw,
                                     float* db) {
    reference::depthwise2d_bwd_filter(d, x, dy, dw, db);
  }
  static void max_pool2d_fwd(Run, const Pool2dDesc& d, const float* x, float* y, std::int32_t* argmax) {
    reference::max_pool2d_fwd(d, x, y, argmax);
  }
  static i64 max_pool2d_bwd(Run, const Pool2dDesc& d, const float* dy, const std::int32_t* argmax, float* dx) {
    return reference::max_pool2d_bwd(d, dy, argmax, dx);
  }
  static void avg_pool2d_fwd(Run, const Pool2dDesc& d, const float* x, float* y) { reference::avg_pool2d_fwd(d, x, y); }
  static void avg_pool2d_bwd(Run, const Pool2dDesc& d, const float* dy, float* dx) {
    reference::avg_pool2d_bwd(d, dy, dx);
  }
  static i64 max_pool2d_argmax_outside(Run, const Pool2dDesc& d, const std::int32_t* argmax) {
    return reference::max_pool2d_argmax_outside(d, argmax);
  }
  static void batch_norm_fwd(Run, i64 M, i64 C, const float* x, const float* g, const float* b, float eps, float* y,
                             float* xhat, float* mean, float* var, float* inv) {
    reference::batch_norm_fwd(M, C, x, g, b, eps, y, xhat, mean, var, inv);
  }
  static void batch_norm_bwd(Run, i64 M, i64 C, const float* dy, const float* xhat, const float* inv, const float* g,
                             float* dx, float* dg, float* db) {
    reference::batch_norm_bwd(M, C, dy, xhat, inv, g, dx, dg, db);
  }
  static void batch_norm_infer(Run, i64 M, i64 C, const float* x, const float* mean, const float* var,
                               const float* g, const float* b, float eps, float* y, const PointwiseAct& act) {
    reference::batch_norm_infer(M, C, x, mean, var, g, b, eps, y, act);
  }
};

// The element-wise activations (ops/pointwise.h), host only: on the GPU CuPy's element-wise kernels
// already make one pass.
template <void (*Fn)(Pointwise, i64, const float*, float*, float, float)>
void def_pointwise(py::module_& m) {
  m.def("pointwise",
        [](py::handle x, const std::string& fn, float lo, float hi, py::handle y) {
          return named("pointwise", [&] {
            const std::vector<i64> shape = array_shape_any(x, "x", Device::Cpu);
            const Pointwise f = pointwise_named(fn);
            const float* px = array_data<float, Device::Cpu>(x, "x", shape, false);
            py::object out = output<CpuKernels>(y, shape);
            float* py_ = array_data<float, Device::Cpu>(out, "y", shape, true);
            {
              py::gil_scoped_release nogil;
              Fn(f, count_of(shape), px, py_, lo, hi);
            }
            return out;
          });
        },
        py::arg("x"), py::arg("fn"), py::arg("lo") = 0.f, py::arg("hi") = 0.f, py::arg("y") = py::none(),
        "y = fn(x) element-wise for fn 'clamp' (between lo and hi; NaN stays NaN), 'sigmoid' or 'silu', into y "
        "(x itself for in place) or (None) a new array, which it returns.");
}

// a op b with b repeated along a's middle axis (ops/pointwise.h), host only like def_pointwise.
template <void (*Fn)(Binary, i64, i64, i64, const float*, const float*, float*, const PointwiseAct&)>
void def_binary(py::module_& m) {
  m.def("binary",
        [](py::handle a, py::handle b, const std::string& op, i64 outer, i64 mid, i64 inner, py::handle y,
           py::handle then, float lo, float hi) {
          return named("binary", [&] {
            const Binary f = binary_named(op);
            const PointwiseAct post = pointwise_act(then, lo, hi);
            CONVKIT_CHECK(outer >= 0 && mid >= 0 && inner >= 0, "outer, mid and inner must not be negative");
            const std::vector<i64> shape = array_shape_any(a, "a", Device::Cpu);
            const std::vector<i64> b_shape = array_shape_any(b, "b", Device::Cpu);
            const i64 n = count_of(shape), nb = count_of(b_shape);
            CONVKIT_CHECK(n == outer * mid * inner && nb == outer * inner,
                          "a must hold outer * mid * inner values and b outer * inner, got " + std::to_string(n) +
                              " and " + std::to_string(nb) + " for (" + std::to_string(outer) + ", " +
                              std::to_string(mid) + ", " + std::to_string(inner) + ")");
            const float* pa = array_data<float, Device::Cpu>(a, "a", shape, false);
            const float* pb = array_data<float, Device::Cpu>(b, "b", b_shape, false);
            py::object out = output<CpuKernels>(y, shape);
            float* py_ = array_data<float, Device::Cpu>(out, "y", shape, true);
            {
              py::gil_scoped_release nogil;
              Fn(f, outer, mid, inner, pa, pb, py_, post);
            }
            return out;
          });
        },
        py::arg("a"), py::arg("b"), py::arg("op"), py::arg("outer"), py::arg("mid"), py::arg("inner"),
        py::arg("y") = py::none(), py::arg("then") = py::none(), py::arg("lo") = 0.f, py::arg("hi") = 0.f,
        "y = a op b for op 'add', 'subtract', 'multiply', 'divide' or 'relu_grad' (0 where b <= 0, else a), a viewed as (outer, mid, inner) and b as "
        "(outer, inner), repeated along mid; into y (a itself for in place) or (None) a new array shaped like a, "
        "which it returns; then as conv2d_fwd's.");
}

// Zero padding of NHWC images (ops/pool2d.h), host only: on the GPU CuPy's copy is one pass already.
template <void (*Fn)(i64, i64, i64, i64, i64, i64, i64, i64, const float*, float*)>
void def_pad2d(py::module_& m) {
  m.def("pad2d",
        [](py::handle x, i64 top, i64 bottom, i64 left, i64 right) {
          return named("pad2d", [&] {
            CONVKIT_CHECK(top >= 0 && bottom >= 0 && left >= 0 && right >= 0, "padding must not be negative");
            const auto [N, H, W, C] = array_shape4(x, "x", Device::Cpu);
            const float* px = array_data<float, Device::Cpu>(x, "x", {N, H, W, C}, false);
            const std::vector<i64> shape = {N, top + H + bottom, left + W + right, C};
            py::object out = output<CpuKernels>(py::none(), shape);
            float* py_ = array_data<float, Device::Cpu>(out, "y", shape, true);
            {
              py::gil_scoped_release nogil;
              Fn(N, H, W, C, top, bottom, left, right, px, py_);
            }
            return out;
          });
        },
        py::arg("x"), py::arg("top"), py::arg("bottom"), py::arg("left"), py::arg("right"),
        "x (N, H, W, C) with zeros around each image: a new (N, top + H + bottom, left + W + right, C) array.");
}

}  // namespace

PYBIND11_MODULE(_cpu, m) {
  m.doc() = "convkit CPU kernels (C++, OpenMP)";

  m.def("conv2d_output_shape",
        [](Shape4 x, Shape4 w, Pair strides, Pair dilation, const std::string& padding) {
          return conv_out_shape(conv_desc(x, w, strides, dilation, padding));
        },
        py::arg("x_shape"), py::arg("kernel_shape"), py::arg("strides"), py::arg("dilation"), py::arg("padding"),
        "Output shape (N, OH, OW, K) of conv2d; raises ValueError on any invalid argument.");

  m.def("depthwise2d_output_shape",
        [](Shape4 x, Shape4 w, Pair strides, Pair dilation, const std::string& padding) {
          return depthwise_out_shape(depthwise_desc(x, w, strides, dilation, padding));
        },
        py::arg("x_shape"), py::arg("kernel_shape"), py::arg("strides"), py::arg("dilation"), py::arg("padding"),
        "Output shape (N, OH, OW, C * M) of depthwise2d; raises ValueError on any invalid argument.");

  m.def("pool2d_output_shape",
        [](Shape4 x, Pair pool, Pair strides, const std::string& padding) {
          return pool_out_shape(pool_desc(x, pool, strides, padding));
        },
        py::arg("x_shape"), py::arg("pool_size"), py::arg("strides"), py::arg("padding"));

  def_ops<CpuKernels>(m);
  def_pointwise<pointwise_cpu>(m);
  def_binary<binary_cpu>(m);
  def_pad2d<pad2d_cpu>(m);

  m.def("fold_batch_norm",
        [](py::handle mean, py::handle variance, py::handle gamma, py::handle beta, py::handle bias, double eps) {
          return named("fold_batch_norm", [&] {
            constexpr Device D = Device::Cpu;
            const i64 C = array_shape<1>(mean, "mean", D)[0];
            const float* pm = channel_data<D>(mean, "mean", C, false);
            const float* pv = channel_data<D>(variance, "variance", C, false);
            const float *pg = channel_data<D>(gamma, "gamma", C, true), *pb = channel_data<D>(beta, "beta", C, true);
            const float* pbias = channel_data<D>(bias, "bias", C, true);
            py::object scale = output<CpuKernels>(py::none(), {C}), shift = output<CpuKernels>(py::none(), {C});
            float* ps = array_data<float, D>(scale, "scale", {C}, true);
            float* pt = array_data<float, D>(shift, "shift", {C}, true);
            for (i64 c = 0; c < C; ++c) {
              const double s = (pg ? pg[c] : 1.0) / std::sqrt(double(pv[c]) + eps);
              ps[c] = static_cast<float>(s);
              pt[c] = static_cast<float>((pb ? pb[c] : 0.0) + ((pbias ? pbias[c] : 0.0) - pm[c]) * s);
            }
            return py::make_tuple(scale, shift);
          });
        },
        py::arg("mean"), py::arg("variance"), py::arg("gamma"), py::arg("beta"), py::arg("bias"), py::arg("epsilon"),
        "(scale, shift) of a batch normalisation folded into the convolution before it: scale = gamma / "
        "sqrt(variance + epsilon), shift = beta + (bias - mean) * scale, in double; gamma, beta, bias may be None.");

  py::module_ ref = m.def_submodule("reference", "The reference loops (csrc/ops/reference.h): the same functions, "
                                                 "plain loops summing in double, to check the kernels against.");
  def_ops<ReferenceKernels>(ref);
  def_pointwise<reference::pointwise>(ref);
  def_binary<reference::binary>(ref);
  def_pad2d<reference::pad2d>(ref);

  m.def("set_num_threads", [](int n) {
    CONVKIT_CHECK(n >= 1, "number of threads must be >= 1, got " + std::to_string(n));
    omp_set_num_threads(n);
  });
  m.def("get_num_threads", []() { return omp_get_max_threads(); });
  m.def("micro_kernel", []() { return std::string(cpu::micro_kernel_name()); });
  m.def("peak_gflops", [](double min_seconds) {
        CONVKIT_CHECK(min_seconds > 0 && min_seconds <= 60, "peak_gflops: min_seconds must be in (0, 60]");
        py::gil_scoped_release nogil;
        return cpu::peak_gflops(min_seconds);
      },
      py::arg("min_seconds") = 0.5,
      "The float32 peak of this machine with the current threads, measured (GFLOP/s): independent fused "
      "multiply-adds on registers of the micro-kernels' width, on every thread, for at least min_seconds.");
  if (const char* env = std::getenv("CONVKIT_CONV_STRATEGY"); env && *env) set_conv_strategy(env);
  m.def("set_conv_strategy", &set_conv_strategy, py::arg("name"),
        "Force a CPU convolution strategy wherever it applies ('auto' to choose by shape again).");
  m.def("conv_strategy", &conv_strategy, "The forced CPU convolution strategy, or 'auto'.");
  m.def("conv_strategy_runs", &conv_strategy_runs, "(strategy, calls served) for every CPU convolution strategy.");
  // A training step frees and allocates the same few megabytes of activations every step. By
  // default glibc maps such blocks afresh or hands freed heap back to the system, so the kernel
  // zero-fills the same pages again at every step (about 1,150 page faults, a fifth of a LeNet-5
  // step). Blocks up to 64 MiB then come from the heap, and up to 1 GiB of freed heap is kept.
  m.def("keep_freed_memory", []() {
#if defined(M_MMAP_THRESHOLD) && defined(M_TRIM_THRESHOLD)
    return mallopt(M_MMAP_THRESHOLD, 64 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1;
#else
    return false;
#endif
  });
}
