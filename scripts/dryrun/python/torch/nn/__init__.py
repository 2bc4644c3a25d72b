"""Stub torch.nn for the gpu-session dry run (see torch/__init__.py): Module can be subclassed;
constructing any layer fails as there is no device to put it on."""
from torch import _no_gpu


class Module:
    def __init__(self, *_args, **_kwargs):
        pass


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _no_gpu
