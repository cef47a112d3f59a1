"""convkit: our own CUDA and C++ kernels for 2-D convolution and pooling, under a Keras-like API."""

from convkit import ops
from convkit._backend import cuda_status, get_num_threads, has_cuda, set_num_threads

__version__ = "0.1.0"
__all__ = ["ops", "has_cuda", "cuda_status", "set_num_threads", "get_num_threads", "__version__"]
