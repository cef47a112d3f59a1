// convkit._cpu: host arrays in (NumPy's array interface, checked in bind_arrays.h), results written
// into arrays Python allocated. The op functions are bind_ops.h's, shared with convkit._cuda.
#include <omp.h>
#if __has_include(<malloc.h>)
#include <malloc.h>  // mallopt, where the C library is glibc
#endif
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdlib>
#include <vector>

#include "bind_ops.h"
#include "ops/batch_norm.h"
#include "ops/reference.h"
#include "cpu/gemm.h"

namespace py = pybind11;
using namespace convkit;

namespace {

constexpr Device D = Device::Cpu;

// The CPU kernels for bind_ops.h; tf32 is ignored (the CPU computes in float32).
struct CpuKernels {
  static constexpr Device device = Device::Cpu;
  struct Run {};
  static Run prepare() { return {}; }
  static void conv2d_fwd(Run, const Conv2dDesc& d, const float* x, const float* w, const float* b, float* y,
                         Activation act, bool) {
    conv2d_fwd_cpu(d, x, w, b, y, act);
  }
  static void conv2d_bwd_data(Run, const Conv2dDesc& d, const float* dy, const float* w, float* dx, bool) {
    conv2d_bwd_data_cpu(d, dy, w, dx);
  }
  static void conv2d_bwd_filter(Run, const Conv2dDesc& d, const float* x, const float* dy, float* dw, float* db,
                                bool) {
    conv2d_bwd_filter_cpu(d, x, dy, dw, db);
  }
  static void depthwise2d_fwd(Run, const Depthwise2dDesc& d, const float* x, const float* w, const float* b,
                              float* y, Activation act) {
    depthwise2d_fwd_cpu(d, x, w, b, y, act);
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
};

// The reference loops (ops/reference.h) behind the same functions, in convkit._cpu.reference.
struct ReferenceKernels {
  static constexpr Device device = Device::Cpu;
  struct Run {};
  static Run prepare() { return {}; }
  static void conv2d_fwd(Run, const Conv2dDesc& d, const float* x, const float* w, const float* b, float* y,
                         Activation act, bool) {
    reference::conv2d_fwd(d, x, w, b, y, act);
  }
  static void conv2d_bwd_data(Run, const Conv2dDesc& d, const float* dy, const float* w, float* dx, bool) {
    reference::conv2d_bwd_data(d, dy, w, dx);
  }
  static void conv2d_bwd_filter(Run, const Conv2dDesc& d, const float* x, const float* dy, float* dw, float* db,
                                bool) {
    reference::conv2d_bwd_filter(d, x, dy, dw, db);
  }
  static void depthwise2d_fwd(Run, const Depthwise2dDesc& d, const float* x, const float* w, const float* b,
                              float* y, Activation act) {
    reference::depthwise2d_fwd(d, x, w, b, y, act);
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
};

// Rows and channels of a 2-D array argument.
std::pair<i64, i64> shape2(py::handle a, const char* name) {
  const py::tuple s = interface_dict(a, name, D)["shape"].cast<py::tuple>();
  CONVKIT_CHECK(s.size() == 2, std::string("batch_norm: ") + name + " must be 2-D (rows, channels)");
  return {s[0].cast<i64>(), s[1].cast<i64>()};
}

// Batch normalisation in training mode on (M, C) views; gamma and beta may be None.
template <class Fwd, class Bwd>
void def_batch_norm(py::module_& m, Fwd fwd, Bwd bwd) {
  m.def("batch_norm_fwd",
        [fwd](py::handle x, py::handle gamma, py::handle beta, float eps, py::handle y, py::handle xhat, py::handle mean,
           py::handle var, py::handle inv) {
          const auto [M, C] = shape2(x, "x");
          const float* px = array_data<float, D>(x, "x", {M, C}, false);
          const float* pg = optional_data<float, D>(gamma, "gamma", {C}, false);
          const float* pb = optional_data<float, D>(beta, "beta", {C}, false);
          float* py_ = array_data<float, D>(y, "y", {M, C}, true);
          float* ph = array_data<float, D>(xhat, "xhat", {M, C}, true);
          float* pm = array_data<float, D>(mean, "mean", {C}, true);
          float* pv = array_data<float, D>(var, "var", {C}, true);
          float* pi = array_data<float, D>(inv, "inv", {C}, true);
          py::gil_scoped_release nogil;
          fwd(M, C, px, pg, pb, eps, py_, ph, pm, pv, pi);
        },
        py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("epsilon"), py::arg("y"), py::arg("xhat"),
        py::arg("mean"), py::arg("var"), py::arg("inv"));

  m.def("batch_norm_bwd",
        [bwd](py::handle dy, py::handle xhat, py::handle inv, py::handle gamma, py::handle dx, py::handle dgamma,
           py::handle dbeta) {
          const auto [M, C] = shape2(dy, "dy");
          const float* pdy = array_data<float, D>(dy, "dy", {M, C}, false);
          const float* ph = array_data<float, D>(xhat, "xhat", {M, C}, false);
          const float* pi = array_data<float, D>(inv, "inv", {C}, false);
          const float* pg = optional_data<float, D>(gamma, "gamma", {C}, false);
          float* pdx = optional_data<float, D>(dx, "dx", {M, C}, true);
          float* pdg = array_data<float, D>(dgamma, "dgamma", {C}, true);
          float* pdb = array_data<float, D>(dbeta, "dbeta", {C}, true);
          py::gil_scoped_release nogil;
          bwd(M, C, pdy, ph, pi, pg, pdx, pdg, pdb);
        },
        py::arg("dy"), py::arg("xhat"), py::arg("inv"), py::arg("gamma"), py::arg("dx"), py::arg("dgamma"),
        py::arg("dbeta"));
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

  m.def("pool2d_padding",
        [](Shape4 x, Pair pool, Pair strides, const std::string& padding) {
          const Pool2dDesc d = pool_desc(x, pool, strides, padding);
          return std::make_pair(d.pt, d.pl);
        },
        py::arg("x_shape"), py::arg("pool_size"), py::arg("strides"), py::arg("padding"),
        "Padding (top, left) that pooling puts before the input.");

  def_ops<CpuKernels>(m);

  m.def("max_pool2d_argmax_outside",
        [](py::handle argmax, Shape4 x, Pair pool, Pair strides, const std::string& padding) {
          const Pool2dDesc d = pool_desc(x, pool, strides, padding);
          const std::int32_t* pa = array_data<std::int32_t, D>(argmax, "argmax", vec(pool_out_shape(d)), false);
          py::gil_scoped_release nogil;
          return max_pool2d_argmax_outside_cpu(d, pa);
        },
        py::arg("argmax"), py::arg("x_shape"), py::arg("pool_size"), py::arg("strides"),
        py::arg("padding"), "How many argmax entries name a cell outside their own output's window.");

  // Batch normalisation in training mode on (M, C) views; gamma and beta may be None.
  def_batch_norm(m, batch_norm_fwd_cpu, batch_norm_bwd_cpu);

  py::module_ ref = m.def_submodule("reference", "The reference loops (csrc/ops/reference.h): the same functions, "
                                                 "plain loops summing in double, to check the kernels against.");
  def_ops<ReferenceKernels>(ref);
  def_batch_norm(ref, reference::batch_norm_fwd, reference::batch_norm_bwd);

  m.def("set_num_threads", [](int n) {
    CONVKIT_CHECK(n >= 1, "number of threads must be >= 1, got " + std::to_string(n));
    omp_set_num_threads(n);
  });
  m.def("get_num_threads", []() { return omp_get_max_threads(); });
  m.def("micro_kernel", []() { return std::string(cpu::micro_kernel_name()); });
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
