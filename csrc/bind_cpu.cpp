// convkit._cpu: NumPy arrays in, results written into arrays Python allocated.
// Every array is checked (dtype, contiguity, exact shape) before any pointer is
// used; the kernels then run with the GIL released.
#include <omp.h>
#if __has_include(<malloc.h>)
#include <malloc.h>  // mallopt, where the C library is glibc
#endif
#include <pybind11/pybind11.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <vector>

#include "bind_common.h"
#include "ops/batch_norm.h"
#include "cpu/gemm.h"

namespace py = pybind11;
using namespace convkit;

namespace {

std::string shape_str(const std::vector<i64>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

template <class T>
T* checked(const py::array& a, const char* name, const std::vector<i64>& shape, bool writable) {
  if (!a.dtype().is(py::dtype::of<T>()))
    throw py::type_error(std::string(name) + " must have dtype " + py::str(py::dtype::of<T>()).cast<std::string>() +
                         ", got " + py::str(a.dtype()).cast<std::string>());
  std::vector<i64> got(a.shape(), a.shape() + a.ndim());
  CONVKIT_CHECK(got == shape, std::string(name) + " has shape " + shape_str(got) + ", expected " + shape_str(shape));
  CONVKIT_CHECK(a.flags() & py::array::c_style, std::string(name) + " must be C-contiguous");
  CONVKIT_CHECK(!writable || a.writeable(), std::string(name) + " must be writeable");
  return static_cast<T*>(const_cast<void*>(a.data()));
}

Shape4 shape4(const py::array& a, const char* name) {
  CONVKIT_CHECK(a.ndim() == 4, std::string(name) + " must be 4-D, got " + std::to_string(a.ndim()) + "-D");
  return {a.shape(0), a.shape(1), a.shape(2), a.shape(3)};
}

std::vector<i64> vec(const Shape4& s) { return {s.begin(), s.end()}; }

}  // namespace

PYBIND11_MODULE(_cpu, m) {
  m.doc() = "convkit CPU kernels (C++, OpenMP)";

  m.def("conv2d_output_shape",
        [](Shape4 x, Shape4 w, Pair strides, Pair dilation, const std::string& padding) {
          return conv_out_shape(conv_desc(x, w, strides, dilation, padding));
        },
        py::arg("x_shape"), py::arg("kernel_shape"), py::arg("strides"), py::arg("dilation"), py::arg("padding"),
        "Output shape (N, OH, OW, K) of conv2d; raises ValueError on any invalid argument.");

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

  m.def("conv2d_fwd",
        [](const py::array& x, const py::array& w, const py::object& bias, const py::array& y, Pair strides,
           Pair dilation, const std::string& padding, bool relu) {
          const Conv2dDesc d = conv_desc(shape4(x, "x"), shape4(w, "kernel"), strides, dilation, padding);
          const float* px = checked<float>(x, "x", {d.N, d.H, d.W, d.C}, false);
          const float* pw = checked<float>(w, "kernel", {d.R, d.S, d.C, d.K}, false);
          const float* pb = bias.is_none() ? nullptr : checked<float>(bias.cast<py::array>(), "bias", {d.K}, false);
          float* py_ = checked<float>(y, "y", vec(conv_out_shape(d)), true);
          py::gil_scoped_release nogil;
          conv2d_fwd_cpu(d, px, pw, pb, py_, relu ? Activation::Relu : Activation::None);
        },
        py::arg("x").noconvert(), py::arg("kernel").noconvert(), py::arg("bias"), py::arg("y").noconvert(),
        py::arg("strides"), py::arg("dilation"), py::arg("padding"), py::arg("relu") = false);

  m.def("conv2d_bwd_data",
        [](const py::array& dy, const py::array& w, const py::array& dx, Pair strides, Pair dilation,
           const std::string& padding) {
          const Conv2dDesc d = conv_desc(shape4(dx, "dx"), shape4(w, "kernel"), strides, dilation, padding);
          const float* pdy = checked<float>(dy, "dy", vec(conv_out_shape(d)), false);
          const float* pw = checked<float>(w, "kernel", {d.R, d.S, d.C, d.K}, false);
          float* pdx = checked<float>(dx, "dx", {d.N, d.H, d.W, d.C}, true);
          py::gil_scoped_release nogil;
          conv2d_bwd_data_cpu(d, pdy, pw, pdx);
        },
        py::arg("dy").noconvert(), py::arg("kernel").noconvert(), py::arg("dx").noconvert(), py::arg("strides"),
        py::arg("dilation"), py::arg("padding"));

  m.def("conv2d_bwd_filter",
        [](const py::array& x, const py::array& dy, const py::array& dw, const py::object& dbias, Pair strides,
           Pair dilation, const std::string& padding) {
          const Conv2dDesc d = conv_desc(shape4(x, "x"), shape4(dw, "dkernel"), strides, dilation, padding);
          const float* px = checked<float>(x, "x", {d.N, d.H, d.W, d.C}, false);
          const float* pdy = checked<float>(dy, "dy", vec(conv_out_shape(d)), false);
          float* pdw = checked<float>(dw, "dkernel", {d.R, d.S, d.C, d.K}, true);
          float* pdb = dbias.is_none() ? nullptr : checked<float>(dbias.cast<py::array>(), "dbias", {d.K}, true);
          py::gil_scoped_release nogil;
          conv2d_bwd_filter_cpu(d, px, pdy, pdw, pdb);
        },
        py::arg("x").noconvert(), py::arg("dy").noconvert(), py::arg("dkernel").noconvert(), py::arg("dbias"),
        py::arg("strides"), py::arg("dilation"), py::arg("padding"));

  m.def("max_pool2d_fwd",
        [](const py::array& x, const py::array& y, const py::object& argmax, Pair pool, Pair strides,
           const std::string& padding) {
          const Pool2dDesc d = pool_desc(shape4(x, "x"), pool, strides, padding);
          const float* px = checked<float>(x, "x", {d.N, d.H, d.W, d.C}, false);
          float* py_ = checked<float>(y, "y", vec(pool_out_shape(d)), true);
          std::int32_t* pa = argmax.is_none()
                                 ? nullptr
                                 : checked<std::int32_t>(argmax.cast<py::array>(), "argmax", vec(pool_out_shape(d)), true);
          py::gil_scoped_release nogil;
          max_pool2d_fwd_cpu(d, px, py_, pa);
        },
        py::arg("x").noconvert(), py::arg("y").noconvert(), py::arg("argmax"), py::arg("pool_size"),
        py::arg("strides"), py::arg("padding"));

  m.def("max_pool2d_bwd",
        [](const py::array& dy, const py::array& argmax, const py::array& dx, Pair pool, Pair strides,
           const std::string& padding) {
          const Pool2dDesc d = pool_desc(shape4(dx, "dx"), pool, strides, padding);
          const float* pdy = checked<float>(dy, "dy", vec(pool_out_shape(d)), false);
          const std::int32_t* pa = checked<std::int32_t>(argmax, "argmax", vec(pool_out_shape(d)), false);
          float* pdx = checked<float>(dx, "dx", {d.N, d.H, d.W, d.C}, true);
          i64 outside;
          {
            py::gil_scoped_release nogil;
            outside = max_pool2d_bwd_cpu(d, pdy, pa, pdx);
          }
          if (outside)
            throw py::value_error("argmax holds " + std::to_string(outside) + " of " +
                                  std::to_string(d.N * d.OH * d.OW * d.C) + " indices outside the input");
        },
        py::arg("dy").noconvert(), py::arg("argmax").noconvert(), py::arg("dx").noconvert(), py::arg("pool_size"),
        py::arg("strides"), py::arg("padding"));

  m.def("max_pool2d_argmax_outside",
        [](const py::array& argmax, Shape4 x, Pair pool, Pair strides, const std::string& padding) {
          const Pool2dDesc d = pool_desc(x, pool, strides, padding);
          const std::int32_t* pa = checked<std::int32_t>(argmax, "argmax", vec(pool_out_shape(d)), false);
          py::gil_scoped_release nogil;
          return max_pool2d_argmax_outside_cpu(d, pa);
        },
        py::arg("argmax").noconvert(), py::arg("x_shape"), py::arg("pool_size"), py::arg("strides"),
        py::arg("padding"), "How many argmax entries name a cell outside their own output's window.");

  m.def("avg_pool2d_fwd",
        [](const py::array& x, const py::array& y, Pair pool, Pair strides, const std::string& padding) {
          const Pool2dDesc d = pool_desc(shape4(x, "x"), pool, strides, padding);
          const float* px = checked<float>(x, "x", {d.N, d.H, d.W, d.C}, false);
          float* py_ = checked<float>(y, "y", vec(pool_out_shape(d)), true);
          py::gil_scoped_release nogil;
          avg_pool2d_fwd_cpu(d, px, py_);
        },
        py::arg("x").noconvert(), py::arg("y").noconvert(), py::arg("pool_size"), py::arg("strides"),
        py::arg("padding"));

  m.def("avg_pool2d_bwd",
        [](const py::array& dy, const py::array& dx, Pair pool, Pair strides, const std::string& padding) {
          const Pool2dDesc d = pool_desc(shape4(dx, "dx"), pool, strides, padding);
          const float* pdy = checked<float>(dy, "dy", vec(pool_out_shape(d)), false);
          float* pdx = checked<float>(dx, "dx", {d.N, d.H, d.W, d.C}, true);
          py::gil_scoped_release nogil;
          avg_pool2d_bwd_cpu(d, pdy, pdx);
        },
        py::arg("dy").noconvert(), py::arg("dx").noconvert(), py::arg("pool_size"), py::arg("strides"),
        py::arg("padding"));

  // Batch normalisation in training mode on (M, C) views; gamma and beta may be None.
  m.def("batch_norm_fwd",
        [](const py::array& x, const py::object& gamma, const py::object& beta, float eps, const py::array& y,
           const py::array& xhat, const py::array& mean, const py::array& var, const py::array& inv) {
          CONVKIT_CHECK(x.ndim() == 2, "batch_norm: x must be 2-D (rows, channels)");
          const i64 M = x.shape(0), C = x.shape(1);
          const float* px = checked<float>(x, "x", {M, C}, false);
          const float* pg = gamma.is_none() ? nullptr : checked<float>(gamma.cast<py::array>(), "gamma", {C}, false);
          const float* pb = beta.is_none() ? nullptr : checked<float>(beta.cast<py::array>(), "beta", {C}, false);
          float* py_ = checked<float>(y, "y", {M, C}, true);
          float* ph = checked<float>(xhat, "xhat", {M, C}, true);
          float* pm = checked<float>(mean, "mean", {C}, true);
          float* pv = checked<float>(var, "var", {C}, true);
          float* pi = checked<float>(inv, "inv", {C}, true);
          py::gil_scoped_release nogil;
          batch_norm_fwd_cpu(M, C, px, pg, pb, eps, py_, ph, pm, pv, pi);
        },
        py::arg("x").noconvert(), py::arg("gamma"), py::arg("beta"), py::arg("epsilon"), py::arg("y").noconvert(),
        py::arg("xhat").noconvert(), py::arg("mean").noconvert(), py::arg("var").noconvert(),
        py::arg("inv").noconvert());

  m.def("batch_norm_bwd",
        [](const py::array& dy, const py::array& xhat, const py::array& inv, const py::object& gamma,
           const py::object& dx, const py::array& dgamma, const py::array& dbeta) {
          CONVKIT_CHECK(dy.ndim() == 2, "batch_norm: dy must be 2-D (rows, channels)");
          const i64 M = dy.shape(0), C = dy.shape(1);
          const float* pdy = checked<float>(dy, "dy", {M, C}, false);
          const float* ph = checked<float>(xhat, "xhat", {M, C}, false);
          const float* pi = checked<float>(inv, "inv", {C}, false);
          const float* pg = gamma.is_none() ? nullptr : checked<float>(gamma.cast<py::array>(), "gamma", {C}, false);
          float* pdx = dx.is_none() ? nullptr : checked<float>(dx.cast<py::array>(), "dx", {M, C}, true);
          float* pdg = checked<float>(dgamma, "dgamma", {C}, true);
          float* pdb = checked<float>(dbeta, "dbeta", {C}, true);
          py::gil_scoped_release nogil;
          batch_norm_bwd_cpu(M, C, pdy, ph, pi, pg, pdx, pdg, pdb);
        },
        py::arg("dy").noconvert(), py::arg("xhat").noconvert(), py::arg("inv").noconvert(), py::arg("gamma"),
        py::arg("dx"), py::arg("dgamma").noconvert(), py::arg("dbeta").noconvert());

  m.def("set_num_threads", [](int n) {
    CONVKIT_CHECK(n >= 1, "number of threads must be >= 1, got " + std::to_string(n));
    omp_set_num_threads(n);
  });
  m.def("get_num_threads", []() { return omp_get_max_threads(); });
  m.def("micro_kernel", []() { return std::string(cpu::micro_kernel_name()); });
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
