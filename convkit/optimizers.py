"""Optimizers (SGD with momentum/Nesterov, RMSprop, Adam, AdamW, Adagrad, Adadelta, Adamax, Nadam) and
learning-rate schedules, with Keras 3's names, defaults and update rules.

Updates run in place on each weight's array with the array module that owns it, so the
same code serves NumPy and CuPy. ``apply(variables)`` uses and then clears ``Variable.grad``.
The tf.keras 2 arguments ``lr`` (for ``learning_rate``) and ``decay`` (the learning rate divided
by ``1 + decay * iterations``) are accepted with a DeprecationWarning.
"""

from __future__ import annotations

import functools
import math
import types
import warnings

import numpy as np

from convkit import _serial
from convkit._device import device_of, to_device, xp_of


class LearningRateSchedule:
    """A learning rate as a function of the optimizer's step count."""

    def __call__(self, step) -> float:
        raise NotImplementedError

    def get_config(self):
        return dict(self.__dict__)

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class _StepDecay(LearningRateSchedule):
    """A decay driven by step / decay_steps (its integer part with staircase)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False):
        if decay_steps <= 0:
            raise ValueError(f"{type(self).__name__}: decay_steps must be positive, got {decay_steps}")
        self.initial_learning_rate, self.decay_steps = float(initial_learning_rate), int(decay_steps)
        self.decay_rate, self.staircase = float(decay_rate), bool(staircase)

    def _progress(self, step):
        p = step / self.decay_steps
        return math.floor(p) if self.staircase else p


@_serial.register_serializable
class ExponentialDecay(_StepDecay):
    """initial_learning_rate * decay_rate ** (step / decay_steps) (integer division with staircase)."""

    def __call__(self, step):
        return self.initial_learning_rate * self.decay_rate ** self._progress(step)


@_serial.register_serializable
class CosineDecay(LearningRateSchedule):
    """Optional linear warm-up to ``warmup_target``, then cosine decay to ``alpha`` * peak over decay_steps."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, warmup_target=None, warmup_steps=0):
        if decay_steps <= 0:
            raise ValueError(f"CosineDecay: decay_steps must be positive, got {decay_steps}")
        self.initial_learning_rate, self.decay_steps, self.alpha = float(initial_learning_rate), int(decay_steps), \
            float(alpha)
        self.warmup_target = None if warmup_target is None else float(warmup_target)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        peak = self.initial_learning_rate if self.warmup_target is None else self.warmup_target
        if step < self.warmup_steps:
            return self.initial_learning_rate + (peak - self.initial_learning_rate) * step / self.warmup_steps
        t = min(step - self.warmup_steps, self.decay_steps) / self.decay_steps
        return peak * ((1 - self.alpha) * 0.5 * (1 + math.cos(math.pi * t)) + self.alpha)


@_serial.register_serializable
class InverseTimeDecay(_StepDecay):
    """initial_learning_rate / (1 + decay_rate * step / decay_steps) (integer division with staircase)."""

    def __call__(self, step):
        return self.initial_learning_rate / (1 + self.decay_rate * self._progress(step))


schedules = types.SimpleNamespace(LearningRateSchedule=LearningRateSchedule, ExponentialDecay=ExponentialDecay,
                                  CosineDecay=CosineDecay, InverseTimeDecay=InverseTimeDecay)


class Optimizer:
    """Base class: holds the learning rate (float or schedule), the step count and per-weight slots."""

    slot_names: tuple = ()
    slot_initial_value = 0.0

    def __init__(self, learning_rate=0.001, weight_decay=None, clipnorm=None, name=None, lr=None, decay=None):
        if lr is not None:
            warnings.warn(f"{type(self).__name__}: `lr` is deprecated (Keras 3 removed it); use `learning_rate`",
                          DeprecationWarning, stacklevel=3)
            learning_rate = lr
        if decay:
            warnings.warn(f"{type(self).__name__}: `decay` is deprecated (Keras 3 removed it); use a learning-rate "
                          "schedule such as optimizers.schedules.InverseTimeDecay", DeprecationWarning, stacklevel=3)
        self.decay = float(decay or 0.0)
        if self.decay < 0:
            raise ValueError(f"{type(self).__name__}: decay must be >= 0, got {decay}")
        self.learning_rate = learning_rate
        self.weight_decay = None if weight_decay is None else float(weight_decay)
        self.clipnorm = None if clipnorm is None else float(clipnorm)
        self.name = name or type(self).__name__.lower()
        self.iterations = 0
        self._slots: dict[int, list] = {}  # id(variable) -> slot arrays
        self._order: list = []  # variables in the order their slots were made

    @property
    def learning_rate(self) -> float:
        """The current rate: the schedule evaluated at ``iterations`` when one is set."""
        lr = self._lr
        lr = float(lr(self.iterations)) if isinstance(lr, LearningRateSchedule) else lr
        return lr / (1.0 + self.decay * self.iterations) if self.decay else lr

    @learning_rate.setter
    def learning_rate(self, value):
        if isinstance(value, str):
            value = _serial.deserialize({"class_name": value}, kind="schedule")
        if isinstance(value, dict):
            value = _serial.deserialize(value, kind="schedule")
        if not isinstance(value, LearningRateSchedule):
            value = float(value)
            if not value > 0:
                raise ValueError(f"{type(self).__name__}: learning_rate must be positive, got {value}")
        self._lr = value

    @property
    def lr(self) -> float:
        """tf.keras 2's name of ``learning_rate`` (deprecated)."""
        warnings.warn("`optimizer.lr` is deprecated (Keras 3 removed it); use `optimizer.learning_rate`",
                      DeprecationWarning, stacklevel=2)
        return self.learning_rate

    @lr.setter
    def lr(self, value):
        warnings.warn("`optimizer.lr` is deprecated (Keras 3 removed it); use `optimizer.learning_rate`",
                      DeprecationWarning, stacklevel=2)
        self.learning_rate = value

    def _slots_for(self, v):
        s = self._slots.get(id(v))
        if s is None:
            xp = xp_of(v.value)
            s = [xp.full_like(v.value, self.slot_initial_value) for _ in self.slot_names]
            self._slots[id(v)] = s
            self._order.append(v)
        return s

    def apply(self, variables):
        """One update of every trainable variable that has a gradient; clears the gradients."""
        lr = self.learning_rate
        self.iterations += 1
        self._begin_step()
        live = [v for v in variables if v.grad is not None and v.trainable]
        if self.clipnorm is not None:
            for v in live:  # g * clipnorm / |g| where |g| > clipnorm, computed where g lives
                n = xp_of(v.grad).linalg.norm(v.grad)
                v.grad = v.grad * (self.clipnorm / xp_of(n).maximum(n, self.clipnorm)).astype(v.grad.dtype)
        for v in live:
            if self.weight_decay:
                v.value -= (lr * self.weight_decay) * v.value
            self._update(v, v.grad, self._slots_for(v), lr)
            v.grad = None
            if v.constraint is not None:  # as Keras: projected after the update
                v.value = xp_of(v.value).ascontiguousarray(v.constraint(v.value), dtype=v.value.dtype)

    @property
    def built(self) -> bool:
        """Whether the per-weight slots exist (after the first update, or loaded state)."""
        return bool(self._slots)

    def variable_count(self) -> int:
        """How many numbers the optimizer keeps, counted as Keras counts its variables: the step count,
        the learning rate (unless a schedule gives it), every slot and any per-step scalar."""
        slots = sum(int(a.size) for s in self._slots.values() for a in s)
        return 1 + (not isinstance(self._lr, LearningRateSchedule)) + slots + self._scalar_count

    _scalar_count = 0

    def apply_gradients(self, grads_and_vars):
        """Keras-style: ``apply_gradients(zip(grads, variables))``."""
        vs = []
        for g, v in grads_and_vars:
            v.grad = g
            vs.append(v)
        self.apply(vs)

    def _begin_step(self):
        """Per-step work shared by all variables (after ``iterations`` counts this step)."""

    def _update(self, v, g, slots, lr):
        raise NotImplementedError

    # state, in the order of ``variables`` (the model's trainable weights)
    def get_state(self, variables) -> list:
        """[iterations] + each variable's slots, as arrays (NumPy), for saving."""
        out = [np.asarray(self.iterations, np.int64)]
        for v in variables:
            s = self._slots.get(id(v))
            for i in range(len(self.slot_names)):
                out.append(np.full(v.shape, self.slot_initial_value, np.float32) if s is None
                           else to_device(s[i], "cpu"))
        return out

    def set_state(self, variables, arrays):
        expected = 1 + len(self.slot_names) * len(variables)
        if len(arrays) != expected:
            raise ValueError(f"{type(self).__name__}: optimizer state has {len(arrays)} arrays, expected {expected} "
                             f"for {len(variables)} trainable weights")
        self.iterations = int(arrays[0])
        k = 1
        for v in variables:
            s = []
            for _ in self.slot_names:
                a = arrays[k]
                if tuple(a.shape) != v.shape:
                    raise ValueError(f"optimizer slot for {v.name} has shape {a.shape}, expected {v.shape}")
                s.append(to_device(a, device_of(v.value), np.float32).copy())
                k += 1
            self._slots[id(v)] = s

    def to(self, device):
        """Move slots to 'cpu' or 'cuda' (the model moves its weights alongside)."""
        for k, s in self._slots.items():
            self._slots[k] = [to_device(a, device) for a in s]

    def get_config(self):
        lr = self._lr
        config = {"learning_rate": _serial.serialize(lr) if isinstance(lr, LearningRateSchedule) else lr,
                  "weight_decay": self.weight_decay, "clipnorm": self.clipnorm, "name": self.name}
        if self.decay:
            config["decay"] = self.decay
        return config

    @classmethod
    def from_config(cls, config):
        if config.get("decay"):  # a saved decay was warned about when it was first given
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return cls(**config)
        return cls(**config)


@_serial.register_serializable
class SGD(Optimizer):
    """v = momentum * v - lr * g; w += v (Nesterov: w += momentum * v - lr * g)."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        if not 0 <= momentum < 1:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum}")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.slot_names = ("momentum",) if self.momentum else ()

    def _update(self, v, g, slots, lr):
        if not self.momentum:
            v.value -= lr * g
            return
        (m,) = slots
        m *= self.momentum
        m -= lr * g
        if self.nesterov:
            v.value += self.momentum * m - lr * g
        else:
            v.value += m

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


@_serial.register_serializable
class Adam(Optimizer):
    """Adam with Keras' defaults (beta_1 0.9, beta_2 0.999, epsilon 1e-7) and bias correction in the step."""

    slot_names = ("m", "v")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def _update(self, v, g, slots, lr):
        m, s = slots
        xp = xp_of(g)
        t = self.iterations
        lr_t = lr * math.sqrt(1 - self.beta_2 ** t) / (1 - self.beta_1 ** t)
        if xp is not np:  # one kernel per weight on the GPU instead of nine
            _fused_adam()(g, lr_t, self.beta_1, self.beta_2, self.epsilon, v.value, m, s)
            return
        m *= self.beta_1
        m += (1 - self.beta_1) * g
        s *= self.beta_2
        s += (1 - self.beta_2) * (g * g)
        denom = xp.sqrt(s)
        denom += self.epsilon
        v.value -= (lr_t * m) / denom

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


@_serial.register_serializable
class AdamW(Adam):
    """Adam with decoupled weight decay (w -= lr * weight_decay * w each step); default decay 0.004."""

    def __init__(self, learning_rate=0.001, weight_decay=0.004, **kwargs):
        super().__init__(learning_rate, weight_decay=weight_decay, **kwargs)


def _check_in_unit(who, name, value):
    value = float(value)
    if not 0 <= value < 1:
        raise ValueError(f"{who}: {name} must be in [0, 1), got {value}")
    return value


def _check_epsilon(who, value):
    value = float(value)
    if not value > 0:
        raise ValueError(f"{who}: epsilon must be positive, got {value}")
    return value


@_serial.register_serializable
class RMSprop(Optimizer):
    """v = rho v + (1 - rho) g^2; w -= lr g / sqrt(v + epsilon) (Keras's compile default).

    ``momentum`` > 0 accumulates those steps (m = momentum m + step; w -= m); ``centered`` divides by
    sqrt(v - a^2 + epsilon) instead, with a the running mean of g.
    """

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.rho = _check_in_unit("RMSprop", "rho", rho)
        self.momentum = _check_in_unit("RMSprop", "momentum", momentum)
        self.epsilon, self.centered = _check_epsilon("RMSprop", epsilon), bool(centered)
        self.slot_names = ("velocity",) + (("momentum",) if self.momentum else ()) + \
            (("average_gradient",) if self.centered else ())

    def _update(self, v, g, slots, lr):
        xp = xp_of(g)
        vel = slots[0]
        vel *= self.rho
        vel += (1 - self.rho) * (g * g)
        if self.centered:
            avg = slots[-1]
            avg *= self.rho
            avg += (1 - self.rho) * g
            denom = vel - avg * avg
        else:
            denom = vel.copy()
        denom += self.epsilon
        step = (lr * g) / xp.sqrt(denom)
        if self.momentum:
            m = slots[1]
            m *= self.momentum
            m += step
            step = m
        v.value -= step

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon,
                "centered": self.centered}


@_serial.register_serializable
class Adagrad(Optimizer):
    """a += g^2; w -= lr g / sqrt(a + epsilon), the accumulator starting at initial_accumulator_value."""

    slot_names = ("accumulator",)

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.initial_accumulator_value = float(initial_accumulator_value)
        if self.initial_accumulator_value < 0:
            raise ValueError(f"Adagrad: initial_accumulator_value must be >= 0, got {initial_accumulator_value}")
        self.slot_initial_value = self.initial_accumulator_value
        self.epsilon = _check_epsilon("Adagrad", epsilon)

    def _update(self, v, g, slots, lr):
        (a,) = slots
        a += g * g
        v.value -= (lr * g) / xp_of(g).sqrt(a + self.epsilon)

    def get_config(self):
        return {**super().get_config(), "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}


@_serial.register_serializable
class Adadelta(Optimizer):
    """Adadelta: a = rho a + (1 - rho) g^2; d = -sqrt(D + eps) g / sqrt(a + eps); D = rho D + (1 - rho) d^2;
    w += lr d."""

    slot_names = ("accumulated_grad", "accumulated_delta_var")

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.rho = _check_in_unit("Adadelta", "rho", rho)
        self.epsilon = _check_epsilon("Adadelta", epsilon)

    def _update(self, v, g, slots, lr):
        xp = xp_of(g)
        a, d2 = slots
        a *= self.rho
        a += (1 - self.rho) * (g * g)
        delta = -xp.sqrt(d2 + self.epsilon) * g / xp.sqrt(a + self.epsilon)
        d2 *= self.rho
        d2 += (1 - self.rho) * (delta * delta)
        v.value += lr * delta

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "epsilon": self.epsilon}


@_serial.register_serializable
class Adamax(Adam):
    """Adam with the infinity norm: u = max(beta_2 u, |g|); w -= lr m / ((1 - beta_1^t)(u + epsilon))."""

    slot_names = ("m", "u")

    def _update(self, v, g, slots, lr):
        xp = xp_of(g)
        m, u = slots
        m += (g - m) * (1 - self.beta_1)
        xp.maximum(u * self.beta_2, xp.abs(g), out=u)
        v.value -= (lr * m) / ((1 - self.beta_1 ** self.iterations) * (u + self.epsilon))


@_serial.register_serializable
class Nadam(Adam):
    """Adam with Nesterov momentum and Keras's momentum schedule mu_t = beta_1 (1 - 0.5 * 0.96^t)."""

    _scalar_count = 1  # the running product of mu_t

    def _mu(self, t):
        return self.beta_1 * (1.0 - 0.5 * 0.96 ** t)

    def _begin_step(self):
        # the product of mu_1 .. mu_t, kept across steps (recomputed when the step count is set)
        if getattr(self, "_mu_product_at", None) != self.iterations - 1:
            self._mu_product = math.prod(self._mu(k) for k in range(1, self.iterations))
        self._mu_product *= self._mu(self.iterations)
        self._mu_product_at = self.iterations

    def _update(self, v, g, slots, lr):
        xp = xp_of(g)
        m, s = slots
        t = self.iterations
        mu_t, mu_next = self._mu(t), self._mu(t + 1)
        prod_t = self._mu_product
        m += (g - m) * (1 - self.beta_1)
        s += (g * g - s) * (1 - self.beta_2)
        m_hat = (mu_next * m) / (1 - prod_t * mu_next) + ((1 - mu_t) * g) / (1 - prod_t)
        v_hat = s / (1 - self.beta_2 ** t)
        v.value -= (m_hat * lr) / (xp.sqrt(v_hat) + self.epsilon)


@functools.cache
def _fused_adam():
    import cupy

    return cupy.ElementwiseKernel(
        "T g, float64 lr_t, float64 b1, float64 b2, float64 eps", "T w, T m, T v",
        "m = b1 * m + (1 - b1) * g; v = b2 * v + (1 - b2) * (g * g); w -= (lr_t * m) / (sqrt(v) + eps);",
        "convkit_adam")


_TABLE = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW, "adagrad": Adagrad, "adadelta": Adadelta,
          "adamax": Adamax, "nadam": Nadam}


def get(identifier) -> Optimizer:
    """An optimizer from a name ('rmsprop', 'adam', 'sgd', 'adamw', 'adagrad', 'adadelta', 'adamax', 'nadam'),
    a config dict or an instance."""
    opt = _serial.get(identifier, _TABLE, "optimizer")
    if not isinstance(opt, Optimizer):
        raise TypeError(f"optimizer must be a name or a convkit.optimizers.Optimizer, got {identifier!r}")
    return opt
