"""Automatic differentiation: the op registry, the op-level tape and ``GradientTape``.

Every differentiable op is declared once with :func:`register`: its forward (which validates its
arguments once and calls the kernels), what it keeps for backward, and its backward rule, written
with other ops and kernels. While a :class:`GradientTape` records, each call of a registered op
whose inputs the tape tracks (trainable variables, watched arrays, outputs of recorded calls) is
appended to the tape with what its rule needs and no more; ``tape.gradient`` replays the calls in
reverse. Layers only compose ops, so models of any shape get their gradients from the same rules,
and ``fit`` uses the same tape as a custom training loop.

Arrays are tracked by identity without being kept alive: the tape holds a weak reference to each
output it records, so an activation that no rule saved is freed as soon as the model drops it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import threading
import weakref

import numpy as np

from convkit._device import device_of, to_device, to_numpy

__all__ = ["GradientTape", "Variable", "Op", "register", "registry", "custom_gradient", "recording"]


class Variable:
    """A weight: its array (``value``), gradient (``grad``), trainability, regulariser and constraint
    (a projection the optimizer applies after each update).

    Ops take a Variable wherever they take an array; a recording tape then tracks it.
    """

    __slots__ = ("value", "grad", "name", "trainable", "regularizer", "constraint", "__weakref__")

    def __init__(self, value, name: str, trainable: bool = True, regularizer=None, constraint=None):
        self.value, self.name, self.trainable, self.regularizer = value, name, trainable, regularizer
        self.constraint = constraint
        self.grad = None

    @property
    def shape(self):
        return tuple(self.value.shape)

    @property
    def dtype(self):
        return self.value.dtype

    def numpy(self):
        """A NumPy copy (never a view that later updates would change)."""
        v = self.value
        return v.copy() if isinstance(v, np.ndarray) else to_numpy(v)

    def assign(self, value):
        value = np.asarray(to_numpy(value), dtype=np.float32) if not hasattr(value, "__cuda_array_interface__") \
            else value
        if tuple(value.shape) != self.shape:
            raise ValueError(f"cannot assign shape {tuple(value.shape)} to weight {self.name!r} of shape {self.shape}")
        self.value = to_device(value, device_of(self.value), np.float32).copy()

    def __repr__(self):
        return f"<Variable {self.name} shape={self.shape} trainable={self.trainable}>"


# -- the registry -----------------------------------------------------------------------------------------

class Op:
    """One registered op: ``forward(*inputs, *attrs)``, and ``grad(saved, dy, needs, *attrs)`` giving one
    gradient per input (None where ``needs`` is false). ``save(needs, inputs, output, *attrs)`` picks
    what the rule keeps (default: the inputs and the output); ``forward_saving(needs, *inputs, *attrs)``
    replaces forward and save together where the forward itself produces what backward needs (max
    pooling's argmax). ``variadic`` ops take their inputs as one sequence (concatenate); ``multi_output``
    ops return a tuple whose first item is the differentiable output."""

    __slots__ = ("name", "forward", "grad", "save", "forward_saving", "inputs", "variadic", "multi_output",
                 "defaults")

    def __init__(self, name, forward, grad, inputs, save=None, forward_saving=None, variadic=False,
                 multi_output=False):
        if not callable(grad):
            raise TypeError(f"op {name!r}: a registered op needs a backward rule")
        self.name, self.forward, self.grad, self.inputs = name, forward, grad, tuple(inputs)
        self.save, self.forward_saving = save, forward_saving
        self.variadic, self.multi_output = variadic, multi_output
        params = inspect.signature(forward).parameters
        self.defaults = tuple(params[n].default for n in self.inputs)

    def __repr__(self):
        return f"<Op {self.name} inputs={self.inputs}>"


_REGISTRY: dict[str, Op] = {}


def registry() -> dict:
    """Name -> Op for every registered op (a copy)."""
    return dict(_REGISTRY)


def register(name, *, inputs, grad, save=None, forward_saving=None, variadic=False, multi_output=False):
    """Declare ``forward`` as the differentiable op ``name``; ``inputs`` names its differentiable
    parameters, which come first in its signature. Returns the public function, with ``.op``."""

    def deco(forward):
        if name in _REGISTRY:
            raise ValueError(f"op {name!r} is already registered")
        op = Op(name, forward, grad, inputs, save, forward_saving, variadic, multi_output)
        n = 1 if variadic else len(op.inputs)

        @functools.wraps(forward)
        def call(*args, **kw):
            if len(args) < n:
                args = _bind_inputs(op, args, kw)
            tapes = getattr(_local, "tapes", None)
            if tapes:
                return _record(op, tapes, args, kw)
            if variadic:
                return forward([_value(a) for a in args[0]], *args[1:], **kw)
            for a in args[:n]:
                if type(a) is Variable:
                    return forward(*[_value(a) for a in args[:n]], *args[n:], **kw)
            return forward(*args, **kw)

        call.op = op
        _REGISTRY[name] = op
        return call

    return deco


def _value(a):
    return a.value if type(a) is Variable else a


def _bind_inputs(op, args, kw):
    """Inputs given by keyword (``bias=b``) or left to their defaults, moved into place."""
    args = list(args)
    for i in range(len(args), len(op.inputs)):
        name = op.inputs[i]
        if name in kw:
            args.append(kw.pop(name))
        elif op.defaults[i] is not inspect.Parameter.empty:
            args.append(op.defaults[i])
        else:
            raise TypeError(f"{op.name}() missing required argument {name!r}")
    return tuple(args)


# -- recording --------------------------------------------------------------------------------------------

_local = threading.local()  # tapes record per thread: a prefetch thread's work is never recorded


def recording() -> bool:
    """True while a GradientTape records in this thread."""
    return bool(getattr(_local, "tapes", None))


def _record(op, tapes, args, kw):
    xs = list(args[0]) if op.variadic else args[:len(op.inputs)]
    attrs = args[1:] if op.variadic else args[len(op.inputs):]
    vals, keyed, needs = [], [], [False] * len(xs)
    for a in xs:
        vals.append(a.value if type(a) is Variable else a)
    for t in tapes:
        keys, tracked = [], False
        for i, a in enumerate(xs):
            k = t._key(a)
            keys.append(k)
            if k is not None:
                tracked = needs[i] = True
        if tracked:
            keyed.append((t, keys))
    first = (vals,) if op.variadic else vals
    if not keyed:
        return op.forward(*first, *attrs, **kw)
    needs = tuple(needs)
    _local.tapes = ()  # ops that a forward calls are part of this one call, not recorded apart
    try:
        if op.forward_saving is not None:
            out, saved = op.forward_saving(needs, *first, *attrs, **kw)
        else:
            out = op.forward(*first, *attrs, **kw)
            saved = op.save(needs, vals, out, *attrs, **kw) if op.save is not None else (vals, out)
    finally:
        _local.tapes = tapes
    y = out[0] if op.multi_output else out
    for t, keys in keyed:
        t._append(op, keys, y, saved, attrs, kw)
    return out


class _Node:
    __slots__ = ("op", "in_keys", "out_key", "saved", "attrs", "kw")

    def __init__(self, op, in_keys, out_key, saved, attrs, kw):
        self.op, self.in_keys, self.out_key, self.saved, self.attrs, self.kw = op, in_keys, out_key, saved, attrs, kw


def _weak(a):
    try:
        return weakref.ref(a)
    except TypeError:  # an array type without weak references is kept alive instead
        return lambda: a


class GradientTape:
    """Records registered ops so that gradients can be taken, as TensorFlow's tf.GradientTape::

        with convkit.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    Trainable variables used inside the block are watched automatically (unless
    ``watch_accessed_variables=False``); other arrays need :meth:`watch`. A tape gives one
    ``gradient`` call unless ``persistent=True``. Tapes may nest; gradients are first order.
    """

    def __init__(self, persistent: bool = False, watch_accessed_variables: bool = True):
        self.persistent, self._auto = bool(persistent), bool(watch_accessed_variables)
        self._nodes: list[_Node] = []
        self._arrays: dict = {}      # id(array) -> (weak reference, key)
        self._var_keys: dict = {}    # id(Variable) -> key
        self._vars: list = []        # the watched Variables, in order (keeps their ids unique)
        self._watched: list = []     # watched arrays, kept alive
        self._counter = itertools.count()
        self._used = False
        self._recording = False

    def __enter__(self):
        if self._recording:
            raise RuntimeError("this GradientTape is already recording")
        _local.tapes = getattr(_local, "tapes", ()) + (self,)
        self._recording = True
        return self

    def __exit__(self, *exc):
        self._stop()

    def _stop(self):
        _local.tapes = tuple(t for t in getattr(_local, "tapes", ()) if t is not self)
        self._recording = False

    @contextlib.contextmanager
    def stop_recording(self):
        """Ops run inside this block are not recorded by this tape."""
        if not self._recording:
            raise RuntimeError("stop_recording: the tape is not recording")
        self._stop()
        try:
            yield
        finally:
            self.__enter__()

    def reset(self):
        """Forget everything recorded so far (the tape keeps recording if it was)."""
        self._nodes.clear()
        self._arrays.clear()
        self._var_keys.clear()
        self._vars.clear()
        self._watched.clear()
        self._used = False

    def watch(self, tensor):
        """Track an array or Variable (or a list of them) so that gradients with respect to it can be taken."""
        if isinstance(tensor, (list, tuple)):
            for t in tensor:
                self.watch(t)
            return
        if type(tensor) is Variable:
            self._var_key(tensor)
        elif hasattr(tensor, "shape") and hasattr(tensor, "dtype"):
            if self._key(tensor) is None:
                self._watched.append(tensor)
                self._arrays[id(tensor)] = (_weak(tensor), next(self._counter))
        else:
            raise TypeError(f"GradientTape.watch: expected an array or a Variable, got {type(tensor).__name__}")

    def watched_variables(self) -> list:
        """The Variables this tape tracks, in the order first used."""
        return list(self._vars)

    def _var_key(self, v):
        k = self._var_keys.get(id(v))
        if k is None:
            k = self._var_keys[id(v)] = next(self._counter)
            self._vars.append(v)
        return k

    def _key(self, a):
        if type(a) is Variable:
            k = self._var_keys.get(id(a))
            if k is None and self._auto and a.trainable:
                k = self._var_key(a)
            return k
        e = self._arrays.get(id(a))
        return e[1] if e is not None and e[0]() is a else None

    def _append(self, op, in_keys, out, saved, attrs, kw):
        key = next(self._counter)
        self._arrays[id(out)] = (_weak(out), key)
        self._nodes.append(_Node(op, in_keys, key, saved, attrs, kw))

    def producer(self, a):
        """The recorded call (with ``.op``, ``.in_keys``) that made array ``a``, or None."""
        e = self._arrays.get(id(a))
        if e is None or e[0]() is not a:
            return None
        for node in reversed(self._nodes):
            if node.out_key == e[1]:
                return node
        return None

    def _append_keys(self, op, in_keys, out, saved, attrs=(), kw=None):
        """Record a call whose input keys are already known (a fused rule that skips a recorded call)."""
        self._append(op, list(in_keys), out, saved, attrs, kw or {})

    # -- gradients ---------------------------------------------------------------------------------------
    def gradient(self, target, sources, output_gradients=None, unconnected_gradients="none", watcher=None):
        """d ``target`` / d ``sources``, shaped like ``sources`` (one array, or a list for a list).

        ``target`` is a scalar made by recorded ops (or an array, then ``output_gradients`` weights it;
        default ones). A source the target does not depend on gets None, or zeros with
        ``unconnected_gradients='zero'``. A ``watcher`` (data-parallel training's gradient reducer) is told
        ``start(variables)`` with the Variable sources that recorded ops use, then ``done(variable, grad)``
        as soon as each one's gradient is final, while backward goes on.
        """
        if unconnected_gradients not in ("none", "zero"):
            raise ValueError(f"unconnected_gradients must be 'none' or 'zero', got {unconnected_gradients!r}")
        if self._used and not self.persistent:
            raise RuntimeError("a non-persistent GradientTape gives one gradient call; "
                               "use GradientTape(persistent=True) for more")
        single = not isinstance(sources, (list, tuple))
        srcs = [sources] if single else list(sources)
        src_keys = [self._source_key(s) for s in srcs]
        grads = self._backward(target, output_gradients, src_keys, self._var_watch(srcs, src_keys, watcher))
        if not self.persistent:
            self._used = True
            self.reset()
            self._used = True
        out = []
        for s, k in zip(srcs, src_keys):
            g = grads.get(k) if k is not None else None
            if g is None and unconnected_gradients == "zero":
                v = _value(s)
                g = _xp(v).zeros(v.shape, v.dtype)
            out.append(g)
        return out[0] if single else out

    def _source_key(self, s):
        if type(s) is Variable:
            return self._var_keys.get(id(s))
        if not hasattr(s, "shape"):
            raise TypeError(f"GradientTape.gradient: sources must be arrays or Variables, got {type(s).__name__}")
        return self._key(s)

    def _var_watch(self, srcs, src_keys, watcher):
        """{key: [uses left, Variable]} for the Variable sources that recorded ops use; ``watcher`` told of them."""
        if watcher is None:
            return None
        uses = {k: [0, s] for s, k in zip(srcs, src_keys) if type(s) is Variable and k is not None}
        for node in self._nodes:
            for k in node.in_keys:
                if k in uses:
                    uses[k][0] += 1
        uses = {k: u for k, u in uses.items() if u[0]}
        watcher.start([v for _, v in uses.values()])
        return uses, watcher

    def _backward(self, target, output_gradients, src_keys, watch=None) -> dict:
        t_key = self._key(target)
        wanted = {k for k in src_keys if k is not None}
        if t_key is None or not wanted:
            return {}
        live = set(wanted)
        for node in self._nodes:
            for k in node.in_keys:
                if k in live:
                    live.add(node.out_key)
                    break
        if t_key not in live:
            return {}
        t = _value(target)
        dy = _xp(t).ones(t.shape, t.dtype) if output_gradients is None else output_gradients
        grads = {t_key: dy}
        tapes, _local.tapes = getattr(_local, "tapes", ()), ()  # rules run unrecorded: first order only
        try:
            for node in reversed(self._nodes):
                g = grads.get(node.out_key) if node.out_key in wanted else grads.pop(node.out_key, None)
                if g is not None:
                    self._apply_rule(node, g, grads, live)
                if watch is not None:
                    self._tell_watcher(node, grads, *watch)
        finally:
            _local.tapes = tapes
        return grads

    @staticmethod
    def _tell_watcher(node, grads, uses, watcher):
        for k in node.in_keys:
            u = uses.get(k)
            if u is not None:
                u[0] -= 1
                if u[0] == 0:
                    watcher.done(u[1], grads.get(k))

    @staticmethod
    def _apply_rule(node, g, grads, live):
        """Add the gradients ``node``'s rule gives for upstream ``g`` into ``grads``, for the inputs that need one."""
        needs, any_need = [], False
        for k in node.in_keys:
            need = k is not None and k in live
            needs.append(need)
            any_need = any_need or need
        if not any_need:
            return
        dxs = node.op.grad(node.saved, g, needs, *node.attrs, **node.kw)
        for k, dx, need in zip(node.in_keys, dxs, needs):
            if need and dx is not None:
                grads[k] = grads[k] + dx if k in grads else dx


def _xp(a):
    from convkit._device import xp_of

    return xp_of(a)


def custom_gradient(f):
    """Decorator, as tf.custom_gradient: ``f(*arrays)`` returns ``(y, grad_fn)`` where ``grad_fn(dy)``
    gives d/d each array (one array, or a tuple for several). The result records as one op."""
    from convkit import ops

    @functools.wraps(f)
    def wrapped(*xs):
        return ops.custom_gradient_call(list(xs), f)

    return wrapped
