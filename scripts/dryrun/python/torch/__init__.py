"""Stub `torch` for scripts/gpu-session-dryrun.sh (a CPU machine standing in for the GPU one).

Importable, with the module-level names the PyTorch scripts of the GPU session touch at import
time (nn.Module to subclass, torch.backends.cuda.matmul.allow_tf32, dtypes, SDPBackend), and no
device: every other function raises RuntimeError when called, as a machine without a GPU makes
real torch fail. It never returns a tensor or a figure, so a dry run cannot fake a result.
"""
__version__ = "0.0.0+dryrun.stub"

NO_GPU = "stub torch (gpu-session dry run): no CUDA GPU here"


def _no_gpu(*_args, **_kwargs):
    raise RuntimeError(NO_GPU)


class _Namespace:
    def __init__(self, **kw):
        self.__dict__.update(kw)


version = _Namespace(cuda=None)
cuda = _Namespace(is_available=lambda: False, device_count=lambda: 0, get_device_name=_no_gpu,
                  synchronize=_no_gpu, Event=_no_gpu, reset_peak_memory_stats=_no_gpu,
                  max_memory_allocated=_no_gpu, empty_cache=lambda: None)
backends = _Namespace(cuda=_Namespace(matmul=_Namespace(allow_tf32=False)))
bfloat16, float16, float32, float64, int32, int64 = "bfloat16", "float16", "float32", "float64", "int32", "int64"


def __getattr__(name):
    """Any other torch function (randn, manual_seed, Generator, ...): fails when called."""
    if name.startswith("__"):
        raise AttributeError(name)
    return _no_gpu
