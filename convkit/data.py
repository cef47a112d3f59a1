"""Lazy input pipelines in the manner of ``tf.data``: ``Dataset.from_tensor_slices((x, y)).shuffle(1000)
.batch(32).prefetch(AUTOTUNE)``, iterated as NumPy arrays and accepted by ``fit``/``evaluate``/``predict``.

An element is an array, or a tuple or dict of them (nested as deep as needed). Every transformation
returns a new Dataset and reads its source only while it is iterated; nothing is held in memory
except what ``shuffle``'s buffer, ``cache`` and ``prefetch``'s queue hold by design.
"""

from __future__ import annotations

import math
import queue
import threading
import types

import numpy as np

from convkit.utils import rng

AUTOTUNE = -1
"""Pass as ``num_parallel_calls`` or ``buffer_size`` to let convkit choose."""
INFINITE_CARDINALITY = -1
UNKNOWN_CARDINALITY = -2
_AUTOTUNE_PREFETCH = 2


# -- element structures: arrays, tuples and dicts of them ---------------------------------------------------

def _leaves(s) -> list:
    if isinstance(s, tuple):
        return [leaf for part in s for leaf in _leaves(part)]
    if isinstance(s, dict):
        return [leaf for k in sorted(s) for leaf in _leaves(s[k])]
    return [s]


def _pack(template, leaves):
    """Rebuild ``template``'s structure from an iterator of leaves."""
    if isinstance(template, tuple):
        return tuple(_pack(part, leaves) for part in template)
    if isinstance(template, dict):
        packed = {k: _pack(template[k], leaves) for k in sorted(template)}
        return {k: packed[k] for k in template}
    return next(leaves)


def _normalise(s):
    """Lists returned by map functions become tuples; leaves become arrays."""
    if isinstance(s, (tuple, list)):
        return tuple(_normalise(part) for part in s)
    if isinstance(s, dict):
        return {k: _normalise(v) for k, v in s.items()}
    return _to_numpy(s)


def _to_numpy(a):
    if hasattr(a, "get") and type(a).__module__.startswith("cupy"):
        return a.get()
    return np.asarray(a)


def _count(value, who) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{who} must be an int, got {value!r}")
    return int(value)


class Dataset:
    """A re-iterable, lazy sequence of elements; build one with :meth:`from_tensor_slices`.

    Iterating yields NumPy arrays (or tuples/dicts of them). ``len(ds)`` is the number of elements
    when it is known; :meth:`cardinality` also reports ``INFINITE_CARDINALITY`` (-1) and
    ``UNKNOWN_CARDINALITY`` (-2) as ``tf.data`` does.
    """

    def __init__(self, make_iterator, cardinality: int):
        self._make = make_iterator  # () -> a fresh iterator over the elements
        self._cardinality = int(cardinality)

    # -- sources -----------------------------------------------------------------------------------
    @staticmethod
    def from_tensor_slices(tensors) -> "Dataset":
        """Slices along the first axis: ``from_tensor_slices((x, y))`` yields ``(x[i], y[i])``.

        Tuples and dicts are structures; anything else (a list included, as in ``tf.data``) is one array.
        """
        template = _structure(tensors)
        leaves = _leaves(template)
        if any(a.ndim == 0 for a in leaves):
            raise ValueError("from_tensor_slices: every array needs a first axis to slice along; got a scalar")
        sizes = {a.shape[0] for a in leaves}
        if len(sizes) != 1:
            raise ValueError(f"from_tensor_slices: arrays have different first dimensions {sorted(sizes)}")
        n = sizes.pop()

        def make():
            return (_pack(template, iter([np.asarray(a[i]) for a in leaves])) for i in range(n))

        return Dataset(make, n)

    @staticmethod
    def from_tensors(tensors) -> "Dataset":
        """A dataset of one element: ``tensors`` itself."""
        element = _structure(tensors)
        return Dataset(lambda: iter([element]), 1)

    @staticmethod
    def range(*args) -> "Dataset":
        """Integers as ``range(start, stop, step)``, each a 0-d int64 array."""
        r = range(*args)
        return Dataset(lambda: (np.asarray(i, dtype=np.int64) for i in r), len(r))

    @staticmethod
    def zip(*datasets) -> "Dataset":
        """Elements of several datasets side by side, as tuples; stops at the shortest."""
        if len(datasets) == 1 and isinstance(datasets[0], tuple):
            datasets = datasets[0]
        if not datasets or not all(isinstance(d, Dataset) for d in datasets):
            raise TypeError("Dataset.zip expects Datasets, e.g. Dataset.zip((images, labels))")
        cards = [d._cardinality for d in datasets]
        if UNKNOWN_CARDINALITY in cards:
            card = UNKNOWN_CARDINALITY
        else:
            card = min((c for c in cards if c >= 0), default=INFINITE_CARDINALITY)
        return Dataset(lambda: zip(*(iter(d) for d in datasets)), card)

    # -- iteration ---------------------------------------------------------------------------------
    def __iter__(self):
        return iter(self._make())

    def as_numpy_iterator(self):
        """An iterator over the elements (they already are NumPy arrays)."""
        return iter(self)

    def cardinality(self) -> int:
        """Number of elements, or INFINITE_CARDINALITY (-1), or UNKNOWN_CARDINALITY (-2)."""
        return self._cardinality

    def __len__(self):
        if self._cardinality == INFINITE_CARDINALITY:
            raise TypeError("the dataset is infinite")
        if self._cardinality == UNKNOWN_CARDINALITY:
            raise TypeError("the dataset length is unknown")
        return self._cardinality

    def __bool__(self):
        return True

    def __repr__(self):
        card = {INFINITE_CARDINALITY: "infinite", UNKNOWN_CARDINALITY: "unknown"}.get(self._cardinality,
                                                                                      self._cardinality)
        return f"<{type(self).__name__} cardinality={card}>"

    # -- transformations ---------------------------------------------------------------------------
    def map(self, map_func, num_parallel_calls=None, deterministic=None) -> "Dataset":
        """Apply ``map_func`` to each element: ``map_func(*element)`` for a tuple, else ``map_func(element)``.

        ``num_parallel_calls`` is accepted for ``tf.data`` code; the function runs in the thread that
        iterates (a ``prefetch`` after it moves that work to its background thread).
        """
        if not callable(map_func):
            raise TypeError(f"map expects a function, got {type(map_func).__name__}")
        call = lambda e: map_func(*e) if isinstance(e, tuple) else map_func(e)
        return Dataset(lambda: (_normalise(call(e)) for e in self), self._cardinality)

    def filter(self, predicate) -> "Dataset":
        """Keep the elements for which ``predicate`` (called as in :meth:`map`) is true."""
        call = lambda e: predicate(*e) if isinstance(e, tuple) else predicate(e)
        card = INFINITE_CARDINALITY if self._cardinality == INFINITE_CARDINALITY else UNKNOWN_CARDINALITY
        return Dataset(lambda: (e for e in self if bool(np.asarray(call(e)))), card)

    def batch(self, batch_size, drop_remainder=False, num_parallel_calls=None, deterministic=None) -> "Dataset":
        """Stack consecutive elements into batches of ``batch_size`` (the last one smaller unless
        ``drop_remainder``)."""
        batch_size = _count(batch_size, "batch: batch_size")
        if batch_size < 1:
            raise ValueError(f"batch: batch_size must be positive, got {batch_size}")
        card = self._cardinality
        if card >= 0:
            card = card // batch_size if drop_remainder else math.ceil(card / batch_size)

        def make():
            pending = []
            for e in self:
                pending.append(e)
                if len(pending) == batch_size:
                    yield _stack(pending)
                    pending = []
            if pending and not drop_remainder:
                yield _stack(pending)

        return Dataset(make, card)

    def unbatch(self) -> "Dataset":
        """Split each element along its first axis: the inverse of :meth:`batch`."""
        def make():
            for e in self:
                leaves = _leaves(e)
                sizes = {np.shape(a)[0] if np.ndim(a) else None for a in leaves}
                if None in sizes or len(sizes) != 1:
                    raise ValueError("unbatch: every array of an element needs the same first dimension")
                for i in range(sizes.pop()):
                    yield _pack(e, iter([np.asarray(a[i]) for a in leaves]))

        card = INFINITE_CARDINALITY if self._cardinality == INFINITE_CARDINALITY else UNKNOWN_CARDINALITY
        return Dataset(make, card)

    def shuffle(self, buffer_size, seed=None, reshuffle_each_iteration=True) -> "Dataset":
        """Shuffle through a buffer of ``buffer_size`` elements, as ``tf.data``: each output is drawn
        at random from the buffer, whose place the next input element takes. A buffer at least as
        large as the dataset gives a uniform permutation. A new order every pass unless
        ``reshuffle_each_iteration=False``; reproducible for a ``seed`` (or after
        ``convkit.utils.set_random_seed`` when ``seed`` is None)."""
        buffer_size = _count(buffer_size, "shuffle: buffer_size")
        if buffer_size < 1:
            raise ValueError(f"shuffle: buffer_size must be positive, got {buffer_size}")
        base = int(seed) if seed is not None else int(rng().integers(2**63))
        passes = [0]

        def make():
            key = [base, passes[0]] if reshuffle_each_iteration else [base]
            passes[0] += 1
            return _shuffled(iter(self), buffer_size, np.random.default_rng(key))

        return Dataset(make, self._cardinality)

    def cache(self, filename="") -> "Dataset":
        """Keep the elements in memory after the first complete pass; later passes replay them
        (anything before the cache, such as loading and decoding, runs once)."""
        if filename:
            raise ValueError("cache: convkit caches in memory only; call cache() without a filename")
        store = {}

        def make():
            if "elements" in store:
                return iter(store["elements"])
            return _recording(iter(self), store)

        return Dataset(make, self._cardinality)

    def prefetch(self, buffer_size=AUTOTUNE) -> "Dataset":
        """Prepare up to ``buffer_size`` elements ahead in a background thread, so that loading and
        ``map`` work overlap with training (AUTOTUNE: 2 elements)."""
        buffer_size = _count(buffer_size, "prefetch: buffer_size")
        if buffer_size == AUTOTUNE:
            buffer_size = _AUTOTUNE_PREFETCH
        if buffer_size < 0:
            raise ValueError(f"prefetch: buffer_size must be positive or AUTOTUNE, got {buffer_size}")
        if buffer_size == 0:
            return self
        return Dataset(lambda: _prefetched(iter(self), buffer_size), self._cardinality)

    def take(self, count) -> "Dataset":
        """The first ``count`` elements (all of them for -1)."""
        count = _count(count, "take: count")
        if count < 0:
            return self
        card = count if self._cardinality in (INFINITE_CARDINALITY,) else (
            min(count, self._cardinality) if self._cardinality >= 0 else UNKNOWN_CARDINALITY)

        def make():
            it = iter(self)
            for _ in range(count):
                try:
                    yield next(it)
                except StopIteration:
                    return

        return Dataset(make, card)

    def skip(self, count) -> "Dataset":
        """All but the first ``count`` elements (none for -1)."""
        count = _count(count, "skip: count")
        card = self._cardinality
        if card >= 0:
            card = 0 if count < 0 else max(card - count, 0)

        def make():
            it = iter(self)
            for _ in (iter(int, 1) if count < 0 else range(count)):
                if next(it, _END) is _END:
                    break
            return it

        return Dataset(make, card)

    def repeat(self, count=None) -> "Dataset":
        """The dataset ``count`` times over; forever when ``count`` is None or -1."""
        count = -1 if count is None else _count(count, "repeat: count")
        card = self._cardinality
        if count < 0:
            card = 0 if card == 0 else INFINITE_CARDINALITY
        elif card >= 0:
            card *= count

        def make():
            done = 0
            while count < 0 or done < count:
                empty = True
                for e in self:
                    empty = False
                    yield e
                done += 1
                if empty:  # repeating nothing forever is still nothing
                    return

        return Dataset(make, card)

    def concatenate(self, dataset) -> "Dataset":
        """This dataset's elements followed by ``dataset``'s."""
        if not isinstance(dataset, Dataset):
            raise TypeError(f"concatenate expects a Dataset, got {type(dataset).__name__}")
        a, b = self._cardinality, dataset._cardinality
        card = a + b if a >= 0 and b >= 0 else (INFINITE_CARDINALITY if INFINITE_CARDINALITY in (a, b)
                                                 else UNKNOWN_CARDINALITY)

        def make():
            yield from self
            yield from dataset

        return Dataset(make, card)

    def enumerate(self, start=0) -> "Dataset":
        """``(index, element)`` pairs, the index a 0-d int64 array."""
        return Dataset.zip(Dataset.range(start, start + 2**62), self)


_END = object()


def _structure(tensors):
    if isinstance(tensors, tuple):
        return tuple(_structure(t) for t in tensors)
    if isinstance(tensors, dict):
        return {k: _structure(v) for k, v in tensors.items()}
    return _to_numpy(tensors)


def _stack(elements):
    template = elements[0]
    columns = zip(*(_leaves(e) for e in elements))
    try:
        return _pack(template, iter([np.stack(col) for col in columns]))
    except ValueError as exc:
        raise ValueError(f"batch: elements of different shapes cannot be stacked into one batch ({exc}); "
                         "resize them first, e.g. with a map") from None


def _shuffled(it, buffer_size, gen):
    buffer = []
    for e in it:
        if len(buffer) < buffer_size:
            buffer.append(e)
            continue
        i = int(gen.integers(buffer_size))
        yield buffer[i]
        buffer[i] = e
    while buffer:
        i = int(gen.integers(len(buffer)))
        buffer[i], buffer[-1] = buffer[-1], buffer[i]
        yield buffer.pop()


def _recording(it, store):
    elements = []
    for e in it:
        elements.append(e)
        yield e
    store["elements"] = elements  # only a complete pass is kept


def _prefetched(it, buffer_size):
    """Run ``it`` in a daemon thread, ``buffer_size`` elements ahead; stops when the consumer does."""
    q = queue.Queue(maxsize=buffer_size)
    stop = threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for e in it:
                if not put((True, e)):
                    return
            put((False, None))
        except BaseException as exc:  # handed to the consumer, raised in its thread
            put((False, exc))

    thread = threading.Thread(target=produce, daemon=True, name="convkit-prefetch")
    thread.start()
    try:
        while True:
            ok, value = q.get()
            if ok:
                yield value
            elif value is None:
                return
            else:
                raise value
    finally:
        stop.set()


experimental = types.SimpleNamespace(AUTOTUNE=AUTOTUNE, INFINITE_CARDINALITY=INFINITE_CARDINALITY,
                                     UNKNOWN_CARDINALITY=UNKNOWN_CARDINALITY,
                                     cardinality=lambda dataset: dataset.cardinality())
"""``tf.data.experimental``'s names that older notes use (``experimental.AUTOTUNE``)."""

__all__ = ["Dataset", "AUTOTUNE", "INFINITE_CARDINALITY", "UNKNOWN_CARDINALITY", "experimental"]
