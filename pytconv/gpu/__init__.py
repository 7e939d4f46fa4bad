"""The GPU path: pytconv's operations on CuPy arrays.

Every public function of pytconv computes on the GPU when all its arrays are
CuPy arrays, and returns CuPy arrays on the same device, on the current
stream::

    >>> import cupy, pytconv                                  # doctest: +SKIP
    >>> x = cupy.random.standard_normal((8, 64, 56, 56), dtype=cupy.float32)
    >>> w = cupy.random.standard_normal((64, 64, 3, 3), dtype=cupy.float32)
    >>> y = pytconv.conv(x, w, padding=1)                     # a cupy.ndarray

The path is optional: it needs CuPy (``pip install pytconv[gpu]``) and an
NVIDIA GPU. Without them this package still imports, :func:`status` says why
the path is off, and NumPy arrays are computed by the C core as always.

The CUDA kernels are in ``kernels.cu`` next to this file, compiled by NVRTC
through ``cupy.RawModule`` at first use (once per device and dtype).
"""

from __future__ import annotations

import importlib
import threading

from ._backend import KERNEL_SOURCE, CuPyBackend, _workspace_from_env, kernel_names

__all__ = [
    "status",
    "available",
    "backend",
    "set_workspace_limit",
    "get_workspace_limit",
    "KERNEL_SOURCE",
    "kernel_names",
]

_lock = threading.Lock()
_instance = None
_workspace_bytes = None


def _probe():
    """(available, reason, cupy module or None)."""
    try:
        cp = importlib.import_module("cupy")
    except ImportError as exc:
        return False, f"CuPy is not installed ({exc}); install the extra: pip install pytconv[gpu]", None
    except Exception as exc:  # a broken CuPy install fails in many ways
        return False, f"CuPy cannot be imported: {type(exc).__name__}: {exc}", None
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"no CUDA device: {type(exc).__name__}: {exc}", None
    if count < 1:
        return False, "no CUDA device: the CUDA runtime reports 0 devices", None
    nvrtc = getattr(cp.cuda, "nvrtc", None)
    try:
        # The kernels are compiled at run time: NVRTC must load too.
        if nvrtc is not None:
            nvrtc.getVersion()
    except Exception as exc:
        return False, (
            f"NVRTC, the CUDA run-time compiler, cannot be loaded: {type(exc).__name__}: {exc}; "
            "install a CUDA toolkit or CuPy's [ctk] extra"
        ), None
    try:
        device = cp.cuda.Device()
        props = cp.cuda.runtime.getDeviceProperties(device.id)
        name = props["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
    except Exception as exc:
        return False, f"the CUDA device cannot be used: {type(exc).__name__}: {exc}", None
    return True, f"ok: {name} (device {device.id}, CuPy {cp.__version__})", cp


def status():
    """(available, reason): whether CuPy arrays can be computed on, and a
    sentence saying why not, or ``"ok: <device name> ..."``."""
    ok, reason, _ = _probe()
    return ok, reason


def available() -> bool:
    return status()[0]


def backend():
    """The backend `pytconv._api` runs CuPy arrays on; raises RuntimeError
    naming the reason when the GPU path is off."""
    global _instance
    if _instance is None:
        with _lock:
            if _instance is None:
                ok, reason, cp = _probe()
                if not ok:
                    raise RuntimeError(f"pytconv: the GPU path is not available: {reason}")
                _instance = CuPyBackend(cp, workspace_bytes=_workspace_bytes)
    return _instance


def set_workspace_limit(nbytes: int) -> None:
    """Bytes of scratch memory one GPU call aims to stay within (default 256 MiB,
    or the environment variable PYTCONV_GPU_WORKSPACE_MB). Larger limits mean
    fewer, larger matrix products; the order of sums changes with the limit."""
    global _workspace_bytes
    if isinstance(nbytes, bool) or not isinstance(nbytes, int):
        raise TypeError(f"set_workspace_limit: nbytes must be an int, got {nbytes!r}")
    if nbytes < 1:
        raise ValueError(f"set_workspace_limit: nbytes must be >= 1, got {nbytes}")
    with _lock:
        _workspace_bytes = nbytes
        if _instance is not None:
            _instance.workspace_bytes = nbytes


def get_workspace_limit() -> int:
    if _instance is not None:
        return _instance.workspace_bytes
    if _workspace_bytes is not None:
        return _workspace_bytes
    return _workspace_from_env()
