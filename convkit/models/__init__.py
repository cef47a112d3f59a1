"""Models: functional Model(inputs, outputs), subclassed Model, Sequential; saving, loading and cloning."""

from convkit.models.cloning import clone_model
from convkit.models.model import Model
from convkit.models.sequential import Sequential
from convkit.saving import load_model, save_model

__all__ = ["Model", "Sequential", "clone_model", "load_model", "save_model"]
