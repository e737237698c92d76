"""Keras's strided 1x1 convolutions, in a form whose gradients TensorFlow computes right.

TensorFlow 2.21 with oneDNN on an AVX2 CPU (no AVX-512) computes two filter gradients wrongly:

* a strided 1x1 convolution (``Conv2DBackpropFilter``) with fewer than 8 input channels;
* a strided 1x1 *transposed* convolution (``Conv2DBackpropInput``'s filter gradient) with fewer
  than 8 output channels.

8 is the AVX2 vector width. The errors are 14-180% of the gradient's scale (for some spatial
sizes only: 8x8 and 32x32 are wrong, 9x9 and 16x16 right), and with many filters the process
crashes (segmentation fault, double free). Values, input gradients, 8 or more channels, stride 1,
larger kernels, 1-D and 3-D convolutions agree with Eigen's kernels (benchmarks/README.md, "The
oneDNN gradient fault"; tests/test_exact_conv.py and tests/test_onednn.py check them).

kerasdl turns oneDNN on (:mod:`kerasdl.onednn`), so kerasdl also makes these cases right for
every Keras layer in the process: :func:`install` replaces Keras's TensorFlow-backend ``conv``
and ``conv_transpose`` with :func:`conv` and :func:`conv_transpose` below, which compute the
same products another way when a 1x1 kernel with a stride above 1 meets fewer than
:data:`SAFE_CHANNELS` channels, and call Keras's own function otherwise:

* convolution: a 1x1 kernel with stride ``s`` reads only ``x[:, ::s, ::s]`` (``"valid"`` and
  ``"same"`` alike), so it is a stride-1 convolution of that subsampled input;
* transposed convolution: output pixel ``(i*s, j*s)`` is ``x[i, j] @ W^T`` and every other pixel
  is 0 (no padding lands before the first pixel with a 1x1 kernel), so it is a matrix product
  spread onto a zero grid.

:mod:`kerasdl.onednn` installs it when Keras's TensorFlow backend loads (or at ``import kerasdl``
if Keras was loaded first). This module is imported while Keras itself is being imported: it
must not import ``keras`` at module level.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

# below this many channels a strided 1x1 (transposed) convolution takes the exact form
SAFE_CHANNELS = 8

GUARD = "_kerasdl_exact"  # attribute marking an installed wrapper (and holding the original)


def _tuple(value: int | Sequence[int], n: int) -> tuple[int, ...]:
    return (int(value),) * n if isinstance(value, int) else tuple(int(v) for v in value)


def _data_format(data_format: str | None) -> str:
    from keras.src import backend

    return backend.standardize_data_format(data_format)


def _takes_exact_form(
    kernel: Any, strides: Any, dilation_rate: Any, channels: int | None, n: int
) -> bool:
    """A 1x1 kernel, a stride above 1, no dilation and fewer than ``SAFE_CHANNELS`` channels."""
    return (
        channels is not None
        and channels < SAFE_CHANNELS
        and all(int(k) == 1 for k in kernel.shape[:-2])
        and any(s > 1 for s in _tuple(strides, n))
        and all(d == 1 for d in _tuple(dilation_rate, n))
    )


def conv(
    original: Callable,
    inputs: Any,
    kernel: Any,
    strides: int | Sequence[int] = 1,
    padding: str = "valid",
    data_format: str | None = None,
    dilation_rate: int | Sequence[int] = 1,
) -> Any:
    """Keras's backend ``conv`` (``original``); a strided 1x1 kernel on fewer than
    ``SAFE_CHANNELS`` input channels convolves the subsampled input with stride 1 instead."""
    inputs = tf.convert_to_tensor(inputs)
    n = inputs.shape.rank - 2
    data_format = _data_format(data_format)
    channels = inputs.shape[-1] if data_format == "channels_last" else inputs.shape[1]
    if channels != kernel.shape[-2] or not _takes_exact_form(
        kernel, strides, dilation_rate, channels, n
    ):  # grouped convolutions (channels != kernel's) keep Keras's path
        return original(inputs, kernel, strides, padding, data_format, dilation_rate)
    step = tuple(slice(None, None, s) for s in _tuple(strides, n))
    if data_format == "channels_last":
        inputs = inputs[(slice(None), *step, slice(None))]
    else:
        inputs = inputs[(slice(None), slice(None), *step)]
    return original(inputs, kernel, 1, "valid", data_format, 1)


def _spread(z: tf.Tensor, strides: tuple[int, ...], sizes: Sequence[Any]) -> tf.Tensor:
    """``z`` (channels last) with pixel ``i`` moved to ``i * s`` on a zero grid of ``sizes``."""
    for j, (s, size) in enumerate(zip(strides, sizes, strict=True)):
        if s == 1:
            continue
        axis = 1 + j
        shape = tf.shape(z)
        paddings = [[0, 0]] * (z.shape.rank + 1)
        paddings[axis + 1] = [0, s - 1]
        z = tf.pad(tf.expand_dims(z, axis + 1), paddings)
        z = tf.reshape(z, tf.concat([shape[:axis], [shape[axis] * s], shape[axis + 1 :]], 0))
        begin = [0] * z.shape.rank
        length = [-1] * z.shape.rank
        length[axis] = size
        z = tf.slice(z, begin, tf.stack(length))
    return z


def conv_transpose(
    original: Callable,
    inputs: Any,
    kernel: Any,
    strides: int | Sequence[int] = 1,
    padding: str = "valid",
    output_padding: int | Sequence[int] | None = None,
    data_format: str | None = None,
    dilation_rate: int | Sequence[int] = 1,
) -> Any:
    """Keras's backend ``conv_transpose`` (``original``); a strided 1x1 kernel with fewer than
    ``SAFE_CHANNELS`` output channels is a matrix product spread onto a zero grid instead."""
    from keras.src.backend.common.backend_utils import compute_conv_transpose_output_shape

    inputs = tf.convert_to_tensor(inputs)
    kernel = tf.convert_to_tensor(kernel)
    n = inputs.shape.rank - 2
    data_format = _data_format(data_format)
    args = (strides, padding, output_padding, data_format, dilation_rate)
    if not _takes_exact_form(kernel, strides, dilation_rate, kernel.shape[-2], n):
        return original(inputs, kernel, *args)
    if data_format == "channels_first":
        inputs = tf.transpose(inputs, [0, *range(2, n + 2), 1])
    shape = [d if d is not None else tf.shape(inputs)[i] for i, d in enumerate(inputs.shape)]
    out_shape = compute_conv_transpose_output_shape(
        shape, kernel.shape[:-2], kernel.shape[-2], strides, padding, output_padding,
        "channels_last", dilation_rate,
    )  # fmt: skip
    # pixel i lands on i * s: a 1x1 kernel pads nothing before the first pixel
    z = tf.einsum("...i,oi->...o", inputs, tf.reshape(kernel, kernel.shape[-2:].as_list()))
    out = _spread(z, _tuple(strides, n), out_shape[1:-1])
    if data_format == "channels_first":
        out = tf.transpose(out, [0, n + 1, *range(1, n + 1)])
    return out


def install(module: Any) -> None:
    """Replace ``module.conv`` and ``module.conv_transpose`` (Keras's TensorFlow backend) with
    :func:`conv` and :func:`conv_transpose` around them; installing twice changes nothing."""
    for name, exact in (("conv", conv), ("conv_transpose", conv_transpose)):
        original = getattr(module, name)
        if hasattr(original, GUARD):
            continue

        def guarded(*args: Any, _exact: Callable = exact, _original: Callable = original, **kw):
            return _exact(_original, *args, **kw)

        functools.update_wrapper(guarded, original)
        setattr(guarded, GUARD, original)
        setattr(module, name, guarded)


def installed(module: Any) -> bool:
    """Whether :func:`install` has wrapped ``module``'s ``conv`` and ``conv_transpose``."""
    return all(hasattr(getattr(module, name), GUARD) for name in ("conv", "conv_transpose"))
