"""``convkit.random.set_seed``, the spelling of ``tf.random.set_seed`` / ``keras.random`` the notes use."""

from __future__ import annotations

from convkit.utils import set_random_seed


def set_seed(seed: int) -> None:
    """Seed everything convkit draws from (weights, dropout, shuffling, augmentation), Python's ``random``,
    NumPy's global generator and CuPy's: the same as ``convkit.set_random_seed``."""
    if isinstance(seed, bool) or not isinstance(seed, int) and not hasattr(seed, "__index__"):
        raise TypeError(f"set_seed: seed must be an int, got {type(seed).__name__}")
    set_random_seed(int(seed))


__all__ = ["set_seed"]
