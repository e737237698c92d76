"""Weight penalties of a recipe: L1, L2 and elastic net on the kernels of a model."""

from __future__ import annotations

from typing import Any

import keras


def add_kernel_penalties(model: keras.Model, l1: float, l2: float) -> None:
    """Add an L1/L2 (elastic-net when both) penalty on every kernel of the model to its losses."""
    reg = keras.regularizers.L1L2(l1=l1, l2=l2)
    kernels = [
        w for w in model.trainable_weights if w.path.endswith(("kernel", "depthwise_kernel"))
    ]

    def penalty() -> Any:
        return keras.ops.sum([reg(w) for w in kernels])

    model.add_loss(penalty)
