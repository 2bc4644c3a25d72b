"""Stub torch.nn.attention for the gpu-session dry run: the backend names exist, using them fails."""
from torch import _no_gpu


class SDPBackend:
    FLASH_ATTENTION, CUDNN_ATTENTION, EFFICIENT_ATTENTION, MATH = "flash", "cudnn", "efficient", "math"


sdpa_kernel = _no_gpu
