"""Weight decay penalties: L1, L2 and L1L2, with Keras' definitions (L2 is l2 * sum(w**2))."""

from __future__ import annotations

from convkit import _serial
from convkit._device import xp_of


@_serial.register_serializable
class L1L2:
    """Penalty l1 * sum(|w|) + l2 * sum(w**2)."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1, self.l2 = float(l1), float(l2)

    def __call__(self, w):
        """The penalty, a 0-d float64 array on ``w``'s device (nothing waits for the GPU); 0.0 when both are 0."""
        xp = xp_of(w)
        total = 0.0
        if self.l1:
            total = total + self.l1 * xp.abs(w).sum(dtype=xp.float64)
        if self.l2:
            total = total + self.l2 * (w * w).sum(dtype=xp.float64)
        return total

    def grad(self, w):
        """d penalty / d w."""
        xp = xp_of(w)
        g = 0
        if self.l1:
            g = self.l1 * xp.sign(w)
        if self.l2:
            g = g + (2 * self.l2) * w
        return g

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@_serial.register_serializable
class L1(L1L2):
    def __init__(self, l1=0.01):
        super().__init__(l1=l1)

    def get_config(self):
        return {"l1": self.l1}


@_serial.register_serializable
class L2(L1L2):
    def __init__(self, l2=0.01):
        super().__init__(l2=l2)

    def get_config(self):
        return {"l2": self.l2}


def l1(l1=0.01):
    return L1(l1)


def l2(l2=0.01):
    return L2(l2)


def l1_l2(l1=0.01, l2=0.01):
    return L1L2(l1, l2)


_TABLE = {"l1": L1, "l2": L2, "l1_l2": lambda: L1L2(0.01, 0.01)}


def get(identifier):
    """None, a name ('l1', 'l2', 'l1_l2'), a config dict or an instance."""
    r = _serial.get(identifier, _TABLE, "regularizer")
    if r is not None and not hasattr(r, "grad"):
        raise TypeError(f"regularizer {identifier!r} has no grad(w) method; use convkit.regularizers.L1/L2/L1L2")
    return r
