"""Streaming metrics: a running mean (used for the loss) and the accuracies Keras pairs with each loss."""

from __future__ import annotations

from convkit import _serial


class Metric:
    """update_state(y_true, y_pred) accumulates; result() gives a float; reset_state() starts over.

    The running total stays on the device of the values given (a CuPy scalar during GPU training),
    so updating never waits for the GPU; only result() does."""

    def __init__(self, name=None):
        self.name = name or type(self).__name__.lower()
        self.reset_state()

    def reset_state(self):
        self.total, self.count = 0.0, 0

    def result(self) -> float:
        return self.value_of(*self.snapshot())

    def snapshot(self) -> tuple:
        """The state now, without waiting for the device: ``value_of(*snapshot)`` is result() at this moment."""
        return self.total, self.count

    @staticmethod
    def value_of(total, count) -> float:
        return float(total) / count if count else 0.0

    def get_config(self):
        return {"name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@_serial.register_serializable
class Mean(Metric):
    """Weighted running mean of the values given to update_state(value, weight)."""

    def update_state(self, value, sample_weight=1):
        if hasattr(value, "astype"):  # a float32 array scalar: sum in float64, on its device
            value = value.astype("float64")
        self.total = self.total + value * sample_weight
        self.count += sample_weight


@_serial.register_serializable
class CategoricalAccuracy(Metric):
    """Fraction of samples whose arg-max prediction equals the arg-max of the one-hot label."""

    def update_state(self, y_true, y_pred):
        self.total = self.total + (y_pred.argmax(axis=-1) == y_true.argmax(axis=-1)).sum()
        self.count += y_pred.shape[0]


@_serial.register_serializable
class SparseCategoricalAccuracy(Metric):
    """Fraction of samples whose arg-max prediction equals the integer label."""

    def update_state(self, y_true, y_pred):
        self.total = self.total + (y_pred.argmax(axis=-1) == y_true.reshape(-1)).sum()
        self.count += y_pred.shape[0]


@_serial.register_serializable
class BinaryAccuracy(Metric):
    """Fraction of outputs on the right side of ``threshold`` (0.5)."""

    def __init__(self, name=None, threshold=0.5):
        self.threshold = threshold
        super().__init__(name)

    def update_state(self, y_true, y_pred):
        self.total = self.total + ((y_pred > self.threshold) == (y_true > 0.5)).sum()
        self.count += y_pred.size

    def get_config(self):
        return {"name": self.name, "threshold": self.threshold}


_ACCURACY_FOR_LOSS = {
    "categorical_crossentropy": CategoricalAccuracy,
    "sparse_categorical_crossentropy": SparseCategoricalAccuracy,
    "binary_crossentropy": BinaryAccuracy,
}

_TABLE = {"categorical_accuracy": CategoricalAccuracy, "sparse_categorical_accuracy": SparseCategoricalAccuracy,
          "binary_accuracy": BinaryAccuracy}


def get(identifier, loss_name: str | None = None) -> Metric:
    """A metric from 'accuracy'/'acc' (the accuracy that fits the loss, named as written), another name,
    or an instance."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key in ("accuracy", "acc"):
            cls = _ACCURACY_FOR_LOSS.get(loss_name)
            if cls is None:
                raise ValueError(f"metric {identifier!r}: no accuracy is defined for loss {loss_name!r}")
            return cls(name=identifier)
        if key in _TABLE:
            return _TABLE[key](name=key)
    raise ValueError(f"unknown metric {identifier!r}; known: 'accuracy', 'acc', {sorted(_TABLE)}")
