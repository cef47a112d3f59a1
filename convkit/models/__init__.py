"""Models: functional Model(inputs, outputs), subclassed Model, Sequential."""

from convkit.models.model import Model
from convkit.models.sequential import Sequential

__all__ = ["Model", "Sequential"]
