"""The text of Model.summary(), in Keras 3's layout.

Keras 3 draws the table with rich; this module reproduces that table's text without rich: the same
column widths for a given ``line_length`` (rich's proportional reduction of the requested widths to fit
the borders), the same box characters, and rich's word wrapping of a long cell (a word wider than its
column is cut with an ellipsis).
"""

from __future__ import annotations

import re
import shutil

from convkit.layers.base import node_depths

_WORD = re.compile(r"\s*\S+\s*")


def _shape_text(shape) -> str:
    if shape is None:
        return "?"
    if isinstance(shape, list):  # several outputs
        return "[" + ", ".join(_shape_text(s) for s in shape) + "]"
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _line_breaks(text: str, width: int) -> list:
    """Where rich breaks ``text`` to fit ``width``, without folding words."""
    breaks, offset = [], 0
    for m in _WORD.finditer(text):
        start, word = m.start(), m.group(0)
        length = len(word.rstrip())
        if width - offset >= length:
            offset += len(word)
        elif length > width:
            if start:
                breaks.append(start)
            offset = len(word)
        elif offset and start:
            breaks.append(start)
            offset = len(word)
    return breaks


def _wrap(text: str, width: int, justify: str) -> list:
    """``text`` as the lines of a cell ``width`` wide, as rich lays it out."""
    lines = []
    for para in text.split("\n"):
        cuts = [0, *_line_breaks(para, width), len(para)]
        for a, b in zip(cuts, cuts[1:]):
            piece = para[a:b]
            if len(piece) > width:  # trailing spaces past the edge go first, then an ellipsis
                spaces = len(piece) - len(piece.rstrip())
                piece = piece[:len(piece) - min(spaces, len(piece) - width)]
                if len(piece) > width:
                    piece = piece[:width - 1] + "…"
            if justify == "right":
                piece = piece.rstrip().rjust(width)
            elif justify == "center":
                piece = piece.rstrip()
                left = (width - len(piece)) // 2
                piece = " " * left + piece + " " * (width - len(piece) - left)
            else:
                piece = piece.ljust(width)
            lines.append(piece)
    return lines


def _column_widths(line_length: int, positions) -> list:
    """Each column's width between its borders (padding included) for a table ``line_length`` wide."""
    requested, current = [], 0
    for p in positions:
        w = int(p * line_length) - current
        if w < 4:
            raise ValueError(f"summary: line_length={line_length} is too small to print the summary")
        requested.append(w + 2)  # one space of padding on either side
        current += w
    # rich shrinks the columns, one share each, until they fit inside the table's borders
    excess = sum(requested) - (line_length - len(requested) - 1)
    remaining, shares, widths = excess, len(requested), []
    for w in requested:
        cut = min(w, round(remaining / shares)) if excess > 0 else 0
        widths.append(w - cut)
        remaining -= cut
        shares -= 1
    return widths


def _table(header, rows, widths, justify) -> list:
    inner = [w - 2 for w in widths]

    def render(cells, edge):
        wrapped = [_wrap(c, w, j) for c, w, j in zip(cells, inner, justify)]
        height = max(len(c) for c in wrapped)
        return [edge + edge.join(f" {c[i] if i < len(c) else ' ' * w} " for c, w in zip(wrapped, inner)) + edge
                for i in range(height)]

    def rule(left, fill, mid, right):
        return left + mid.join(fill * w for w in widths) + right

    out = [rule("┏", "━", "┳", "┓"), *render(header, "┃"), rule("┡", "━", "╇", "┩")]
    for i, row in enumerate(rows):
        if i:
            out.append(rule("├", "─", "┼", "┤"))
        out.extend(render(row, "│"))
    out.append(rule("└", "─", "┴", "┘"))
    return out


def _memory(count: int) -> str:
    """The bytes of ``count`` float32 numbers, as Keras writes them ('12.36 MB')."""
    size = count * 4.0
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size / 1024 < 1:
            return f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} PB"


def _count(weights) -> int:
    seen, total = set(), 0
    for v in weights:
        if id(v) not in seen:
            seen.add(id(v))
            total += int(v.value.size)
    return total


def _graph_layout(model):
    """Functional models: their layers (in Keras's order, as the model lists them), each layer's nodes, and
    whether the graph is a plain chain."""
    ins, outs, order = model._graph
    node_depth, _ = node_depths(order)
    layers = list(model._layers)
    nodes = {}
    for n in order:
        nodes.setdefault(id(n.layer), []).append(n)
    per_depth = {}
    for d in node_depth.values():
        per_depth[d] = per_depth.get(d, 0) + 1
    chain = (all(c == 1 for c in per_depth.values()) and all(len(n.inputs) <= 1 for n in order)
             and all(len(v) == 1 for v in nodes.values()))
    return layers, nodes, chain


def print_summary(model, line_length=None, print_fn=None, expand_nested=False, show_trainable=False):
    """Write ``model``'s summary as Keras 3 does: to stdout, or as one string to ``print_fn``."""
    graph = model._graph is not None
    if graph:
        layers, nodes, chain = _graph_layout(model)
    else:
        layers, nodes, chain = list(model.layers), {}, True
    if chain:
        default, positions = 88, [0.45, 0.80, 1.0]
        header, justify = ["Layer (type)", "Output Shape", "Param #"], ["left", "left", "right"]
    else:
        default, positions = 108, [0.3, 0.56, 0.74, 1.0]
        header, justify = ["Layer (type)", "Output Shape", "Param #", "Connected to"], ["left", "left", "right",
                                                                                          "left"]
    if show_trainable:
        default += 12
        positions = [p * 0.9 for p in positions] + [1.0]
        header, justify = header + ["Trainable"], justify + ["center"]
    line_length = line_length or min(default, shutil.get_terminal_size().columns - 4)

    def node_index(node):
        return next(i for i, n in enumerate(nodes[id(node.layer)]) if n is node)

    def fields(layer, prefix, top):
        if top and id(layer) in nodes:
            shape = nodes[id(layer)][-1].output.shape
        else:
            shape = layer._output_shapes[-1] if layer._output_shapes else None
        params = f"{layer.count_params():,}" if layer.built else "0 (unbuilt)"
        row = [f"{prefix}{layer.name} ({type(layer).__name__})", _shape_text(shape), params]
        if not chain:
            links = [f"{t.node.layer.name}[{node_index(t.node)}][0]"
                     for n in (nodes.get(id(layer), []) if top else []) for t in n.inputs]
            row.append(", ".join(links) or "-")
        if show_trainable:
            row.append(("Y" if layer.trainable else "N") if layer.weights else "-")
        return row

    def rows_of(layer, level=0):
        rows = [fields(layer, "   " * level + "└ " if level else "", level == 0)]
        if expand_nested and getattr(layer, "layers", None):
            for sub in layer.layers:
                rows.extend(rows_of(sub, level + 1))
        return rows

    rows = [r for layer in layers for r in rows_of(layer)]
    lines = [f'Model: "{model.name}"', *_table(header, rows, _column_widths(line_length, positions), justify)]
    trainable, non_trainable = _count(model.trainable_weights), _count(model.non_trainable_weights)
    optimizer = getattr(model, "optimizer", None)
    optimizer_count = optimizer.variable_count() if optimizer is not None and optimizer.built else 0
    total = trainable + non_trainable + optimizer_count
    lines += [f" Total params: {total:,} ({_memory(total)})",
              f" Trainable params: {trainable:,} ({_memory(trainable)})",
              f" Non-trainable params: {non_trainable:,} ({_memory(non_trainable)})"]
    if optimizer_count:
        lines.append(f" Optimizer params: {optimizer_count:,} ({_memory(optimizer_count)})")
    text = "\n".join(lines) + "\n"
    if print_fn is None:
        print(text, end="")
    else:
        print_fn(text)
