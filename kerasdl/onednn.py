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
convolution with fewer than 8 input channels comes out wrong (and with 512 output channels the
process crashes); larger kernels, stride 1 and 8 or more input channels are right. kerasdl's
strided 1x1 convolutions (projection shortcuts, DARTS's ``FactorizedReduce``) are
:class:`kerasdl.layers.pointwise_conv.PointwiseConv2D`, which runs the stride-1 form in that
case; a plain ``keras.layers.Conv2D(f, 1, strides=2)`` on 1-7 channels in a user's own model
is not covered (``TF_ENABLE_ONEDNN_OPTS=0`` avoids it there).
"""

from __future__ import annotations

import functools
import os
import platform
import sys

ENV = "TF_ENABLE_ONEDNN_OPTS"

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
