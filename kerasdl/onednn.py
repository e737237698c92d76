"""TensorFlow's oneDNN kernels on every x86-64 CPU, and a report of whether they run.

TensorFlow 2.21 turns its oneDNN CPU kernels on by default only on x86 CPUs with AVX-512 VNNI,
AVX-512 BF16 or AMX ("oneDNN custom operations are on" at start-up). On other x86-64 CPUs, such
as an AVX2-only AMD EPYC, it runs Eigen's convolutions, pooling and batch norm, and it has no CPU
kernel at all for the gradient of a grouped convolution (``Conv2DBackpropFilter`` with a kernel
of ``C_in / groups`` channels: ResNeXt does not train). Measured on such a CPU (2 cores, float32,
batch 16; benchmarks/README.md, "oneDNN on a CPU without AVX-512"), turning oneDNN on made
training 1.1-2.1x faster against PyTorch in the same runs (0.54-1.12x PyTorch before, 1.03-1.47x
after), and ResNeXt-50's grouped convolutions trainable on TensorFlow's own kernel.

:func:`request` (run by ``import kerasdl``) sets ``TF_ENABLE_ONEDNN_OPTS=1`` on x86-64 unless
the user set the variable, which always wins (``TF_ENABLE_ONEDNN_OPTS=0`` turns oneDNN off).
TensorFlow reads the variable once, when it loads: in a process that imported TensorFlow before
kerasdl, TensorFlow's own default stays, and :func:`status` says so. ``kerasdl train`` prints the
state on its ``auto:`` line and records it in ``run_info.json``.

One fault found on an AVX2 CPU (no AVX-512) with oneDNN on: the filter gradient of a strided 1x1
convolution with fewer than 8 input channels (and of a strided 1x1 transposed convolution with
fewer than 8 output channels) comes out wrong, and with many filters the process crashes. Since
kerasdl turns oneDNN on, it also makes these cases right for every Keras layer in the process:
:func:`request` arranges for :func:`kerasdl.layers.exact_conv.install` to wrap Keras's
TensorFlow-backend ``conv`` and ``conv_transpose`` as soon as that module loads (at once if it
already has), and the wrappers compute the same products another way in exactly those cases.
"""

from __future__ import annotations

import functools
import importlib.abc
import os
import platform
import sys
from collections.abc import Callable
from typing import Any

ENV = "TF_ENABLE_ONEDNN_OPTS"

# Keras's TensorFlow-backend module whose conv and conv_transpose kerasdl.layers.exact_conv wraps
KERAS_TF_NN = "keras.src.backend.tensorflow.nn"

# what request() found: the user's own value of ENV, whether TensorFlow had loaded, the CPU
_found: dict[str, object] = {}


def request() -> None:
    """Ask TensorFlow for its oneDNN kernels on x86-64, unless the user set ``ENV``."""
    if _found:
        return
    _found.update(
        user=os.environ.get(ENV),
        tf_loaded="tensorflow" in sys.modules,
        x86=platform.machine().lower() in ("x86_64", "amd64"),
    )
    if _found["x86"]:
        os.environ.setdefault(ENV, "1")
    _after_import(KERAS_TF_NN, _guard_keras_convs)


def _guard_keras_convs(module: Any) -> None:
    from kerasdl.layers import exact_conv

    exact_conv.install(module)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``then(module)`` right after the module ``name`` is first executed (once)."""

    def __init__(self, name: str, then: Callable[[Any], None]) -> None:
        self.name, self.then = name, then

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        for finder in sys.meta_path:
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader, name, then = spec.loader, self.name, self.then
        exec_module = loader.exec_module
        own = "exec_module" in vars(loader)

        def exec_then(module: Any) -> None:
            # one call only: a loader may serve other modules too (a zip archive's does)
            if own:
                loader.exec_module = exec_module
            else:
                del loader.exec_module
            exec_module(module)
            if module.__name__ == name:
                then(module)

        loader.exec_module = exec_then
        return spec


def _after_import(name: str, then: Callable[[Any], None]) -> None:
    """``then(module)`` now if ``name`` is imported, else right after it is."""
    if name in sys.modules:
        then(sys.modules[name])
    elif not any(isinstance(f, _AfterImport) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(name, then))


@functools.lru_cache(maxsize=1)
def enabled() -> bool:
    """True when this process's TensorFlow runs its oneDNN kernels (loads TensorFlow)."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # a TensorFlow without the query: assume its default build
        return False
    return bool(_pywrap_util_port.IsMklEnabled())


def status() -> tuple[bool, str]:
    """Whether oneDNN runs in this process, and why (one short phrase)."""
    on = enabled()
    user = _found.get("user")
    if user is not None:
        return on, f"{ENV}={user}"
    if _found.get("tf_loaded"):
        why = "TensorFlow's default for this CPU: TensorFlow was loaded before kerasdl"
        return on, why
    if _found.get("x86"):
        return on, "kerasdl's default on x86-64"
    return on, "TensorFlow's default for this CPU"
