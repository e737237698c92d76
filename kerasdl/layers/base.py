"""What kerasdl's composite layers share besides their config (:mod:`kerasdl.configurable`).

A block makes its sub-layers in ``__init__`` and their weights in ``build`` (DESIGN.md convention
3), so that ``build(input_shape)``, and with it ``build_from_config`` when a ``.keras`` file is
loaded, gives the block every weight a call would.
"""

from __future__ import annotations

from collections.abc import Iterable

import keras


def build_chain(layers: Iterable[keras.layers.Layer | None], input_shape: tuple) -> tuple:
    """Build ``layers`` in sequence (each on the previous one's output shape) and return the
    last output shape; ``None`` entries (an optional sub-layer that is absent) are skipped.

    Example:
        >>> shape = build_chain([self.conv, self.norm, self.act], input_shape)
    """
    shape = tuple(input_shape)
    for layer in layers:
        if layer is None:
            continue
        if not layer.built:
            layer.build(shape)
        shape = output_shape(layer, shape)
    return shape


def output_shape(layer: keras.layers.Layer, input_shape: tuple) -> tuple:
    """``layer``'s output shape for ``input_shape``: its ``compute_output_shape``, or a symbolic
    call where it does not declare one."""
    if type(layer).compute_output_shape is keras.layers.Layer.compute_output_shape:
        return tuple(layer.compute_output_spec(keras.KerasTensor(input_shape)).shape)
    return tuple(layer.compute_output_shape(input_shape))
