"""convkit: our own CUDA and C++ kernels for 2-D convolution and pooling, under a Keras-like API."""

try:
    from convkit import _cpu  # noqa: F401
except ImportError:  # the sources, imported from a checkout next to a plain 'pip install .'
    from convkit._compiled import from_installed_copy

    from_installed_copy("_cpu")

from convkit import ops
from convkit.autodiff import GradientTape, Variable, custom_gradient
from convkit._backend import cuda_status, get_num_threads, has_cuda, set_num_threads
from convkit import (activations, callbacks, constraints, debugging, distributed, initializers, layers, losses, metrics,
                     optimizers, regularizers, utils, zoo)
from convkit.layers import Input
from convkit.models import Model, Sequential
from convkit.saving import load_model, register_serializable
from convkit.utils import set_random_seed, to_categorical

__version__ = "0.1.0"
__all__ = ["ops", "GradientTape", "Variable", "custom_gradient", "has_cuda", "cuda_status", "set_num_threads", "get_num_threads", "__version__",
           "layers", "Input", "Model", "Sequential", "load_model", "register_serializable", "activations",
           "callbacks", "constraints", "debugging", "initializers", "losses", "metrics", "optimizers", "regularizers", "utils", "zoo",
           "set_random_seed", "to_categorical"]

# Submodules imported on first use (``convkit.datasets``, ...), so that ``import convkit`` stays fast.
_LAZY_MODULES = {
    "applications": "convkit.applications",
    "backend": "convkit.backend",
    "data": "convkit.data",
    "datasets": "convkit.datasets",
    "preprocessing": "convkit.preprocessing",
    "random": "convkit.random",
}


def __getattr__(name):
    module = _LAZY_MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'convkit' has no attribute {name!r}")
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        raise AttributeError(f"convkit.{name} is not available: this installation has no module {module}") from None


def __dir__():
    return sorted(set(globals()) | set(_LAZY_MODULES))
