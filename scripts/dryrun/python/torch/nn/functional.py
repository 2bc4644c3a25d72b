"""Stub torch.nn.functional for the gpu-session dry run: every function fails when called."""
from torch import _no_gpu


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _no_gpu
