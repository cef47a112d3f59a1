"""A PyTorch twin of a convkit functional model: the model's graph walked node by node, each layer run with
``torch.nn.functional`` on a copy of the convkit layer's weights, in NCHW (or its channels_last memory format).

TensorFlow's 'same' padding, which puts an odd pixel at the bottom and right, is applied with an explicit
``F.pad`` where it is asymmetric, so the twin computes what the convkit model computes:

    twin = TorchTwin(convkit_model, memory_format=torch.channels_last)
    y = twin(torch.from_numpy(x_nhwc).permute(0, 3, 1, 2))   # class scores, or NCHW feature maps
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_weights

_ACTIVATIONS = {
    "linear": lambda x: x, "relu": F.relu, "relu6": F.relu6, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
    "silu": F.silu, "swish": F.silu, "elu": F.elu, "selu": F.selu, "softplus": F.softplus, "gelu": F.gelu,
    "hard_sigmoid": lambda x: F.relu6(x + 3) / 6, "hard_silu": lambda x: x * F.relu6(x + 3) / 6,
    "softmax": lambda x: torch.softmax(x, dim=1),  # the channels: the last axis of convkit's layout
}


def activation(name):
    """The torch function of a convkit activation's name."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"no PyTorch twin for activation {name!r}")
    return _ACTIVATIONS[name]


def same_pads(size, kernel, stride, dilation=1):
    """TensorFlow's 'same' padding of one spatial axis: (before, after), the odd pixel after."""
    if size is None:
        raise ValueError("the twin needs models with fixed image sizes (Input(shape=(H, W, C)))")
    span = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + span - size, 0)
    return total // 2, total - total // 2


def _foldable(model):
    """{id(conv layer): its batch normalisation, id(normalisation node): 'into'} for each BatchNormalization
    that is the one reader of a Conv2D or DepthwiseConv2D without activation (the model's output excepted):
    the pairs the model's own runner may fold (its single readers, ``Model._fusable_pairs``)."""
    out = {}
    for n in model._graph[2]:
        r = model._fusable_pairs().get(id(n))
        if type(n.layer).__name__ in ("Conv2D", "DepthwiseConv2D") and n.layer.activation.name == "linear" \
                and r is not None and type(r.layer).__name__ == "BatchNormalization":
            out[id(n.layer)], out[id(r)] = r.layer, "into"
    return out


class TorchTwin:
    """Runs a convkit functional model's graph with PyTorch ops (inference only: dropout is the identity and
    batch normalisation uses its moving statistics). Call it on an NCHW float32 tensor.

    With ``fold_batch_norm`` every batch normalisation that alone reads a convolution without activation is
    folded into that convolution's weights once, as PyTorch's own inference preparation does
    (``torch.nn.utils.fusion.fuse_conv_bn_weights``, what ``torch.fx``'s and ``torch.jit.freeze``'s fusion
    use), so PyTorch also skips those passes."""

    def __init__(self, model, memory_format=torch.contiguous_format, fold_batch_norm=False):
        graph = getattr(model, "_graph", None)
        if graph is None:
            raise ValueError("TorchTwin translates functional models (Model(inputs, outputs)) only")
        self.memory_format = memory_format
        ins, outs, order = graph
        if len(ins) != 1:
            raise ValueError("TorchTwin translates models with one input")
        self._input, self._output = id(ins[0]), id(outs[0])
        self._folded = _foldable(model) if fold_batch_norm else {}
        self._steps = [(id(n.output), [id(t) for t in n.inputs], self._translate(n)) for n in order
                       if type(n.layer).__name__ != "InputLayer"]

    def __call__(self, x):
        values = {self._input: x.contiguous(memory_format=self.memory_format) if x.dim() == 4 else x}
        with torch.inference_mode():
            for out, ins, fn in self._steps:
                values[out] = fn(*(values[i] for i in ins))
        return values[self._output]

    # -- weights ---------------------------------------------------------------------------------------------
    def _tensor(self, a):
        t = torch.from_numpy(np.array(a, dtype=np.float32))
        return t.contiguous(memory_format=self.memory_format) if t.dim() == 4 else t

    def _conv_kernel(self, kernel):  # HWIO -> OIHW
        return self._tensor(np.transpose(kernel.numpy(), (3, 2, 0, 1)))

    def _depthwise_kernel(self, kernel):  # (kh, kw, C, M) -> (C * M, 1, kh, kw): output channel c * M + m
        kh, kw, c, m = kernel.shape
        return self._tensor(np.transpose(kernel.numpy().reshape(kh, kw, c * m), (2, 0, 1))[:, None])

    @staticmethod
    def _bias(layer):
        return None if getattr(layer, "bias", None) is None else torch.from_numpy(layer.bias.numpy())

    @staticmethod
    def _channel_vector(v, ndim):
        """A per-channel (last axis) number or array, shaped to broadcast over NCHW (or N, C)."""
        if np.ndim(v) == 0:
            return float(v)
        t = torch.from_numpy(np.asarray(v, np.float32).reshape(-1))
        return t.reshape(1, -1, 1, 1) if ndim == 4 else t

    # -- layers ----------------------------------------------------------------------------------------------
    def _translate(self, node):
        layer = node.layer
        kind = type(layer).__name__
        if self._folded.get(id(node)) == "into":  # its convolution already computed it
            return lambda x: x
        method = getattr(self, f"_{kind}", None)
        if method is None:
            raise ValueError(f"no PyTorch twin for layer {kind} ({layer.name!r})")
        shapes = [t.shape for t in node.inputs]
        return method(layer, shapes if node.multi else shapes[0])

    def _padded(self, shape, layer, kernel, fill=0.0):
        """(pad function, torch padding): symmetric 'same' padding goes to the op, asymmetric is applied first."""
        if layer.padding == "valid":
            return (lambda x: x), (0, 0)
        dilation = getattr(layer, "dilation_rate", (1, 1))
        (top, bottom), (left, right) = (same_pads(shape[i + 1], kernel[i], layer.strides[i], dilation[i])
                                        for i in range(2))
        if top == bottom and left == right:
            return (lambda x: x), (top, left)
        return (lambda x: F.pad(x, (left, right, top, bottom), value=fill)), (0, 0)

    def _fold(self, layer, w, b):
        """(w, b) with the batch normalisation that reads ``layer`` alone folded in, if it is to be."""
        norm = self._folded.get(id(layer))
        if norm is None:
            return w, b
        get = lambda v: None if v is None else torch.from_numpy(v.numpy())  # noqa: E731
        w, b = fuse_conv_bn_weights(w, b, get(norm.moving_mean), get(norm.moving_variance), norm.epsilon,
                                    get(norm.gamma), get(norm.beta))
        return w.detach().contiguous(memory_format=self.memory_format), b.detach()

    def _Conv2D(self, layer, shape):
        pad, padding = self._padded(shape, layer, layer.kernel_size)
        (w, b), act = self._fold(layer, self._conv_kernel(layer.kernel), self._bias(layer)), \
            activation(layer.activation.name)
        return lambda x: act(F.conv2d(pad(x), w, b, layer.strides, padding, layer.dilation_rate))

    def _DepthwiseConv2D(self, layer, shape):
        pad, padding = self._padded(shape, layer, layer.kernel_size)
        (w, b), act = self._fold(layer, self._depthwise_kernel(layer.kernel), self._bias(layer)), \
            activation(layer.activation.name)
        groups = shape[-1]
        return lambda x: act(F.conv2d(pad(x), w, b, layer.strides, padding, layer.dilation_rate, groups))

    def _SeparableConv2D(self, layer, shape):
        pad, padding = self._padded(shape, layer, layer.kernel_size)
        dw, pw = self._depthwise_kernel(layer.depthwise_kernel), self._conv_kernel(layer.pointwise_kernel)
        b, act, groups = self._bias(layer), activation(layer.activation.name), shape[-1]
        return lambda x: act(F.conv2d(F.conv2d(pad(x), dw, None, layer.strides, padding, layer.dilation_rate,
                                               groups), pw, b))

    def _BatchNormalization(self, layer, shape):
        get = lambda v: None if v is None else torch.from_numpy(v.numpy())  # noqa: E731
        mean, var, gamma, beta = (get(v) for v in (layer.moving_mean, layer.moving_variance, layer.gamma,
                                                    layer.beta))
        return lambda x: F.batch_norm(x, mean, var, gamma, beta, False, 0.0, layer.epsilon)

    def _Activation(self, layer, shape):
        act = activation(layer.activation.name)
        return act if len(shape) == 4 or layer.activation.name != "softmax" else lambda x: torch.softmax(x, -1)

    def _ReLU(self, layer, shape):
        slope, top, threshold = layer.negative_slope, layer.max_value, layer.threshold

        def relu(x):
            y = F.relu(x) if not slope and not threshold else torch.where(x > threshold, x, slope * (x - threshold))
            return y if top is None else torch.clamp(y, max=top)

        return relu

    def _Dense(self, layer, shape):
        w, b = torch.from_numpy(layer.kernel.numpy().T.copy()), self._bias(layer)
        name = layer.activation.name
        act = (lambda x: torch.softmax(x, -1)) if name == "softmax" else activation(name)
        return lambda x: act(F.linear(x, w, b))

    def _ZeroPadding2D(self, layer, shape):
        (top, bottom), (left, right) = layer.padding
        return lambda x: F.pad(x, (left, right, top, bottom))

    def _Cropping2D(self, layer, shape):
        (top, bottom), (left, right) = layer.cropping
        return lambda x: x[:, :, top:x.shape[2] - bottom, left:x.shape[3] - right]

    def _MaxPooling2D(self, layer, shape):
        pad, padding = self._padded(shape, layer, layer.pool_size, fill=-math.inf)
        return lambda x: F.max_pool2d(pad(x), layer.pool_size, layer.strides, padding)

    def _AveragePooling2D(self, layer, shape):
        if layer.padding == "valid":
            return lambda x: F.avg_pool2d(x, layer.pool_size, layer.strides)
        # 'same': the mean of the cells inside the image, as TensorFlow
        pad, padding = self._padded(shape, layer, layer.pool_size)
        ones = torch.ones((1, 1) + tuple(shape[1:3]))
        count = F.avg_pool2d(pad(ones), layer.pool_size, layer.strides, padding, count_include_pad=True)
        return lambda x: F.avg_pool2d(pad(x), layer.pool_size, layer.strides, padding,
                                      count_include_pad=True) / count

    def _GlobalAveragePooling2D(self, layer, shape):
        return lambda x: x.mean(dim=(2, 3), keepdim=layer.keepdims)

    def _GlobalMaxPooling2D(self, layer, shape):
        return lambda x: x.amax(dim=(2, 3), keepdim=layer.keepdims)

    def _Dropout(self, layer, shape):
        return lambda x: x

    _SpatialDropout2D = _Dropout

    def _Flatten(self, layer, shape):  # in convkit's (H, W, C) order, so that the Dense after it lines up
        return lambda x: (x.permute(0, 2, 3, 1) if x.dim() == 4 else x).flatten(1)

    def _Reshape(self, layer, shape):
        target = tuple(layer.target_shape)

        def reshape(x):
            y = (x.permute(0, 2, 3, 1) if x.dim() == 4 else x).reshape((x.shape[0],) + target)
            return y.permute(0, 3, 1, 2).contiguous(memory_format=self.memory_format) if y.dim() == 4 else y

        return reshape

    def _Rescaling(self, layer, shape):
        scale, offset = (self._channel_vector(v, len(shape)) for v in (layer.scale, layer.offset))
        return lambda x: x * scale + offset

    def _Normalization(self, layer, shape):
        mean, std = (np.asarray(v) for v in layer._statistics(np.zeros(1, np.float32)))
        if len(shape) == 4:
            mean, std = (np.transpose(v, (0, 3, 1, 2)) for v in (mean, std))
        mean, std = torch.from_numpy(np.ascontiguousarray(mean)), torch.from_numpy(np.ascontiguousarray(std))
        if layer.invert:
            return lambda x: x * std + mean
        return lambda x: (x - mean) / std

    def _Add(self, layer, shapes):
        return lambda *xs: sum(xs[1:], xs[0])

    def _Subtract(self, layer, shapes):
        return lambda a, b: a - b

    def _Multiply(self, layer, shapes):
        return lambda *xs: math.prod(xs[1:], start=xs[0])

    def _Average(self, layer, shapes):
        return lambda *xs: sum(xs[1:], xs[0]) / len(xs)

    def _Maximum(self, layer, shapes):
        return lambda *xs: torch.stack(torch.broadcast_tensors(*xs)).amax(0)

    def _Minimum(self, layer, shapes):
        return lambda *xs: torch.stack(torch.broadcast_tensors(*xs)).amin(0)

    def _Concatenate(self, layer, shapes):
        ndim = len(shapes[0])
        axis = layer.axis % ndim
        dim = {1: 2, 2: 3, 3: 1}[axis] if ndim == 4 else axis
        return lambda *xs: torch.cat(xs, dim=dim)


def to_torch(x_nhwc, memory_format=torch.contiguous_format):
    """An NHWC NumPy batch as the NCHW tensor a twin takes."""
    x = torch.from_numpy(np.ascontiguousarray(x_nhwc, dtype=np.float32)).permute(0, 3, 1, 2)
    return x.contiguous(memory_format=memory_format)


def to_numpy(y):
    """A twin's output in convkit's layout (NHWC for feature maps)."""
    y = y.permute(0, 2, 3, 1) if y.dim() == 4 else y
    return y.contiguous().numpy()
