"""The text of Model.summary()."""

from __future__ import annotations

import math


def _shape_text(shapes):
    if not shapes:
        return "?"
    if any(tuple(s) != tuple(shapes[0]) for s in shapes[1:]):
        return "multiple"
    return "(" + ", ".join("None" if d is None else str(d) for d in shapes[0]) + ("," if len(shapes[0]) == 1 else "") + ")"


def print_summary(model, rows, line_length=None, print_fn=None):
    """rows: (layer, output shapes) pairs in display order."""
    print_fn = print_fn or print
    cols = [32, 28, 14] if line_length is None else [int(line_length * f) for f in (0.45, 0.35, 0.2)]
    names = [f" {layer.name} ({type(layer).__name__})" for layer, _ in rows]
    cols[0] = max([cols[0]] + [len(n) + 2 for n in names])
    width = sum(cols)

    def line(a, b, c):
        return f"{a:<{cols[0]}}{b:<{cols[1]}}{c:>{cols[2]}}"

    print_fn(f'Model: "{model.name}"')
    print_fn("_" * width)
    print_fn(line(" Layer (type)", "Output Shape", "Param #"))
    print_fn("=" * width)
    for name, (layer, shapes) in zip(names, rows):
        print_fn(line(name, _shape_text(shapes), f"{layer.count_params():,}"))
    print_fn("=" * width)
    total = model.count_params()
    trainable = sum(math.prod(v.shape) for v in model.trainable_weights)
    print_fn(f"Total params: {total:,}")
    print_fn(f"Trainable params: {trainable:,}")
    print_fn(f"Non-trainable params: {total - trainable:,}")
    print_fn("_" * width)
