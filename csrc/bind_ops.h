// The op functions of both extension modules, defined once: the same names, arguments, checks
// (bind_arrays.h: device, dtype, contiguity, shape, writability) and descriptors
// (bind_common.h) on the CPU and on the GPU. `K` supplies the device and its kernels:
// CpuKernels in bind_cpu.cpp, CudaKernels (launching on CuPy's current stream) in bind_cuda.cpp.
// Results are written into arrays the caller passes, or which a forward op allocates (K::empty) where
// it is passed None; the kernels run with the GIL released. Errors name the convkit.ops op.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bind_arrays.h"
#include "bind_common.h"
#include "ops/batch_norm.h"

namespace convkit {

inline std::vector<i64> vec(const Shape4& s) { return {s.begin(), s.end()}; }

// Whether n floats from a and n from b share memory (compared as addresses: the arrays are unrelated).
inline bool overlap(const float* a, const float* b, i64 n) {
  const auto ia = reinterpret_cast<std::uintptr_t>(a), ib = reinterpret_cast<std::uintptr_t>(b);
  const auto bytes = static_cast<std::uintptr_t>(n) * sizeof(float);
  return ia < ib + bytes && ib < ia + bytes;
}

// Runs an op function's body: an error in its arguments names the op as convkit.ops does.
template <class F>
auto named(const char* op, F body) -> decltype(body()) {
  const auto prefixed = [op](const char* what) {
    const std::string w = what, p = std::string(op) + ": ";
    return w.rfind(p, 0) == 0 ? w : p + w;
  };
  try {
    return body();
  } catch (const py::type_error& e) {
    throw py::type_error(prefixed(e.what()));
  } catch (const py::value_error& e) {
    throw py::value_error(prefixed(e.what()));
  } catch (const ShapeError& e) {
    throw ShapeError(prefixed(e.what()));
  }
}

// An output argument: the array given, or for None a new one of `shape` on K's device, so that
// the forward ops allocate from the descriptor they build anyway.
template <class K>
py::object output(py::handle given, const std::vector<i64>& shape, const char* dtype = "float32") {
  return given.is_none() ? K::empty(shape, dtype) : py::reinterpret_borrow<py::object>(given);
}

// A per-channel vector of batch normalisation (null for None when optional), its length checked first.
template <Device D>
const float* channel_data(py::handle v, const char* name, i64 C, bool optional) {
  if (optional && v.is_none()) return nullptr;
  const std::vector<i64> s = array_shape_any(v, name, D);
  CONVKIT_CHECK(s.size() == 1 && s[0] == C, std::string(name) + " has " +
                                                (s.size() == 1 ? std::to_string(s[0]) + " entries"
                                                               : "shape " + shape_str(s)) +
                                                " but the input has " + std::to_string(C) + " channels");
  return array_data<float, D>(v, name, {C}, false);
}

// An element-wise activation by name (ops/pointwise.h): "clamp" between lo and hi, "sigmoid", "silu".
inline Pointwise pointwise_named(const std::string& name) {
  if (name == "clamp") return Pointwise::Clamp;
  if (name == "sigmoid") return Pointwise::Sigmoid;
  CONVKIT_CHECK(name == "silu", "unknown function '" + name + "'; known: clamp, sigmoid, silu");
  return Pointwise::Silu;
}

// The optional activation a kernel applies on its way out: None (off), or 'clamp' (between lo and hi),
// 'sigmoid' or 'silu'.
inline PointwiseAct pointwise_act(py::handle fn, float lo, float hi) {
  if (fn.is_none()) return {};
  return {true, pointwise_named(fn.cast<std::string>()), lo, hi};
}

inline Binary binary_named(const std::string& name) {
  if (name == "add") return Binary::Add;
  if (name == "subtract") return Binary::Subtract;
  if (name == "multiply") return Binary::Multiply;
  if (name == "divide") return Binary::Divide;
  CONVKIT_CHECK(name == "relu_grad",
                "unknown operation '" + name + "'; known: add, subtract, multiply, divide, relu_grad");
  return Binary::ReluGrad;
}

// Batch normalisation over the channels of (rows, C) arrays; gamma and beta may be None.
template <class K>
void def_batch_norm(py::module_& m) {
  constexpr Device D = K::device;
  m.def("batch_norm_fwd",
        [](py::handle x, py::handle gamma, py::handle beta, float eps, py::handle y, py::handle xhat, py::handle mean,
           py::handle var, py::handle inv) {
          return named("batch_norm_train", [&] {
            const auto [M, C] = array_shape<2>(x, "x", D);
            const float* px = array_data<float, D>(x, "x", {M, C}, false);
            const float* pg = channel_data<D>(gamma, "gamma", C, true);
            const float* pb = channel_data<D>(beta, "beta", C, true);
            py::object outs[5] = {output<K>(y, {M, C}), output<K>(xhat, {M, C}), output<K>(mean, {C}),
                                  output<K>(var, {C}), output<K>(inv, {C})};
            float* py_ = array_data<float, D>(outs[0], "y", {M, C}, true);
            float* ph = array_data<float, D>(outs[1], "xhat", {M, C}, true);
            float* pm = array_data<float, D>(outs[2], "mean", {C}, true);
            float* pv = array_data<float, D>(outs[3], "var", {C}, true);
            float* pi = array_data<float, D>(outs[4], "inv", {C}, true);
            auto run = K::prepare();
            {
              py::gil_scoped_release nogil;
              K::batch_norm_fwd(run, M, C, px, pg, pb, eps, py_, ph, pm, pv, pi);
            }
            return py::make_tuple(outs[0], outs[1], outs[2], outs[3], outs[4]);
          });
        },
        py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("epsilon"), py::arg("y"), py::arg("xhat"),
        py::arg("mean"), py::arg("var"), py::arg("inv"),
        "Training mode: (y, xhat, mean, var, inv), xhat = (x - mean) * inv with the batch's mean, biased var and "
        "inv = 1/sqrt(var + eps); each output is written into the array given or (None) a new one.");

  m.def("batch_norm_bwd",
        [](py::handle dy, py::handle xhat, py::handle inv, py::handle gamma, py::handle dx, py::handle dgamma,
           py::handle dbeta) {
          return named("batch_norm_train_backward", [&] {
            const auto [M, C] = array_shape<2>(dy, "dy", D);
            const float* pdy = array_data<float, D>(dy, "dy", {M, C}, false);
            const float* ph = array_data<float, D>(xhat, "xhat", {M, C}, false);
            const float* pi = channel_data<D>(inv, "inv", C, false);
            const float* pg = channel_data<D>(gamma, "gamma", C, true);
            float* pdx = optional_data<float, D>(dx, "dx", {M, C}, true);
            float* pdg = array_data<float, D>(dgamma, "dgamma", {C}, true);
            float* pdb = array_data<float, D>(dbeta, "dbeta", {C}, true);
            auto run = K::prepare();
            py::gil_scoped_release nogil;
            K::batch_norm_bwd(run, M, C, pdy, ph, pi, pg, pdx, pdg, pdb);
          });
        },
        py::arg("dy"), py::arg("xhat"), py::arg("inv"), py::arg("gamma"), py::arg("dx"), py::arg("dgamma"),
        py::arg("dbeta"), "Gradients of batch_norm_fwd from its xhat and inv; dx may be None (not computed).");

  m.def("batch_norm_infer",
        [](py::handle x, py::handle mean, py::handle var, py::handle gamma, py::handle beta, float eps, py::handle y,
           py::handle activation, float lo, float hi) {
          return named("batch_norm_inference", [&] {
            const PointwiseAct act = pointwise_act(activation, lo, hi);
            const auto [M, C] = array_shape<2>(x, "x", D);
            const float* px = array_data<float, D>(x, "x", {M, C}, false);
            const float* pm = channel_data<D>(mean, "mean", C, false);
            const float* pv = channel_data<D>(var, "variance", C, false);
            const float* pg = channel_data<D>(gamma, "gamma", C, true);
            const float* pb = channel_data<D>(beta, "beta", C, true);
            py::object out = output<K>(y, {M, C});
            float* py_ = array_data<float, D>(out, "y", {M, C}, true);
            auto run = K::prepare();
            {
              py::gil_scoped_release nogil;
              K::batch_norm_infer(run, M, C, px, pm, pv, pg, pb, eps, py_, act);
            }
            return out;
          });
        },
        py::arg("x"), py::arg("mean"), py::arg("variance"), py::arg("gamma"), py::arg("beta"), py::arg("epsilon"),
        py::arg("y"), py::arg("activation") = py::none(), py::arg("lo") = 0.f, py::arg("hi") = 0.f,
        "Inference: y = act((x - mean) / sqrt(variance + eps) * gamma + beta) with given statistics, into y or "
        "(None) a new array, which it returns; act is none, or 'clamp' (between lo and hi), 'sigmoid' or 'silu'.");
}

template <class K>
void def_ops(py::module_& m) {
  constexpr Device D = K::device;
  using i32 = std::int32_t;

  m.def("conv2d_fwd",
        [](py::handle x, py::handle w, py::handle bias, py::handle y, Pair strides, Pair dilation,
           const std::string& padding, bool relu, bool tf32, py::handle then, float lo, float hi,
           py::handle scale, py::handle residual) {
          return named("conv2d", [&] {
            const PointwiseAct post = pointwise_act(then, lo, hi);
            const Conv2dDesc d = conv_desc(array_shape4(x, "x", D), array_shape4(w, "kernel", D), strides, dilation,
                                           padding);
            const float* px = array_data<float, D>(x, "x", {d.N, d.H, d.W, d.C}, false);
            const float* pw = array_data<float, D>(w, "kernel", {d.R, d.S, d.C, d.K}, false);
            const float* pb = optional_data<float, D>(bias, "bias", {d.K}, false);
            const float* ps = optional_data<float, D>(scale, "scale", {d.K}, false);
            const std::vector<i64> y_shape = vec(conv_out_shape(d));
            py::object out = output<K>(y, y_shape);
            float* py_ = array_data<float, D>(out, "y", y_shape, true);
            const float* pr = optional_data<float, D>(residual, "residual", y_shape, false);
            CONVKIT_CHECK(!pr || !overlap(pr, py_, count_of(y_shape)),
                          "y and residual overlap; the residual is read after y is written, so give y other memory");
            auto run = K::prepare();
            {
              py::gil_scoped_release nogil;
              K::conv2d_fwd(run, d, px, pw, pb, py_, relu ? Activation::Relu : Activation::None, tf32, post, ps, pr);
            }
            return out;
          });
        },
        py::arg("x"), py::arg("kernel"), py::arg("bias"), py::arg("y"), py::arg("strides"), py::arg("dilation"),
        py::arg("padding"), py::arg("relu") = false, py::arg("tf32") = false, py::arg("then") = py::none(),
        py::arg("lo") = 0.f, py::arg("hi") = 0.f, py::arg("scale") = py::none(), py::arg("residual") = py::none(),
        "y = conv2d(x, kernel) + bias (ReLU fused when relu), into y or (None) a new array, which it returns; tf32 "
        "selects TF32 arithmetic on the GPU; then ('clamp' between lo and hi, 'sigmoid' or 'silu') is applied to "
        "each block of y as it is finished; scale (K values, or None) multiplies output channel k's sums by "
        "scale[k] before the bias; residual (shaped as y, or None) is added after the bias, before the ReLU "
        "and then.");

  m.def("conv2d_bwd_data",
        [](py::handle dy, py::handle w, py::handle dx, Pair strides, Pair dilation, const std::string& padding,
           bool tf32) {
          return named("conv2d_backward_data", [&] {
            const Conv2dDesc d = conv_desc(array_shape4(dx, "dx", D), array_shape4(w, "kernel", D), strides, dilation,
                                           padding);
            const float* pdy = array_data<float, D>(dy, "dy", vec(conv_out_shape(d)), false, "conv2d of these inputs");
            const float* pw = array_data<float, D>(w, "kernel", {d.R, d.S, d.C, d.K}, false);
            float* pdx = array_data<float, D>(dx, "dx", {d.N, d.H, d.W, d.C}, true);
            auto run = K::prepare();
            py::gil_scoped_release nogil;
            K::conv2d_bwd_data(run, d, pdy, pw, pdx, tf32);
          });
        },
        py::arg("dy"), py::arg("kernel"), py::arg("dx"), py::arg("strides"), py::arg("dilation"), py::arg("padding"),
        py::arg("tf32") = false);

  m.def("conv2d_bwd_filter",
        [](py::handle x, py::handle dy, py::handle dw, py::handle dbias, Pair strides, Pair dilation,
           const std::string& padding, bool tf32) {
          return named("conv2d_backward_filter", [&] {
            const Conv2dDesc d = conv_desc(array_shape4(x, "x", D), array_shape4(dw, "dkernel", D), strides, dilation,
                                           padding);
            const float* px = array_data<float, D>(x, "x", {d.N, d.H, d.W, d.C}, false);
            const float* pdy = array_data<float, D>(dy, "dy", vec(conv_out_shape(d)), false, "conv2d of these inputs");
            float* pdw = array_data<float, D>(dw, "dkernel", {d.R, d.S, d.C, d.K}, true);
            float* pdb = optional_data<float, D>(dbias, "dbias", {d.K}, true);
            auto run = K::prepare();
            py::gil_scoped_release nogil;
            K::conv2d_bwd_filter(run, d, px, pdy, pdw, pdb, tf32);
          });
        },
        py::arg("x"), py::arg("dy"), py::arg("dkernel"), py::arg("dbias"), py::arg("strides"), py::arg("dilation"),
        py::arg("padding"), py::arg("tf32") = false);

  m.def("depthwise2d_fwd",
        [](py::handle x, py::handle w, py::handle bias, py::handle y, Pair strides, Pair dilation,
           const std::string& padding, const std::string& activation, py::handle then, float lo, float hi) {
          return named("depthwise_conv2d", [&] {
            const PointwiseAct post = pointwise_act(then, lo, hi);
            const Depthwise2dDesc d = depthwise_desc(array_shape4(x, "x", D), array_shape4(w, "kernel", D), strides,
                                                     dilation, padding);
            const Activation act = parse_activation(activation);
            const float* px = array_data<float, D>(x, "x", {d.N, d.H, d.W, d.C}, false);
            const float* pw = array_data<float, D>(w, "kernel", {d.R, d.S, d.C, d.M}, false);
            const float* pb = optional_data<float, D>(bias, "bias", {d.K}, false);
            py::object out = output<K>(y, vec(depthwise_out_shape(d)));
            float* py_ = array_data<float, D>(out, "y", vec(depthwise_out_shape(d)), true);
            auto run = K::prepare();
            {
              py::gil_scoped_release nogil;
              K::depthwise2d_fwd(run, d, px, pw, pb, py_, act, post);
            }
            return out;
          });
        },
        py::arg("x"), py::arg("kernel"), py::arg("bias"), py::arg("y"), py::arg("strides"), py::arg("dilation"),
        py::arg("padding"), py::arg("activation") = "linear", py::arg("then") = py::none(), py::arg("lo") = 0.f,
        py::arg("hi") = 0.f,
        "y = depthwise_conv2d(x, kernel) + bias, kernel (kh, kw, C, M), activation 'linear', 'relu' or 'relu6', into "
        "y or (None) a new array, which it returns; then as conv2d_fwd's.");

  m.def("depthwise2d_bwd_data",
        [](py::handle dy, py::handle w, py::handle dx, Pair strides, Pair dilation, const std::string& padding) {
          return named("depthwise_conv2d_backward_data", [&] {
            const Depthwise2dDesc d = depthwise_desc(array_shape4(dx, "dx", D), array_shape4(w, "kernel", D), strides,
                                                     dilation, padding);
            const float* pdy = array_data<float, D>(dy, "dy", vec(depthwise_out_shape(d)), false,
                                                   "depthwise_conv2d of these inputs");
            const float* pw = array_data<float, D>(w, "kernel", {d.R, d.S, d.C, d.M}, false);
            float* pdx = array_data<float, D>(dx, "dx", {d.N, d.H, d.W, d.C}, true);
            auto run = K::prepare();
            py::gil_scoped_release nogil;
            K::depthwise2d_bwd_data(run, d, pdy, pw, pdx);
          });
        },
        py::arg("dy"), py::arg("kernel"), py::arg("dx"), py::arg("strides"), py::arg("dilation"), py::arg("padding"));

  m.def("depthwise2d_bwd_filter",
        [](py::handle x, py::handle dy, py::handle dw, py::handle dbias, Pair strides, Pair dilation,
           const std::string& padding) {
          return named("depthwise_conv2d_backward_filter", [&] {
            const Depthwise2dDesc d = depthwise_desc(array_shape4(x, "x", D), array_shape4(dw, "dkernel", D), strides,
                                                     dilation, padding);
            const float* px = array_data<float, D>(x, "x", {d.N, d.H, d.W, d.C}, false);
            const float* pdy = array_data<float, D>(dy, "dy", vec(depthwise_out_shape(d)), false,
                                                   "depthwise_conv2d of these inputs");
            float* pdw = array_data<float, D>(dw, "dkernel", {d.R, d.S, d.C, d.M}, true);
            float* pdb = optional_data<float, D>(dbias, "dbias", {d.K}, true);
            auto run = K::prepare();
            py::gil_scoped_release nogil;
            K::depthwise2d_bwd_filter(run, d, px, pdy, pdw, pdb);
          });
        },
        py::arg("x"), py::arg("dy"), py::arg("dkernel"), py::arg("dbias"), py::arg("strides"), py::arg("dilation"),
        py::arg("padding"));

  m.def("max_pool2d_fwd",
        [](py::handle x, py::handle y, py::handle argmax, Pair pool, Pair strides, const std::string& padding,
           bool new_argmax) {
          return named("max_pool2d", [&] {
            const Pool2dDesc d = pool_desc(array_shape4(x, "x", D), pool, strides, padding);
            const float* px = array_data<float, D>(x, "x", {d.N, d.H, d.W, d.C}, false);
            py::object out = output<K>(y, vec(pool_out_shape(d)));
            float* py_ = array_data<float, D>(out, "y", vec(pool_out_shape(d)), true);
            py::object am = new_argmax ? output<K>(argmax, vec(pool_out_shape(d)), "int32")
                                       : py::reinterpret_borrow<py::object>(argmax);
            i32* pa = optional_data<i32, D>(am, "argmax", vec(pool_out_shape(d)), true);
            auto run = K::prepare();
            {
              py::gil_scoped_release nogil;
              K::max_pool2d_fwd(run, d, px, py_, pa);
            }
            return py::make_tuple(out, am);
          });
        },
        py::arg("x"), py::arg("y"), py::arg("argmax"), py::arg("pool_size"), py::arg("strides"), py::arg("padding"),
        py::arg("new_argmax") = false,
        "(y, argmax): max pooling into y or (None) a new array, with the argmax written into `argmax` (None: "
        "none, or a new one with new_argmax).");

  m.def("max_pool2d_bwd",
        [](py::handle dy, py::handle argmax, py::handle dx, Pair pool, Pair strides, const std::string& padding,
           bool check_windows) {
          return named("max_pool2d_backward", [&] {
            const Pool2dDesc d = pool_desc(array_shape4(dx, "dx", D), pool, strides, padding);
            const float* pdy = array_data<float, D>(dy, "dy", vec(pool_out_shape(d)), false, "pooling of these inputs");
            array_shape4(argmax, "argmax", D);
            const i32* pa =
                array_data<i32, D>(argmax, "argmax", vec(pool_out_shape(d)), false, "pooling of these inputs");
            float* pdx = array_data<float, D>(dx, "dx", {d.N, d.H, d.W, d.C}, true);
            const std::string of = " of " + std::to_string(d.N * d.OH * d.OW * d.C) + " indices outside ";
            auto run = K::prepare();
            i64 outside;
            if (check_windows) {
              {
                py::gil_scoped_release nogil;
                outside = K::max_pool2d_argmax_outside(run, d, pa);
              }
              if (outside)
                throw py::value_error("argmax holds " + std::to_string(outside) + of +
                                      "their pooling windows: it must come from max_pool2d_with_argmax with this input "
                                      "shape, pool_size, strides and padding");
            }
            {
              py::gil_scoped_release nogil;
              outside = K::max_pool2d_bwd(run, d, pdy, pa, pdx);
            }
            if (outside) throw py::value_error("argmax holds " + std::to_string(outside) + of + "the input");
          });
        },
        py::arg("dy"), py::arg("argmax"), py::arg("dx"), py::arg("pool_size"), py::arg("strides"), py::arg("padding"),
        py::arg("check_windows") = false,
        "dx of max pooling from the argmax of max_pool2d_fwd. Indices outside the input are refused (the GPU's "
        "gather ignores them); with check_windows, so is any index outside its own output's window (an extra "
        "pass, which on the GPU waits for the device).");

  m.def("avg_pool2d_fwd",
        [](py::handle x, py::handle y, Pair pool, Pair strides, const std::string& padding) {
          return named("avg_pool2d", [&] {
            const Pool2dDesc d = pool_desc(array_shape4(x, "x", D), pool, strides, padding);
            const float* px = array_data<float, D>(x, "x", {d.N, d.H, d.W, d.C}, false);
            py::object out = output<K>(y, vec(pool_out_shape(d)));
            float* py_ = array_data<float, D>(out, "y", vec(pool_out_shape(d)), true);
            auto run = K::prepare();
            {
              py::gil_scoped_release nogil;
              K::avg_pool2d_fwd(run, d, px, py_);
            }
            return out;
          });
        },
        py::arg("x"), py::arg("y"), py::arg("pool_size"), py::arg("strides"), py::arg("padding"));

  m.def("avg_pool2d_bwd",
        [](py::handle dy, py::handle dx, Pair pool, Pair strides, const std::string& padding) {
          return named("avg_pool2d_backward", [&] {
            const Pool2dDesc d = pool_desc(array_shape4(dx, "dx", D), pool, strides, padding);
            const float* pdy = array_data<float, D>(dy, "dy", vec(pool_out_shape(d)), false, "pooling of these inputs");
            float* pdx = array_data<float, D>(dx, "dx", {d.N, d.H, d.W, d.C}, true);
            auto run = K::prepare();
            py::gil_scoped_release nogil;
            K::avg_pool2d_bwd(run, d, pdy, pdx);
          });
        },
        py::arg("dy"), py::arg("dx"), py::arg("pool_size"), py::arg("strides"), py::arg("padding"));

  def_batch_norm<K>(m);
}

}  // namespace convkit
