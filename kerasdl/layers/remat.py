"""Rematerialisation (gradient checkpointing) of a model's blocks on the TensorFlow backend.

A rematerialised block keeps only its inputs for the backward pass; its inner activations are
computed again when its gradient is needed (Chen et al. 2016), so training memory falls from the
sum of every layer's activations to the block boundaries plus one block's inner activations, at
the price of one more forward pass of each block.

Why not ``keras.RematScope`` on its own: on the TensorFlow backend (Keras 3.15, TF 2.21) it wraps
each layer's ``call`` in ``tf.recompute_grad``, which rejects keyword arguments in graph mode
("The custom_gradient decorator currently supports keywords arguments only when eager execution is
enabled"); every layer that takes ``training=`` (batch norm, dropout, every block) then fails
while the model is built. Two more things matter for a faithful model: (1) the recomputation runs
the layer again, so batch norm would update its moving statistics twice per step; (2) a random
layer (dropout, drop-path) would draw a different mask in the recomputation than in the forward
pass, so the gradient would not be the gradient of the loss.

:func:`rematerialize` wraps a layer's call in a ``tf.custom_gradient`` whose backward pass
recomputes the layer under :func:`recomputing` (batch norm skips its moving-statistics update
there: :class:`~kerasdl.layers.fused_bn.FusedBatchNormalization` reads it), with non-tensor
arguments (``training``, ``mask``) bound outside the gradient function. :func:`remat_blocks`
applies it to a model's composite blocks (top-level layers that hold layers: residual blocks,
transformer encoder blocks, dense layers, inception modules, DARTS operations), skipping blocks
that hold an active random layer or Keras's own batch norm, which would change the function.

Example:
    >>> model = create_model("resnet50")
    >>> names = remat_blocks(model)  # before the first fit/trace
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import keras

_STATE = threading.local()


def recomputing() -> bool:
    """True while a rematerialised layer is being recomputed for its gradient (trace time)."""
    return getattr(_STATE, "depth", 0) > 0


@contextlib.contextmanager
def _recomputing() -> Iterator[None]:
    _STATE.depth = getattr(_STATE, "depth", 0) + 1
    try:
        yield
    finally:
        _STATE.depth -= 1


def _recompute_grad(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn(*tensors) -> list of tensors`` whose backward pass recomputes ``fn``."""
    import tensorflow as tf

    @tf.custom_gradient
    def inner(*xs: Any) -> Any:
        outputs = fn(*xs)

        def grad(*dresult: Any, variables: list | None = None) -> Any:
            variables = list(variables or [])
            # Recompute only once the incoming gradient exists (not early in the forward pass,
            # which would keep the inner activations alive and save nothing).
            with tf.control_dependencies(dresult):
                ids = [tf.identity(x) for x in xs]
            with tf.GradientTape() as tape:
                tape.watch(ids)
                tape.watch(variables)
                with _recomputing():
                    again = fn(*ids)
            grads = tape.gradient(
                again,
                ids + variables,
                output_gradients=list(dresult),
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
            return grads[: len(xs)], grads[len(xs) :]

        return outputs, grad

    return inner


def rematerialize(layer: keras.layers.Layer) -> keras.layers.Layer:
    """Recompute ``layer`` in the backward pass instead of keeping its inner activations.

    Call before the model is first traced (``fit``, ``predict`` or a ``tf.function``); the
    layer's weights, config and saved form are unchanged. Returns ``layer``.
    """
    import tensorflow as tf

    if getattr(layer, "_kerasdl_remat", False):
        return layer
    original = layer.call

    def call(*args: Any, **kwargs: Any) -> Any:
        flat = tf.nest.flatten(args)
        is_tensor = [tf.is_tensor(v) for v in flat]
        if not any(is_tensor):
            return original(*args, **kwargs)
        structure: list = []

        def fn(*tensors: Any) -> list:
            it = iter(tensors)
            values = [next(it) if t else v for v, t in zip(flat, is_tensor, strict=True)]
            out = original(*tf.nest.pack_sequence_as(args, values), **kwargs)
            structure[:] = [out]
            return tf.nest.flatten(out)

        outs = _recompute_grad(fn)(*[v for v, t in zip(flat, is_tensor, strict=True) if t])
        return tf.nest.pack_sequence_as(structure[0], list(outs))

    layer.call = call
    layer._kerasdl_remat = True
    return layer


# Random layers whose mask the recomputation would redraw: (class name, attribute of the rate).
_RANDOM = ("Dropout", "SpatialDropout", "DropPath", "DropConnect", "StochasticDepth", "Gaussian")


def _changes_function(layer: keras.layers.Layer) -> str | None:
    """Why rematerialising ``layer`` would change what training computes (None: it would not)."""
    from kerasdl.layers.fused_bn import FusedBatchNormalization

    for sub in layer._flatten_layers(include_self=True, recursive=True):
        name = type(sub).__name__
        rate = next(
            (getattr(sub, a) for a in ("rate", "drop_rate", "drop_path") if hasattr(sub, a)), 0.0
        )
        if any(r in name for r in _RANDOM) and isinstance(rate, (int, float)) and rate > 0:
            return f"random layer {sub.name} (rate {rate})"
        if isinstance(sub, keras.layers.BatchNormalization) and not isinstance(
            sub, FusedBatchNormalization
        ):
            return f"Keras batch norm {sub.name} (would update its statistics twice)"
    return None


def remat_blocks(model: keras.Model) -> dict[str, list[str]]:
    """Rematerialise the composite top-level layers of ``model`` (see the module docstring).

    Returns ``{"blocks": [names rematerialised], "skipped": ["name: reason", ...]}``.
    """
    done: list[str] = []
    skipped: list[str] = []
    for layer in model._flatten_layers(include_self=False, recursive=False):
        if isinstance(layer, keras.Model):
            inner = remat_blocks(layer)
            done += inner["blocks"]
            skipped += inner["skipped"]
            continue
        if not list(layer._flatten_layers(include_self=False, recursive=False)):
            continue  # a single-op layer: its output is the next layer's saved input anyway
        reason = _changes_function(layer)
        if reason:
            skipped.append(f"{layer.name}: {reason}")
            continue
        rematerialize(layer)
        done.append(layer.name)
    return {"blocks": done, "skipped": skipped}
