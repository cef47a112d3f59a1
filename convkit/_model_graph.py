"""A model's layers as a graph: for TensorBoard's graph view and for ``plot_model`` (pydot + Graphviz)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class LayerNode:
    layer: object
    inputs: list  # names of the layers feeding it
    input_shapes: list
    output_shape: tuple | None


def layer_graph(model) -> list:
    """One :class:`LayerNode` per layer in call order. Functional models give their recorded calls
    (a layer called twice keeps its first call's shapes and all its inputs); Sequential a chain;
    subclassed models their layers, unconnected (their wiring lives in ``call()`` code)."""
    from convkit.models import Sequential

    graph = getattr(model, "_graph", None)
    nodes: dict = {}
    if graph is not None:
        for node in graph[2]:
            ins = [t.node.layer.name for t in node.inputs]
            shapes = [t.shape for t in node.inputs]
            if node.layer.name in nodes:
                nodes[node.layer.name].inputs += [i for i in ins if i not in nodes[node.layer.name].inputs]
            else:
                nodes[node.layer.name] = LayerNode(node.layer, ins, shapes, node.output.shape)
        return list(nodes.values())
    chained = isinstance(model, Sequential)
    prev_name, prev_shape = None, getattr(model, "_input_spec", None) if chained else None
    out = []
    for layer in model.layers:
        shape = layer._output_shapes[0] if layer._output_shapes else None
        out.append(LayerNode(layer, [prev_name] if chained and prev_name else [],
                             [prev_shape] if chained and prev_shape is not None else [], shape))
        prev_name, prev_shape = layer.name, shape
    return out


def _pydot():
    try:
        import pydot
    except ImportError:
        raise ImportError("plot_model needs pydot and Graphviz: pip install pydot (or 'convkit[plot]'), and "
                          "Graphviz from your system's packages (e.g. apt-get install graphviz)") from None
    try:
        pydot.Dot.create(pydot.Dot())
    except Exception as exc:  # pydot's versions report a missing `dot` with various exception types
        raise ImportError("plot_model needs Graphviz's `dot` program, which was not found: install Graphviz from "
                          "your system's packages (e.g. apt-get install graphviz, brew install graphviz) "
                          f"({type(exc).__name__}: {exc})") from None
    return pydot


def _shape_text(shape):
    if shape is None:
        return "?"
    if isinstance(shape, list):
        return ", ".join(_shape_text(s) for s in shape) if len(shape) != 1 else _shape_text(shape[0])
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def model_to_dot(model, show_shapes=False, show_dtype=False, show_layer_names=False, rankdir="TB",
                 expand_nested=False, dpi=200, subgraph=False, show_layer_activations=False, show_trainable=False,
                 **kwargs):
    """The model as a ``pydot.Dot`` graph: one box per layer (its class, with its name when
    ``show_layer_names``, its input and output shapes when ``show_shapes``), arrows along the data."""
    if kwargs:
        raise TypeError(f"model_to_dot: unexpected argument(s) {sorted(kwargs)}")
    if rankdir not in ("TB", "LR"):
        raise ValueError(f"rankdir must be 'TB' (top to bottom) or 'LR' (left to right), got {rankdir!r}")
    from convkit.models import Sequential

    if getattr(model, "_graph", None) is None and not isinstance(model, Sequential):
        raise ValueError("plot_model draws Sequential and functional models; the layers of a subclassed model are "
                         "wired by its call() code, which convkit does not trace into a graph")
    if not model.layers:
        raise ValueError(f"model {model.name!r} has no layers to draw")
    pydot = _pydot()
    dot = pydot.Dot(graph_type="digraph", rankdir=rankdir, dpi=str(dpi), concentrate="true")
    dot.set_node_defaults(shape="record", fontname="Helvetica", fontsize="11")
    for node in layer_graph(model):
        layer = node.layer
        title = type(layer).__name__
        if show_layer_names:
            title = f"{layer.name} ({title})"
        act = getattr(getattr(layer, "activation", None), "name", None)
        if show_layer_activations and act:
            title += f" | activation: {act}"
        if show_dtype:
            title += " | dtype: float32"
        if show_trainable:
            title += f" | trainable: {'yes' if layer.trainable else 'no'}"
        if show_shapes:
            ins = _shape_text(node.input_shapes) if node.input_shapes else _shape_text(node.output_shape)
            title += f" | {{input: {ins} | output: {_shape_text(node.output_shape)}}}"
        dot.add_node(pydot.Node(_quote(layer.name), label=_escape(f"{{{title}}}")))
        for src in node.inputs:
            dot.add_edge(pydot.Edge(_quote(src), _quote(layer.name)))
    return dot


def _quote(name):
    return '"' + name.replace('"', r'\"') + '"'


def _escape(label):
    # record labels treat <, >, and quotes specially; braces and bars are the layout we mean
    return '"' + label.replace("<", r"\<").replace(">", r"\>").replace('"', r'\"') + '"'


def plot_model(model, to_file="model.png", show_shapes=False, show_dtype=False, show_layer_names=False,
               rankdir="TB", expand_nested=False, dpi=200, show_layer_activations=False, show_trainable=False,
               **kwargs):
    """Draw the model with Graphviz into ``to_file`` (format from its extension: png, svg, pdf, jpg, dot...),
    as Keras 3's ``plot_model`` (whose ``show_layer_names`` defaults to False, unlike tf.keras 2's).
    Needs pydot and Graphviz's ``dot`` program. Returns an ``IPython.display.Image`` of the file in
    IPython (for notebooks), else None."""
    from convkit._atomic import atomic_open

    dot = model_to_dot(model, show_shapes=show_shapes, show_dtype=show_dtype, show_layer_names=show_layer_names,
                       rankdir=rankdir, expand_nested=expand_nested, dpi=dpi,
                       show_layer_activations=show_layer_activations, show_trainable=show_trainable, **kwargs)
    to_file = os.fspath(to_file)
    extension = os.path.splitext(to_file)[1].lstrip(".").lower() or "png"
    data = dot.to_string().encode() if extension == "dot" else dot.create(format=extension)
    with atomic_open(to_file) as f:
        f.write(data)
    if extension != "pdf":
        try:
            from IPython import get_ipython
            from IPython.display import Image
        except ImportError:
            return None
        if get_ipython() is not None:
            return Image(filename=to_file)
    return None


__all__ = ["plot_model", "model_to_dot", "layer_graph"]
