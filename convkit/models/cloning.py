"""clone_model: the same architecture with fresh weights, as keras.models.clone_model."""

from __future__ import annotations

from convkit.layers.base import InputLayer, Layer
from convkit.models.model import Model, _graph_from_config
from convkit.models.sequential import Sequential


def _fresh_layer(layer):
    return type(layer).from_config(layer.get_config())


def clone_model(model, input_tensors=None, clone_function=None):
    """A new model of the same architecture, its weights newly initialised (not copied).

    ``clone_function(layer) -> layer`` makes each layer of a Sequential or functional model (default: a
    new layer from the layer's config). A subclassed model is rebuilt from its config.
    """
    if not isinstance(model, Model):
        raise TypeError(f"clone_model expects a convkit Model, got {type(model).__name__}")
    if input_tensors is not None:
        raise ValueError("clone_model: input_tensors is not supported; the clone takes the model's own inputs")
    make = clone_function or _fresh_layer
    if isinstance(model, Sequential):
        clone = Sequential(name=model.name)
        if model._input_spec is not None:
            clone.add(InputLayer(shape=model._input_spec[1:]))
        for layer in model.layers:
            clone.add(_checked(make(layer), layer))
        return clone
    if model._graph is not None:
        config = model.get_config()
        layers = [InputLayer.from_config(layer.get_config()) if isinstance(layer, InputLayer)
                  else _checked(make(layer), layer) for layer in model.layers]
        return _graph_from_config(config, layers)
    if clone_function is not None:
        raise ValueError(f"clone_model: clone_function applies to Sequential and functional models, not to the "
                         f"subclassed {type(model).__name__}")
    clone = type(model).from_config(model.get_config())
    if model.built and isinstance(model._input_spec, tuple):
        clone.build(model._input_spec)
    return clone


def _checked(new, old):
    if not isinstance(new, Layer):
        raise TypeError(f"clone_model: clone_function must return a layer, got {type(new).__name__} for "
                        f"{old.name!r}")
    return new
