// How both extension modules take arrays: one convention, the array interface. The CPU module
// reads NumPy's __array_interface__, the CUDA module the CUDA array interface
// (__cuda_array_interface__, as CuPy, PyTorch and Numba export it); both are the same dict
// (shape, typestr, data = (pointer, read-only), strides), checked here once: device (which
// interface the object has), dtype, C-contiguity, exact shape and, for outputs, writability.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "common.h"

namespace convkit {

namespace py = pybind11;

enum class Device { Cpu, Cuda };

template <class T>
struct DtypeName;
template <>
struct DtypeName<float> {
  static constexpr const char* typestr = "<f4";
  static constexpr const char* name = "float32";
};
template <>
struct DtypeName<std::int32_t> {
  static constexpr const char* typestr = "<i4";
  static constexpr const char* name = "int32";
};

inline std::string shape_str(const std::vector<i64>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

inline const char* interface_of(Device dev) {
  return dev == Device::Cuda ? "__cuda_array_interface__" : "__array_interface__";
}

inline std::string typestr_name(const std::string& t) {
  static const std::pair<const char*, const char*> names[] = {
      {"<f4", "float32"}, {"<f8", "float64"}, {"<f2", "float16"}, {"<i4", "int32"}, {"<i8", "int64"},
      {"|u1", "uint8"},   {"|i1", "int8"},    {"|b1", "bool"},    {"<u4", "uint32"}, {"<u8", "uint64"}};
  for (const auto& [code, name] : names)
    if (t == code) return name;
  return t;
}

// The interface dict of `obj` for device `dev`; a clear TypeError for anything else.
inline py::dict interface_dict(py::handle obj, const char* name, Device dev) {
  const char* attr = interface_of(dev);
  if (!py::hasattr(obj, attr)) {
    const bool other = py::hasattr(obj, interface_of(dev == Device::Cuda ? Device::Cpu : Device::Cuda));
    if (other)
      throw py::type_error(std::string(name) + (dev == Device::Cuda ? " is a host (CPU) array but the CUDA kernels"
                                                                     : " is a GPU array but the CPU kernels") +
                           " take arrays on their own device");
    throw py::type_error(std::string(name) + " must be an array exposing " + attr + ", got " +
                         py::str(py::type::handle_of(obj).attr("__name__")).cast<std::string>());
  }
  return obj.attr(attr).cast<py::dict>();
}

// Defined by the CUDA module: refuses a pointer that is not device memory of the current GPU.
void check_device_pointer(const void* p, const char* name);

// NumPy arrays are read through NumPy's C API: the array interface's dict costs a few microseconds
// to build, and a small layer's kernels were spending most of their time in those checks. Anything
// else (CuPy, other array types) goes through the dict, which also words every error.
inline bool is_numpy(py::handle obj) { return py::isinstance<py::array>(obj); }

inline std::vector<i64> numpy_shape(const py::array& a) {
  return std::vector<i64>(a.shape(), a.shape() + a.ndim());
}

inline std::vector<i64> shape_of(const py::dict& interface) {
  std::vector<i64> s;
  for (auto v : interface["shape"].cast<py::tuple>()) s.push_back(v.cast<i64>());
  return s;
}

// The data of a C-contiguous, aligned NumPy array of T with this shape (writeable if asked), or null for
// anything else, which the interface path then checks and words the error of.
template <class T>
T* numpy_data(py::handle obj, const std::vector<i64>& shape, bool writable) {
  if (!is_numpy(obj)) return nullptr;
  const auto a = py::reinterpret_borrow<py::array>(obj);
  static const int type_num = py::dtype::of<T>().num();
  if (a.dtype().num() != type_num || a.dtype().byteorder() == '>' || numpy_shape(a) != shape ||
      !(a.flags() & py::array::c_style) || !(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_) ||
      (writable && !a.writeable()))
    return nullptr;
  return static_cast<T*>(const_cast<void*>(a.data()));
}

// The data pointer of `obj` after every check; `shape` is the exact shape required, which `from`
// (when given) names in the message, e.g. "conv2d of these inputs".
template <class T, Device dev>
T* array_data(py::handle obj, const char* name, const std::vector<i64>& shape, bool writable,
              const char* from = nullptr) {
  if constexpr (dev == Device::Cpu)
    if (T* p = numpy_data<T>(obj, shape, writable)) return p;
  const py::dict d = interface_dict(obj, name, dev);
  const std::string typestr = d["typestr"].cast<std::string>();
  if (typestr != DtypeName<T>::typestr)
    throw py::type_error(std::string(name) + " must be " + DtypeName<T>::name + ", got " + typestr_name(typestr) +
                         "; convert explicitly with .astype('" + DtypeName<T>::name + "')");
  const std::vector<i64> got = shape_of(d);
  CONVKIT_CHECK(got == shape, std::string(name) + " has shape " + shape_str(got) +
                                  (from ? std::string(" but ") + from + " gives " : std::string(", expected ")) +
                                  shape_str(shape));
  if (d.contains("strides") && !d["strides"].is_none()) {
    const py::tuple strides = d["strides"].cast<py::tuple>();
    i64 expect = static_cast<i64>(sizeof(T));
    for (size_t i = got.size(); i-- > 0;) {
      CONVKIT_CHECK(got[i] == 1 || strides[i].cast<i64>() == expect, std::string(name) + " must be C-contiguous");
      expect *= got[i];
    }
  }
  CONVKIT_CHECK(!d.contains("mask") || d["mask"].is_none(), std::string(name) + " must not be a masked array");
  const py::tuple data = d["data"].cast<py::tuple>();
  CONVKIT_CHECK(!writable || !data[1].cast<bool>(), std::string(name) + " must be writeable");
  T* p = reinterpret_cast<T*>(data[0].cast<std::uintptr_t>());
  if constexpr (dev == Device::Cuda) check_device_pointer(p, name);
  return p;
}

// As array_data, for arguments that may be None (a null pointer).
template <class T, Device dev>
T* optional_data(py::handle obj, const char* name, const std::vector<i64>& shape, bool writable) {
  return obj.is_none() ? nullptr : array_data<T, dev>(obj, name, shape, writable);
}

// The shape of an array on `dev`, of any rank (before its full check).
inline std::vector<i64> array_shape_any(py::handle obj, const char* name, Device dev) {
  if (dev == Device::Cpu && is_numpy(obj)) return numpy_shape(py::reinterpret_borrow<py::array>(obj));
  return shape_of(interface_dict(obj, name, dev));
}

// How many values an array of this shape holds.
inline i64 count_of(const std::vector<i64>& shape) {
  i64 n = 1;
  for (const i64 d : shape) n *= d;
  return n;
}

// The shape of an array argument of rank R (before its full check).

template <size_t R>
std::array<i64, R> array_shape(py::handle obj, const char* name, Device dev) {
  const std::vector<i64> s = array_shape_any(obj, name, dev);
  CONVKIT_CHECK(s.size() == R, std::string(name) + " must be " + std::to_string(R) + "-D, got shape " +
                                   shape_str(s));
  std::array<i64, R> out;
  std::copy(s.begin(), s.end(), out.begin());
  return out;
}

inline std::array<i64, 4> array_shape4(py::handle obj, const char* name, Device dev) {
  return array_shape<4>(obj, name, dev);
}

}  // namespace convkit
