"""Sequential: a plain stack of layers, built as soon as its input shape is known."""

from __future__ import annotations

from convkit import _serial
from convkit.layers.base import InputLayer, KerasTensor, Layer, unique_name
from convkit.layers.normalization import fusion
from convkit.models.model import Model


@_serial.register_serializable
class Sequential(Model):
    """``Sequential([layers])`` or ``Sequential()`` + ``.add(layer)``. The input shape comes from an
    ``Input``/``InputLayer`` first, a first layer's ``input_shape=``, ``build()``, or the first data."""

    def __init__(self, layers=None, name=None, trainable=True):
        super().__init__(name=name or unique_name("sequential"), trainable=trainable)
        self._last = None  # symbolic output of the stack so far, once the input shape is known
        for layer in layers or []:
            self.add(layer)

    def add(self, layer):
        if isinstance(layer, KerasTensor) and isinstance(layer.node.layer, InputLayer):
            layer = layer.node.layer
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add expects a layer, got {type(layer).__name__}")
        if isinstance(layer, InputLayer):
            if self._layers:
                raise ValueError("Sequential: an InputLayer must come first")
            self._start(layer.output.shape)
            return
        if not self._layers and self._last is None and layer._input_shape_arg is not None:
            self._start((None,) + layer._input_shape_arg)
        self._layers.append(layer)
        if self._last is not None:
            self._last = layer(self._last)

    def _start(self, shape):
        self._input_spec = tuple(shape)
        self._last = KerasTensor(self._input_spec)
        self.built = self._traced = True

    def build(self, input_shape=None):
        if self._traced:
            return
        if input_shape is None:
            raise ValueError("Sequential.build needs input_shape=(None, H, W, C)")
        self._start((None,) + tuple(input_shape)[1:])
        for layer in self._layers:
            self._last = layer(self._last)

    def call(self, x, training=False):
        layers, i = self._layers, 0
        while i < len(layers):
            count, kw = fusion(layers[i:i + 3], training)
            x = layers[i](x, training=training, **kw)
            i += count
        return x

    def __call__(self, inputs, training=None, **kwargs):
        if not self._traced and not isinstance(inputs, KerasTensor):
            self.build((None,) + tuple(inputs.shape[1:]))
        return super().__call__(inputs, training)

    def pop(self):
        """Remove the last layer."""
        if not self._layers:
            raise ValueError("Sequential.pop: there are no layers")
        layer = self._layers.pop()
        if self._traced:
            self._last = KerasTensor(self._input_spec)
            for l in self._layers:
                self._last = l(self._last)
        return layer

    @property
    def output_shape(self):
        if self._last is None:
            raise ValueError(f"model {self.name!r} has not been built yet")
        return self._last.shape

    def get_config(self):
        return {"name": self.name, "layers": [_serial.serialize(l) for l in self._layers],
                "input_shape": None if self._input_spec is None else list(self._input_spec)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        model = cls(name=config.get("name"))
        if config.get("input_shape") is not None:
            model.add(InputLayer(shape=tuple(config["input_shape"][1:])))
        for d in config["layers"]:
            model.add(_serial.deserialize(d, custom_objects, "layer"))
        return model
