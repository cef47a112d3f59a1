"""Bad input to convkit.ops raises a clear exception naming the problem; odd but valid input works."""

import os

import numpy as np
import pytest

from helpers import error_table_tests, to_device, to_numpy, write_error_table

from convkit import _cpu, ops

X = np.ones((2, 8, 8, 3), np.float32)
K = np.ones((3, 3, 3, 4), np.float32)

BAD = [
    # (call, as evaluated with X, K, np, ops and _cpu in scope; exception; message pattern)
    ('ops.conv2d(X[0], K)', ValueError, r"x must be 4-D, got shape \(8, 8, 3\)"),
    ('ops.conv2d(X, K[0])', ValueError, r"kernel must be 4-D"),
    ('ops.conv2d(X, np.ones((3, 3, 2, 4), np.float32))', ValueError, r"3 channels but the kernel expects 2"),
    ('ops.conv2d(X, np.ones((9, 3, 3, 4), np.float32))', ValueError, r"window height \(9\) is larger than the input height \(8\) with padding='valid'"),
    ('ops.conv2d(X, K, dilation_rate=4)', ValueError, r"window height \(9\) is larger"),
    ('ops.conv2d(X, K, strides=0)', ValueError, r"stride along height must be >= 1, got 0"),
    ('ops.conv2d(X, K, strides=(1, -2))', ValueError, r"stride along width must be >= 1, got -2"),
    ('ops.conv2d(X, K, dilation_rate=0)', ValueError, r"dilation along height must be >= 1"),
    ('ops.conv2d(X, K, strides=1.5)', TypeError, r"strides must be an int or a pair of ints"),
    ('ops.conv2d(X, K, strides=(1, 2, 3))', TypeError, r"strides must be an int or a pair"),
    ('ops.conv2d(X, K, padding="full")', ValueError, r"padding must be 'valid' or 'same', got 'full'"),
    ('ops.conv2d(X, K, padding=None)', TypeError, r"padding must be 'valid' or 'same'"),
    ('ops.conv2d(X.astype(np.float64), K)', TypeError, r"x must be float32, got float64; convert explicitly"),
    ('ops.conv2d(X, K.astype(np.float16))', TypeError, r"kernel must be float32, got float16"),
    ('ops.conv2d(X.astype(np.int32), K)', TypeError, r"x must be float32, got int32"),
    ('ops.conv2d(X.tolist(), K)', TypeError, r"expected a numpy.ndarray or cupy.ndarray, got list"),
    ('ops.conv2d(X, K, np.ones(3, np.float32))', ValueError, r"bias has shape \(3,\), expected \(4,\)"),
    ('ops.conv2d(X, K, activation="gelu")', ValueError, r"fused activation must be"),
    ('ops.conv2d(X, K, precision="fp8")', ValueError, r"precision must be one of"),
    ('ops.conv2d_backward(np.ones((2, 8, 8, 4), np.float32), X, K)', ValueError,
     r"dy has shape \(2, 8, 8, 4\) but conv2d of these inputs gives \(2, 6, 6, 4\)"),
    ('ops.depthwise_conv2d(X, np.ones((3, 3, 4, 1), np.float32))', ValueError,
     r"input has 3 channels but the kernel expects 4 \(kernel shape is \(kh, kw, channels, depth_multiplier\)\)"),
    ('ops.depthwise_conv2d(X, np.ones((3, 3, 3, 0), np.float32))', ValueError, r"depth multiplier must be >= 1, got 0"),
    ('ops.depthwise_conv2d(X, K[..., :1], np.ones(4, np.float32))', ValueError, r"bias has shape \(4,\), expected \(3,\)"),
    ('ops.depthwise_conv2d(X, K[..., :1], activation="gelu")', ValueError,
     r"fused activation must be None, 'linear', 'relu' or 'relu6'"),
    ('ops.depthwise_conv2d(X, np.ones((9, 3, 3, 1), np.float32))', ValueError, r"window height \(9\) is larger"),
    ('ops.depthwise_conv2d(X.astype(np.float64), K[..., :1])', TypeError, r"x must be float32, got float64"),
    ('ops.depthwise_conv2d_backward_data(X, K[..., :1], X.shape)', ValueError,
     r"dy has shape \(2, 8, 8, 3\) but depthwise_conv2d of these inputs gives \(2, 6, 6, 3\)"),
    ('ops.max_pool2d(X, 0)', ValueError, r"window height must be >= 1, got 0"),
    ('ops.max_pool2d(X, 9)', ValueError, r"window height \(9\) is larger than the input height \(8\)"),
    ('ops.avg_pool2d(X, 2, strides=(2, 0))', ValueError, r"stride along width must be >= 1"),
    ('ops.avg_pool2d(X, 2, padding="SAME!")', ValueError, r"padding must be 'valid' or 'same'"),
    ('ops.max_pool2d(X[..., 0], 2)', ValueError, r"x must be 4-D"),
    ('ops.max_pool2d(X.astype(np.float64), 2)', TypeError, r"x must be float32"),
    ('ops.avg_pool2d_backward(np.ones((2, 3, 3, 3), np.float32), X, 2)', ValueError,
     r"dy has shape \(2, 3, 3, 3\) but pooling of these inputs gives \(2, 4, 4, 3\)"),
    ('ops.global_avg_pool2d_backward(np.ones((2, 4), np.float32), X)', ValueError, r"dy has shape \(2, 4\), expected \(2, 3\)"),
    ('ops.max_pool2d_backward_from_argmax(np.ones((2, 4, 4, 3), np.float32), np.zeros((2, 4, 4, 3), np.int32), X.shape, 2)',
     ValueError, r"argmax holds 90 of 96 indices outside their pooling windows"),
    ('ops.max_pool2d_backward_from_argmax(np.ones((2, 4, 4, 3), np.float32), np.zeros((2, 4, 4, 3), np.int64), X.shape, 2)',
     TypeError, r"argmax must be int32, got int64"),
    ('ops.max_pool2d_backward_from_argmax(np.ones((2, 4, 4, 3), np.float32), np.zeros((4, 4, 3), np.int32), X.shape, 2)',
     ValueError, r"argmax must be 4-D"),
    ('_cpu.max_pool2d_bwd(np.ones((2, 4, 4, 3), np.float32), np.full((2, 4, 4, 3), 64, np.int32), np.empty_like(X), (2, 2), (2, 2), "valid")',
     ValueError, r"argmax holds 96 of 96 indices outside the input"),
    ('ops.conv2d_output_shape((2**40, 2**20, 2**20, 1), (1, 1, 1, 1))', ValueError, r"overflows a 64-bit element count"),
    ('ops.pool2d_output_shape((1, 50000, 50000, 1), 2)', ValueError, r"more than 2\^31-1 pixels"),
    ('ops.conv2d_output_shape((1, 8, 8, 0), (3, 3, 0, 4))', ValueError, r"input channels must be >= 1"),
    ('ops.conv2d_output_shape((1, 8, 8, 3), (3, 3, 3, 0))', ValueError, r"filters must be >= 1"),
    ('ops.conv2d_output_shape((-1, 8, 8, 3), (3, 3, 3, 1))', ValueError, r"batch size must be >= 0"),
    ('ops.conv2d_output_shape((1, 0, 8, 3), (1, 1, 3, 1))', ValueError, r"input height must be >= 1, got 0"),
    ('ops.batch_norm_train(X, np.ones(2, np.float32))', ValueError, r"gamma has 2 entries but the input has 3 channels"),
    ('ops.batch_norm_train(X.astype(np.float64))', TypeError, r"x must be float32, got float64"),
    ('ops.batch_norm_train(X[0, 0, 0])', ValueError, r"x must be 2-D, got shape \(3,\)"),
    ('ops.batch_norm_train_backward(np.ones((2, 3), np.float32), np.ones((4, 3), np.float32), np.ones(3, np.float32))',
     ValueError, r"xhat has shape \(4, 3\), expected \(2, 3\)"),
    ('ops.batch_norm_inference(X, None, None, np.zeros(2, np.float32), np.ones(3, np.float32))', ValueError,
     r"mean has 2 entries but the input has 3 channels"),
    ('ops.conv2d(np.ones((2, 8, 8, 3)), K)', TypeError, r"x must be float32, got float64; convert explicitly"),
    # The bindings check their own arguments too, whatever calls them.
    ('_cpu.conv2d_fwd(X, K, None, np.empty((2, 6, 6, 4), np.float64), (1, 1), (1, 1), "valid")', TypeError, r"y must be float32, got float64"),
    ('_cpu.conv2d_fwd(X, K, None, np.empty((2, 6, 6, 5), np.float32), (1, 1), (1, 1), "valid")', ValueError, r"y has shape \(2, 6, 6, 5\), expected \(2, 6, 6, 4\)"),
    ('_cpu.max_pool2d_fwd(X, np.empty((2, 4, 4, 3), np.float32)[:, ::-1], None, (2, 2), (2, 2), "valid")', ValueError, r"y must be C-contiguous"),
    ('_cpu.batch_norm_fwd(X[0, 0], None, None, 1e-3, *[np.empty(s, np.float32) for s in [(8, 2), (8, 3), 3, 3, 3]])',
     ValueError, r"y has shape \(8, 2\), expected \(8, 3\)"),
]


def run_case(call: str):
    return eval(call, {"X": X, "K": K, "np": np, "ops": ops, "_cpu": _cpu})


test_errors_doc_lists_every_case_with_its_message, test_bad_input_is_refused_clearly = \
    error_table_tests("ops", BAD, run_case)


def test_read_only_output_is_refused():
    y = np.empty((2, 6, 6, 4), np.float32)
    y.flags.writeable = False
    with pytest.raises(ValueError, match="y must be writeable"):
        _cpu.conv2d_fwd(X, K, None, y, (1, 1), (1, 1), "valid")


class _DeviceArray:
    """Looks like a GPU array to the modules: it exposes only the CUDA array interface."""

    def __init__(self, a):
        self.__cuda_array_interface__ = {**a.__array_interface__, "version": 3}


def test_the_modules_take_arrays_by_the_array_interface_and_check_the_device():
    y = np.empty((2, 6, 6, 4), np.float32)
    with pytest.raises(TypeError, match="x is a GPU array but the CPU kernels take arrays on their own device"):
        _cpu.conv2d_fwd(_DeviceArray(X), K, None, y, (1, 1), (1, 1), "valid")
    with pytest.raises(TypeError, match="kernel must be an array exposing __array_interface__, got list"):
        _cpu.conv2d_fwd(X, K.tolist(), None, y, (1, 1), (1, 1), "valid")
    with pytest.raises(TypeError, match="argmax must be int32, got int64"):
        _cpu.max_pool2d_fwd(X, np.empty((2, 4, 4, 3), np.float32), np.empty((2, 4, 4, 3), np.int64), (2, 2), (2, 2),
                            "valid")
    _cpu.conv2d_fwd(X, K, None, y, (1, 1), (1, 1), "valid", False, True)  # tf32 is taken, and means nothing here
    np.testing.assert_array_equal(y, ops.conv2d(X, K))


def test_sizes_past_int32_are_computed_in_64_bits():
    assert ops.conv2d_output_shape((1, 100_000, 100_000, 1), (3, 3, 1, 1), 1, "same") == (1, 100_000, 100_000, 1)
    assert ops.conv2d_output_shape((3, 70_000, 70_000, 8), (3, 3, 8, 4), 2, "valid") == (3, 34_999, 34_999, 4)
    assert ops.pool2d_output_shape((4, 40_000, 40_000, 64), 3, 2, "same") == (4, 20_000, 20_000, 64)


def test_non_contiguous_and_read_only_inputs_work(device, rng):
    x = rng.standard_normal((2, 9, 9, 6)).astype(np.float32)
    k = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    ref = to_numpy(ops.conv2d(to_device(x[..., ::2], device), to_device(k, device)))
    xv = to_device(x, device)[..., ::2]  # a strided view
    assert not xv.flags.c_contiguous
    np.testing.assert_array_equal(to_numpy(ops.conv2d(xv, to_device(k, device))), ref)
    if device == "cpu":
        ro = np.ascontiguousarray(x[..., ::2])
        ro.flags.writeable = False
        np.testing.assert_array_equal(ops.conv2d(ro, k), ref)


def test_uppercase_padding_is_accepted():
    np.testing.assert_array_equal(ops.max_pool2d(X, 2, padding="SAME"), ops.max_pool2d(X, 2, padding="same"))


@pytest.mark.skipif(os.environ.get("CONVKIT_BIG_TESTS") != "1", reason="needs ~14 GB of memory; set CONVKIT_BIG_TESTS=1")
def test_more_than_2_31_elements_really_run():
    """A tensor of 2^31 + 2^16 elements: every index past 2^31 must land where it belongs."""
    h, w, c = 32768, 32770, 2
    x = np.zeros((1, h, w, c), np.float32)
    x[0, -1, -1, :] = (3.0, 5.0)
    x[0, -2, -2, :] = (7.0, 11.0)
    assert x.size > 2**31
    y = ops.avg_pool2d(x, 2)
    assert y[0, -1, -1].tolist() == [2.5, 4.0]
    k = np.array([1.0, 10.0], np.float32).reshape(1, 1, 2, 1)
    z = ops.conv2d(x, k)
    assert z[0, -1, -1, 0] == 53.0 and z[0, -2, -2, 0] == 117.0 and z[0, -1, -2, 0] == 0.0


if __name__ == "__main__":  # rewrite the table in docs/ERRORS.md
    write_error_table("ops", BAD, run_case)
